"""to_h5cloud as a cloud writer: append along a resizable dimension, write regions,
rewrite existing variables (mode "r+"), from the workers of a 2-process LocalCluster,
on SeaweedFS S3; HSDS serves the grown domain."""

from __future__ import annotations

import uuid

import dask
import dask.array as da
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import h5dask

pytest.importorskip("distributed")
h5pyd = pytest.importorskip("h5pyd")


def _part(start: int, n: int, chunks: int) -> xr.Dataset:
    rng = np.random.default_rng(start)
    values = da.from_array(rng.random((n, 6), dtype="f4"), chunks=(chunks, 6))
    times = pd.date_range("2000-01-01", periods=start + n, freq="D")[start:]
    return xr.Dataset({"v": (("time", "x"), values, {"units": "K"})},
                      coords={"time": times, "x": np.arange(6.0)})


@pytest.fixture
def hsds_domain(hsds_s3, storage_options):
    """(server, HSDS domain path, h5dask URL) of a domain HSDS has never seen."""
    domain = f"/home/{hsds_s3.username}/append-{uuid.uuid4().hex[:12]}.h5"
    return hsds_s3, domain, f"s3://{hsds_s3.bucket}{domain}"


def _chunk_writes(client) -> tuple[int, int]:
    workers = client.run(h5dask.stats)
    return (h5dask.stats()["chunk"]["write_requests"],
            sum(s["chunk"]["write_requests"] for s in workers.values()))


def test_append_grows_resizable_datasets_from_workers(cluster_client, hsds_domain,
                                                      storage_options):
    server, domain, url = hsds_domain
    first, second, third = _part(0, 10, 4), _part(10, 7, 3), _part(17, 5, 5)
    h5dask.to_h5cloud(first, url, storage_options=storage_options, unlimited_dims=["time"],
                      encoding={"v": {"chunksizes": (4, 6)}})
    h5dask.reset_stats()
    cluster_client.run(h5dask.reset_stats)
    # dask blocks (3, then 5) not aligned to the storage chunks (4): rechunked so that no
    # two tasks write one chunk object
    h5dask.to_h5cloud(second, url, append_dim="time", storage_options=storage_options)
    h5dask.to_h5cloud(third, url, append_dim="time", storage_options=storage_options)
    # the chunks of v (dask) from the workers: rows 10-16 touch chunks 2, 3, 4 and rows
    # 17-21 chunks 4, 5 (each once); the client writes only the in-memory coordinates
    _, worker_writes = _chunk_writes(cluster_client)
    assert worker_writes == 5

    expected = xr.concat([first, second, third], dim="time").compute()
    got = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    xr.testing.assert_identical(got.compute(), expected)
    assert got.encoding["unlimited_dims"] == {"time"}
    assert got["time"].encoding["units"] == first["time"].encoding.get(
        "units", got["time"].encoding["units"])

    with h5pyd.File(domain, "r", **server.h5pyd_kwargs()) as f:
        assert f["v"].shape == (22, 6) and f["v"].maxshape == (None, 6)
        np.testing.assert_array_equal(f["v"][...], expected["v"].values)
        assert f["time"].shape == (22,)
        np.testing.assert_array_equal(f["time"][...], np.arange(22))  # days since start


def test_region_writes_from_many_workers_at_once(cluster_client, hsds_domain,
                                                 storage_options):
    server, domain, url = hsds_domain
    full = _part(0, 24, 24).compute()
    template = full.copy(data={"v": np.zeros((24, 6), "f4")})
    h5dask.to_h5cloud(template, url, storage_options=storage_options,
                      encoding={"v": {"chunksizes": (5, 6)}})
    writes = []
    for start in range(0, 24, 8):  # regions not aligned to the chunks of 5
        part = full.isel(time=slice(start, start + 8)).drop_vars(["x"]).chunk({"time": 3})
        writes.append(h5dask.to_h5cloud(part, url, region={"time": slice(start, start + 8)},
                                        storage_options=storage_options, compute=False,
                                        safe_chunks=False))  # one computation: locked
    h5dask.reset_stats()
    cluster_client.run(h5dask.reset_stats)
    dask.compute(*writes)
    # 3 regions of 8 rows over chunks of 5: chunks 1 and 3 are shared by two regions;
    # and each region's (numpy) time coordinate, into the one chunk of time: a
    # compute=False write stores its in-memory variables when computed, in the workers
    _, worker_writes = _chunk_writes(cluster_client)
    assert worker_writes == 7 + 3
    got = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    xr.testing.assert_identical(got.compute(), full)
    with h5pyd.File(domain, "r", **server.h5pyd_kwargs()) as f:
        np.testing.assert_array_equal(f["v"][...], full["v"].values)


