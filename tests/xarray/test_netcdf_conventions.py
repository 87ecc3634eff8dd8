"""netCDF-4/HDF5 conventions: h5cloud names dimensions exactly as h5netcdf does."""

from __future__ import annotations

import h5py
import numpy as np
import xarray as xr

import h5dask

LAYOUT = {  # path -> shape; no dimension scales anywhere: all phony dimensions
    "b": (3, 5),
    "a": (5, 3),
    "c": (5,),
    "sub/x": (4, 4),
    "sub/y": (3,),
}


def _write_both(url, path):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as ref, h5dask.File(url, "w") as dom:
        for name, shape in LAYOUT.items():
            data = rng.random(shape).astype("f4")
            ref.create_dataset(name, data=data)
            dom.create_dataset(name, data=data)
        for target in (ref, dom):
            target.attrs["title"] = "phony"


def test_phony_dimensions_match_h5netcdf(tmp_path):
    url = f"file://{tmp_path}/bucket/home/phony.h5"
    (tmp_path / "bucket" / "db").mkdir(parents=True)
    path = tmp_path / "phony.h5"
    _write_both(url, path)
    for group in (None, "sub"):
        expected = xr.open_dataset(path, engine="h5netcdf", phony_dims="sort", group=group)
        got = xr.open_dataset(url, engine="h5cloud", group=group)
        xr.testing.assert_identical(got, expected)


def test_scales_give_named_dimensions_and_hide_internal_attributes(tmp_path):
    url = f"file://{tmp_path}/bucket/home/named.h5"
    (tmp_path / "bucket" / "db").mkdir(parents=True)
    ds = xr.Dataset({"t": (("time", "x"), np.ones((2, 3), "f4"))},
                    coords={"time": [1.0, 2.0]}, attrs={"Conventions": "CF-1.8"})
    h5dask.to_h5cloud(ds, url)
    got = xr.open_dataset(url, engine="h5cloud")
    assert got["t"].dims == ("time", "x")
    assert "x" not in got.variables  # a dimension without a coordinate variable
    for var in got.variables.values():
        assert not {"CLASS", "DIMENSION_LIST", "REFERENCE_LIST", "NAME",
                    "_Netcdf4Dimid"} & set(var.attrs)
    with h5dask.File(url) as f:
        assert f["time"].attrs["CLASS"] == b"DIMENSION_SCALE"
        assert list(f["t"].attrs["DIMENSION_LIST"][0]) == [f["time"].id]


def test_vlen_ascii_string_attribute_lists_are_str_as_in_h5netcdf(tmp_path):
    """h5netcdf gives a variable-length ASCII string array attribute (h5py's dimension
    labels, pyfive's dim_scales.hdf5) as a list of str; so must h5cloud."""
    from h5dask.ingest import load_file

    path = tmp_path / "labels.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("v", data=np.ones((2, 3), "i4"))
        d.dims[0].label, d.dims[1].label = "z", "y"
        d.attrs.create("names", ["a", "bc"], dtype=h5py.string_dtype("ascii"))
    url = (tmp_path / "store" / "labels.h5").as_uri()
    load_file(path, url, progress=False)
    want = xr.open_dataset(path, engine="h5netcdf", phony_dims="sort")
    got = xr.open_dataset(url, engine="h5cloud")
    assert got["v"].attrs["DIMENSION_LABELS"] == ["z", "y"]
    assert got["v"].attrs["names"] == ["a", "bc"]
    xr.testing.assert_identical(got, want)


def test_vlen_ascii_strings_in_chunks_never_written_are_str_as_in_h5netcdf(tmp_path):
    """A variable-length ASCII string variable reads as str (as h5netcdf reads it), also
    where its chunks were never written: the empty string '', not b'' among the str."""
    from h5dask.ingest import load_file

    path = tmp_path / "sparse_strings.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("s", shape=(6,), chunks=(2,), dtype=h5py.string_dtype("ascii"))
        f["s"][0] = b"x"  # chunk 0 stored (its element 1 unwritten), chunks 1 and 2 not
    url = (tmp_path / "store" / "sparse_strings.h5").as_uri()
    load_file(path, url, progress=False)
    want = xr.open_dataset(path, engine="h5netcdf", phony_dims="sort")
    for chunks in (None, {}):
        got = xr.open_dataset(url, engine="h5cloud", chunks=chunks).load()
        assert [type(v) for v in got["s"].values] == [str] * 6
        assert got["s"].values.tolist() == ["x", "", "", "", "", ""]
        xr.testing.assert_identical(got, want)
