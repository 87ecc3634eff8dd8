"""Pushdown on a domain the real HSDS server wrote (HSDS's Blosc-framed gzip chunks)."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import xarray as xr

import h5dask

h5pyd = pytest.importorskip("h5pyd")
pytestmark = pytest.mark.hsds


@pytest.fixture(scope="module")
def hsds_domain(hsds_s3):
    name = f"/home/admin/pushdown-{uuid.uuid4().hex[:8]}.h5"
    rng = np.random.default_rng(11)
    data = rng.normal(280, 5, size=(8, 40, 60)).astype("f4")
    with h5pyd.File(name, "w", **hsds_s3.h5pyd_kwargs()) as f:
        f.create_dataset("plain", data=data, chunks=(4, 20, 30))
        f.create_dataset("gz", data=data, chunks=(4, 20, 30), compression="gzip",
                         shuffle=True)
        sparse = f.create_dataset("sparse", shape=(8, 40, 60), dtype="f4", chunks=(4, 20, 30),
                                  fillvalue=1.5)
        sparse[:4] = data[:4]
    hsds_s3.wait_for_keys(["db/*/d/*/0_0_0"], domain=name)
    return f"s3://hsds-test{name}"


@pytest.mark.parametrize("var", ["plain", "gz", "sparse"])
@pytest.mark.parametrize("op", ["sum", "min", "max", "mean", "count"])
def test_pushdown_on_hsds_written_domain(hsds_domain, storage_options, pushdown_server,
                                         var, op):
    local = xr.open_dataset(hsds_domain, engine="h5cloud", chunks={},
                            storage_options=storage_options)[var]
    remote = xr.open_dataset(hsds_domain, engine="h5cloud", chunks={},
                             storage_options=storage_options,
                             active_storage_url=pushdown_server.url,
                             active_storage="require")[var]
    dims = local.dims
    for dim in (None, dims[1]):
        expected = getattr(local, op)(dim=dim).compute(scheduler="sync")
        h5dask.reset_stats()
        got = getattr(remote, op)(dim=dim).compute(scheduler="sync")
        xr.testing.assert_allclose(got, expected, rtol=1e-5)
        assert h5dask.stats()["active"]["read_requests"] > 0
    sliced = {dims[0]: slice(1, 7), dims[2]: slice(5, 50)}
    xr.testing.assert_allclose(
        getattr(remote.isel(sliced), op)(dim=dims[0]).compute(scheduler="sync"),
        getattr(local.isel(sliced), op)(dim=dims[0]).compute(scheduler="sync"), rtol=1e-5)


def test_pushdown_on_hsds_written_domain_on_a_cluster(hsds_domain, storage_options,
                                                      pushdown_server, cluster_client):
    client = cluster_client
    client.run(h5dask.reset_stats)
    for var in ("plain", "gz", "sparse"):
        local = xr.open_dataset(hsds_domain, engine="h5cloud", chunks={},
                                storage_options=storage_options)[var]
        remote = xr.open_dataset(hsds_domain, engine="h5cloud", chunks={},
                                 storage_options=storage_options,
                                 active_storage_url=pushdown_server.url,
                                 active_storage="require")[var]
        for op in ("sum", "min", "max", "mean", "count"):
            for dim in (None, local.dims[1]):
                xr.testing.assert_allclose(getattr(remote, op)(dim=dim).compute(),
                                           getattr(local, op)(dim=dim).compute(),
                                           rtol=1e-5)
    stats = client.run(h5dask.stats)
    assert sum(s["active"]["read_requests"] for s in stats.values()) > 0
