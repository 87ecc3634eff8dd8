"""A write leaves nothing half-done: a ``compute=False`` write stores nothing until it is
computed, and a write refused for a bad value stores none of its chunks."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask.format.ids import object_prefix
from h5dask.storage import open_location
from h5dask.storage.sync import sync


def _objects(url: str, options: dict) -> set[str]:
    """Every object of the domain at ``url`` under its root's prefix."""
    with h5dask.File(url, storage_options=options) as f:
        root = f.id
    store = open_location(url, options).store
    return set(sync(store.list(object_prefix(root) + "/")))


def _base(url: str, options: dict) -> xr.Dataset:
    ds = xr.Dataset({"v": (("x",), np.arange(4.0))}, coords={"x": [1, 2, 3, 4]})
    h5dask.to_h5cloud(ds, url, storage_options=options, unlimited_dims=["x"],
                      encoding={"v": {"chunksizes": (2,)}})
    return ds


@pytest.mark.parametrize("how", ["new-variable", "append", "region"])
def test_compute_false_stores_nothing_until_computed(s3_bucket_url, storage_options, how):
    # in-memory (numpy) variables were written by to_h5cloud itself, also with
    # compute=False: a new variable's chunk was left orphaned, an append's beyond the
    # extent, and a region write changed the stored values without being computed
    url = f"{s3_bucket_url}/deferred-{how}.h5"
    base = _base(url, storage_options)
    before = _objects(url, storage_options)
    if how == "new-variable":
        delayed = h5dask.to_h5cloud(base.assign(w=base.v * 10), url, mode="a",
                                    storage_options=storage_options, compute=False)
        expected = base.assign(w=base.v * 10)
    elif how == "append":
        more = base.assign_coords(x=[5, 6, 7, 8]) + 100
        delayed = h5dask.to_h5cloud(more, url, append_dim="x",
                                    storage_options=storage_options, compute=False)
        expected = xr.concat([base, more], "x")
    else:
        part = xr.Dataset({"v": (("x",), [-1.0, -2.0])})
        delayed = h5dask.to_h5cloud(part, url, region={"x": slice(0, 2)},
                                    storage_options=storage_options, compute=False)
        expected = base.copy(deep=True)
        expected["v"][:2] = [-1.0, -2.0]
    assert _objects(url, storage_options) == before
    got = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    xr.testing.assert_identical(got.load(), base)
    delayed.compute()
    got = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    xr.testing.assert_identical(got.load(), expected)
