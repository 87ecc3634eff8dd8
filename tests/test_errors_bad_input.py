"""Bad input, each path with a test: missing domains, refused credentials, corrupt chunks,
malformed or schema-violating metadata, unknown filters and types, escaping paths."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest
from storage_backends import BACKENDS, Backend, make_backend

import h5dask
from h5dask.errors import (
    CorruptChunkError,
    DomainNotFoundError,
    InvalidKeyError,
    MetadataError,
    StoragePermissionError,
    UnsupportedFilterError,
    UnsupportedTypeError,
)
from h5dask.storage import sync


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Backend:
    return make_backend(request, tmp_path)


def _write(backend: Backend, name: str = "bad.h5", **kwargs: object) -> tuple[str, dict]:
    """A small domain; returns its URL and the keys of its objects."""
    url = backend.url(name)
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        ds = f.create_dataset("g/x", data=np.arange(24, dtype="<i4").reshape(4, 6),
                              chunks=(2, 3), **kwargs)
        keys = {"domain": f"{backend.domain(name)}/.domain.json",
                "root": f._meta.key, "group": f["g"]._meta.key, "dataset": ds._meta.key,
                "chunk": ds.source().chunk_key((1, 1))}
    return url, keys


def _edit(backend: Backend, key: str, change: Callable[[dict], object]) -> None:
    store = backend.store()
    obj = json.loads(sync(store.get(key)))
    change(obj)
    sync(store.put(key, json.dumps(obj).encode()))


# -- missing domains and refused credentials -----------------------------------------------
def test_missing_domain(backend: Backend) -> None:
    url = backend.url("nothing/here.h5")
    for mode in ("r", "r+"):
        with pytest.raises(FileNotFoundError) as err:
            h5dask.File(url, mode, storage_options=backend.options)
        assert isinstance(err.value, DomainNotFoundError)
        assert "nothing/here.h5" in str(err.value) and err.value.url.endswith("here.h5")


def test_folder_is_not_a_domain(backend: Backend) -> None:
    store = backend.store()
    folder = backend.domain("folder")
    sync(store.put(f"{folder}/.domain.json", b'{"owner": "admin", "acls": {}}'))
    with pytest.raises(DomainNotFoundError, match="folder, not a domain"):
        h5dask.File(backend.url("folder"), storage_options=backend.options)


def test_wrong_credentials(storage_options: dict, s3_bucket_url: str) -> None:
    url = f"{s3_bucket_url}/creds.h5"
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        f.create_dataset("x", data=np.arange(3))
    bad = {**storage_options, "secret": "wrong-secret"}
    for mode in ("r", "a", "w"):
        with pytest.raises(PermissionError) as err:
            h5dask.File(url, mode, storage_options=bad)
        assert isinstance(err.value, StoragePermissionError)
        assert "creds.h5/.domain.json" in str(err.value)
        assert "wrong-secret" not in str(err.value)
    # a missing domain behind wrong credentials is refused too, not "not found"
    with pytest.raises(PermissionError):
        h5dask.File(f"{s3_bucket_url}/absent.h5", storage_options=bad)


# -- corrupt chunks --------------------------------------------------------------------------
DAMAGE = {
    "garbage": lambda good: b"\x13\x37" * 40,
    "truncated": lambda good: good[: len(good) // 2],
    "one_byte_short": lambda good: good[:-1],
    "extended": lambda good: good + b"\x00\x00\x00\x00",
    "empty": lambda good: b"",
}
FILTERS = {"none": {}, "gzip": {"compression": "gzip"},
           "gzip_shuffle": {"compression": "gzip", "shuffle": True},
           "lz4": {"compression": "lz4"}, "shuffle": {"shuffle": True}}


@pytest.mark.parametrize("damage", list(DAMAGE))
@pytest.mark.parametrize("kind, filters", [  # the codec does not depend on the back end
    *(("memory", f) for f in FILTERS), ("file", "none"), ("file", "gzip"), ("s3", "none"),
    ("s3", "gzip")])
def test_corrupt_chunk(request, tmp_path, kind: str, filters: str, damage: str) -> None:
    backend = make_backend(request, tmp_path, kind)
    url, keys = _write(backend, f"corrupt_{filters}_{damage}.h5", **FILTERS[filters])
    store = backend.store()
    good = sync(store.get(keys["chunk"]))
    sync(store.put(keys["chunk"], DAMAGE[damage](good)))
    with h5dask.File(url, "r+", storage_options=backend.options) as f:
        ds = f["g/x"]
        with pytest.raises(CorruptChunkError) as err:
            ds[...]
        assert err.value.key == keys["chunk"] and keys["chunk"] in str(err.value)
        with pytest.raises(CorruptChunkError):
            ds[2:4, 3:6]  # exactly the damaged chunk
        np.testing.assert_array_equal(ds[0:2, :], np.arange(12).reshape(2, 6))  # others fine
        with pytest.raises(CorruptChunkError):
            ds[3, 4] = 1  # a partial write must not merge into garbage


def test_corrupt_vlen_chunk(backend: Backend) -> None:
    url = backend.url("vlen.h5")
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        ds = f.create_dataset("s", data=np.array(["a", "bb", "ccc", "dddd"], dtype=object),
                              chunks=(2,))
        key = ds.source().chunk_key((1,))
    store = backend.store()
    good = sync(store.get(key))
    for bad in (good[:-1], good + b"x", b"\xff\xff\xff\xff" + good[4:]):
        sync(store.put(key, bad))
        with h5dask.File(url, storage_options=backend.options) as f:
            with pytest.raises(CorruptChunkError, match=key):
                f["s"][...]


# -- malformed and schema-violating metadata -------------------------------------------------
@pytest.mark.parametrize("which, raw", [
    ("domain", b"{not json"), ("domain", b"[]"), ("domain", b'{"root": "g-nope"}'),
    ("root", b"\x00\xff garbage"), ("root", b'"a string"'),
])
def test_malformed_json_at_open(backend: Backend, which: str, raw: bytes) -> None:
    url, keys = _write(backend, f"open_{which}_{abs(hash(raw))}.h5")
    sync(backend.store().put(keys[which], raw))
    with pytest.raises(MetadataError) as err:
        h5dask.File(url, storage_options=backend.options)
    assert err.value.key == keys[which] and keys[which] in str(err.value)
    assert err.value.problem


VIOLATIONS = {
    "dataset_not_json": ("dataset", None, "not valid JSON"),
    "dataset_missing_id": ("dataset", lambda o: o.pop("id"), "'id' is None"),
    "dataset_other_id": ("dataset", lambda o: o.update(
        id=o["id"][:-6] + "abcdef"), "expected"),
    "dataset_bad_shape": ("dataset", lambda o: o.update(
        shape={"class": "H5S_SIMPLE", "dims": [4, "six"]}), "shape"),
    "dataset_bad_maxdims": ("dataset", lambda o: o["shape"].update(maxdims=[1, 6]),
                            "maxdims"),
    "dataset_no_type": ("dataset", lambda o: o.pop("type"), "no 'type'"),
    "dataset_bad_layout_dims": ("dataset", lambda o: o["creationProperties"].update(
        layout={"class": "H5D_CHUNKED", "dims": [2]}), "layout dims"),
    "dataset_layout_class": ("dataset", lambda o: o["creationProperties"].update(
        layout={"class": "H5D_VIRTUAL"}), "layout"),
    "dataset_bad_attribute": ("dataset", lambda o: o.update(
        attributes={"a": {"shape": {"class": "H5S_SCALAR"}}}), "attribute 'a'"),
    "group_bad_link": ("group", lambda o: o["links"].update(
        x={"class": "H5L_TYPE_HARD", "id": "d-not-an-id"}), "hard link 'x'"),
    "group_link_class": ("group", lambda o: o["links"].update(
        x={"class": "H5L_TYPE_MYSTERY"}), "unknown class"),
    "group_links_list": ("group", lambda o: o.update(links=[1, 2]), "'links' must be"),
    "group_missing_id": ("group", lambda o: o.pop("id"), "'id' is None"),
}


@pytest.mark.parametrize("kind, case", [  # parsing does not depend on the back end
    *(("memory", c) for c in VIOLATIONS),
    *((k, c) for k in ("file", "s3") for c in ("dataset_not_json", "dataset_bad_layout_dims",
                                                "group_bad_link"))])
def test_schema_violations(request, tmp_path, kind: str, case: str) -> None:
    backend = make_backend(request, tmp_path, kind)
    which, change, problem = VIOLATIONS[case]
    url, keys = _write(backend, f"{case}.h5")
    if change is None:
        sync(backend.store().put(keys[which], b'{"id": "d-...", '))
    else:
        _edit(backend, keys[which], change)
    with h5dask.File(url, storage_options=backend.options) as f:
        with pytest.raises(MetadataError, match=problem) as err:
            f["g/x"].shape  # noqa: B018
    assert err.value.key == keys[which] and keys[which] in str(err.value)


def test_linked_object_missing(backend: Backend) -> None:
    url, keys = _write(backend, "dangling.h5")
    sync(backend.store().delete(keys["dataset"]))
    with h5dask.File(url, storage_options=backend.options) as f:
        with pytest.raises(MetadataError, match="does not exist") as err:
            f["g/x"].dtype  # noqa: B018
    assert err.value.key == keys["dataset"]


def test_bad_attribute_value(backend: Backend) -> None:
    url, keys = _write(backend, "attr.h5")
    _edit(backend, keys["dataset"], lambda o: o.update(attributes={"a": {
        "type": {"class": "H5T_INTEGER", "base": "H5T_STD_I32LE"},
        "shape": {"class": "H5S_SIMPLE", "dims": [3]}, "value": [1, "two", 3]}}))
    with h5dask.File(url, storage_options=backend.options) as f:
        with pytest.raises(MetadataError, match="attribute 'a'") as err:
            f["g/x"].attrs["a"]
    assert err.value.key == keys["dataset"]


def test_unknown_filter(backend: Backend) -> None:
    url, keys = _write(backend, "filter.h5")
    _edit(backend, keys["dataset"], lambda o: o["creationProperties"].update(filters=[
        {"class": "H5Z_FILTER_DEFLATE", "id": 1, "level": 4},
        {"class": "H5Z_FILTER_SUPERZIP", "id": 40123, "name": "superzip"}]))
    with h5dask.File(url, storage_options=backend.options) as f:
        with pytest.raises(UnsupportedFilterError, match="superzip") as err:
            f["g/x"][...]
    assert keys["dataset"] in str(err.value)
    _edit(backend, keys["dataset"], lambda o: o["creationProperties"].update(filters=[
        {"class": "H5Z_FILTER_SZIP", "id": 4}]))
    with h5dask.File(url, storage_options=backend.options) as f:
        with pytest.raises(UnsupportedFilterError, match="szip"):
            f["g/x"].dtype  # noqa: B018


def test_unsupported_type(backend: Backend) -> None:
    url, keys = _write(backend, "type.h5")
    _edit(backend, keys["dataset"], lambda o: o.update(type={"class": "H5T_TIME"}))
    with h5dask.File(url, storage_options=backend.options) as f:
        with pytest.raises(UnsupportedTypeError, match="H5T_TIME") as err:
            f["g/x"].dtype  # noqa: B018
    assert keys["dataset"] in str(err.value)


def test_missing_member_names_it(backend: Backend) -> None:
    url, _ = _write(backend, "member.h5")
    with h5dask.File(url, storage_options=backend.options) as f:
        with pytest.raises(KeyError, match="'nope'"):
            f["g/nope"]
        with pytest.raises(KeyError):
            f["g/x/deeper"]


# -- paths that would leave the bucket root ----------------------------------------------------
@pytest.mark.parametrize("name", ["../escape.h5", "a/../../escape.h5", "./x.h5"])
def test_domain_paths_with_dot_segments(backend: Backend, name: str) -> None:
    with pytest.raises(ValueError):
        h5dask.File(backend.url(name), "w", storage_options=backend.options)


def test_external_link_outside_the_bucket(backend: Backend) -> None:
    url = backend.url("ext.h5")
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        f["out"] = h5dask.ExternalLink("../../../etc/passwd", "/x")
    with h5dask.File(url, storage_options=backend.options) as f:
        with pytest.raises(InvalidKeyError, match=r"\.\."):
            f["out"]


def test_mode_w_replaces_a_broken_domain(backend: Backend) -> None:
    url, keys = _write(backend, "broken.h5")
    sync(backend.store().put(keys["domain"], b"{broken"))
    for mode in ("r+", "a"):
        with pytest.raises(MetadataError, match="not valid JSON"):
            h5dask.File(url, mode, storage_options=backend.options)
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        f.attrs["fixed"] = True
    with h5dask.File(url, storage_options=backend.options) as f:
        assert f.attrs["fixed"] and list(f) == []
