"""The conditions linked reads are made on, at their edges: a file missing when the
domain was opened, bytes fetched ahead for a session that accepted another version,
the layout check's own metadata reads, a chunk table naming its file per chunk (HSDS)
under verify_unversioned_links, and an S3/http answer whose ETag is not the one asked
for (a server that ignores If-Match)."""

from __future__ import annotations

import http.server
import json
import os
import threading
import warnings
from collections.abc import Iterator

import h5py
import numpy as np
import pytest
import xarray as xr
from ingest_helpers import aged, pair_bucket, write_pair

import h5dask
from h5dask.errors import (
    LinkedFileChangedError,
    MetadataError,
    ObjectChangedError,
    StorageError,
    UnverifiedLinkWarning,
)
from h5dask.ingest import load_file
from h5dask.storage.base import ObjectVersion
from h5dask.storage.sync import sync


def _linked_local(tmp_path):
    """A file:// domain linking a local pair file (a: 1.0, b: 2.0; 5 chunks each)."""
    root, local = pair_bucket(tmp_path)
    url = (root / "home" / "pair.h5").as_uri()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # LocalLinkWarning
        load_file(local, url, link=True, progress=False)
    return local, url


def test_a_file_missing_at_open_is_never_read(tmp_path) -> None:
    """A regeneration deletes the linked file, then writes it anew (here: the variables
    swapped, same size). A session opened in between has no version to read on: its
    reads say the file does not exist while it is missing, and refuse it once it is
    there (its layout never checked), instead of reading b's bytes as a's."""
    local, url = _linked_local(tmp_path)
    local.unlink()
    with h5dask.File(url) as f:
        a = f["a"]  # opened while the file is missing: no error yet
        ds = xr.open_dataset(url, engine="h5cloud", chunks={})
        with pytest.raises(StorageError, match=r"'/a'.*pair\.h5, which does not exist.*"
                                               r"restore it, and open the domain again"):
            a[0:8]
        write_pair(local, "b", "a")
        for selection in (slice(0, 8), slice(None)):  # the task's thread, the I/O loop
            with pytest.raises(LinkedFileChangedError,
                               match=r"'/a'.*pair\.h5, which was missing when this session "
                                     r"opened the domain and exists now.*Open the domain"):
                a[selection]
        with pytest.raises(LinkedFileChangedError, match="was missing when this session"):
            ds["a"].load()
    with h5dask.File(url) as f, pytest.raises(LinkedFileChangedError, match="chunk 0"):
        f["a"][()]  # a new open checks the layout: b's offsets


def test_read_ahead_never_hands_bytes_of_another_accepted_version(tmp_path) -> None:
    """Two sessions of one domain accepted two versions of its file (rewritten in place
    between their opens): a chunk fetched ahead for the newer one is not taken by the
    older one, whose own read is refused."""
    from h5dask.readahead import get_readahead

    local, url = _linked_local(tmp_path)
    with h5dask.File(url) as old:
        src_old = old["a"].source()
        assert src_old.read(slice(0, 8)).tolist() == [1.0] * 8
        write_pair(local, scale=3.0)  # the same layout, other values
        aged(local)
        with h5dask.File(url) as new:
            src_new = new["a"].source()
            assert src_new.linked[0][1].version != src_old.linked[0][1].version
            ra, owner = get_readahead(), object()
            try:
                assert ra.start(src_new, (0,), owner)
                with pytest.raises(LinkedFileChangedError, match="written after this session"):
                    src_old.read(slice(0, 8))
                assert src_new.read(slice(0, 8)).tolist() == [3.0] * 8  # its own, ahead
            finally:
                ra.forget(owner=owner)


def test_a_layout_check_reads_the_version_it_checks(tmp_path) -> None:
    """The layout check reads the file's metadata on condition of the version it was
    given (the one its answer is remembered for): a file rewritten since is refused,
    not checked (its other layout must not be remembered as that version's)."""
    from h5dask.linked_files import check_layout, file_facts
    from h5dask.storage.local import LocalObjectStore

    local, _ = _linked_local(tmp_path)
    with h5py.File(local) as f:
        claimed = file_facts(f["a"])
    store = LocalObjectStore(str(local.parent.parent))
    now = sync(store.stat("files/pair.h5"))
    assert now is not None
    write_pair(local, "b", "a")  # same size, a at b's offsets
    with pytest.raises(ObjectChangedError, match=r"pair\.h5 was written since"):
        check_layout(store, "files/pair.h5", now, "/a", claimed)


