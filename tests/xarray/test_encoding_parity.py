"""What ``encoding`` reports on re-open matches h5netcdf (on the HDF5 file) and h5pyd
(on the HSDS domain): compression levels stated, or not, as they report them."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import xarray as xr

import h5dask

h5pyd = pytest.importorskip("h5pyd")


@pytest.fixture
def hsds_domain(hsds_s3, storage_options):
    """(server, HSDS domain path, h5dask URL) of a domain HSDS has never seen."""
    domain = f"/home/{hsds_s3.username}/parity-{uuid.uuid4().hex[:12]}.h5"
    return hsds_s3, domain, f"s3://{hsds_s3.bucket}{domain}"


@pytest.mark.hsds
def test_lz4_without_a_level_is_reported_without_one(hsds_domain, storage_options):
    # lz4 was stored with "level": 4 and reported compression_opts 4, where h5pyd
    # writes no level and reports None (HSDS compresses at its own default), and
    # h5py/h5netcdf report None for HDF5's LZ4 filter
    server, domain, url = hsds_domain
    ds = xr.Dataset({"plain": ("x", np.arange(40.0)), "leveled": ("x", np.arange(40.0))})
    h5dask.to_h5cloud(ds, url, storage_options=storage_options, encoding={
        "plain": {"compression": "lz4", "chunksizes": (10,)},
        "leveled": {"compression": "lz4", "compression_opts": 7, "chunksizes": (10,)}})
    back = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    assert (back.plain.encoding["compression"], back.plain.encoding["compression_opts"]) == (
        "lz4", None)
    assert back.leveled.encoding["compression_opts"] == 7
    with h5pyd.File(domain, "a", **server.h5pyd_kwargs()) as f:
        assert (f["plain"].compression, f["plain"].compression_opts) == ("lz4", None)
        assert f["leveled"].compression_opts == 7
        np.testing.assert_array_equal(f["plain"][...], np.arange(40.0))
        f.create_dataset("by_h5pyd", data=np.arange(8.0), chunks=(4,), compression="lz4")
    server.flush(domain)  # HSDS writes lazily
    with h5dask.File(url, storage_options=storage_options) as f:
        assert (f["by_h5pyd"].compression, f["by_h5pyd"].compression_opts) == ("lz4", None)
    # the encoding written back as read: the same stored filters
    copy = f"{url[:-3]}-copy.h5"
    h5dask.to_h5cloud(back, copy, storage_options=storage_options)
    with h5dask.File(url, storage_options=storage_options) as a, h5dask.File(
            copy, storage_options=storage_options) as b:
        for name in ("plain", "leveled"):
            assert a[name].filters == b[name].filters


def test_hdf5_lz4_loads_reported_as_h5netcdf_reports_it(tmp_path):
    hdf5plugin = pytest.importorskip("hdf5plugin")
    import h5py

    path = tmp_path / "lz4.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=np.arange(100.0), chunks=(10,), **hdf5plugin.LZ4())
    url = (tmp_path / "lz4-domain.h5").as_uri()
    h5dask.load(str(path), url, progress=False)
    by_h5netcdf = xr.open_dataset(path, engine="h5netcdf", phony_dims="sort").v.encoding
    by_h5dask = xr.open_dataset(url, engine="h5cloud").v.encoding
    assert by_h5netcdf["compression_opts"] is None
    assert (by_h5dask["compression"], by_h5dask["compression_opts"]) == ("lz4", None)
