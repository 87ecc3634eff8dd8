"""Bad input to to_h5cloud fails as to_netcdf(engine="h5netcdf") fails (same exception
type), with a message naming the variable, and writes nothing."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask.errors import H5DaskError


def _ds() -> xr.Dataset:
    return xr.Dataset({"temp": (("time", "x"), np.zeros((3, 2), "f4"))},
                      coords={"time": [0, 1, 2], "x": [0.5, 1.5]})


CASES = {
    "slash in a variable name": (lambda: _ds().rename({"temp": "a/b"}), {}, "a/b"),
    "slash in a dimension name": (lambda: _ds().rename_dims({"x": "x/y"}), {}, "x/y"),
    "non-string variable name": (lambda: _ds().rename({"temp": 0}), {}, "0"),
    "empty variable name": (lambda: _ds().rename({"temp": ""}), {}, "''"),
    "unknown encoding key": (_ds, {"encoding": {"temp": {"bogus": 1}}}, "temp"),
    "encoding for no variable": (_ds, {"encoding": {"nothere": {}}}, "nothere"),
    "mismatched compression levels": (
        _ds, {"encoding": {"temp": {"complevel": 1, "compression_opts": 2,
                                    "compression": "gzip"}}}, "temp"),
    "boolean attribute": (lambda: _ds().assign_attrs(flag=True), {}, "flag"),
    "non-UTF-8 bytes attribute": (lambda: _ds().assign_attrs(raw=b"\xff\xfe"), {}, "raw"),
    "unknown mode": (_ds, {"mode": "q"}, "mode"),
    "conflicting fill and missing values": (
        _ds, {"encoding": {"temp": {"_FillValue": np.nan, "missing_value": -9.0}}}, "temp"),
    # readers hide these (they are netCDF-4's dimension-scale attributes)
    "reserved variable attribute": (
        lambda: _ds().assign(temp=_ds().temp.assign_attrs(CLASS="x")), {}, "CLASS"),
    "reserved group attribute": (lambda: _ds().assign_attrs(NAME="n"), {}, "NAME"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_exception_type_as_to_netcdf(case, tmp_path):
    make, kwargs, named = CASES[case]
    with pytest.raises(Exception) as netcdf_error:
        make().to_netcdf(tmp_path / "ref.nc", engine="h5netcdf", **kwargs)
    url = f"memory://bad-input/{case.replace(' ', '-')}.h5"
    with pytest.raises(Exception) as ours:
        h5dask.to_h5cloud(make(), url, **kwargs)
    assert isinstance(ours.value, type(netcdf_error.value)), (ours.value, netcdf_error.value)
    assert named in str(ours.value)
    with pytest.raises(FileNotFoundError):  # nothing was published
        h5dask.File(url)


def test_errors_of_the_writer_are_h5dask_errors(tmp_path):
    with pytest.raises(H5DaskError, match="variable 'temp'.*bogus"):
        h5dask.to_h5cloud(_ds(), "memory://bad-input/h5dask.h5",
                          encoding={"temp": {"bogus": 1}})
    with pytest.raises(H5DaskError, match="'temp' has conflicting _FillValue"):  # xarray's
        h5dask.to_h5cloud(_ds(), "memory://bad-input/h5dask.h5",
                          encoding={"temp": {"_FillValue": np.nan, "missing_value": -9.0}})


def test_a_variable_named_with_netcdf4s_prefix_is_refused(tmp_path):
    # to_netcdf writes it, and every reader then hides it (h5netcdf) or mistakes it
    url = (tmp_path / "prefix.h5").as_uri()
    with pytest.raises(H5DaskError, match="'_nc4_non_coord_t'.*_nc4_non_coord_"):
        h5dask.to_h5cloud(_ds().rename({"temp": "_nc4_non_coord_t"}), url)
    with pytest.raises(FileNotFoundError):
        h5dask.File(url)