def test_failed_append_leaves_the_domain_as_before(cluster_client, s3_bucket_url,
                                                  storage_options):
    url = f"{s3_bucket_url}/failed-append.h5"
    first = _part(0, 6, 4).compute()
    h5dask.to_h5cloud(first, url, storage_options=storage_options, unlimited_dims=["time"],
                      encoding={"v": {"chunksizes": (4, 6)}})

    def explode(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:
            raise RuntimeError("a worker failed")
        return block

    broken = _part(6, 9, 3)
    broken["v"] = broken["v"].copy(data=broken["v"].data.map_blocks(explode, dtype="f4"))
    with pytest.raises(RuntimeError, match="a worker failed"):
        h5dask.to_h5cloud(broken, url, append_dim="time", storage_options=storage_options)
    got = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    xr.testing.assert_identical(got.compute(), first)
    with h5dask.File(url, storage_options=storage_options) as f:
        assert f["v"].shape == (6, 6)
    # what the failed append wrote beyond the old extent is gone: growing shows fill
    with h5dask.File(url, "r+", storage_options=storage_options) as f:
        f["v"].resize((12, 6))
        assert np.isnan(f["v"][6:]).all()


def test_append_needs_a_resizable_dimension(s3_bucket_url, storage_options):
    url = f"{s3_bucket_url}/fixed.h5"
    first = _part(0, 4, 4).compute()
    h5dask.to_h5cloud(first, url, storage_options=storage_options)
    with pytest.raises(ValueError, match="variable '(v|time)'.*unlimited_dims"):
        h5dask.to_h5cloud(_part(4, 2, 2), url, append_dim="time",
                          storage_options=storage_options)
    xr.testing.assert_identical(
        xr.open_dataset(url, engine="h5cloud", storage_options=storage_options).compute(),
        first)


def test_mode_r_plus_touches_only_existing_variables(s3_bucket_url, storage_options):
    url = f"{s3_bucket_url}/rplus.h5"
    first = _part(0, 4, 4).compute()
    h5dask.to_h5cloud(first, url, storage_options=storage_options)
    with pytest.raises(ValueError, match="variable 'w'.*mode='r\\+'"):
        h5dask.to_h5cloud(first.assign(w=first["v"] * 2), url, mode="r+",
                          storage_options=storage_options)
    h5dask.to_h5cloud(first.assign(v=first["v"] + 1), url, mode="r+",
                      storage_options=storage_options)
    got = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    assert "w" not in got
    np.testing.assert_array_equal(got["v"].values, first["v"].values + 1)
    with pytest.raises(FileNotFoundError):
        h5dask.to_h5cloud(first, f"{s3_bucket_url}/missing.h5", mode="r+",
                          storage_options=storage_options)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"mode": "x+"}, ValueError, "mode must be one of"),
    ({"mode": "w-", "region": {"time": slice(0, 2)}}, ValueError, "region= writes into"),
    ({"mode": "r+", "region": {"time": slice(0, 4, 2)}}, ValueError, "step 1"),
    ({"mode": "r+", "region": "auto"}, TypeError, "mapping"),
    ({"append_dim": "time", "region": {"time": slice(0, 2)}}, ValueError, "together"),
])
def test_bad_mode_arguments(s3_bucket_url, storage_options, kwargs, error, match):
    with pytest.raises(error, match=match):
        h5dask.to_h5cloud(_part(0, 2, 2), f"{s3_bucket_url}/bad.h5",
                          storage_options=storage_options, **kwargs)
