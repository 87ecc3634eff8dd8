"""to_h5cloud: encoding, append mode, DataTree, deferred writes."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import h5dask


def _ds():
    rng = np.random.default_rng(3)
    return xr.Dataset(
        {"temp": (("time", "lat"), rng.random((6, 4), dtype="f4"), {"units": "K"}),
         "name": (("lat",), np.array(["a", "bb", "ccc", "dddd"], dtype=object))},
        coords={"time": np.arange(6.0), "lat": [-45.0, -15.0, 15.0, 45.0]},
        attrs={"title": "test", "history": ["one", "two"]},
    )


def test_encoding_chunks_compression_fillvalue(s3_bucket_url, storage_options):
    url = f"{s3_bucket_url}/enc.h5"
    enc = {"temp": {"chunks": (2, 4), "compression": "gzip", "compression_opts": 6,
                    "shuffle": True, "_FillValue": -999.0}}
    h5dask.to_h5cloud(_ds(), url, encoding=enc, storage_options=storage_options)
    with h5dask.File(url, storage_options=storage_options) as f:
        t = f["temp"]
        assert t.chunks == (2, 4)
        assert t.compression == "gzip" and t.compression_opts == 6 and t.shuffle
        assert t.fillvalue == -999.0
    got = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    xr.testing.assert_identical(got, _ds())
    assert got["temp"].encoding["chunksizes"] == (2, 4)
    assert got["temp"].encoding["zlib"] and got["temp"].encoding["complevel"] == 6


def test_bad_encoding_names_the_variable_and_key(s3_bucket_url, storage_options):
    with pytest.raises(ValueError, match="'temp'.*bogus"):
        h5dask.to_h5cloud(_ds(), f"{s3_bucket_url}/bad.h5", storage_options=storage_options,
                          encoding={"temp": {"bogus": 1}})
    with pytest.raises(KeyError, match="nothere"):  # as to_netcdf
        h5dask.to_h5cloud(_ds(), f"{s3_bucket_url}/bad.h5", storage_options=storage_options,
                          encoding={"nothere": {}})


def test_mode_a_adds_and_rewrites_variables(s3_bucket_url, storage_options):
    url = f"{s3_bucket_url}/append.h5"
    base = _ds()
    h5dask.to_h5cloud(base, url, storage_options=storage_options)
    extra = xr.Dataset({"precip": (("time",), np.arange(6.0, dtype="f4"))},
                       coords={"time": base.time})
    h5dask.to_h5cloud(extra[["precip"]].drop_vars("time"), url, mode="a",
                      storage_options=storage_options)
    got = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    assert set(got.data_vars) == {"temp", "name", "precip"}
    np.testing.assert_array_equal(got["precip"].values, np.arange(6.0))
    # as to_netcdf(mode="a"): an existing variable is rewritten in place
    h5dask.to_h5cloud(base[["temp"]] * 2, url, mode="a", storage_options=storage_options)
    got = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    np.testing.assert_array_equal(got["temp"].values, base["temp"].values * 2)
    assert set(got.data_vars) == {"temp", "name", "precip"}
    with pytest.raises(ValueError, match="variable 'temp'.*Unable to update size"):
        h5dask.to_h5cloud(base[["temp"]].isel(time=slice(2)), url, mode="a",
                          storage_options=storage_options)


def test_dask_variables_written_one_task_per_chunk(s3_bucket_url, storage_options):
    url = f"{s3_bucket_url}/dask.h5"
    ds = _ds().chunk({"time": 2})
    h5dask.reset_stats()
    delayed = h5dask.to_h5cloud(ds, url, storage_options=storage_options, compute=False)
    assert h5dask.stats()["chunk"]["write_requests"] < 6  # nothing of temp written yet
    with pytest.raises(FileNotFoundError):
        h5dask.File(url, storage_options=storage_options)
    delayed.compute()
    with h5dask.File(url, storage_options=storage_options) as f:
        assert f["temp"].chunks == (2, 4)
    xr.testing.assert_identical(
        xr.open_dataset(url, engine="h5cloud", storage_options=storage_options), _ds())


def test_datatree_roundtrip(s3_bucket_url, storage_options):
    url = f"{s3_bucket_url}/tree.h5"
    tree = xr.DataTree.from_dict({
        "/": xr.Dataset(attrs={"title": "root"}),
        "/ocean": xr.Dataset({"sst": (("x",), np.arange(3.0))}, coords={"x": [1, 2, 3]}),
        "/ocean/deep": xr.Dataset({"t": (("z",), np.arange(2.0))}),
        "/atmos": _ds(),
    })
    h5dask.to_h5cloud(tree, url, storage_options=storage_options)
    got = xr.open_datatree(url, engine="h5cloud", storage_options=storage_options)
    xr.testing.assert_identical(got, tree)
    groups = xr.open_groups(url, engine="h5cloud", storage_options=storage_options)
    assert set(groups) == {"/", "/ocean", "/ocean/deep", "/atmos"}


def test_open_mfdataset(s3_bucket_url, storage_options):
    ds = _ds()
    urls = []
    for i, part in enumerate((ds.isel(time=slice(0, 3)), ds.isel(time=slice(3, 6)))):
        urls.append(f"{s3_bucket_url}/part{i}.h5")
        h5dask.to_h5cloud(part, urls[-1], storage_options=storage_options)
    got = xr.open_mfdataset(urls, engine="h5cloud", storage_options=storage_options,
                            combine="by_coords", data_vars="minimal", coords="minimal",
                            compat="override")
    xr.testing.assert_allclose(got.compute(), ds)
