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

    entry = H5CloudBackendEntrypoint()
    assert entry.guess_can_open("s3://bucket/home/run1.h5")
    assert not entry.guess_can_open("s3://bucket/data.zarr")
    assert not entry.guess_can_open("/tmp/local.nc")
    assert "storage_options" in entry.open_dataset_parameters


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
