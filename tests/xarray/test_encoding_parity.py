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


@pytest.mark.hsds
def test_contiguous_variables_as_h5netcdf_reports_them(hsds_domain, storage_options, tmp_path,
                                                      monkeypatch):
    # encoding contiguous=True was ignored: every variable was chunked, and re-opened
    # with contiguous False and chunksizes, where h5netcdf gives contiguous True and
    # chunksizes None; HSDS has the H5D_CONTIGUOUS layout (one object)
    server, domain, url = hsds_domain
    ds = xr.Dataset({"contig": (("t", "x"), np.arange(24.0).reshape(6, 4)),
                     "small": (("t",), np.arange(6.0))})
    path = tmp_path / "contig.nc"
    ds.to_netcdf(path, engine="h5netcdf", encoding={"contig": {"contiguous": True}})
    by_h5netcdf = xr.open_dataset(path, engine="h5netcdf")
    h5dask.to_h5cloud(ds, url, storage_options=storage_options,
                      encoding={"contig": {"contiguous": True}})
    back = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    for key in ("contiguous", "chunksizes"):
        assert back.contig.encoding[key] == by_h5netcdf.contig.encoding[key], key
    xr.testing.assert_identical(back.load(), ds)
    with h5pyd.File(domain, "r", **server.h5pyd_kwargs()) as f:
        assert f["contig"].chunks is None
        np.testing.assert_array_equal(f["contig"][...], ds.contig.values)
    # as read from a netCDF file (h5netcdf says contiguous for each), small variables stay
    # contiguous; bigger ones than HSDS's recommended contiguous size are chunked
    monkeypatch.setattr("h5dask.xarray.writer.CONTIGUOUS_INHERITED_MAX", 6 * 8)
    copy = f"{url[:-3]}-copy.h5"
    h5dask.to_h5cloud(by_h5netcdf, copy, storage_options=storage_options)
    again = xr.open_dataset(copy, engine="h5cloud", storage_options=storage_options)
    assert by_h5netcdf.small.encoding["contiguous"] is True
    assert again.contig.encoding["contiguous"] is False  # 192 bytes: chunked
    assert (again.small.encoding["contiguous"], again.small.encoding["chunksizes"]) == (
        True, None)  # 48 bytes
    xr.testing.assert_identical(again.load(), ds)


@pytest.mark.parametrize(("extra", "unlimited", "conflict"), [
    ({"zlib": True}, None, "compression"),
    ({"chunksizes": (2,)}, None, "chunksizes"),
    ({}, ["t"], "an unlimited dimension"),
])
def test_contiguous_refused_with_what_needs_chunks(extra, unlimited, conflict):
    ds = xr.Dataset({"v": (("t",), np.arange(6.0))})
    with pytest.raises(ValueError, match=f"variable 'v': encoding contiguous=True cannot go "
                                         f"with {conflict}"):
        h5dask.to_h5cloud(ds, f"memory://parity/home/{uuid.uuid4().hex}.h5",
                          encoding={"v": {"contiguous": True, **extra}},
                          unlimited_dims=unlimited)


def test_file_create_dataset_chunks_false_is_contiguous():
    url = f"memory://parity/home/{uuid.uuid4().hex}.h5"
    with h5dask.File(url, "w") as f:
        f.create_dataset("c", data=np.arange(12.0).reshape(3, 4), chunks=False)
        with pytest.raises(ValueError, match="'d': a contiguous dataset.*filters"):
            f.create_dataset("d", data=np.arange(4.0), chunks=False, compression="gzip")
    with h5dask.File(url) as f:
        assert f["c"].chunks is None and f["c"].layout == "H5D_CONTIGUOUS"
        np.testing.assert_array_equal(f["c"][1:, 2:], [[6.0, 7.0], [10.0, 11.0]])
