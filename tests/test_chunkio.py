"""The chunk hot path: a selection fetches exactly the chunk objects it touches, once each,
concurrently; writes read only the chunks they change in part."""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import uuid

import numpy as np
import pytest
from storage_backends import Backend, make_backend

import h5dask
from h5dask.chunkio import LIST_FIRST_ABOVE, ArraySource
from h5dask.format.filters import ChunkCodec, filter_json
from h5dask.format.ids import chunk_key
from h5dask.readahead import get_readahead, set_budget
from h5dask.storage import StoreTuning, sync
from h5dask.storage.fsspec_store import FsspecObjectStore

SHAPE, CHUNKS = (20, 30, 7), (6, 8, 7)  # grid 4 x 4 x 1, edge chunks in two dims
DATA = np.arange(np.prod(SHAPE), dtype="<f8").reshape(SHAPE)


@pytest.fixture(params=["memory", "s3"])
def backend(request, tmp_path) -> Backend:
    return make_backend(request, tmp_path)


@pytest.fixture
def dataset_url(backend: Backend) -> str:
    url = backend.url("grid.h5")
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        f.create_dataset("x", data=DATA, chunks=CHUNKS, compression="gzip")
        f.create_dataset("sparse", shape=SHAPE, chunks=CHUNKS, dtype="<f8", fillvalue=-1)
        f["sparse"][0:6, 0:8] = 1  # exactly chunk (0, 0, 0)
    return url


