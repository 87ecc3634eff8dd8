"""``ObjectStore.stat``: an object's size and a version tag that changes whenever it is
written, even to the same size (what a linked layout records of its file, see
:mod:`h5dask.linked_files`), on memory://, file:// and S3 (SeaweedFS)."""

from __future__ import annotations

import pytest
from storage_backends import BACKENDS, Backend, make_backend

import h5dask
from h5dask.errors import ObjectChangedError
from h5dask.storage.sync import sync


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Backend:
    return make_backend(request, tmp_path)


def test_stat_tells_a_rewrite_of_the_same_size(backend: Backend) -> None:
    store = backend.store()
    sync(store.put("files/x.h5", b"a" * 100))
    h5dask.reset_stats()
    first = sync(store.stat("files/x.h5"))
    assert h5dask.stats()["metadata"]["read_requests"] == 1  # one HEAD
    assert first is not None and first.size == 100 and first.tag
    assert sync(store.stat("files/x.h5")) == first  # not written: the same version
    sync(store.put("files/x.h5", b"b" * 100))
    second = sync(store.stat("files/x.h5"))
    assert second is not None and second.size == 100 and second.tag != first.tag
    assert sync(store.size("files/x.h5")) == 100
    assert sync(store.stat("files/none.h5")) is None


def test_a_read_of_a_version_refuses_another(backend: Backend) -> None:
    """``get_buffer(..., version=)``: the range of that version of the object, in one
    request; once the object is written again (here to the same size), S3 answers 412
    to If-Match and a local file's fstat shows it: ObjectChangedError naming the object,
    not the new bytes. memory:// cannot tell (``verifies_versions`` False): read as is."""
    store = backend.store()
    sync(store.put("files/x.h5", b"a" * 100))
    first = sync(store.stat("files/x.h5"))
    assert first is not None
    h5dask.reset_stats()
    for got in (sync(store.get_buffer("files/x.h5", byte_range=(10, 20), version=first)),
                store.get_buffer_sync("files/x.h5", byte_range=(10, 20), version=first)):
        assert bytes(got) == b"a" * 10
    assert h5dask.stats()["chunk"]["read_requests"] == 2  # no request besides the GETs
    assert h5dask.stats()["metadata"]["read_requests"] == 0

    sync(store.put("files/x.h5", b"b" * 100))
    read = (lambda: sync(store.get_buffer("files/x.h5", byte_range=(10, 20), version=first)),
            lambda: store.get_buffer_sync("files/x.h5", byte_range=(10, 20), version=first))
    for get in read:
        if not store.verifies_versions:
            assert bytes(get()) == b"b" * 10
            continue
        with pytest.raises(ObjectChangedError, match=r"files/x\.h5 was written since"):
            get()
    second = sync(store.stat("files/x.h5"))
    assert bytes(store.get_buffer_sync("files/x.h5", byte_range=(0, 3), version=second)) \
        == b"bbb"
    assert store.verifies_versions == (backend.kind != "memory")


def test_an_http_read_of_a_version_sends_if_match(seaweedfs, s3_bucket_url,
                                                  storage_options) -> None:
    """http(s) (a linked file an allowed prefix reaches): the read of a version sends
    If-Match with its ETag; SeaweedFS's filer (plain HTTP, ranged GETs, ETags) answers
    412 once the object was written again, and that is ObjectChangedError."""
    from urllib.parse import urlsplit

    from h5dask.storage import open_location
    from h5dask.storage.fsspec_store import FsspecObjectStore

    s3 = open_location(f"{s3_bucket_url}/any.h5", storage_options).store
    prefix = urlsplit(s3_bucket_url).path.strip("/")
    sync(s3.put(f"{prefix}/x.h5", b"a" * 100))
    # the filer listens on the S3 port + 3 (h5dask/services/seaweedfs.py)
    filer = f"http://127.0.0.1:{urlsplit(seaweedfs.endpoint).port + 3}"
    http = FsspecObjectStore("http", f"{filer}/buckets/{urlsplit(s3_bucket_url).netloc}")
    assert http.verifies_versions
    first = sync(http.stat(f"{prefix}/x.h5"))
    assert first is not None and "ETag=" in (first.tag or "")
    assert bytes(http.get_buffer_sync(f"{prefix}/x.h5", byte_range=(1, 4), version=first)) \
        == b"aaa"
    sync(s3.put(f"{prefix}/x.h5", b"b" * 100))
    with pytest.raises(ObjectChangedError, match=r"x\.h5 was written since.*412"):
        http.get_buffer_sync(f"{prefix}/x.h5", byte_range=(1, 4), version=first)


def test_a_read_of_a_version_does_not_follow_a_symlink_swapped_in(tmp_path) -> None:
    """A local read of a version reaches the file as every read does (one component at a
    time, O_NOFOLLOW): a symlink out of the root swapped in after the key was checked
    is refused, not followed."""
    import os
    from pathlib import Path

    from h5dask.errors import InvalidKeyError
    from h5dask.storage.local import LocalObjectStore

    root = tmp_path / "bucket"
    (root / "files").mkdir(parents=True)
    (tmp_path / "secret").write_bytes(b"secret")
    (root / "files" / "x.h5").write_bytes(b"inside")

    class Raced(LocalObjectStore):
        def _path(self, key: str) -> Path:
            path = super()._path(key)
            swap = path.with_name(".swap")
            swap.symlink_to(tmp_path / "secret")
            os.replace(swap, path)
            return path

    version = sync(LocalObjectStore(str(root)).stat("files/x.h5"))
    assert version is not None
    with pytest.raises(InvalidKeyError, match="became a symlink"):
        Raced(str(root))._read_version("files/x.h5", (0, 6), version)


def test_an_answer_with_another_etag_is_refused_even_if_if_match_was_ignored() -> None:
    """SeaweedFS honours If-Match (412, above); a server that ignored it would answer
    the new bytes with their own ETag, which is compared too (no request: the check of
    an answer's metadata)."""
    from h5dask.storage.base import ObjectVersion
    from h5dask.storage.s3 import S3ObjectStore
    from h5dask.storage.s3_options import S3Settings

    store = S3ObjectStore("b", S3Settings(endpoint="http://127.0.0.1:9"))
    version = ObjectVersion(100, "etag=abc")
    store._same_etag("x.h5", version, {"e_tag": '"abc"'})  # the version asked for
    with pytest.raises(ObjectChangedError, match=r"s3://b/x\.h5 was written since.*def"):
        store._same_etag("x.h5", version, {"e_tag": '"def"'})
