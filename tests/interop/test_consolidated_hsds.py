"""The consolidated metadata object with the real HSDS: HSDS serves a domain that has one,
and after HSDS changes the domain h5dask finds the summary stale and reads the objects
as they are."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from interop_compare import fresh_name

import h5dask
from h5dask.format import consolidated
from h5dask.storage import open_location
from h5dask.storage.sync import sync
from h5dask.xarray.backend import H5CloudStore

h5pyd = pytest.importorskip("h5pyd")

pytestmark = pytest.mark.hsds


def test_hsds_serves_a_domain_with_a_consolidated_object_and_h5dask_sees_its_changes(
        hsds_s3, storage_options):
    server = hsds_s3
    domain = f"/home/{server.username}/{fresh_name('consolidated')}"
    url = f"s3://{server.bucket}{domain}"
    ds = xr.Dataset({"t": (("time", "x"), np.arange(12.0).reshape(4, 3), {"units": "K"})},
                    coords={"time": np.arange(4.0), "x": [10.0, 20.0, 30.0]})
    h5dask.to_h5cloud(ds, url, storage_options=storage_options)
    location = open_location(url, storage_options)
    assert sync(location.store.get(f"{location.domain}/{consolidated.NAME}")) is not None
    assert H5CloudStore.open(url, storage_options=storage_options).session \
        .consolidated_state == "used"

    # HSDS serves the domain as it is, the extra object notwithstanding
    with h5pyd.File(domain, "r", **server.h5pyd_kwargs()) as f:
        np.testing.assert_array_equal(f["t"][...], ds["t"].values)
        np.testing.assert_array_equal(f["time"][...], ds["time"].values)
    folder = h5pyd.Folder(f"/home/{server.username}/", **server.h5pyd_kwargs())
    assert domain.rsplit("/", 1)[1] in list(folder)

    # HSDS changes the domain; it knows nothing of the summary
    with h5pyd.File(domain, "r+", **server.h5pyd_kwargs()) as f:
        f["t"].attrs["units"] = "degC"
        f.create_dataset("extra", data=np.arange(5, dtype="<i4"))
    server.wait_for_keys(domain=domain, quiet=1.5)

    store = H5CloudStore.open(url, storage_options=storage_options)
    assert store.session.consolidated_state == "stale"
    got = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    assert got["t"].attrs["units"] == "degC"
    np.testing.assert_array_equal(got["extra"].values, np.arange(5))
    np.testing.assert_array_equal(got["t"].values, ds["t"].values)