def _per_chunk_uri_domain(tmp_path, files: int, **recorded):
    """A domain whose '/a' is an HSDS-style H5D_CHUNKED_REF_INDIRECT layout without a
    layout file_uri: its chunk table names the file of each chunk (``files`` copies of
    one pair file, chunk i in copy i % files). Unversioned, as HSDS writes it, unless
    ``recorded`` adds keys to the layout."""
    from h5dask.format.linked import CHUNK_TABLE_DTYPE
    from h5dask.storage import open_location

    root = tmp_path / "bucket"
    (root / "db").mkdir(parents=True)
    (root / "files").mkdir()
    paths = [root / "files" / f"pair{i}.h5" for i in range(files)]
    for path in paths:
        write_pair(path)
    with h5py.File(paths[0]) as f:
        infos = [f["a"].id.get_chunk_info(i) for i in range(5)]
    url = (root / "home" / "d.h5").as_uri()
    dt = np.dtype(CHUNK_TABLE_DTYPE.descr + [("file_uri", "S256")])
    rows = [(info.byte_offset, info.size, paths[i % files].as_uri().encode())
            for i, info in enumerate(infos)]
    with h5dask.File(url, "w") as f:
        f.create_dataset("a", shape=(40,), dtype="<f8", chunks=(8,))
        table_id = f.create_dataset("table", data=np.array(rows, dtype=dt)).id
    with h5dask.File(url) as f:
        key = f["a"]._meta.key
    store = open_location(url).store
    obj = json.loads(sync(store.get(key, kind="metadata")))
    layout = {"class": "H5D_CHUNKED_REF_INDIRECT", "chunk_table": table_id, "dims": [8],
              **recorded}
    obj["creationProperties"].update(layout=layout, filters=[])
    obj["layout"] = layout
    sync(store.put(key, json.dumps(obj).encode(), kind="metadata"))
    return paths, url


def test_verify_checks_a_chunk_table_naming_its_file(tmp_path) -> None:
    """verify_unversioned_links=True on a chunk table naming its file per chunk: the
    file's version is taken at open (its chunks read on condition of it) and its layout
    checked; no warning. The file rewritten with the variables swapped: the open
    session's read is refused, and so is a new open (its layout check)."""
    (path,), url = _per_chunk_uri_domain(tmp_path, files=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnverifiedLinkWarning)
        with h5dask.File(url, verify_unversioned_links=True) as f:
            a = f["a"]
            assert a[()].tolist() == [1.0] * 40
            assert a.source().linked[0][1].version is not None
            write_pair(path, "b", "a")
            with pytest.raises(LinkedFileChangedError, match="written after this session"):
                a[()]
        with h5dask.File(url, verify_unversioned_links=True) as f, \
                pytest.raises(LinkedFileChangedError, match=r"'/a'.*pair0\.h5.*chunk 0"):
            f["a"][()]


def test_verify_says_why_a_table_naming_several_files_is_not_checked(tmp_path) -> None:
    """Chunks in several files: no one file's metadata holds the layout. The warning
    says so (not "pass verify_unversioned_links=True", which was passed); each file's
    version is still taken once, and a file written after the open is refused."""
    paths, url = _per_chunk_uri_domain(tmp_path, files=2)
    with pytest.warns(UnverifiedLinkWarning) as caught:
        with h5dask.File(url, verify_unversioned_links=True) as f:
            a = f["a"]
            assert a[()].tolist() == [1.0] * 40
            assert all(ref.version is not None for _, ref in a.source().linked)
            write_pair(paths[1], scale=3.0)
            with pytest.raises(LinkedFileChangedError, match=r"pair1\.h5, which was written"):
                a[()]
    message = str(caught[0].message)
    assert "'/a' has its chunks in 2 files" in message
    assert "cannot check its layout" in message and "pass verify_unversioned" not in message


