"""A write leaves nothing half-done: a ``compute=False`` write stores nothing until it is
computed, and a write refused for a bad value stores none of its chunks."""

from __future__ import annotations

import threading
import uuid

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask.errors import InvalidReferenceError, ValueOutOfRangeError
from h5dask.format.ids import object_prefix
from h5dask.format.types import OBJ_REF
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


def test_a_bad_reference_stores_no_chunk_of_the_write(s3_bucket_url, storage_options):
    # each chunk was encoded and stored on its own: the three good chunks were stored
    # before the fourth's reference failed to encode
    url = f"{s3_bucket_url}/bad-ref.h5"
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        g = f.create_group("g")
        f.create_dataset("refs", shape=(4,), dtype=OBJ_REF, chunks=(1,))
    before = _objects(url, storage_options)
    with h5dask.File(url, "a", storage_options=storage_options) as f:
        with pytest.raises(InvalidReferenceError, match="'/refs'.*int 12345"):
            f["refs"][...] = np.array([g.id, g.id, g.id, 12345], dtype=object)
    assert _objects(url, storage_options) == before
    with h5dask.File(url, storage_options=storage_options) as f:
        assert f["refs"][...].tolist() == [""] * 4


def _new_variable(n: int, bad_block: int, wait_for: threading.Event | None = None
                  ) -> xr.Dataset:
    """A dask variable of ``n`` blocks of one element whose block ``bad_block`` is out
    of range for its uint8 encoding (it fails in its task, after the others were given
    their chance to store theirs); with ``wait_for``, the good blocks wait for it."""
    def block(b: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        if block_info is None:  # dask's look at the output's type
            return b
        if block_info[0]["chunk-location"][0] == bad_block:
            if wait_for is not None:
                wait_for.set()
            return b + 1000
        if wait_for is not None:
            assert wait_for.wait(30)
        return b

    values = da.arange(n, chunks=1, dtype=np.int64).map_blocks(block, dtype=np.int64)
    return xr.Dataset({"w": (("y",), values)})


def test_a_failed_write_removes_the_chunks_of_the_datasets_it_created(s3_bucket_url,
                                                                    storage_options):
    # mode='a' adding a variable whose last block fails: the blocks before it had
    # stored their chunks, in the domain's prefix, where gc does not look
    url = f"{s3_bucket_url}/failed-new-variable.h5"
    _base(url, storage_options)
    before = _objects(url, storage_options)
    with dask.config.set(scheduler="synchronous"), pytest.raises(ValueOutOfRangeError):
        h5dask.to_h5cloud(_new_variable(8, bad_block=4), url, mode="a",
                          storage_options=storage_options,
                          encoding={"w": {"dtype": "u1", "chunksizes": (1,)}})
    assert _objects(url, storage_options) == before


def test_a_failed_write_waits_for_its_running_tasks_before_rolling_back(
        s3_bucket_url, storage_options):
    # dask's threaded scheduler raised the failed block's error while the other block
    # was still running: its chunk was stored after the roll-back, an orphan
    url = f"{s3_bucket_url}/failed-running.h5"
    _base(url, storage_options)
    before = _objects(url, storage_options)
    ready = threading.Event()
    with dask.config.set(scheduler="threads", num_workers=4), pytest.raises(
            ValueOutOfRangeError):
        h5dask.to_h5cloud(_new_variable(4, bad_block=1, wait_for=ready), url, mode="a",
                          storage_options=storage_options,
                          encoding={"w": {"dtype": "u1", "chunksizes": (1,)}})
    assert _objects(url, storage_options) == before


def _compute_counting_writes(delayed, monkeypatch) -> int:
    """Compute a ``compute=False`` write; the number of block writes that ran (each
    task of ``da.store`` writes its block with one ``target[region] = block``)."""
    from h5dask.xarray.writer import ChunkTarget

    calls: list = []
    real = ChunkTarget.__setitem__

    def counting(self, key, value):  # the real write, counted
        calls.append(key)
        real(self, key, value)

    monkeypatch.setattr(ChunkTarget, "__setitem__", counting)
    dask.compute(delayed, scheduler="threads")
    return len(calls)


@pytest.mark.parametrize("how", ["new", "append"])
def test_compute_false_splits_an_in_memory_variable_along_the_storage_chunks(
        monkeypatch, how):
    # each in-memory variable was one block: one task wrote every chunk of it (and on a
    # distributed cluster the whole array went through the scheduler to one worker)
    from h5dask.xarray import writer

    monkeypatch.setattr(writer, "HELD_BLOCK_BYTES", 2 * 3 * 8, raising=False)  # 2 chunks
    url = f"memory://held-{uuid.uuid4().hex}/home/h.h5"
    values = np.arange(20.0)
    if how == "new":
        ds = xr.Dataset({"v": (("x",), values)})
        delayed = h5dask.to_h5cloud(ds, url, compute=False, encoding={"v": {"chunksizes": (3,)}})
        # 20 values in chunks of 3: blocks of 6 (2 chunks), the last of 2
        expected_blocks, expected = 4, values
    else:
        first = xr.Dataset({"v": (("x",), values[:4])})
        h5dask.to_h5cloud(first, url, unlimited_dims=["x"], encoding={"v": {"chunksizes": (3,)}})
        delayed = h5dask.to_h5cloud(xr.Dataset({"v": (("x",), values[4:])}), url,
                                    append_dim="x", compute=False)
        # 16 values from x=4: 4:6 (to the edge of 2 chunks), 6:12, 12:18, 18:20
        expected_blocks, expected = 4, values
    assert _compute_counting_writes(delayed, monkeypatch) == expected_blocks
    with h5dask.File(url) as f:
        assert f["v"].chunks == (3,)
        np.testing.assert_array_equal(f["v"][...], expected)


def test_compute_false_blocks_are_whole_chunks_in_every_dimension(monkeypatch):
    from h5dask.xarray import writer

    monkeypatch.setattr(writer, "HELD_BLOCK_BYTES", 4 * 5 * 4, raising=False)  # one chunk a block
    url = f"memory://held-{uuid.uuid4().hex}/home/h2.h5"
    data = np.arange(9 * 11, dtype="f4").reshape(9, 11)
    ds = xr.Dataset({"v": (("y", "x"), data), "s": ((), 1.5)})
    delayed = h5dask.to_h5cloud(ds, url, compute=False, encoding={"v": {"chunksizes": (4, 5)}})
    assert _compute_counting_writes(delayed, monkeypatch) == 3 * 3 + 1  # v's 3 x 3, s
    got = xr.open_dataset(url, engine="h5cloud").load()
    np.testing.assert_array_equal(got.v.values, data)
    assert float(got.s) == 1.5
