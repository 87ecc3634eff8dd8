"""The chunk grid and the mapping of selections onto chunks."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from h5dask.format.chunks import (
    ChunkGrid,
    choose_chunks,
    normalize_selection,
    region_chunks,
    slice_origin,
)


def _assemble(arr: np.ndarray, chunks: tuple[int, ...], key: object) -> tuple[np.ndarray, set]:
    """Read ``arr[key]`` chunk by chunk, as chunkio does, padding edge chunks."""
    grid = ChunkGrid(arr.shape, chunks)
    _, out_shape = normalize_selection(key, arr.shape)
    out = np.full(out_shape, -1, dtype=arr.dtype)
    touched = set()
    for p in grid.plan(key):
        touched.add(p.index)
        full = np.full(chunks, -7, dtype=arr.dtype)  # padding that must never show
        region = arr[grid.chunk_bounds(p.index)]
        full[tuple(slice(0, s) for s in region.shape)] = region
        out[p.out_sel] = full[p.chunk_sel]
    return out, touched


def _touched_by_numpy(shape: tuple[int, ...], chunks: tuple[int, ...], key: object) -> set:
    """The chunks holding at least one selected element, computed independently."""
    index = np.arange(int(np.prod(shape))).reshape(shape)
    picked = np.atleast_1d(index[key]).reshape(-1)
    coords = np.unravel_index(picked, shape)
    return {tuple(int(c) // n for c, n in zip(pt, chunks)) for pt in zip(*coords)}


def test_grid() -> None:
    grid = ChunkGrid((10, 7), (4, 4))
    assert grid.grid_shape == (3, 2) and grid.nchunks == 6
    assert list(grid.indices())[:3] == [(0, 0), (0, 1), (1, 0)]
    assert grid.chunk_bounds((2, 1)) == (slice(8, 10), slice(4, 7))  # clipped edge chunk
    assert ChunkGrid((0, 5), (4, 4)).nchunks == 0
    with pytest.raises(ValueError):
        ChunkGrid((10,), (4, 4))
    with pytest.raises(ValueError):
        ChunkGrid((10,), (0,))


SELECTIONS = [
    (), Ellipsis, 3, -1, (2, 5), (slice(None), 6), (slice(3, 5), 6), (slice(1, 9, 3),),
    (slice(None, None, 2), slice(1, None, 3)), (Ellipsis, 0), (slice(4, 8), slice(4, 7)),
    (slice(5, 5),), (slice(8, 100), slice(-3, None)), (np.int64(9), np.int32(0)),
    (slice(0, 10, 9), slice(0, 7, 6)),
]


@pytest.mark.parametrize("key", SELECTIONS, ids=repr)
def test_plan_matches_numpy(key: object) -> None:
    arr = np.arange(70, dtype="<i4").reshape(10, 7)
    out, touched = _assemble(arr, (4, 4), key)
    np.testing.assert_array_equal(out, arr[key])
    assert touched == _touched_by_numpy(arr.shape, (4, 4), key)


def test_random_selections_3d() -> None:
    rng = random.Random(7)
    arr = np.arange(9 * 11 * 5).reshape(9, 11, 5)
    for _ in range(300):
        chunks = tuple(rng.randint(1, 6) for _ in range(3))
        key = []
        for n in arr.shape:
            if rng.random() < 0.25:
                key.append(rng.randrange(-n, n))
            else:
                start, stop = sorted(rng.randint(-n - 2, n + 2) for _ in range(2))
                key.append(slice(start if rng.random() < 0.8 else None, stop,
                                 rng.randint(1, 4)))
        key = tuple(key)
        out, touched = _assemble(arr, chunks, key)
        np.testing.assert_array_equal(out, arr[key], err_msg=f"{key} with chunks {chunks}")
        if out.size:
            assert touched == _touched_by_numpy(arr.shape, chunks, key), (key, chunks)


def test_count_and_piece_agree_with_plan() -> None:
    """count() (arithmetic) and piece() (one chunk at a time) give what plan() lists."""
    rng = random.Random(11)
    for _ in range(500):
        shape = tuple(rng.randint(0, 20) for _ in range(rng.randint(1, 3)))
        grid = ChunkGrid(shape, tuple(rng.randint(1, 6) for _ in shape))
        key = tuple(rng.randrange(-n, n) if n and rng.random() < 0.2 else
                    slice(rng.choice([None, rng.randint(-25, 25)]),
                          rng.choice([None, rng.randint(-25, 25)]), rng.choice([None, 1, 2, 7]))
                    for n in shape)
        plan = grid.plan(key)
        assert grid.count(key) == len(plan), (shape, grid.chunks, key)
        sel, _ = normalize_selection(key, shape)
        pieces = [p for i in grid.indices() if (p := grid.piece(i, sel)) is not None]
        assert sorted(map(repr, pieces)) == sorted(map(repr, plan)), (shape, grid.chunks, key)


def test_count_of_a_huge_grid_needs_no_listing() -> None:
    grid = ChunkGrid((2**40, 2**20), (1, 2**10))
    assert grid.count(()) == 2**50
    assert grid.count((slice(None, None, 2**39), 5)) == 2


@pytest.mark.parametrize("key, error", [
    ((1, 2, 3), IndexError), (10, IndexError), (-11, IndexError),
    (slice(None, None, -1), IndexError), ([1, 2], TypeError), (1.5, TypeError),
    (True, TypeError), ("a", TypeError), (None, TypeError),
])
def test_bad_selections(key: object, error: type) -> None:
    with pytest.raises(error):
        normalize_selection(key, (10, 7))


def test_normalize() -> None:
    assert normalize_selection((Ellipsis, 2), (4, 5, 6)) == (
        (slice(0, 4, 1), slice(0, 5, 1), 2), (4, 5))
    assert normalize_selection(-1, (4,)) == ((3,), ())


# -- the chunk shape of a new dataset (h5py's rules; used by file, writer and ingest) ------
def test_choose_chunks_keeps_given_chunks_and_checks_them() -> None:
    assert choose_chunks((4, 6), np.dtype("f8"), (2, 3), None) == (2, 3)
    with pytest.raises(ValueError, match="do not fit"):
        choose_chunks((4, 6), np.dtype("f8"), (2,), None)
    with pytest.raises(ValueError, match="do not fit"):
        choose_chunks((4, 6), np.dtype("f8"), (0, 3), None)


def test_choose_chunks_contiguous_is_one_chunk_but_not_for_extensible() -> None:
    assert choose_chunks((4, 0), np.dtype("f8"), None, None) == (4, 1)
    assert choose_chunks((), np.dtype("f8"), None, None) == (1,)
    with pytest.raises(ValueError, match="extensible"):
        choose_chunks((4,), np.dtype("f8"), False, (None,))


@pytest.mark.parametrize("shape, dtype, expected", [
    ((100, 1000), "f8", (100, 1000)),          # 800 kB: one chunk
    ((10000, 1000), "f8", (313, 500)),         # halved, largest dimension first
    ((0,), "f8", (1024,)),                     # an empty extent guesses 1024
    ((2**22,), "O", (131072,)),                # variable-length: 16 bytes an element
])
def test_choose_chunks_guess_aims_at_2_mib(shape: tuple, dtype: str,
                                           expected: tuple) -> None:
    assert choose_chunks(shape, np.dtype(dtype), True, None) == expected
    assert math.prod(expected) * max(np.dtype(dtype).itemsize, 16 if dtype == "O" else 0
                                     ) <= 2 * 2**20


@pytest.mark.parametrize(("key", "shape", "origin"), [
    ((slice(2, 5), slice(None)), (10, 4), (2, 0)),
    ((slice(-3, None),), (10,), (7,)),
    ((slice(None),), (0,), (0,)),
    ((slice(0, 10, 2),), (10,), None),  # a step: not a plain slice
    ((3, slice(None)), (10, 4), None),  # an integer drops a dimension
    ((slice(None),), (10, 4), None),  # too short a key: no origin rather than a wrong one
])
def test_slice_origin(key: tuple, shape: tuple[int, ...], origin: tuple | None) -> None:
    assert slice_origin(key, shape) == origin


@pytest.mark.parametrize("region", [
    (slice(0, 4), slice(0, 50), slice(0, 40)),
    (slice(3, 9), slice(10, 50), slice(0, 1)),
    (slice(0, 96), slice(0, 50), slice(0, 40)),
    (slice(5, 5), slice(0, 50), slice(0, 40)),
    (slice(95, 96), slice(49, 50), slice(39, 40)),
])
def test_region_chunks_are_those_of_the_chunk_grid(region):
    grid = ChunkGrid((24 * 4, 50, 40), (4, 50, 40))
    assert region_chunks(region, grid.chunks) == [
        p.index for p in grid.plan(region)]