def _touched(key: object) -> set[tuple[int, ...]]:
    """The chunks that hold a selected element, computed with numpy, independently."""
    index = np.arange(DATA.size).reshape(SHAPE)
    flat = np.atleast_1d(index[key]).reshape(-1)
    return {tuple(int(c) // n for c, n in zip(pt, CHUNKS))
            for pt in zip(*np.unravel_index(flat, SHAPE))}


SELECTIONS = [
    (0, 0, 0), (slice(0, 6), slice(0, 8)), (slice(5, 7),), (slice(None), 29),
    (slice(None, None, 6), slice(None, None, 8)), (slice(2, 19, 5), slice(7, 9), 3),
    (Ellipsis,), (slice(18, None), slice(24, None)), (-1, -1, -1), (slice(3, 4), 15, 2),
]


def test_objects_in_a_dataset_prefix_that_are_not_chunk_names_are_ignored(
        backend: Backend) -> None:
    """A LIST-first read takes only ASCII ``i_j`` names as chunks: a stray object named
    with other scripts' digits is neither read as a chunk nor a ValueError."""
    n = 4 * (LIST_FIRST_ABOVE + 100)
    url = backend.url("stray.h5")
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        ds = f.create_dataset("v", shape=(n,), chunks=(4,), dtype="<i4", fillvalue=-3)
        ds[0:4] = [1, 2, 3, 4]
        src = ds.source()
        prefix = src.chunk_key((0,))[:-1]
        for name in ("\u0661", "\u00b2", "1\u00b2"):  # Arabic-Indic one, superscript two
            sync(src.store.put(prefix + name, np.full(4, 9, "<i4").tobytes()))
        expected = np.full(n, -3, "<i4")
        expected[0:4] = [1, 2, 3, 4]
        np.testing.assert_array_equal(ds[:], expected)


@pytest.mark.parametrize("key", SELECTIONS, ids=repr)
def test_reads_only_touched_chunks(backend: Backend, dataset_url: str, key: object) -> None:
    with h5dask.File(dataset_url, storage_options=backend.options) as f:
        ds = f["x"]
        ds.shape  # metadata loaded before counting  # noqa: B018
        h5dask.reset_stats()
        got = ds[key]
        s = h5dask.stats()
    np.testing.assert_array_equal(got, DATA[key])
    assert s["chunk"]["read_requests"] == len(_touched(key))
    assert s["metadata"]["read_requests"] == 0  # metadata is cached after the first access
    assert s["chunk"]["write_requests"] == s["total"]["retries"] == 0


def test_each_chunk_fetched_once(backend: Backend, dataset_url: str, monkeypatch) -> None:
    with h5dask.File(dataset_url, storage_options=backend.options) as f:
        ds = f["x"]
        store = ds.source().store
        fetched: list[str] = []
        real_get = store._get

        async def recording_get(key: str, byte_range: tuple[int, int] | None) -> bytes | None:
            fetched.append(key)  # records, then reads for real
            return await real_get(key, byte_range)

        monkeypatch.setattr(store, "_get", recording_get)
        ds[3:17, ::3]
    expected = {ds.source().chunk_key(i) for i in _touched((slice(3, 17), slice(None, None, 3)))}
    assert sorted(fetched) == sorted(expected)


def test_metadata_reads(backend: Backend, dataset_url: str) -> None:
    h5dask.reset_stats()
    with h5dask.File(dataset_url, storage_options=backend.options) as f:
        opened = h5dask.stats()["metadata"]["read_requests"]
        assert opened == 2  # .domain.json and the root group
        ds = f["x"]  # lazy: the dataset's JSON is read on first use
        assert h5dask.stats()["metadata"]["read_requests"] == 2
        ds.shape, f["x"].dtype, f["x"].chunks, f["sparse"].fillvalue  # noqa: B018
        assert h5dask.stats()["metadata"]["read_requests"] == 4  # one each, then cached
        assert h5dask.stats()["chunk"]["read_requests"] == 0  # opening reads no chunk


def test_unwritten_chunks_read_as_fill(backend: Backend, dataset_url: str) -> None:
    with h5dask.File(dataset_url, storage_options=backend.options) as f:
        ds = f["sparse"]
        h5dask.reset_stats()
        got = ds[...]
        s = h5dask.stats()
    expected = np.full(SHAPE, -1.0)
    expected[0:6, 0:8] = 1
    np.testing.assert_array_equal(got, expected)
    assert s["chunk"]["read_requests"] == 16 and s["chunk"]["read_missing"] == 15
    assert s["total"]["errors"] == 0 and s["total"]["retries"] == 0


def test_writes_read_only_partial_chunks(backend: Backend) -> None:
    url = backend.url("w.h5")
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        ds = f.create_dataset("x", shape=(10, 10), chunks=(4, 4), dtype="<i4")
        h5dask.reset_stats()
        ds[0:8, 0:8] = 5  # four whole chunks: no reads
        s = h5dask.stats()["chunk"]
        assert (s["read_requests"], s["write_requests"]) == (0, 4)
        h5dask.reset_stats()
        ds[8:10, :] = 6  # three edge chunks, each covered to the dataset's edge: no reads
        s = h5dask.stats()["chunk"]
        assert (s["read_requests"], s["write_requests"]) == (0, 3)
        h5dask.reset_stats()
        ds[1:3, 2:6] = 7  # parts of two chunks: read, merge, write back
        s = h5dask.stats()["chunk"]
        assert (s["read_requests"], s["write_requests"]) == (2, 2)
        expected = np.zeros((10, 10), "<i4")
        expected[0:8, 0:8] = 5
        expected[8:10] = 6
        expected[1:3, 2:6] = 7
        np.testing.assert_array_equal(ds[...], expected)


class SlowMemoryStore(FsspecObjectStore):
    """A memory store whose GETs take 20 ms and record how many run at once."""

    def __init__(self) -> None:
        super().__init__("memory", f"/slow-{uuid.uuid4().hex}",
                         tuning=StoreTuning(max_concurrency=64))
        self.active = self.peak = 0

    def _init_args(self) -> tuple:
        return ()

    async def _get(self, key: str, byte_range: tuple[int, int] | None) -> bytes | None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await asyncio.sleep(0.02)
            return await super()._get(key, byte_range)
        finally:
            self.active -= 1


def _grid_of_64(store: SlowMemoryStore, serial: int) -> tuple[ArraySource, np.ndarray]:
    """A (40, 40) int16 dataset in 64 zstd chunks of (5, 5) on ``store``, written."""
    dt = np.dtype("<i2")
    src = ArraySource(store, f"d-01234567-89abcdef-0000-000000-{serial:06d}", (40, 40),
                      (5, 5), dt, ChunkCodec.from_filters([filter_json("zstd")], dt, (5, 5)), 0)
    data = np.arange(1600, dtype=dt).reshape(40, 40)
    src.write(..., data)
    return src, data


def test_chunks_fetched_concurrently() -> None:
    store = SlowMemoryStore()
    src, data = _grid_of_64(store, 1)
    store.peak = 0
    np.testing.assert_array_equal(src.read((slice(None), slice(None))), data)
    assert store.peak == 64  # all 64 chunk GETs in flight together


def test_array_source_pickles_small_and_reads(dataset_url: str, backend: Backend) -> None:
    with h5dask.File(dataset_url, storage_options=backend.options) as f:
        src = f["x"].source()
    blob = pickle.dumps(src)
    assert len(blob) < 2000  # settings and ids only, no data and no metadata cache
    again = pickle.loads(blob)
    assert again.store is src.store  # the store is rebuilt once per process, then shared
    np.testing.assert_array_equal(again.read((slice(0, 3), 5)), DATA[0:3, 5])


def test_large_chunks_decode_off_the_loop(backend: Backend) -> None:
    url = backend.url("big.h5")
    big = np.random.default_rng(0).standard_normal((256, 300))  # 600 KiB per chunk
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        f.create_dataset("b", data=big, chunks=(256, 150), compression="lz4", shuffle=True)
    with h5dask.File(url, storage_options=backend.options) as f:
        np.testing.assert_array_equal(f["b"][...], big)
        np.testing.assert_array_equal(f["b"][100, 140:160], big[100, 140:160])


def test_read_chunk_and_shrink_direct() -> None:
    store = FsspecObjectStore("memory", f"/direct-{uuid.uuid4().hex}")
    dt = np.dtype(">u2")
    src = ArraySource(store, "d-01234567-89abcdef-0000-000000-000002", (7, 5), (3, 2), dt,
                      ChunkCodec(dt, (3, 2)), 9)
    assert sync(src.read_chunk_async((0, 0))) is None
    src.write((slice(None), slice(None)), np.arange(35).reshape(7, 5))
    chunk = sync(src.read_chunk_async((2, 2)))  # the corner chunk: 1 x 1 of data, padded
    assert chunk.shape == (3, 2) and chunk[0, 0] == 34 and (chunk.reshape(-1)[1:] == 9).all()
    sync(src.shrink_async((4, 3)))
    names = sorted(k.rsplit("/", 1)[-1] for k in sync(store.list("db/")))
    assert names == ["0_0", "0_1", "1_0", "1_1"]  # chunks wholly outside are deleted
    edge = sync(src.read_chunk_async((1, 1)))
    np.testing.assert_array_equal(edge, [[17, 9], [9, 9], [9, 9]])  # outside reset to fill
    for index in itertools.product(range(2), range(2)):
        assert sync(src.read_chunk_async(index)) is not None


def test_a_read_of_many_chunks_fetches_only_the_stored_ones(backend: Backend) -> None:
    """More than LIST_FIRST_ABOVE chunks: one LIST, then a GET per stored chunk only (not
    one per chunk the metadata claims), and the same values as chunk by chunk."""
    n = 4 * (LIST_FIRST_ABOVE + 100)
    url = backend.url("many.h5")
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        ds = f.create_dataset("v", shape=(n,), chunks=(4,), dtype="<i4", fillvalue=-3)
        ds[8:14] = [1, 2, 3, 4, 5, 6]  # chunks 2 and 3, the latter in part
        ds[n - 2:] = [7, 8]  # the last chunk
        expected = np.full(n, -3, "<i4")
        expected[8:14], expected[n - 2:] = [1, 2, 3, 4, 5, 6], [7, 8]
        for key in (slice(None), slice(1, None, 3), slice(9, n - 1, 2)):
            h5dask.reset_stats()
            np.testing.assert_array_equal(ds[key], expected[key], err_msg=repr(key))
            assert h5dask.stats()["chunk"]["read_requests"] <= 3, key
        src = ds.source()
        assert src.grid.count(slice(None)) > LIST_FIRST_ABOVE
        np.testing.assert_array_equal(  # chunk by chunk, no LIST: the same
            np.concatenate([ds[i:i + 4] for i in range(0, 64, 4)]), expected[:64])


def test_unwritten_sequences_are_native_like_h5py() -> None:
    """Elements of a chunk nobody wrote, of a sequence type of big-endian numbers, are
    empty sequences in native byte order, as h5py reads them (and as written chunks
    decode)."""
    from h5dask.chunkio import fill_array

    out = np.empty(2, dtype=h5dask.vlen_dtype(">i2"))
    fill_array(out, None)
    assert [a.dtype for a in out] == [np.dtype("=i2")] * 2 and out[0] is not out[1]


def test_empty_and_multi_chunk_selections_read_in_the_calling_thread(
        backend: Backend, dataset_url: str) -> None:
    with h5dask.File(dataset_url, storage_options=backend.options) as f:
        source = f["x"].source()
        assert source.read((slice(3, 3),)).shape == (0, 30, 7)
        np.testing.assert_array_equal(source.read((slice(5, 13), slice(7, 20))),
                                      DATA[5:13, 7:20])


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_a_chunk_object_larger_than_any_encoding_is_an_error_not_cut(
        backend: Backend, compression: str | None) -> None:
    """Chunks are read as one ranged GET past their largest encoded size on S3: an
    object larger than that is read whole again, so its decode reports it (never data
    cut to the bound), from the I/O loop (a block of chunks) and in the task's thread."""
    url = backend.url(f"big-{compression}.h5")
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        f.create_dataset("x", data=DATA, chunks=CHUNKS, compression=compression)
        source = f["x"].source()
        bound = source._stored_bound()
        assert bound is not None
        good = sync(source.store.get(source.chunk_key((1, 1, 0))))
        sync(source.store.put(source.chunk_key((1, 1, 0)), good + bytes(bound)))
        for selection in ((slice(6, 12), slice(8, 16)), (slice(0, 20),)):
            with pytest.raises(h5dask.errors.CorruptChunkError, match="1_1_0"):
                source.read(selection)
        sync(source.store.put(source.chunk_key((1, 1, 0)), good))
        np.testing.assert_array_equal(source.read((slice(0, 20),)), DATA)


def test_a_block_keeps_a_window_of_gets_in_flight() -> None:
    """A block of many chunks (dask's "auto" blocks) keeps half the read-ahead budget's
    worth of GETs in flight, starting the next as each ends: its buffers are reused
    instead of all allocated at once, and the values are exact."""
    store = SlowMemoryStore()
    src, data = _grid_of_64(store, 2)
    before = get_readahead().budget
    set_budget(2 * 6 * 50)  # half of it: six chunks of 50 bytes
    try:
        store.peak = 0
        np.testing.assert_array_equal(src.read((slice(None), slice(None))), data)
        assert store.peak == 6
        set_budget(2 * 2 * 50 - 1)  # less than two chunks' worth: two all the same
        store.peak = 0
        np.testing.assert_array_equal(src.read((slice(3, 38), slice(None))), data[3:38])
        assert store.peak == 2
    finally:
        set_budget(before)


class FailingSlowStore(SlowMemoryStore):
    """GETs of one chunk fail; every GET is recorded."""

    def __init__(self, failing: str) -> None:
        super().__init__()
        self.failing = failing
        self.fetched: list[str] = []

    async def _get(self, key: str, byte_range: tuple[int, int] | None) -> bytes | None:
        self.fetched.append(key)
        if key.endswith(self.failing):
            raise h5dask.errors.StoragePermissionError(f"denied: {key}")
        return await super()._get(key, byte_range)


def test_a_failed_get_in_a_window_stops_the_block_and_names_the_key() -> None:
    store = FailingSlowStore("/0_1")
    src, _ = _grid_of_64(store, 3)
    before = get_readahead().budget
    set_budget(2 * 4 * 50)  # four in flight
    try:
        store.fetched.clear()
        with pytest.raises(h5dask.errors.StoragePermissionError, match="0_1"):
            src.read((slice(None), slice(None)))
        sync(asyncio.sleep(0.1))  # anything still started would have been fetched
        assert len(store.fetched) < 64  # the chunks after the window were never fetched
    finally:
        set_budget(before)


def _chunk_files(root: str, source: ArraySource) -> set[int]:
    """The chunk files of a 1-D dataset, listed straight from the file system (not
    through the store, whose request slots would queue the listing behind the PUTs)."""
    prefix = os.path.join(root, chunk_key(source.dataset_id, (0,)).rsplit("/", 1)[0])
    return {int(n) for n in os.listdir(prefix) if n.isdigit()
            and os.path.isfile(os.path.join(prefix, n))}


def test_a_failed_put_returns_only_after_every_put_of_the_write_ended(tmp_path) -> None:
    """One chunk PUT of a write fails (a directory where its file goes): the write used
    to raise at once while the other PUTs were still running, so a roll-back after it
    (to_h5cloud's) raced them and they landed after it. Now it raises once all ended."""
    n = 400
    url = f"file://{tmp_path}/home/race.h5"
    with h5dask.File(url, "w") as f:
        ds = f.create_dataset("v", shape=(n,), dtype="<f8", chunks=(1,), maxshape=(None,))
        source = ds.source()
        os.makedirs(tmp_path / "home" / chunk_key(source.dataset_id, (0,)) / "x")
        with pytest.raises(IsADirectoryError):
            ds[...] = np.arange(n, dtype="<f8")
        # every other chunk's PUT ended before the error reached the caller
        assert _chunk_files(str(tmp_path / "home"), source) == set(range(1, n))


def test_a_failed_append_leaves_no_chunk_beyond_the_old_extent(tmp_path) -> None:
    """to_h5cloud's roll-back of a failed append runs after every PUT of it ended: no
    chunk lands beyond the old extent after the roll-back reset it."""
    import xarray as xr

    url = f"file://{tmp_path}/home/append.h5"
    base = xr.Dataset({"v": (("x",), np.arange(4.0))}, coords={"x": np.arange(4)})
    h5dask.to_h5cloud(base, url, unlimited_dims=["x"], encoding={"v": {"chunksizes": (1,)}})
    with h5dask.File(url) as f:
        source = f["v"].source()
    os.makedirs(tmp_path / "home" / chunk_key(source.dataset_id, (4,)) / "x")
    more = xr.Dataset({"v": (("x",), np.arange(400.0) + 100)},
                      coords={"x": np.arange(4, 404)})
    with pytest.raises(IsADirectoryError):
        h5dask.to_h5cloud(more, url, append_dim="x")
    assert _chunk_files(str(tmp_path / "home"), source) == {0, 1, 2, 3}
    with h5dask.File(url) as f:
        assert f["v"].shape == (4,)
        np.testing.assert_array_equal(f["v"][...], np.arange(4.0))
