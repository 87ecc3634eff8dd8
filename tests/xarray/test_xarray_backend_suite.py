"""xarray's own netCDF backend tests, run against h5cloud.

The classes ``TestH5NetCDFData`` and ``TestH5NetCDFViaDaskData`` of
``xarray/tests/test_backends.py`` (shipped in the xarray wheel) hold every netCDF-4
backend to the same round trips. Here they save through :func:`h5dask.to_h5cloud` and
open through ``xr.open_dataset(engine="h5cloud")``; domains live on the local file
system (``create_tmp_file``'s temporary directory, removed by xarray's own helper).

Files that a test writes with netCDF4-python or h5netcdf are ingested first
(``h5dask.ingest.load_file``, into the same temporary directory) and then opened as
domains, which is how h5cloud users get such files.

Tests not applicable to h5cloud are listed in ``NOT_APPLICABLE`` with the reason;
tests that call ``to_netcdf``/``open_dataset(engine=...)`` directly are re-stated
below with ``save``/``open`` (same data, same assertions).
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pytest
import xarray as xr

import h5dask

tb = pytest.importorskip("xarray.tests.test_backends")
pytest.importorskip("h5netcdf")
pytest.importorskip("netCDF4")
from xarray.tests.conftest import time_unit, use_dask  # noqa: E402,F401  (fixtures the classes use)

NOT_APPLICABLE: dict[str, str] = {}
# Not done yet (strict xfail, so they show up when they start passing):
NOT_YET: dict[str, str] = {}


def _is_hdf5_file(path: str) -> bool:
    return os.path.isfile(path)


class _H5Cloud:
    """save/open through h5cloud; HDF5 files written by other libraries are ingested."""

    engine = "h5cloud"

    def save(self, dataset, path, **kwargs):
        kwargs.pop("engine", None)
        return h5dask.to_h5cloud(dataset, path, **kwargs)

    def domain_of(self, path) -> str:
        """``path``, or for an HDF5 file another library wrote, the domain it is
        ingested into."""
        path = os.fspath(path)
        if not _is_hdf5_file(path):
            return path
        from h5dask.ingest import load_file

        domain = path + ".domain"
        load_file(path, domain, progress=False, overwrite=True)
        return domain

    @contextlib.contextmanager
    def open(self, path, **kwargs):
        with xr.open_dataset(self.domain_of(path), engine="h5cloud", **kwargs) as ds:
            yield ds

    @contextlib.contextmanager
    def create_store(self):
        from h5dask.xarray.writer import H5CloudWriteStore

        with tb.create_tmp_file() as path:
            store = H5CloudWriteStore.open(path, "w")
            yield store
            store.close()

    # -- tests that call to_netcdf/open_dataset(engine=...) directly, re-stated --------
    @pytest.mark.parametrize("create_default_indexes", [True, False])
    def test_create_default_indexes(self, create_default_indexes) -> None:
        original = xr.Dataset({"data": ("x", np.arange(3))}, coords={"x": [-1, 0, 1]})
        with self.roundtrip(original, open_kwargs={
                "create_default_indexes": create_default_indexes}) as loaded:
            if create_default_indexes:
                assert list(loaded.xindexes) == ["x"]
            else:
                assert len(loaded.xindexes) == 0

    def test_refresh_from_disk(self) -> None:
        # another writer replaces the domain while `a` is open: a new open sees it
        with tb.create_tmp_file() as path:
            with tb.open_example_dataset("example_1.nc") as example:
                self.save(example, path)
                with self.open(path) as a:
                    a = a.load()
                    example.rh.values += 100
                    self.save(example, path)
                    with self.open(path) as b:
                        assert not np.array_equal(a.rh.values, b.load().rh.values)

    def test_encoding_masked_arrays(self) -> None:
        import dask.array as da

        ds = xr.DataArray(
            da.from_array(np.ma.masked_array(np.array([[np.nan, np.nan], [np.nan, 2]]),
                                             np.array([[True, True], [True, False]])),
                          chunks=(2, 2)).astype("float32"),
            dims=("x", "y")).to_dataset(name="mydata")
        expected = ds.mean("x")
        encoding = {"mydata": {"_FillValue": np.float32(1e20)}}
        with self.roundtrip(expected, save_kwargs={"encoding": encoding}) as actual:
            xr.testing.assert_identical(expected.compute(), actual.compute())


def _not_applicable(cls):
    for name, reason in NOT_APPLICABLE.items():
        if hasattr(cls, name):
            setattr(cls, name, pytest.mark.skip(reason=f"not applicable: {reason}")(
                getattr(cls, name)))
    for name, reason in NOT_YET.items():
        setattr(cls, name, pytest.mark.xfail(strict=True, reason=f"not done: {reason}")(
            getattr(cls, name)))
    return cls


@_not_applicable
class TestH5CloudData(_H5Cloud, tb.TestH5NetCDFData):
    pass


@_not_applicable
class TestH5CloudViaDaskData(_H5Cloud, tb.TestH5NetCDFViaDaskData):
    pass
