"""Opening a dataset: few sequential round trips (the metadata objects at once, the
coordinates' chunks with them), and a consolidated object that is never trusted when
stale."""

from __future__ import annotations

import asyncio
import subprocess
import sys
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


# -- re-opening in the same process: the remembered summary --------------------------------
def test_reopen_is_one_round_trip_with_the_same_requests(domain, round_trips):
    url, want = domain
    depths, reset = round_trips
    reset()
    h5dask.reset_stats()
    got = _open(url)
    first = h5dask.stats()["total"]["read_requests"]
    assert max(depths) == 2, depths
    xr.testing.assert_identical(got.load(), want)
    reset()
    h5dask.reset_stats()
    got = _open(url)
    # .domain.json, the consolidated object, every object it named last time and the
    # coordinates' chunks all at once; checked, then used
    assert max(depths) == 1, depths
    assert h5dask.stats()["total"]["read_requests"] == first  # no GET twice, none extra
    xr.testing.assert_identical(got.load(), want)
    assert H5CloudStore.open(url).session.consolidated_state == "used"


def _elsewhere(code: str) -> None:
    """Run ``code`` (with ``h5dask``, ``np`` and ``url``) in another process: a writer
    this process knows nothing of (its memo of the domain stays as it was)."""
    subprocess.run([sys.executable, "-c", f"import h5dask, numpy as np\n{code}"],
                   check=True, timeout=120)


WRITE_ELSEWHERE = """
with h5dask.File(url, "r+") as f:
    f["v0"].attrs["units"] = "degC"
    f["lat"][...] = np.arange(7.0)
    f["v1"][0, 0, 0] = 42.0
    f.create_dataset("added", data=np.arange(3.0))
    del f["v5"]
"""


def _assert_written_elsewhere(got: xr.Dataset, want: xr.Dataset) -> None:
    assert got["v0"].attrs["units"] == "degC"
    np.testing.assert_array_equal(got["lat"].values, np.arange(7.0))
    assert float(got["v1"][0, 0, 0]) == 42.0
    np.testing.assert_array_equal(got["added"].values, np.arange(3.0))
    assert "v5" not in got
    np.testing.assert_array_equal(got["v2"].values, want["v2"].values)


def test_reopen_after_another_h5dask_writer_reads_the_new_metadata_and_values(domain):
    url, want = domain
    _open(url).load()  # remembered
    _elsewhere(f"url = {url!r}{WRITE_ELSEWHERE}")
    got = _open(url)
    assert H5CloudStore.open(url).session.consolidated_state == "used"  # its new summary
    _assert_written_elsewhere(got, want)


def test_reopen_after_an_h5dask_write_here_reads_the_new_metadata_and_values(domain):
    url, want = domain
    _open(url).load()
    with h5dask.File(url, "r+") as f:
        f["v0"].attrs["units"] = "degC"
        f["lat"][...] = np.arange(7.0)
        f["v1"][0, 0, 0] = 42.0
        f.create_dataset("added", data=np.arange(3.0))
    got = _open(url)
    assert got["v0"].attrs["units"] == "degC"
    np.testing.assert_array_equal(got["lat"].values, np.arange(7.0))
    assert float(got["v1"][0, 0, 0]) == 42.0
    np.testing.assert_array_equal(got["added"].values, np.arange(3.0))


def test_reopen_after_an_unaware_writer_never_uses_the_remembered_objects(domain):
    """HSDS (or an older h5dask) changes objects and leaves the summary as it was: the
    re-open fetches the objects as they are now and finds the summary stale."""
    url, want = domain
    location = open_location(url)
    key = f"{location.domain}/{consolidated.NAME}"
    _open(url).load()  # remembered
    _elsewhere(f"url = {url!r}\nfrom h5dask.storage import open_location\n"
               f"from h5dask.storage.sync import sync\nloc = open_location(url)\n"
               f"old = sync(loc.store.get({key!r}))\n{WRITE_ELSEWHERE}\n"
               f"sync(loc.store.put({key!r}, old))")
    got = _open(url)
    _assert_written_elsewhere(got, want)
    assert H5CloudStore.open(url).session.consolidated_state == "stale"


def test_reopen_of_a_domain_deleted_and_recreated_reads_the_new_one(domain, round_trips):
    url, want = domain
    _open(url).load()  # remembered (the old root's objects)
    recreate = ("import xarray as xr\n"
                "replacement = xr.Dataset({'w': ('x', np.arange(4.0) * 3, {'units': 'm'})},"
                " coords={'x': np.arange(4.0) + 0.5}, attrs={'title': 'recreated'})\n")
    _elsewhere(f"url = {url!r}\n{recreate}h5dask.to_h5cloud(replacement, url, mode='w')")
    scope: dict = {"np": np}
    exec(recreate, scope)  # the same dataset here, to compare with
    replacement = scope["replacement"]
    depths, reset = round_trips
    reset()
    got = _open(url)
    assert max(depths) == 2, depths  # the new summary's objects, fetched after it
    xr.testing.assert_identical(got.load(), replacement)


