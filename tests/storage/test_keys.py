"""Object keys and domain paths never escape the bucket root."""

from __future__ import annotations

import os
import uuid

import pytest

import h5dask
from h5dask.errors import InvalidKeyError
from h5dask.storage import open_location, sync
from h5dask.storage.keys import check_key, check_prefix
from h5dask.storage.local import LocalObjectStore


@pytest.mark.parametrize("key", [
    "db/01234567-89abcdef/.group.json", "home/u/x.h5/.domain.json", "a", "a/b_c/0_1_2",
    "dir with space/x", "ünïcode/k", "a/..b/c..", "...",
])
def test_good_keys(key: str) -> None:
    assert check_key(key) == key


@pytest.mark.parametrize("key", [
    "", "/abs/key", "/", "..", "../x", "a/../../x", "a/..", "./a", "a/./b", "a//b", "a/",
    "a\\..\\b", "nul\x00byte", None, b"bytes",
])
def test_bad_keys(key: object) -> None:
    with pytest.raises(InvalidKeyError):
        check_key(key)  # type: ignore[arg-type]


def test_prefixes() -> None:
    assert check_prefix("") == ""
    assert check_prefix("db/") == "db/"
    for bad in ("../", "/db/", "a/../"):
        with pytest.raises(InvalidKeyError):
            check_prefix(bad)


@pytest.mark.parametrize("url", [
    "s3://bucket/../x.h5", "s3://bucket/home/../../x.h5", "s3://bucket/./x.h5",
    "memory://bucket/../x.h5", "memory://../x.h5", "memory://b/home/./x.h5",
    "file:///tmp/root/../etc/x.h5", "file:///tmp/a/./x.h5", "s3://bucket/", "s3://bucket",
    "s3:///home/x.h5",
])
def test_domain_urls_refused(url: str) -> None:
    with pytest.raises(ValueError):
        open_location(url, {"anon": True} if url.startswith("s3") else None)


def test_file_domain_outside_bucket_root(tmp_path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(ValueError, match="not inside bucket_root"):
        open_location(f"{tmp_path}/elsewhere/x.h5", {"bucket_root": str(root)})
    with pytest.raises(ValueError, match="not inside bucket_root"):
        h5dask.File(f"{root}/../x.h5", "w", storage_options={"bucket_root": str(root)})
    assert not (tmp_path / "x.h5").exists()


@pytest.mark.parametrize("key", ["../escaped", "a/../../escaped", "/tmp/escaped"])
def test_store_calls_refuse_bad_keys(tmp_path, key: str) -> None:
    root = tmp_path / "bucket"
    root.mkdir()
    store = LocalObjectStore(str(root))
    for call in (store.get(key), store.put(key, b"x"), store.delete(key)):
        with pytest.raises(InvalidKeyError):
            sync(call)
    mem = open_location(f"memory://{uuid.uuid4().hex}/d.h5").store
    with pytest.raises(InvalidKeyError):
        sync(mem.put(key, b"x"))
    with pytest.raises(InvalidKeyError):
        sync(mem.list(key))
    assert sorted(os.listdir(tmp_path)) == ["bucket"]
    assert not os.path.exists("/tmp/escaped")


def test_symlink_out_of_the_root_is_refused(tmp_path) -> None:
    root, outside = tmp_path / "bucket", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    os.symlink(outside, root / "db")
    store = LocalObjectStore(str(root))
    with pytest.raises(InvalidKeyError, match="outside"):
        sync(store.get("db/secret"))
    with pytest.raises(InvalidKeyError, match="outside"):
        sync(store.put("db/new", b"x"))
    assert sorted(os.listdir(outside)) == ["secret"]


def test_external_link_cannot_escape(tmp_path) -> None:
    url = f"file://{tmp_path}/bucket/a.h5"
    with h5dask.File(url, "w") as f:
        f["evil"] = h5dask.ExternalLink("../../outside.h5", "/x")
        f["abs"] = h5dask.ExternalLink("home/../../../etc.h5", "/x")
    (tmp_path / "outside.h5").mkdir()
    (tmp_path / "outside.h5" / ".domain.json").write_text('{"root": "g-nope"}')
    with h5dask.File(url) as f:
        for name in ("evil", "abs"):
            with pytest.raises(InvalidKeyError):
                f[name]
