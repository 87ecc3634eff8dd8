"""Opening from S3 with a consolidated object that carries the metadata objects' JSON:
one LIST of the domain's keys checks every body by its ETag (the MD5 of its bytes), so a
first open costs two GETs, one LIST and the coordinates' chunks, and a body whose object
changed since is never used."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask.domain import forget_opened_domains
from h5dask.errors import StorageError, StoragePermissionError
from h5dask.format import consolidated
from h5dask.storage import open_location
from h5dask.storage.s3 import S3ObjectStore
from h5dask.storage.sync import sync
from h5dask.xarray.backend import H5CloudStore

NVARS = 6


def _dataset() -> xr.Dataset:
    rng = np.random.default_rng(5)
    coords = {"time": np.arange(5.0), "lat": np.linspace(-80, 80, 7), "lon": np.arange(9.0)}
    return xr.Dataset({f"v{i}": (("time", "lat", "lon"), rng.random((5, 7, 9), dtype="f4"),
                                 {"units": "K", "long_name": f"variable {i}"})
                       for i in range(NVARS)}, coords=coords, attrs={"title": "listing"})


@pytest.fixture
def domain(s3_bucket_url, storage_options):
    url = f"{s3_bucket_url}/home/open.h5"
    ds = _dataset()
    h5dask.to_h5cloud(ds, url, storage_options=storage_options)
    forget_opened_domains()  # each test's first open is a first open
    yield url, ds, storage_options
    # the store instance is the process's for this bucket: listing back on for the next
    open_location(url, storage_options).store.__dict__.pop("content_md5_listing", None)


def _open(url, so):
    return xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=so)


def _summary(url, so) -> tuple[str, consolidated.Consolidated]:
    location = open_location(url, so)
    key = f"{location.domain}/{consolidated.NAME}"
    root = json.loads(sync(location.store.get(location.domain_key)))["root"]
    summary = consolidated.parse(sync(location.store.get(key)), root)
    assert summary is not None
    return key, summary


def test_first_open_lists_instead_of_fetching_each_object(domain):
    url, want, so = domain
    _, summary = _summary(url, so)
    assert len(summary.bodies) == NVARS + 4  # the variables, 3 coordinates, the root group
    h5dask.reset_stats()
    got = _open(url, so)
    meta = h5dask.stats()["metadata"]
    # .domain.json and the consolidated object, then one LIST: no GET per object
    assert (meta["read_requests"], meta["list_requests"]) == (2, 1), meta
    assert h5dask.stats()["chunk"]["read_requests"] == 3  # the coordinates, at open
    xr.testing.assert_identical(got.load(), want)
    assert H5CloudStore.open(url, storage_options=so).session.consolidated_state == "used"


def test_reopen_lists_in_its_first_round_trip(domain):
    url, want, so = domain
    _open(url, so)
    h5dask.reset_stats()
    got = _open(url, so)
    meta = h5dask.stats()["metadata"]
    assert (meta["read_requests"], meta["list_requests"]) == (2, 1), meta
    xr.testing.assert_identical(got.load(), want)


def _write_unaware(url, so, key):
    """Change the domain as HSDS (or an older h5dask) would: the summary stays as it was."""
    location = open_location(url, so)
    old = sync(location.store.get(key))
    with h5dask.File(url, "r+", storage_options=so) as f:
        f["v0"].attrs["units"] = "degC"
        f["lat"][...] = np.arange(7.0)
        f.create_dataset("added", data=np.arange(3.0))
        del f["v5"]
    sync(location.store.put(key, old))


@pytest.mark.parametrize("remembered", [False, True])
def test_a_body_whose_object_changed_is_never_used(domain, remembered):
    url, want, so = domain
    key, _ = _summary(url, so)
    if remembered:
        _open(url, so).load()
    _write_unaware(url, so, key)
    h5dask.reset_stats()
    got = _open(url, so)
    assert h5dask.stats()["metadata"]["list_requests"] == 1  # the bodies were checked
    assert got["v0"].attrs["units"] == "degC"  # the object as it is, not its old body
    np.testing.assert_array_equal(got["lat"].values, np.arange(7.0))
    np.testing.assert_array_equal(got["added"].values, np.arange(3.0))
    assert "v5" not in got
    np.testing.assert_array_equal(got["v1"].values, want["v1"].values)
    assert H5CloudStore.open(url, storage_options=so).session.consolidated_state == "stale"


def test_etags_that_are_not_content_md5s_fall_back_to_fetching(domain, monkeypatch):
    """SSE-KMS objects (and some stores) have ETags that are not their MD5: nothing
    matches, the objects are fetched and checked by their SHA-256, and the store is not
    listed again."""
    url, want, so = domain
    real = S3ObjectStore._list_md5

    async def other_etags(self, prefix, limit):
        return {k: "0" * 32 for k in await real(self, prefix, limit)}

    monkeypatch.setattr(S3ObjectStore, "_list_md5", other_etags)
    h5dask.reset_stats()
    got = _open(url, so)
    xr.testing.assert_identical(got.load(), want)
    assert h5dask.stats()["metadata"]["read_requests"] == 2 + NVARS + 4
    assert H5CloudStore.open(url, storage_options=so).session.consolidated_state == "used"
    h5dask.reset_stats()
    forget_opened_domains()
    _open(url, so)
    assert h5dask.stats()["metadata"]["list_requests"] == 0


@pytest.mark.parametrize("error", [StoragePermissionError("LIST refused: AccessDenied"),
                                   StorageError("LIST failed after 3 attempts")])
def test_a_listing_refused_or_failed_falls_back_to_fetching(domain, monkeypatch, error):
    """A public bucket often allows GetObject and not ListBucket: the open still works."""
    url, want, so = domain

    async def refused(self, prefix, limit):
        raise error

    monkeypatch.setattr(S3ObjectStore, "_list_md5", refused)
    h5dask.reset_stats()
    got = _open(url, so)
    assert h5dask.stats()["metadata"]["read_requests"] == 2 + NVARS + 4
    xr.testing.assert_identical(got.load(), want)
    listing = open_location(url, so).store.content_md5_listing
    assert listing is not isinstance(error, StoragePermissionError)


def test_a_domain_too_large_for_one_listing_has_no_bodies(s3_bucket_url, storage_options):
    url = f"{s3_bucket_url}/home/many.h5"
    ds = xr.Dataset({"v": ("x", np.arange(float(consolidated.LIST_PAGE + 1)))})
    h5dask.to_h5cloud(ds, url, storage_options=storage_options,
                      encoding={"v": {"chunksizes": (1,)}})
    _, summary = _summary(url, storage_options)
    assert summary.bodies == {} and summary.objects  # hashes only: objects fetched
    forget_opened_domains()
    h5dask.reset_stats()
    got = _open(url, storage_options)
    assert h5dask.stats()["metadata"]["list_requests"] == 0
    xr.testing.assert_identical(got.load(), ds)


@pytest.mark.parametrize("groups", [2, 24])
def test_opening_a_tree_costs_the_same_round_trips_for_2_or_24_groups(
        s3_bucket_url, storage_options, groups):
    """User asks 2 and 6 (a round trip per object; "unusably slow" without consolidated
    metadata): open_datatree of a domain of many groups and variables is two GETs and
    one LIST however many objects it has, and reads the values written."""
    url = f"{s3_bucket_url}/tree.h5"
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        for g in range(groups):
            for v in range(3):
                f.create_dataset(f"g{g}/v{v}", data=np.arange(4.0) * g)
    forget_opened_domains()
    h5dask.reset_stats()
    tree = xr.open_datatree(url, engine="h5cloud", chunks={}, storage_options=storage_options)
    meta = h5dask.stats()["metadata"]
    assert (meta["read_requests"], meta["list_requests"]) == (2, 1), meta
    assert len(tree.children) == groups
    np.testing.assert_array_equal(tree[f"g{groups - 1}"]["v2"].values,
                                  np.arange(4.0) * (groups - 1))
