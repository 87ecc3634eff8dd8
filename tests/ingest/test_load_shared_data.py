"""Issue 5 acceptance for ``load`` (copy mode): each real netCDF-4 file of the shared data,
loaded into SeaweedFS, opens with ``engine="h5cloud"`` identical to h5netcdf on the file,
decoded and raw (load copies attributes and values as they are), and the same domain,
in HSDS's bucket, served by a real HSDS, reads through h5pyd equal to h5py on the file."""

from __future__ import annotations

import h5py
import pytest
import xarray as xr
from ingest_helpers import assert_h5pyd_equals_h5py

from h5dask.ingest import load_file

h5pyd = pytest.importorskip("h5pyd")

FILES = ["CMIP6_IPSL-CM6A-LR_tas.nc", "obs4MIPS_CERES-EBAF_L3B_Ed2-8_rlut.nc", "daily_data.nc"]


@pytest.mark.hsds
@pytest.mark.parametrize("name", FILES)
def test_load_opens_identical_to_h5netcdf_and_through_hsds(name, shared_data, hsds_s3,
                                                           storage_options, fresh):
    path = shared_data / name
    domain = f"/home/{hsds_s3.username}/{fresh(name)}"
    url = f"s3://{hsds_s3.bucket}{domain}"
    summary = load_file(path, url, storage_options=storage_options, progress=False)
    with h5py.File(path) as f:
        n_datasets = sum(isinstance(o, h5py.Dataset) for o in f.values())
    assert summary.datasets == n_datasets and summary.groups == 1
    assert summary.chunks_written >= 1 and not summary.skipped

    for decode in ({}, {"decode_cf": False}):
        with xr.open_dataset(path, engine="h5netcdf", **decode) as want, \
                xr.open_dataset(url, engine="h5cloud", storage_options=storage_options,
                                **decode) as got:
            xr.testing.assert_identical(got, want)

    with h5pyd.File(domain, "r", retries=2, **hsds_s3.h5pyd_kwargs()) as remote, \
            h5py.File(path) as local:
        compared = assert_h5pyd_equals_h5py(remote, local)
    assert compared > n_datasets  # datasets and (non-reference) attributes
