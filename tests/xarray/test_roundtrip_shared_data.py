"""Acceptance: the real netCDF-4 files round-trip through to_h5cloud and engine h5cloud
identical to h5netcdf, on SeaweedFS. Decoded, the domain equals the original file;
undecoded (``decode_cf=False``), it equals what xarray's own h5netcdf writer makes of the
same Dataset, since writing re-encodes it (e.g. time units and dtypes may change)."""

from __future__ import annotations

import pytest
import xarray as xr

import h5dask

FILES = ["CMIP6_IPSL-CM6A-LR_tas.nc", "obs4MIPS_CERES-EBAF_L3B_Ed2-8_rlut.nc", "daily_data.nc"]


@pytest.mark.parametrize("name", FILES)
def test_to_h5cloud_then_open_is_identical_to_h5netcdf(name, shared_data, s3_bucket_url,
                                                        storage_options, tmp_path):
    path = shared_data / name
    url = f"{s3_bucket_url}/{name}"
    with xr.open_dataset(path) as src:
        h5dask.to_h5cloud(src, url, storage_options=storage_options)
        reference = tmp_path / name  # what xarray itself writes from the same Dataset
        src.to_netcdf(reference, engine="h5netcdf")

    decoded = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    xr.testing.assert_identical(decoded, xr.open_dataset(path, engine="h5netcdf"))

    raw = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options,
                          decode_cf=False)
    xr.testing.assert_identical(raw, xr.open_dataset(reference, engine="h5netcdf",
                                                     decode_cf=False))


@pytest.mark.parametrize("name", FILES)
def test_lazy_chunked_open_equals_eager(name, shared_data, s3_bucket_url, storage_options):
    url = f"{s3_bucket_url}/{name}"
    with xr.open_dataset(shared_data / name) as src:
        h5dask.to_h5cloud(src, url, storage_options=storage_options)
    lazy = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=storage_options)
    assert any(v.chunks for v in lazy.data_vars.values())
    xr.testing.assert_identical(lazy.compute(),
                                xr.open_dataset(shared_data / name, engine="h5netcdf"))
