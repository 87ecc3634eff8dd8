"""Bad input to the engine gets clear, specific errors."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import h5dask


def test_unknown_group_is_named_with_the_existing_ones(tmp_path):
    url = f"file://{tmp_path}/home/g.h5"
    with h5dask.File(url, "w") as f:
        f.create_group("ocean").create_dataset("x", data=np.arange(3))
    with pytest.raises(KeyError, match=r"'/atmos'.*'/ocean'"):
        xr.open_dataset(url, engine="h5cloud", group="atmos")


def test_url_that_is_not_a_domain(tmp_path):
    with pytest.raises(FileNotFoundError, match="no h5dask/HSDS domain"):
        xr.open_dataset(f"file://{tmp_path}/nothing.h5", engine="h5cloud")


def test_folder_is_not_a_domain(tmp_path):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / ".domain.json").write_text('{"owner": "admin", "acls": {}}')
    with pytest.raises(FileNotFoundError, match="folder"):
        xr.open_dataset(f"file://{tmp_path}/home", engine="h5cloud")


def test_unsupported_type_is_reported_by_variable_name(tmp_path):
    url = f"file://{tmp_path}/home/t.h5"
    with h5dask.File(url, "w") as f:
        ds = f.create_dataset("odd", shape=(2,), dtype="<f4")
    # make the stored type one h5dask cannot represent
    import json

    key = next(tmp_path.rglob(".dataset.json"))
    obj = json.loads(key.read_text())
    obj["type"] = {"class": "H5T_TIME"}
    key.write_text(json.dumps(obj))
    del ds
    with pytest.raises(TypeError, match="variable '/odd'.*H5T_TIME"):
        xr.open_dataset(url, engine="h5cloud")


def test_guess_can_open():
    from h5dask.xarray.backend import H5CloudBackendEntrypoint
    from h5dask.xarray.entrypoint import LazyH5CloudEntrypoint

    for entry in (H5CloudBackendEntrypoint(), LazyH5CloudEntrypoint()):
        assert entry.guess_can_open("s3://bucket/home/run1.h5")
        assert not entry.guess_can_open("s3://bucket/data.zarr")
        assert not entry.guess_can_open("/tmp/local.nc")
    # the parameters xarray reads are those of the registered (lazy) entry point
    assert "storage_options" in LazyH5CloudEntrypoint.open_dataset_parameters


def test_unknown_filter_is_reported_by_variable_and_filter_name(tmp_path):
    import json

    url = f"file://{tmp_path}/home/f.h5"
    with h5dask.File(url, "w") as f:
        f.create_dataset("squeezed", shape=(4,), dtype="<f4", chunks=(2,))
    key = next(tmp_path.rglob(".dataset.json"))
    obj = json.loads(key.read_text())
    obj["creationProperties"]["filters"] = [{"class": "H5Z_FILTER_SZIP", "id": 4}]
    key.write_text(json.dumps(obj))
    with pytest.raises(ValueError, match="variable '/squeezed'.*szip"):
        xr.open_dataset(url, engine="h5cloud")


def test_plain_netcdf4_file_says_how_to_open_it(shared_data, tmp_path):
    """issue 14 item 8: a netCDF-4/HDF5 file is not a domain; say what to use instead."""
    import shutil

    nc = tmp_path / "plain.nc"
    shutil.copy(shared_data / "daily_data.nc", nc)
    for url in (f"file://{nc}", str(nc)):
        with pytest.raises(FileNotFoundError, match="HDF5/netCDF-4 file") as err:
            xr.open_dataset(url, engine="h5cloud")
        assert "engine='h5netcdf'" in str(err.value) and "h5dask load" in str(err.value)
    with_userblock = tmp_path / "ub.h5"
    with_userblock.write_bytes(bytes(512) + (shared_data / "daily_data.nc").read_bytes())
    with pytest.raises(FileNotFoundError, match="HDF5/netCDF-4 file"):
        xr.open_dataset(str(with_userblock), engine="h5cloud")
    classic = tmp_path / "classic.nc"
    classic.write_bytes(b"CDF\x02" + bytes(60))
    with pytest.raises(FileNotFoundError, match="netCDF-3"):
        xr.open_dataset(str(classic), engine="h5cloud")


def test_http_domain_url_names_the_supported_schemes():
    from h5dask.errors import UnsupportedURLError

    with pytest.raises(UnsupportedURLError, match="s3://, file://"):
        xr.open_dataset("http://example.invalid/home/x.h5", engine="h5cloud")


def test_bad_active_storage_value_is_named(tmp_path):
    """issue 14 item 9: active_storage='yes' is named as the bad value, with or without a URL."""
    url = f"file://{tmp_path}/home/a.h5"
    with h5dask.File(url, "w") as f:
        f["x"] = np.arange(3)
    for extra in ({}, {"active_storage_url": "http://127.0.0.1:1"}):
        with pytest.raises(ValueError, match="not 'yes'"):
            xr.open_dataset(url, engine="h5cloud", active_storage="yes", **extra)
