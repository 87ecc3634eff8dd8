"""Writes into variables that are already stored (append_dim=, region=, mode "a"/"r+")
must keep every stored value reading as it did: the new values are encoded as the stored
ones (same time units, same packing), an encoding that would change how the stored values
read is refused, and a write refused for bad input has written no data."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import h5dask
from h5dask.errors import H5DaskError, ReadOnlyError, ValueOutOfRangeError


def _open(url: str) -> xr.Dataset:
    return xr.open_dataset(url, engine="h5cloud").load()


def _packed(url: str) -> None:
    """v = [0.5, 1, 1.5, 2] stored as int16 with scale_factor 0.5."""
    h5dask.to_h5cloud(xr.Dataset({"v": ("x", np.array([0.5, 1.0, 1.5, 2.0]))}), url,
                      encoding={"v": {"dtype": "i2", "scale_factor": 0.5}})


def test_append_of_times_the_stored_units_cannot_hold_is_refused(tmp_path):
    # stored as int32 days: xarray would switch the appended times to "hours since",
    # rewriting the units attribute under the stored day counts (day 1 read as hour 1)
    url = (tmp_path / "times.h5").as_uri()
    days = pd.date_range("2000-01-01", periods=3, freq="D")
    h5dask.to_h5cloud(xr.Dataset({"v": ("time", np.arange(3.0))}, coords={"time": days}), url,
                      unlimited_dims=["time"],
                      encoding={"time": {"units": "days since 2000-01-01", "dtype": "i4"}})
    quarter_days = pd.date_range("2000-01-04", periods=3, freq="6h")
    with warnings.catch_warnings(), pytest.raises(H5DaskError, match="'time'.*units"):
        warnings.simplefilter("ignore")  # xarray's own warning about the units it chose
        h5dask.to_h5cloud(xr.Dataset({"v": ("time", np.arange(3.0))},
                                     coords={"time": quarter_days}), url, append_dim="time")
    back = _open(url)
    np.testing.assert_array_equal(back["time"].values, days.values)
    assert back.sizes["time"] == 3


def test_region_write_with_another_scale_factor_is_refused(tmp_path):
    url = (tmp_path / "packed.h5").as_uri()
    _packed(url)
    with pytest.raises(H5DaskError, match="'v'.*scale_factor"):
        h5dask.to_h5cloud(xr.Dataset({"v": ("x", np.array([7.5, 8.0]))}), url,
                          region={"x": slice(1, 3)}, encoding={"v": {"scale_factor": 0.1}},
                          safe_chunks=False)
    assert _open(url)["v"].values.tolist() == [0.5, 1.0, 1.5, 2.0]


def test_mode_a_rewrite_of_a_packed_variable_keeps_its_packing(tmp_path):
    url = (tmp_path / "repacked.h5").as_uri()
    _packed(url)
    h5dask.to_h5cloud(xr.Dataset({"v": ("x", np.array([10.0, 20.0, 30.0, 40.0]))}), url,
                      mode="a")
    back = _open(url)
    assert back["v"].values.tolist() == [10.0, 20.0, 30.0, 40.0]
    assert back["v"].encoding["scale_factor"] == 0.5


def test_mode_a_with_another_dtype_for_a_stored_variable_is_refused(tmp_path):
    url = (tmp_path / "dtype.h5").as_uri()
    _packed(url)
    with pytest.raises(H5DaskError, match="'v'.*dtype"):
        h5dask.to_h5cloud(xr.Dataset({"v": ("x", np.array([1.25, 2.0, 3.0, 4.0]))}), url,
                          mode="a", encoding={"v": {"dtype": "f4"}})
    assert _open(url)["v"].values.tolist() == [0.5, 1.0, 1.5, 2.0]


def test_mode_a_adds_variables_to_a_new_domain(tmp_path):
    url = (tmp_path / "new.h5").as_uri()
    h5dask.to_h5cloud(xr.Dataset({"v": ("x", np.arange(3.0))}), url, mode="a")
    assert _open(url)["v"].values.tolist() == [0.0, 1.0, 2.0]


def test_region_write_refused_for_a_later_variable_writes_no_data(tmp_path):
    # "v" comes first and is fine; "y" lacks the region's dimension: the write is
    # refused, and must not have rewritten v's rows on the way
    url = (tmp_path / "refused.h5").as_uri()
    h5dask.to_h5cloud(xr.Dataset({"v": (("x", "y"), np.zeros((4, 3)))},
                                 coords={"y": [1, 2, 3]}), url)
    part = xr.Dataset({"v": (("x", "y"), np.ones((2, 3)))}, coords={"y": [7, 8, 9]})
    with pytest.raises(H5DaskError, match="'y'.*region"):
        h5dask.to_h5cloud(part, url, region={"x": slice(1, 3)}, safe_chunks=False)
    back = _open(url)
    assert back["v"].values.tolist() == np.zeros((4, 3)).tolist()
    assert back["y"].values.tolist() == [1, 2, 3]


def _zeros(url: str) -> None:
    """v: 8 rows of zeros, stored in chunks of 6 rows."""
    h5dask.to_h5cloud(xr.Dataset({"v": (("t", "x"), np.zeros((8, 3)))}), url,
                      encoding={"v": {"chunksizes": (6, 3)}})


def _rows(start: int, stop: int) -> xr.Dataset:
    return xr.Dataset({"v": (("t", "x"), np.full((stop - start, 3), start + 1.0))})


def test_region_cutting_a_chunk_is_refused_unless_safe_chunks_false(tmp_path):
    # two processes writing rows 0:4 and 4:8 at once both read, merge and rewrite chunk
    # 0 (rows 0:6): one of the merges was lost, silently (rows 4:6 read 0 afterwards)
    url = (tmp_path / "cut.h5").as_uri()
    _zeros(url)
    with pytest.raises(H5DaskError, match=r"region t=4:8 cuts the stored chunks of '/v'"):
        h5dask.to_h5cloud(_rows(4, 8), url, region={"t": slice(4, 8)})
    assert _open(url)["v"].values[:, 0].tolist() == [0.0] * 8
    h5dask.to_h5cloud(_rows(0, 4), url, region={"t": slice(0, 4)}, safe_chunks=False)
    assert _open(url)["v"].values[:, 0].tolist() == [1.0] * 4 + [0.0] * 4


def test_regions_on_chunk_edges_or_the_array_end_are_written(tmp_path):
    url = (tmp_path / "aligned.h5").as_uri()
    _zeros(url)
    h5dask.to_h5cloud(_rows(0, 6), url, region={"t": slice(0, 6)})
    h5dask.to_h5cloud(_rows(6, 8), url, region={"t": slice(6, None)})
    assert _open(url)["v"].values[:, 0].tolist() == [1.0] * 6 + [7.0] * 2


@pytest.mark.parametrize("left_out", ["w", "time"])
def test_append_leaving_out_a_stored_variable_along_the_dimension_is_refused(tmp_path,
                                                                             left_out):
    # "w" (or the coordinate) would stay 3 long while time grew to 5: the domain then
    # failed to open (conflicting sizes for dimension 'time')
    url = (tmp_path / "partial.h5").as_uri()
    ds = xr.Dataset({"v": ("time", np.arange(3.0)), "w": ("time", np.arange(3.0) * 10)},
                    coords={"time": [0, 1, 2]})
    h5dask.to_h5cloud(ds, url, unlimited_dims=["time"])
    more = xr.Dataset({"v": ("time", [3.0, 4.0]), "w": ("time", [30.0, 40.0])},
                      coords={"time": [3, 4]})
    with pytest.raises(H5DaskError, match=rf"append_dim='time'.*\['{left_out}'\]"):
        h5dask.to_h5cloud(more.drop_vars(left_out), url, append_dim="time")
    xr.testing.assert_identical(_open(url), ds)
    h5dask.to_h5cloud(more, url, append_dim="time")
    assert _open(url)["w"].values.tolist() == [0.0, 10.0, 20.0, 30.0, 40.0]


def test_region_values_without_the_stored_attributes_are_written(tmp_path):
    # arithmetic drops attributes: the stored units and the packing stay, and apply
    url = (tmp_path / "no-attrs.h5").as_uri()
    ds = xr.Dataset({"v": ("x", np.arange(8.0), {"units": "K", "long_name": "v"})})
    h5dask.to_h5cloud(ds, url, encoding={"v": {"dtype": "i2", "scale_factor": 0.5,
                                              "_FillValue": -1, "chunksizes": (4,)}})
    h5dask.to_h5cloud((ds.isel(x=slice(4, 8)) * 2).drop_attrs(), url, region={"x": slice(4, 8)})
    back = _open(url)["v"]
    assert back.values.tolist() == [0.0, 1.0, 2.0, 3.0, 8.0, 10.0, 12.0, 14.0]
    assert back.attrs == {"units": "K", "long_name": "v"}
    with pytest.raises(H5DaskError, match="units='K'.*units='degC'"):
        h5dask.to_h5cloud(ds.isel(x=slice(0, 4)).assign(v=ds.v[:4].assign_attrs(units="degC")),
                          url, region={"x": slice(0, 4)})


@pytest.mark.filterwarnings("ignore::h5dask.errors.LocalLinkWarning")
def test_writing_into_a_linked_variable_is_refused_naming_it(tmp_path):
    # its chunks are the HDF5 file's: a plain PermissionError from deep in the chunk
    # writer said neither which variable nor what to do
    (tmp_path / "home").mkdir()
    source = tmp_path / "home" / "src.nc"
    ds = xr.Dataset({"v": ("time", np.arange(8.0))})
    ds.to_netcdf(source, engine="h5netcdf", encoding={"v": {"chunksizes": (4,)}})
    url = (tmp_path / "home" / "linked.h5").as_uri()
    h5dask.load(str(source), url, link=True, progress=False)
    with pytest.raises(ReadOnlyError, match=r"variable 'v'.*--link"):
        h5dask.to_h5cloud(ds + 1, url, region={"time": slice(0, 8)})
    assert _open(url)["v"].values.tolist() == list(range(8))


@pytest.mark.parametrize("lazy", [False, True])
def test_values_that_do_not_fit_the_stored_integers_are_refused(tmp_path, lazy):
    # the stored int16 is inherited: xarray's cast stored 100000 as -31072
    url = (tmp_path / "int16.h5").as_uri()
    h5dask.to_h5cloud(xr.Dataset({"v": ("x", np.arange(8, dtype="i2"))}), url,
                      encoding={"v": {"chunksizes": (4,)}})
    part = xr.Dataset({"v": ("x", np.array([4, 5, 100000, 7]))})
    with pytest.raises(ValueOutOfRangeError, match=r"'v'.*the first 100000.*int16"):
        h5dask.to_h5cloud(part.chunk({"x": 2}) if lazy else part, url,
                          region={"x": slice(4, 8)})
    assert _open(url)["v"].values.tolist()[6] == 6


def test_floats_one_past_the_int64_range_are_refused(tmp_path):
    # float(2**63 - 1) is 2**63: compared as floats it passed, and was stored as -2**63
    url = (tmp_path / "int64.h5").as_uri()
    h5dask.to_h5cloud(xr.Dataset({"v": ("x", np.arange(4, dtype="i8"))}), url)
    with pytest.raises(ValueOutOfRangeError, match=r"'v'.*int64"):
        h5dask.to_h5cloud(xr.Dataset({"v": ("x", np.array([0.0, 1.0, 2.0**63, 3.0]))}),
                          url, mode="a")
    assert _open(url)["v"].values.tolist() == [0, 1, 2, 3]


def test_values_that_do_not_fit_the_packed_integers_are_refused(tmp_path):
    url = (tmp_path / "packed-range.h5").as_uri()
    ds = xr.Dataset({"v": ("x", np.array([0.5, 1.0, np.nan, 63.5]))})
    enc = {"v": {"dtype": "i1", "scale_factor": 0.5, "_FillValue": -128}}
    h5dask.to_h5cloud(ds, url, encoding=enc)  # 63.5 packs to 127: fits
    with pytest.raises(ValueOutOfRangeError, match=r"the first 100\.0.*int8 as packed"):
        h5dask.to_h5cloud(ds.assign(v=ds.v + [0, 0, 0, 36.5]), url, mode="a")
    assert _open(url)["v"].values.tolist()[3] == 63.5


def test_nan_into_integers_without_a_fill_value_is_refused(tmp_path):
    # xarray only warns, and stores an arbitrary integer (0 here) for each NaN
    url = (tmp_path / "nan.h5").as_uri()
    h5dask.to_h5cloud(xr.Dataset({"v": ("x", np.arange(4, dtype="i2"))}), url)
    with pytest.raises(ValueOutOfRangeError, match="'v': 1 NaN values.*no _FillValue"):
        h5dask.to_h5cloud(xr.Dataset({"v": ("x", [0.0, np.nan, 2.0, 3.0])}), url, mode="r+")
    assert _open(url)["v"].values.tolist() == [0, 1, 2, 3]
