"""Separate region writes computed together, whose regions cut the same storage chunk:
each merges its rows into that chunk (read, merge, rewrite), and without a lock one of
two merges running at once was lost, silently. ``ChunkTarget`` holds a lock per merged
chunk (``chunk_merge_locks``; on a cluster a ``distributed.Lock``, proven on SeaweedFS
with 2 worker processes in ``test_append_region.py``). Here the merges are made to
overlap every time: each chunk read sleeps first, on dask's threaded scheduler."""

from __future__ import annotations

import asyncio
import threading

import dask
import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask.chunkio import ArraySource
from h5dask.xarray import writer


@pytest.fixture
def slow_chunk_reads(monkeypatch):
    """Every chunk read waits 0.3 s first, so that two merges of one chunk overlap."""
    original = ArraySource.read_chunk_async

    async def slow(self, index):
        await asyncio.sleep(0.3)
        return await original(self, index)

    monkeypatch.setattr(ArraySource, "read_chunk_async", slow)


def _region_writes(url: str) -> np.ndarray:
    values = np.arange(24 * 6, dtype="f4").reshape(24, 6) + 1
    full = xr.Dataset({"v": (("time", "x"), values)},
                      coords={"time": np.arange(24), "x": np.arange(6)})
    template = full.copy(data={"v": np.zeros((24, 6), "f4")})
    h5dask.to_h5cloud(template, url, encoding={"v": {"chunksizes": (5, 6)}})
    writes = [h5dask.to_h5cloud(full.isel(time=slice(s, s + 8)).drop_vars("x").chunk({"time": 8}),
                                url, region={"time": slice(s, s + 8)}, compute=False,
                                safe_chunks=False)
              for s in range(0, 24, 8)]  # regions of 8 rows over chunks of 5
    with dask.config.set(scheduler="threads", num_workers=6):
        dask.compute(*writes)
    return values


def test_region_writes_that_cut_one_chunk_both_land(tmp_path, slow_chunk_reads):
    url = (tmp_path / "regions.h5").as_uri()
    values = _region_writes(url)
    got = xr.open_dataset(url, engine="h5cloud")["v"].values
    np.testing.assert_array_equal(got, values)


def test_merge_locks_are_taken_for_the_cut_chunks_only(tmp_path, monkeypatch):
    taken: list[list[str]] = []
    real = writer.chunk_merge_locks

    def spy(names):
        names = sorted(set(names))
        if names:
            taken.append(names)
        return real(names)

    monkeypatch.setattr(writer, "chunk_merge_locks", spy)
    _region_writes((tmp_path / "regions.h5").as_uri())
    chunk_names = [name.rsplit("/", 1)[1] for names in taken for name in names]
    cut = sorted(name for name in chunk_names if "_" in name)  # v's chunks (2-D names)
    # regions [0, 8), [8, 16), [16, 24) over chunks of 5: chunk 1 is cut by the first two,
    # chunk 3 by the last two; chunks 0, 2 and 4 are written whole, with no lock. (The
    # time coordinate, one chunk of 24, is merged by every region: locked too.)
    assert cut == ["1_0", "1_0", "3_0", "3_0"]


def test_locks_are_taken_in_order_and_released_after_an_error():
    names = ["file:///d/b", "file:///d/a"]
    with pytest.raises(RuntimeError, match="merge failed"):
        with writer.chunk_merge_locks(names):
            raise RuntimeError("merge failed")
    # released: taking them again from another thread does not block
    done = threading.Event()

    def again():
        with writer.chunk_merge_locks(reversed(names)):
            done.set()

    thread = threading.Thread(target=again)
    thread.start()
    thread.join(10)
    assert done.is_set()
