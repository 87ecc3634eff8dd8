"""Linked references stay inside the domain's store (issue 10, item 1; the bad link URL of
item 7).

A linked dataset (``H5D_CONTIGUOUS_REF``, ``H5D_CHUNKED_REF``, ``H5D_CHUNKED_REF_INDIRECT``)
names the file holding its bytes in ``file_uri``: metadata anyone who can write the
bucket controls. The matrix below links a dataset to each kind of target, on a
``file://`` domain and on an S3 (SeaweedFS) domain, and reads it with ``h5dask.File`` and
``xr.open_dataset(engine="h5cloud")``, with and without an allow-list:

* inside the domain's store (``file://``: the bucket root; S3: any bucket of the same
  endpoint): read, no allow-list needed;
* outside it (an absolute path, a symlink out of the root, another scheme, S3 from a
  ``file://`` domain, ``http://``): ``LinkedReferenceRefused`` naming the dataset and the
  URI, and no request made (an HTTP canary counts them); with ``allowed_link_prefixes``
  (or ``H5DASK_ALLOWED_LINK_PREFIXES``) naming it: read;
* malformed (``..``, empty segments, a bad host or port): refused, allow-list or not.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask.errors import DomainNotFoundError, H5DaskError, LinkedReferenceRefused, StorageError
from h5dask.format.linked import CHUNK_TABLE_DTYPE
from h5dask.ingest import load_file
from h5dask.storage import open_location, sync
from h5dask.storage.fsspec_store import FsspecObjectStore
from h5dask.storage.links import ENV_VAR

SECRET = b"root:x:0:0:the bytes a linked reference must not leak\n" * 2
N = len(SECRET)
OTHER_BUCKET = "h5dask-linked-other"
MEMORY_DIR = f"linked-escape-{uuid.uuid4().hex}"


class Canary:
    """An HTTP server that serves SECRET (with Range) and counts every request; a path
    under /redirect/ answers 302 to /secret.bin."""

    def __init__(self) -> None:
        canary = self
        self.requests = 0
        self.paths: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                canary.requests += 1
                canary.paths.append(self.path)
                if self.path.startswith("/redirect/"):
                    self.send_response(302)
                    self.send_header("Location", "/secret.bin")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = SECRET
                ranged = self.headers.get("Range", "").removeprefix("bytes=")
                if ranged:
                    start, _, stop = ranged.partition("-")
                    body = SECRET[int(start):int(stop) + 1 if stop else None]
                self.send_response(206 if ranged else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_HEAD = do_GET  # noqa: N815

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def canary() -> Iterator[Canary]:
    server = Canary()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def _no_env_allowance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture(scope="module")
def memory_secret() -> str:
    """SECRET in fsspec's memory file system (another scheme than the domain's)."""
    fsspec.filesystem("memory").pipe_file(f"/{MEMORY_DIR}/secret.bin", SECRET)
    return f"memory://{MEMORY_DIR}/secret.bin"


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """A file:// bucket root holding SECRET in files/, SECRET outside it, and a symlink in
    the root pointing out of it."""
    root = tmp_path / "bucket"
    (root / "db").mkdir(parents=True)
    (root / "files").mkdir()
    (root / "files" / "data.bin").write_bytes(SECRET)
    (tmp_path / "outside").mkdir()
    outside = tmp_path / "outside" / "secret.bin"
    outside.write_bytes(SECRET)
    (root / "files" / "link.bin").symlink_to(outside)
    return {"root": root, "inside": root / "files" / "data.bin", "outside": outside,
            "symlink": root / "files" / "link.bin"}


def linked_domain(url: str, options: dict | None, uri: str,
                  layout: str = "H5D_CONTIGUOUS_REF") -> None:
    """Write a domain at ``url`` whose dataset ``secret`` (N uint8) is linked to ``uri``."""
    with h5dask.File(url, "w", storage_options=options) as f:
        f.create_dataset("secret", shape=(N,), dtype="u1")
    with h5dask.File(url, storage_options=options) as f:
        key = f["secret"]._meta.key
    store = open_location(url, options).store
    obj = json.loads(sync(store.get(key, kind="metadata")))
    if layout == "H5D_CONTIGUOUS_REF":
        linked = {"class": layout, "file_uri": uri, "offset": 0, "size": N}
    else:
        linked = {"class": layout, "file_uri": uri, "dims": [N], "chunks": {"0": [0, N]}}
    obj["creationProperties"].update(layout=linked, filters=[])
    obj["layout"] = linked
    sync(store.put(key, json.dumps(obj).encode(), kind="metadata"))


def read_file(url: str, options: dict | None, **kwargs: Any) -> np.ndarray:
    with h5dask.File(url, storage_options=options, **kwargs) as f:
        return f["secret"][()]


def read_xarray(url: str, options: dict | None, **kwargs: Any) -> np.ndarray:
    ds = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=options, **kwargs)
    return ds["secret"].values


READERS: dict[str, Callable[..., np.ndarray]] = {"File": read_file, "xarray": read_xarray}


def check(read: Callable[..., np.ndarray], url: str, options: dict | None, uri: str,
          expect: str, prefix: str | None, allow: bool, canary: Canary) -> None:
    """Read the linked dataset; ``expect`` "read" (inside the store), "allowable" (read
    only with ``prefix`` allowed) or "malformed" (refused even with ``prefix``)."""
    kwargs = {"allowed_link_prefixes": [prefix]} if allow and prefix else {}
    before = canary.requests
    if expect == "read" or (expect == "allowable" and allow):
        assert bytes(read(url, options, **kwargs)) == SECRET
        return
    with pytest.raises(LinkedReferenceRefused) as info:
        read(url, options, **kwargs)
    message = str(info.value)
    assert repr(uri) in message and "secret" in message
    assert info.value.uri == uri and info.value.dataset  # kept through the xarray backend
    assert ("allowed_link_prefixes" in message) == (expect == "allowable")
    assert canary.requests == before, "a refused reference made a request"
    if expect == "allowable" and uri != "file:///etc/passwd":
        # the message says how to allow it, and that works
        suggested = ast.literal_eval(re.search(r"allowed_link_prefixes=(\[.*?\])", message)[1])
        assert bytes(read(url, options, allowed_link_prefixes=suggested)) == SECRET


# -- file:// domains --------------------------------------------------------------------
def _file_cases(tree: dict[str, Path], canary: Canary, memory: str, s3: str
                ) -> dict[str, tuple[str, str, str | None]]:
    """case -> (file_uri, expectation, prefix that allows it)"""
    outside_dir = tree["outside"].parent.as_uri() + "/"
    return {
        "inside, file:// URL": (tree["inside"].as_uri(), "read", None),
        "inside, HSDS bucket/key": ("bucket/files/data.bin", "read", None),
        "inside, HSDS file://bucket/key": ("file://bucket/files/data.bin", "read", None),
        "absolute URL outside the root": (tree["outside"].as_uri(), "allowable", outside_dir),
        "absolute path outside the root": (str(tree["outside"]), "allowable", outside_dir),
        "/etc/passwd": ("file:///etc/passwd", "allowable", "file:///etc/"),
        "symlink out of the root": (tree["symlink"].as_uri(), "allowable", outside_dir),
        "relative ..": ("bucket/../outside/secret.bin", "malformed", outside_dir),
        "x/../../../../../etc/hostname": ("x/../../../../../etc/hostname", "malformed",
                                          "file:///etc/"),
        "percent-encoded ..": (tree["root"].as_uri() + "/%2e%2e/outside/secret.bin",
                               "malformed", outside_dir),
        "other scheme (memory://)": (memory, "allowable", f"memory://{MEMORY_DIR}/"),
        "other endpoint (S3 from file://)": (s3, "allowable", s3.rsplit("/", 1)[0] + "/"),
        "http": (f"{canary.url}/secret.bin", "allowable", canary.url + "/"),
    }


FILE_CASES = ["inside, file:// URL", "inside, HSDS bucket/key", "inside, HSDS file://bucket/key",
              "absolute URL outside the root", "absolute path outside the root", "/etc/passwd",
              "symlink out of the root", "relative ..", "x/../../../../../etc/hostname",
              "percent-encoded ..", "other scheme (memory://)",
              "other endpoint (S3 from file://)", "http"]


@pytest.mark.parametrize("allow", [False, True], ids=["default", "allow-list"])
@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("case", FILE_CASES)
def test_file_domain(case: str, reader: str, allow: bool, tree: dict[str, Path],
                     canary: Canary, memory_secret: str, seaweedfs: Any, s3_bucket_url: str,
                     monkeypatch: pytest.MonkeyPatch) -> None:
    s3_secret = f"{s3_bucket_url}/secret.bin"
    cases = _file_cases(tree, canary, memory_secret, s3_secret)
    uri, expect, prefix = cases[case]
    if case.startswith("other endpoint"):
        # the reader's own S3 configuration (the environment) is what S3 from a file://
        # domain would use
        seaweedfs.s3_client().put_object(Bucket=s3_secret.split("/")[2],
                                         Key=s3_secret.split("/", 3)[3], Body=SECRET)
        for name, value in seaweedfs.env().items():
            monkeypatch.setenv(name, value)
    if case == "/etc/passwd" and allow:
        pytest.skip("reading the real /etc/passwd proves nothing more")
    url = (tree["root"] / "home" / "d.h5").as_uri()
    linked_domain(url, None, uri)
    check(READERS[reader], url, None, uri, expect, prefix, allow, canary)


@pytest.mark.parametrize("layout", ["H5D_CHUNKED_REF", "H5D_CHUNKED_REF_INDIRECT"])
def test_every_linked_layout_is_checked(layout: str, tree: dict[str, Path],
                                        canary: Canary) -> None:
    """The chunked layouts too, and a file_uri given per chunk in the chunk table."""
    url = (tree["root"] / "home" / "d.h5").as_uri()
    uri = tree["outside"].as_uri()
    if layout == "H5D_CHUNKED_REF":
        linked_domain(url, None, uri, layout)
    else:
        table_dtype = np.dtype(CHUNK_TABLE_DTYPE.descr + [("file_uri", "S256")])
        with h5dask.File(url, "w") as f:
            f.create_dataset("secret", shape=(N,), dtype="u1")
            table = f.create_dataset("table", data=np.array([(0, N, uri.encode())],
                                                            dtype=table_dtype))
            table_id = table.id
        with h5dask.File(url) as f:
            key = f["secret"]._meta.key
        store = open_location(url).store
        obj = json.loads(sync(store.get(key, kind="metadata")))
        linked = {"class": layout, "chunk_table": table_id, "dims": [N]}
        obj["creationProperties"].update(layout=linked, filters=[])
        obj["layout"] = linked
        sync(store.put(key, json.dumps(obj).encode(), kind="metadata"))
    with pytest.raises(LinkedReferenceRefused, match="allowed_link_prefixes"):
        read_file(url, None)
    allowed = [tree["outside"].parent.as_uri()]
    assert bytes(read_file(url, None, allowed_link_prefixes=allowed)) == SECRET


@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_bad_chunk_table_is_a_metadata_error(reader: str, tree: dict[str, Path]) -> None:
    """Errors of a linked layout reach xarray users as the same h5dask error."""
    url = (tree["root"] / "home" / "d.h5").as_uri()
    with h5dask.File(url, "w") as f:
        f.create_dataset("secret", shape=(N,), dtype="u1")
        table_id = f.create_dataset("table", data=np.zeros(1, "i8")).id  # not a compound
    with h5dask.File(url) as f:
        key = f["secret"]._meta.key
    store = open_location(url).store
    obj = json.loads(sync(store.get(key, kind="metadata")))
    linked = {"class": "H5D_CHUNKED_REF_INDIRECT", "chunk_table": table_id, "dims": [N],
              "file_uri": tree["inside"].as_uri()}
    obj["creationProperties"].update(layout=linked, filters=[])
    obj["layout"] = linked
    sync(store.put(key, json.dumps(obj).encode(), kind="metadata"))
    with pytest.raises(h5dask.MetadataError, match="offset and size") as info:
        READERS[reader](url, None)
    assert info.value.key == key


def test_an_indirect_layout_naming_no_file_is_a_metadata_error(tree: dict[str, Path]) -> None:
    """``file_uri: ""`` and a chunk table without a ``file_uri`` field: which file is it?"""
    url = (tree["root"] / "home" / "d.h5").as_uri()
    with h5dask.File(url, "w") as f:
        f.create_dataset("secret", shape=(N,), dtype="u1")
        table_id = f.create_dataset("table", data=np.array([(0, N)], CHUNK_TABLE_DTYPE)).id
    with h5dask.File(url) as f:
        key = f["secret"]._meta.key
    store = open_location(url).store
    obj = json.loads(sync(store.get(key, kind="metadata")))
    linked = {"class": "H5D_CHUNKED_REF_INDIRECT", "chunk_table": table_id, "dims": [N],
              "file_uri": ""}
    obj["creationProperties"].update(layout=linked, filters=[])
    obj["layout"] = linked
    sync(store.put(key, json.dumps(obj).encode(), kind="metadata"))
    for read in READERS.values():
        with pytest.raises(h5dask.MetadataError, match="no file_uri field"):
            read(url, None)


@pytest.mark.parametrize(("offset", "size"), [(0, 2**30), (-1, N)], ids=["1 GiB", "negative"])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_linked_chunk_claiming_more_than_a_chunk_can_take_is_refused(
        offset: int, size: int, reader: str, tree: dict[str, Path]) -> None:
    """A 108-byte chunk said to be 1 GiB of a (sparse, here; on S3 any big object of the
    endpoint) file: refused before it is fetched, not read into memory then refused."""
    big = tree["root"] / "files" / "sparse.bin"
    with open(big, "wb") as f:
        f.truncate(2**30)
    url = (tree["root"] / "home" / "d.h5").as_uri()
    linked_domain(url, None, big.as_uri(), "H5D_CHUNKED_REF")
    with h5dask.File(url) as f:
        key = f["secret"]._meta.key
    store = open_location(url).store
    obj = json.loads(sync(store.get(key, kind="metadata")))
    for layout in (obj["layout"], obj["creationProperties"]["layout"]):
        layout["chunks"] = {"0": [offset, size]}
    sync(store.put(key, json.dumps(obj).encode(), kind="metadata"))
    # raised where the references are built, before anything is read
    with pytest.raises(h5dask.MetadataError, match=r"takes at most|must be \[offset, size\]"):
        READERS[reader](url, None)


@pytest.mark.parametrize("command", [["ls"], ["info", "--path", "/secret"]])
def test_the_cli_describes_a_hostile_linked_domain_without_reading_it(
        command: list[str], tree: dict[str, Path], canary: Canary) -> None:
    """``h5dask ls`` / ``info`` show the layout; the linked file is never fetched."""
    url = (tree["root"] / "home" / "d.h5").as_uri()
    linked_domain(url, None, f"{canary.url}/secret.bin")
    before = canary.requests
    proc = subprocess.run([sys.executable, "-m", "h5dask.cli", *command, url],
                          capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert "H5D_CONTIGUOUS_REF" in proc.stdout and SECRET.decode()[:20] not in proc.stdout
    assert canary.requests == before


# -- S3 domains (SeaweedFS) -------------------------------------------------------------
S3_CASES = ["same bucket", "other bucket, same endpoint", "other bucket, HSDS bucket/key",
            "local file (a credentials file)", "absolute path", "relative ..",
            "bucket name with a host", "other scheme (memory://)", "http"]


@pytest.fixture(scope="module")
def other_bucket(seaweedfs: Any) -> str:
    seaweedfs.create_bucket(OTHER_BUCKET)
    return OTHER_BUCKET


@pytest.mark.parametrize("allow", [False, True], ids=["default", "allow-list"])
@pytest.mark.parametrize("reader", sorted(READERS))
@pytest.mark.parametrize("case", S3_CASES)
def test_s3_domain(case: str, reader: str, allow: bool, tree: dict[str, Path], canary: Canary,
                   memory_secret: str, seaweedfs: Any, s3_bucket_url: str,
                   storage_options: dict, other_bucket: str) -> None:
    prefix = s3_bucket_url.split("/", 3)[3]
    client = seaweedfs.s3_client()
    client.put_object(Bucket=other_bucket, Key=f"{prefix}/secret.bin", Body=SECRET)
    client.put_object(Bucket=s3_bucket_url.split("/")[2], Key=f"{prefix}/files/data.bin",
                      Body=SECRET)
    outside_dir = tree["outside"].parent.as_uri() + "/"
    uri, expect, allowed = {
        "same bucket": (f"{s3_bucket_url}/files/data.bin", "read", None),
        "other bucket, same endpoint": (f"s3://{other_bucket}/{prefix}/secret.bin", "read",
                                        None),
        "other bucket, HSDS bucket/key": (f"{other_bucket}/{prefix}/secret.bin", "read", None),
        "local file (a credentials file)": (tree["outside"].as_uri(), "allowable", outside_dir),
        "absolute path": (str(tree["outside"]), "allowable", outside_dir),
        "relative ..": (f"{other_bucket}/../../etc/hostname", "malformed", "file:///etc/"),
        "bucket name with a host": (f"s3://user@{canary.url[7:]}/secret.bin", "malformed",
                                    "s3://"),
        "other scheme (memory://)": (memory_secret, "allowable", f"memory://{MEMORY_DIR}/"),
        "http": (f"{canary.url}/secret.bin", "allowable", canary.url + "/"),
    }[case]
    url = f"{s3_bucket_url}/home/d.h5"
    linked_domain(url, storage_options, uri)
    check(READERS[reader], url, storage_options, uri, expect, allowed, allow, canary)


# -- the allow-list: environment, precedence, validation --------------------------------
def test_environment_variable_allows_and_an_explicit_list_overrides_it(
        tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url = (tree["root"] / "home" / "d.h5").as_uri()
    linked_domain(url, None, tree["outside"].as_uri())
    monkeypatch.setenv(ENV_VAR, f"s3://nothing/, {tree['outside'].parent.as_uri()}/")
    for read in READERS.values():
        assert bytes(read(url, None)) == SECRET
        with pytest.raises(LinkedReferenceRefused):
            read(url, None, allowed_link_prefixes=[])  # explicit: the environment is not used


@pytest.mark.parametrize("prefix", ["data/", "", "outside"])
def test_allow_list_entries_must_be_urls(prefix: str, tree: dict[str, Path]) -> None:
    url = (tree["root"] / "home" / "d.h5").as_uri()
    linked_domain(url, None, tree["outside"].as_uri())
    for read in READERS.values():
        with pytest.raises(ValueError, match="not a URL prefix"):
            read(url, None, allowed_link_prefixes=[prefix])


def test_a_prefix_allows_whole_path_segments_only(tree: dict[str, Path]) -> None:
    url = (tree["root"] / "home" / "d.h5").as_uri()
    linked_domain(url, None, tree["outside"].as_uri())
    almost = tree["outside"].parent.as_uri()[:-1]  # ".../outsid": not a parent directory
    with pytest.raises(LinkedReferenceRefused):
        read_file(url, None, allowed_link_prefixes=[almost])


# -- bad link URLs: h5dask errors, never the HTTP client's ----------------------------------
@pytest.mark.parametrize("uri", [
    "http://http://{host}/secret.bin",  # what made the client fetch before
    "http://{host}", "http:///secret.bin", "http://[::1/secret.bin", "http://127.0.0.1:99999/x",
    "http://{host}/a/../secret.bin", "http://{host}/secret.bin?x=1", "http://{host}//secret.bin",
    "nosuchscheme://{host}/secret.bin", "s3://", 17,
])
@pytest.mark.parametrize("reader", sorted(READERS))
def test_bad_link_urls_are_h5dask_errors(uri: Any, reader: str, tree: dict[str, Path],
                                         canary: Canary) -> None:
    uri = uri.format(host=canary.url[7:]) if isinstance(uri, str) else uri
    url = (tree["root"] / "home" / "d.h5").as_uri()
    linked_domain(url, None, uri)
    before = canary.requests
    allow_everything = ["http://", "nosuchscheme://", "s3://", "file:///tmp/"]
    with pytest.raises(H5DaskError) as info:
        READERS[reader](url, None, allowed_link_prefixes=allow_everything)
    assert isinstance(info.value, LinkedReferenceRefused | h5dask.MetadataError), info.value
    assert canary.requests == before


@pytest.mark.parametrize("reader", sorted(READERS))
def test_an_allowed_http_prefix_does_not_follow_redirects_out_of_it(
        reader: str, tree: dict[str, Path], canary: Canary) -> None:
    """An allowed host that redirects (an open redirect, say, to an internal service) must
    not take the reader outside the allowed prefix."""
    url = (tree["root"] / "home" / "d.h5").as_uri()
    linked_domain(url, None, f"{canary.url}/redirect/x.h5")
    before = len(canary.paths)
    with pytest.raises(StorageError, match="TooManyRedirects"):
        READERS[reader](url, None, allowed_link_prefixes=[f"{canary.url}/redirect/"])
    assert set(canary.paths[before:]) == {"/redirect/x.h5"}  # never the target


def test_an_http_store_turns_client_errors_into_storage_errors() -> None:
    # aiohttp raises NonHttpUrlClientError for a URL without a scheme
    store = FsspecObjectStore("http", "127.0.0.1:1/dir")
    with pytest.raises(StorageError, match="NonHttpUrlClientError"):
        sync(store.get("x.h5", byte_range=(0, 4)))


# -- h5dask load --link: the same rule, before anything is written ------------------------
@pytest.fixture
def outside_h5(tmp_path: Path) -> Path:
    import h5py

    path = tmp_path / "outside" / "data.h5"
    path.parent.mkdir(exist_ok=True)
    with h5py.File(path, "w") as h:
        h.create_dataset("x", data=np.arange(100.0), chunks=(10,))
    return path


def test_load_link_refuses_a_file_readers_would_refuse(tree: dict[str, Path],
                                                       outside_h5: Path) -> None:
    url = (tree["root"] / "home" / "linked.h5").as_uri()
    with pytest.raises(LinkedReferenceRefused, match=ENV_VAR):
        load_file(outside_h5, url, link=True, progress=False)
    with pytest.raises(DomainNotFoundError):
        h5dask.File(url)  # nothing was written

    allowed = [outside_h5.parent.as_uri() + "/"]
    load_file(outside_h5, url, link=True, progress=False, allowed_link_prefixes=allowed)
    with h5dask.File(url) as f, pytest.raises(LinkedReferenceRefused):
        f["x"][()]
    with h5dask.File(url, allowed_link_prefixes=allowed) as f:
        np.testing.assert_array_equal(f["x"][()], np.arange(100.0))


def test_load_link_of_a_local_file_into_s3_is_refused(outside_h5: Path, s3_bucket_url: str,
                                                      storage_options: dict) -> None:
    url = f"{s3_bucket_url}/home/linked.h5"
    with pytest.raises(LinkedReferenceRefused, match="outside the domain's store"):
        load_file(outside_h5, url, link=True, progress=False, storage_options=storage_options)
    with pytest.raises(DomainNotFoundError):
        h5dask.File(url, storage_options=storage_options)


# -- a linked file that is gone: an error, never fill values --------------------------------
@pytest.mark.parametrize("reader", sorted(READERS))
def test_a_missing_linked_file_is_an_error_not_fill_values(reader: str,
                                                           tree: dict[str, Path]) -> None:
    url = (tree["root"] / "home" / "d.h5").as_uri()
    linked_domain(url, None, (tree["root"] / "files" / "gone.h5").as_uri())
    with pytest.raises(StorageError, match="gone.h5.*does not exist"):
        READERS[reader](url, None)
