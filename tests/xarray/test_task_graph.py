"""Laziness and the task graph: one getter task per chunk object, one GET per block."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

import h5dask


@pytest.fixture
def grid_domain(s3_bucket_url, storage_options):
    """A variable of 8 x 8 = 64 chunks, two of which were never written."""
    url = f"{s3_bucket_url}/grid.h5"
    data = np.arange(64 * 100, dtype="<f4").reshape(80, 80)
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        ds = f.create_dataset("v", shape=(80, 80), dtype="<f4", chunks=(10, 10),
                              fillvalue=-1.0)
        ds[:] = data
        ds.attrs["units"] = "K"
        # an unwritten chunk: overwrite a fresh dataset except one region
        sparse = f.create_dataset("sparse", shape=(20, 20), dtype="<i2", chunks=(10, 10),
                                  fillvalue=7)
        sparse[:10, :10] = 1
    return url, data


def _open(url, storage_options, **kw):
    return xr.open_dataset(url, engine="h5cloud", storage_options=storage_options, **kw)


def _getter_tasks(arr):
    graph = dict(arr.__dask_graph__())
    return [k for k in graph if isinstance(k, tuple)]


def test_64_chunks_give_64_blocks_matching_the_storage_grid(grid_domain, storage_options):
    url, _ = grid_domain
    v = _open(url, storage_options, chunks={})["v"]
    assert v.data.numblocks == (8, 8)
    assert v.data.chunks == ((10,) * 8, (10,) * 8)
    assert len(_getter_tasks(v.data)) == 64


def test_opening_reads_metadata_only(grid_domain, storage_options):
    url, _ = grid_domain
    h5dask.reset_stats()
    _open(url, storage_options, chunks={})
    io = h5dask.stats()
    assert io["chunk"]["read_requests"] == 0
    assert io["metadata"]["read_requests"] > 0


def test_one_block_costs_one_chunk_get(grid_domain, storage_options):
    url, data = grid_domain
    v = _open(url, storage_options, chunks={})["v"]
    h5dask.reset_stats()
    block = v.data.blocks[3, 5].compute()
    assert h5dask.stats()["chunk"]["read_requests"] == 1
    np.testing.assert_array_equal(block, data[30:40, 50:60])


def test_unwritten_chunk_costs_one_get_and_reads_fill(grid_domain, storage_options):
    url, _ = grid_domain
    s = _open(url, storage_options, chunks={}, mask_and_scale=False)["sparse"]
    h5dask.reset_stats()
    block = s.data.blocks[1, 1].compute()
    io = h5dask.stats()["chunk"]
    assert io["read_requests"] == 1 and io["read_missing"] == 1
    assert (block == 7).all()


def test_larger_chunks_fetch_several_objects_in_one_task(grid_domain, storage_options):
    url, data = grid_domain
    dims = _open(url, storage_options)["v"].dims
    arr = _open(url, storage_options, chunks=dict.fromkeys(dims, 40))["v"]
    assert arr.data.numblocks == (2, 2)
    h5dask.reset_stats()
    np.testing.assert_array_equal(arr.data.blocks[0, 1].compute(), data[:40, 40:])
    assert h5dask.stats()["chunk"]["read_requests"] == 16


def test_chunks_none_is_lazy_and_fetches_only_touched_chunks(grid_domain, storage_options):
    url, data = grid_domain
    h5dask.reset_stats()
    v = _open(url, storage_options)["v"]
    assert h5dask.stats()["chunk"]["read_requests"] == 0
    np.testing.assert_array_equal(v[12:18, 33].values, data[12:18, 33])
    assert h5dask.stats()["chunk"]["read_requests"] == 1


def test_dask_names_are_deterministic(grid_domain, storage_options):
    url, _ = grid_domain
    a = _open(url, storage_options, chunks={})["v"].data
    b = _open(url, storage_options, chunks={})["v"].data
    assert a.name == b.name
    assert dask.base.tokenize(a) == dask.base.tokenize(b)


def test_reduction_matches_numpy(grid_domain, storage_options):
    url, data = grid_domain
    v = _open(url, storage_options, chunks={})["v"]
    assert float(v.sum().compute()) == pytest.approx(float(data.astype("f8").sum()), rel=1e-6)
    assert float(v.isel({v.dims[0]: slice(5, 55)}).max()) == data[5:55].max()


def test_a_variable_of_10_to_the_5_chunks_costs_bytes_per_task(tmp_path):
    """User ask 8 (one task per chunk makes graphs too big to build or ship): 10**5 chunk
    objects give 10**5 getter tasks that each pickle to a key and a reference to one
    shared array entry, some 70 bytes per task for the whole graph; and a read of a few
    of them works as any other."""
    import pickle

    url = (tmp_path / "many.h5").as_uri()
    with h5dask.File(url, "w") as f:  # metadata only: the graph is the point, not the I/O
        f.create_dataset("v", shape=(400, 250), dtype="<f4", chunks=(1, 1), fillvalue=0.5)
    arr = xr.open_dataset(url, engine="h5cloud", chunks={})["v"].data
    assert arr.numblocks == (400, 250)
    graph = dict(arr.__dask_graph__())
    getters = {k: v for k, v in graph.items() if isinstance(k, tuple)}
    shared = [v for k, v in graph.items() if not isinstance(k, tuple)]
    assert len(getters) == 10**5 and len(shared) == 1
    assert len(pickle.dumps(shared[0])) < 8192  # the dataset's source: settings and ids
    assert max(len(pickle.dumps(t)) for t in list(getters.values())[:1000]) < 512
    assert len(pickle.dumps(graph)) / len(getters) < 200  # 72 measured
    assert float(arr[:2, :10].sum().compute()) == 10.0
