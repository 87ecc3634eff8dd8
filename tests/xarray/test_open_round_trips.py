"""Opening a dataset: few sequential round trips (the metadata objects at once, the
coordinates' chunks with them), and a consolidated object that is never trusted when
stale."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask.format import consolidated
from h5dask.storage import open_location
from h5dask.storage.sync import sync
from h5dask.xarray.backend import H5CloudStore

LATENCY = 0.05  # simulated time to first byte, so that each wave of GETs overlaps


def _dataset(nvars: int = 6) -> xr.Dataset:
    rng = np.random.default_rng(3)
    coords = {"time": np.arange(5.0), "lat": np.linspace(-80, 80, 7), "lon": np.arange(9.0)}
    return xr.Dataset({f"v{i}": (("time", "lat", "lon"), rng.random((5, 7, 9), dtype="f4"),
                                 {"units": "K"}) for i in range(nvars)}, coords=coords)


@pytest.fixture
def domain(tmp_path):
    url = f"file://{tmp_path}/home/open.h5"
    ds = _dataset()
    h5dask.to_h5cloud(ds, url)
    return url, ds


@pytest.fixture
def round_trips(monkeypatch):
    """Depth of the chain of GETs each waiting for an earlier one: every GET is delayed by
    LATENCY; a GET started after others completed is one round trip deeper than them."""
    from h5dask.storage.local import LocalObjectStore

    lock = threading.Lock()
    done_depths: list[int] = []
    depths: list[int] = []
    real_get = LocalObjectStore._get

    async def slow_get(self, key, byte_range):
        with lock:
            depth = 1 + max(done_depths, default=0)
            depths.append(depth)
        await asyncio.sleep(LATENCY)
        try:
            return await real_get(self, key, byte_range)
        finally:
            with lock:
                done_depths.append(depth)

    monkeypatch.setattr(LocalObjectStore, "_get", slow_get)
    monkeypatch.setattr(LocalObjectStore, "_blocking_get", lambda self: None)

    def reset():
        depths.clear()
        done_depths.clear()

    return depths, reset


def _open(url):
    return xr.open_dataset(url, engine="h5cloud", chunks={})


def test_consolidated_open_is_two_round_trips(domain, round_trips):
    url, want = domain
    depths, reset = round_trips
    reset()
    got = _open(url)
    # 1: .domain.json and the consolidated object; 2: every metadata object and the
    # coordinates' chunks; xarray's reads of the coordinates then take those
    assert max(depths) == 2, depths
    xr.testing.assert_identical(got.load(), want)


def test_without_consolidated_coordinates_come_in_one_round_trip(domain, round_trips):
    url, want = domain
    location = open_location(url)
    sync(location.store.delete(f"{location.domain}/{consolidated.NAME}"))
    depths, reset = round_trips
    reset()
    got = _open(url)
    # domain, root group, datasets, then all the coordinates' chunks at once
    # (not one round trip per coordinate)
    assert max(depths) == 4, depths
    xr.testing.assert_identical(got.load(), want)


def test_consolidated_state_of_a_fresh_domain_is_used(domain):
    url, _ = domain
    assert H5CloudStore.open(url).session.consolidated_state == "used"


def test_stale_consolidated_after_an_unaware_writer_is_detected(domain):
    """An older h5dask (or HSDS) changes the domain and leaves the summary as it was."""
    url, want = domain
    location = open_location(url)
    key = f"{location.domain}/{consolidated.NAME}"
    old_summary = sync(location.store.get(key))
    with h5dask.File(url, "r+") as f:
        f["v0"].attrs["units"] = "degC"
        f.create_dataset("added", data=np.arange(3.0))
    sync(location.store.put(key, old_summary))  # as if the writer knew nothing of it

    store = H5CloudStore.open(url)
    assert store.session.consolidated_state == "stale"
    got = _open(url)
    assert got["v0"].attrs["units"] == "degC"  # the object as it is, not as summarised
    np.testing.assert_array_equal(got["added"].values, np.arange(3.0))
    np.testing.assert_array_equal(got["v1"].values, want["v1"].values)


def test_deleted_object_makes_the_summary_stale(domain):
    url, want = domain
    location = open_location(url)
    key = f"{location.domain}/{consolidated.NAME}"
    old_summary = sync(location.store.get(key))
    with h5dask.File(url, "r+") as f:
        del f["v5"]
    sync(location.store.put(key, old_summary))
    assert H5CloudStore.open(url).session.consolidated_state == "stale"
    got = _open(url)
    assert "v5" not in got and "v4" in got


@pytest.mark.parametrize("bad", [b"not json", b'{"h5dask_consolidated": 99}',
                                 b'{"h5dask_consolidated": 1, "root": "g-other", "objects": {}}',
                                 b'{"h5dask_consolidated": 1, "root": null, "objects": []}'])
def test_unusable_consolidated_object_is_ignored(domain, bad):
    url, want = domain
    location = open_location(url)
    sync(location.store.put(f"{location.domain}/{consolidated.NAME}", bad))
    assert H5CloudStore.open(url).session.consolidated_state == "absent"
    xr.testing.assert_identical(_open(url).load(), want)


def test_writing_refreshes_the_summary(domain):
    url, _ = domain
    with h5dask.File(url, "r+") as f:
        f["v0"].attrs["units"] = "degC"
    store = H5CloudStore.open(url)
    assert store.session.consolidated_state == "used"
    assert _open(url)["v0"].attrs["units"] == "degC"


def test_h5py_like_api_still_reads_lazily(domain):
    url, _ = domain
    h5dask.reset_stats()
    with h5dask.File(url) as f:
        assert h5dask.stats()["metadata"]["read_requests"] == 2
        assert f["v0"].shape == (5, 7, 9)