def test_reopen_after_the_consolidated_object_is_removed_walks_the_domain(domain, round_trips):
    url, want = domain
    location = open_location(url)
    key = f"{location.domain}/{consolidated.NAME}"
    _open(url).load()  # remembered
    _elsewhere(f"url = {url!r}\nfrom h5dask.storage import open_location\n"
               f"from h5dask.storage.sync import sync\n"
               f"with h5dask.File(url, 'r+') as f:\n    f['v2'].attrs['units'] = 'm'\n"
               f"sync(open_location(url).store.delete({key!r}))")
    got = _open(url)
    assert got["v2"].attrs["units"] == "m"
    xr.testing.assert_identical(got.drop_vars("v2").load(), want.drop_vars("v2"))
    depths, reset = round_trips
    reset()
    _open(url)
    assert max(depths) == 4, depths  # nothing remembered: the walk, as without a memo
    assert H5CloudStore.open(url).session.consolidated_state == "absent"


def test_reused_attribute_values_are_the_callers_to_change(domain):
    url, _ = domain
    with h5dask.File(url, "r+") as f:
        f["v3"].attrs["valid_range"] = np.array([0.0, 1.0], dtype="f4")
    _open(url)
    first = _open(url)["v3"].attrs["valid_range"]
    first[0] = 99.0  # a caller changing its own copy
    np.testing.assert_array_equal(_open(url)["v3"].attrs["valid_range"], [0.0, 1.0])


def test_the_memo_keeps_few_parsed_objects_and_reopens_without_them(domain, round_trips,
                                                                    monkeypatch):
    from h5dask import domain as domain_module

    url, want = domain
    nobjects = len(want.variables) + 1  # every variable and the root group
    small = domain_module._OpenMemo(domains=2, max_summary=1000, max_parsed=nobjects)
    monkeypatch.setattr(domain_module, "_open_memo", small)
    _open(url)
    (key,) = small._entries
    assert len(small._entries[key].metas) == nobjects
    other = f"{url}-other"
    h5dask.to_h5cloud(want, other)
    _open(other)  # the newest domain's parsed objects are kept, the older one's dropped
    assert small._entries[key].metas == {} and small._entries[key].summary is not None
    depths, reset = round_trips
    reset()
    got = _open(url)  # the summary alone still saves the round trip
    assert max(depths) == 1, depths
    xr.testing.assert_identical(got.load(), want)
    h5dask.to_h5cloud(want, f"{url}-third")
    _open(f"{url}-third")
    # the least recently opened domain ("-other", re-opened before the first) is forgotten
    assert [k[1].split("/")[0] for k in small._entries] == ["open.h5", "open.h5-third"]


def test_chunks_fetched_by_an_open_outside_xarray_are_never_read_stale(domain):
    """``to_h5cloud(mode="a")`` opens the domain to read its encodings (H5CloudStore.open,
    which starts the coordinates' GETs of a remembered domain): what it fetched is
    dropped, so that an open after another process rewrote a coordinate reads the new
    values, and the read-ahead budget is not held."""
    from h5dask.readahead import get_readahead

    url, want = domain
    _open(url).load()  # remembered: a re-open fetches the coordinates with the metadata
    h5dask.to_h5cloud((want[["v2"]].isel(time=[0]) * 0).drop_vars(["lat", "lon"]), url, mode="r+",
                      region={"time": slice(0, 1)},  # reads the stored encodings first
                      safe_chunks=False)
    assert get_readahead().reserved == 0
    _elsewhere(f"url = {url!r}\n{WRITE_ELSEWHERE}")
    got = _open(url)
    np.testing.assert_array_equal(got["lat"].values, np.arange(7.0))
    assert float(got["v1"][0, 0, 0]) == 42.0


def test_h5cloudstore_open_drops_its_prefetches_when_closed_or_collected(domain):
    import gc

    from h5dask.readahead import get_readahead

    url, _ = domain
    _open(url).load()  # remembered
    store = H5CloudStore.open(url)
    assert get_readahead().reserved > 0  # the coordinates' GETs, started with the metadata
    store.close()
    assert get_readahead().reserved == 0
    store = H5CloudStore.open(url)
    assert get_readahead().reserved > 0
    del store
    gc.collect()
    assert get_readahead().reserved == 0


def test_an_open_decodes_no_attribute_it_does_not_need(domain, monkeypatch):
    """A coordinate's REFERENCE_LIST names every variable using it (a compound array):
    neither shown by netCDF readers nor needed for the dimensions, so never decoded."""
    from h5dask.format.metadata import AttributeMeta

    url, want = domain
    decoded = []
    real = AttributeMeta.value

    def value(self, *args, **kwargs):
        decoded.append(self.name)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(AttributeMeta, "value", value)
    with h5dask.File(url) as f:
        assert "REFERENCE_LIST" in f["lat"].attrs  # (the coordinates have one)
    decoded.clear()
    got = _open(url)
    assert "REFERENCE_LIST" not in decoded and "DIMENSION_LIST" in decoded
    xr.testing.assert_identical(got.load(), want)