def test_a_version_recorded_without_its_file_or_size_is_refused(tmp_path) -> None:
    """h5dask load --link records a layout's file version with its file_uri and size;
    a layout with the version but no layout-level file_uri (a chunk table naming a file
    per chunk), or no size, is edited metadata: refused naming the dataset, the domain
    and the key missing, never read unconditionally (as it was) nor warned about only."""
    (path,), url = _per_chunk_uri_domain(tmp_path / "table", files=1,
                                         h5dask_file_version="v1", h5dask_file_size=1)
    with h5dask.File(url) as f, pytest.raises(
            MetadataError, match=r"'/a' of the domain file://.*h5dask_file_version but "
                                 r"no file_uri.*load --link --overwrite"):
        f["a"][()]
    local, url = _linked_local(tmp_path / "size")
    for meta in local.parent.parent.rglob(".dataset.json"):
        obj = json.loads(meta.read_text())
        for layout in (obj["creationProperties"]["layout"], obj["layout"]):
            assert layout["h5dask_file_version"]  # the file's version now
            layout.pop("h5dask_file_size")
        meta.write_text(json.dumps(obj))
    with h5dask.File(url) as f, pytest.raises(
            MetadataError, match=r"'/a' of the domain file://.*h5dask_file_version but "
                                 r"no h5dask_file_size"):
        f["a"][()]


class _IgnoresIfMatch(http.server.BaseHTTPRequestHandler):
    """Serves one object's ranges with ETag "new", whatever If-Match asks (as a server
    or proxy that does not implement conditional requests)."""

    body = b"x" * 100

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        start, stop = self.headers["Range"].removeprefix("bytes=").split("-")
        piece = self.body[int(start): int(stop) + 1]
        self.send_response(206)
        self.send_header("ETag", '"new"')
        self.send_header("Last-Modified", "Wed, 02 Dec 2026 10:00:00 GMT")
        self.send_header("Content-Range", f"bytes {start}-{stop}/{len(self.body)}")
        self.send_header("Content-Length", str(len(piece)))
        self.end_headers()
        self.wfile.write(piece)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ignores_if_match() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _IgnoresIfMatch)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("kind", ["s3", "http"])
def test_an_answer_of_another_etag_is_refused(kind, ignores_if_match) -> None:
    """A read of a version whose answer carries another ETag (the server ignored
    If-Match) is refused, through the read path itself (async and blocking)."""
    from h5dask.storage.fsspec_store import FsspecObjectStore
    from h5dask.storage.s3 import S3ObjectStore
    from h5dask.storage.s3_options import S3Settings

    if kind == "s3":
        store = S3ObjectStore("b", S3Settings(endpoint=ignores_if_match, anon=True,
                                              addressing_style="path"))
    else:
        store = FsspecObjectStore("http", f"{ignores_if_match}/b")
    assert bytes(sync(store.get_buffer("x.h5", byte_range=(0, 4)))) == b"xxxx"  # plain
    asked = ObjectVersion(100, 'etag="old"')
    with pytest.raises(ObjectChangedError, match=r"x\.h5 was written since.*new"):
        sync(store.get_buffer("x.h5", byte_range=(0, 4), version=asked))
    with pytest.raises(ObjectChangedError, match=r"x\.h5 was written since.*new"):
        store.get_buffer_sync("x.h5", byte_range=(0, 4), version=asked)
    assert bytes(store.get_buffer_sync("x.h5", byte_range=(0, 4),
                                       version=ObjectVersion(100, 'etag="new"'))) == b"xxxx"


def test_a_status_only_change_is_refused_but_not_called_a_write(tmp_path) -> None:
    """chmod, a hard link (a backup's cp -al) or a copy that kept the times move a local
    file's change time or inode, not its size or modification time. That cannot be told
    from a write that set the time back: an open session's read is still refused, but
    the error says what the versions show, not "written"; a new open checks the layout
    and reads."""
    import shutil

    local, url = _linked_local(tmp_path)
    status = (r"'/a'.*pair\.h5, whose status changed after this session opened it, not its "
              r"size or modification time.*version .* then, .* now.*Open the domain again")
    replaced = r"'/a'.*pair\.h5, which was replaced after this session.*same size and mod"
    copy = tmp_path / "copy.h5"
    for touch, expected in ((lambda: os.chmod(local, 0o444), status),
                            (lambda: os.link(local, tmp_path / "snapshot.h5"), status),
                            (lambda: (shutil.copy2(local, copy), os.replace(copy, local)),
                             replaced)):
        with h5dask.File(url) as f:
            a = f["a"]
            assert a[0:8].tolist() == [1.0] * 8
            touch()
            with pytest.raises(LinkedFileChangedError, match=expected) as caught:
                a[0:8]
            assert "written after" not in str(caught.value)
        with h5dask.File(url) as f:
            assert f["a"][()].tolist() == [1.0] * 40
