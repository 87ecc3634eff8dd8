"""The chunk grid of a dataset and the mapping of selections onto chunks.

>>> grid = ChunkGrid((10, 7), (4, 4))
>>> grid.grid_shape
(3, 2)
>>> [(c.index, c.out_sel) for c in grid.plan((slice(3, 5), 6))]
[((0, 1), (slice(0, 1, None),)), ((1, 1), (slice(1, 2, None),))]
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from .types import has_vlen


@dataclass(frozen=True)
class ChunkSelection:
    """One chunk touched by a selection: which part of the chunk goes where in the output."""

    index: tuple[int, ...]
    chunk_sel: tuple[Any, ...]  # slices/ints into the (full-shape) chunk
    out_sel: tuple[slice, ...]  # slices into the output array (ints dropped)


def region_chunks(region: tuple[slice, ...], chunks: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The indices of the chunks a region of unit-step slices (inside the shape) touches,
    in C order: the indices of :meth:`ChunkGrid.plan`, without where each piece goes.

    >>> region_chunks((slice(3, 9), slice(0, 2)), (4, 2))
    [(0, 0), (1, 0), (2, 0)]
    """
    if any(s.start >= s.stop for s in region):
        return []
    return list(itertools.product(*(range(s.start // c, -(-s.stop // c))
                                    for s, c in zip(region, chunks))))


def slice_origin(key: tuple, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """Where index 0 of ``array[key]`` lies in ``array`` (of ``shape``), if ``key`` is
    one slice of step 1 per dimension; None for any other key.

    >>> slice_origin((slice(2, 5), slice(None)), (10, 4))
    (2, 0)
    >>> slice_origin((slice(0, 10, 2),), (10,)) is None
    True
    """
    if len(key) != len(shape):
        return None
    origin = []
    for k, n in zip(key, shape):
        if not isinstance(k, slice):
            return None
        start, _stop, step = k.indices(n)
        if step != 1:
            return None
        origin.append(start)
    return tuple(origin)


def normalize_selection(key: Any, shape: tuple[int, ...]) -> tuple[tuple, tuple[int, ...]]:
    """Basic indexing (ints, slices, Ellipsis) -> (per-dim int or slice, output shape).

    Raises IndexError/TypeError as numpy would for what basic indexing cannot do.
    """
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        i = next(n for n, k in enumerate(key) if k is Ellipsis)
        fill = len(shape) - (len(key) - 1)
        key = key[:i] + (slice(None),) * fill + key[i + 1:]
    if len(key) > len(shape):
        raise IndexError(f"too many indices ({len(key)}) for a {len(shape)}-d dataset")
    key = key + (slice(None),) * (len(shape) - len(key))
    norm: list = []
    out_shape: list[int] = []
    for k, n in zip(key, shape):
        if isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step < 1:
                raise IndexError("negative or zero slice steps are not supported")
            norm.append(slice(start, stop, step))
            out_shape.append(len(range(start, stop, step)))
        elif isinstance(k, int | np.integer) and not isinstance(k, bool):
            k = int(k)
            if not -n <= k < n:
                raise IndexError(f"index {k} is out of bounds for an axis of size {n}")
            norm.append(k % n)
        else:
            raise TypeError(f"unsupported index {k!r}: use integers, slices and Ellipsis")
    return tuple(norm), tuple(out_shape)


@dataclass(frozen=True)
class ChunkGrid:
    """A regular grid of ``chunks``-shaped chunks over ``shape``."""

    shape: tuple[int, ...]
    chunks: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.shape) != len(self.chunks):
            raise ValueError(f"chunk shape {self.chunks} does not match shape {self.shape}")
        if any(c < 1 for c in self.chunks):
            raise ValueError(f"chunk dims must be positive, got {self.chunks}")

    @property
    def grid_shape(self) -> tuple[int, ...]:
        return tuple(math.ceil(s / c) for s, c in zip(self.shape, self.chunks))

    @property
    def nchunks(self) -> int:
        return math.prod(self.grid_shape)

    def indices(self) -> Iterator[tuple[int, ...]]:
        """Every chunk index, in C order."""
        return itertools.product(*(range(g) for g in self.grid_shape))

    def chunk_bounds(self, index: tuple[int, ...]) -> tuple[slice, ...]:
        """The region of the dataset chunk ``index`` covers (clipped at the edges)."""
        return tuple(slice(i * c, min((i + 1) * c, s))
                     for i, c, s in zip(index, self.chunks, self.shape))

    def count(self, key: Any) -> int:
        """How many chunks a basic selection touches, counted without listing them.

        >>> ChunkGrid((2**40,), (1,)).count(slice(None))
        1099511627776
        """
        sel, _ = normalize_selection(key, self.shape)
        total = 1
        for s, c in zip(sel, self.chunks):
            if isinstance(s, int):
                continue
            n = len(range(s.start, s.stop, s.step))
            if n == 0:
                return 0
            last = s.start + (n - 1) * s.step
            # steps no longer than a chunk touch every chunk in between; longer ones
            # put each element in a chunk of its own
            total *= last // c - s.start // c + 1 if s.step <= c else n
        return total

    def piece(self, index: tuple[int, ...], sel: tuple) -> ChunkSelection | None:
        """The part of a normalized selection ``sel`` (from :func:`normalize_selection`)
        that lies in chunk ``index``, or None if the selection does not touch it: what
        :meth:`plan` gives for that chunk, for one chunk at a time.

        >>> grid = ChunkGrid((10, 7), (4, 4))
        >>> grid.piece((1, 1), normalize_selection((slice(3, 5), 6), grid.shape)[0])
        ChunkSelection(index=(1, 1), chunk_sel=(slice(0, 1, 1), 2), out_sel=(slice(1, 2, None),))
        """
        chunk_sel: list[Any] = []
        out_sel: list[slice] = []
        for i, s, c, n in zip(index, sel, self.chunks, self.shape):
            low, high = i * c, min((i + 1) * c, n)
            if isinstance(s, int):
                if not low <= s < high:
                    return None
                chunk_sel.append(s - low)
                continue
            first = s.start if s.start >= low else s.start + -(-(low - s.start) // s.step) * s.step
            stop = min(high, s.stop)
            if first >= stop:
                return None
            out_start = (first - s.start) // s.step
            chunk_sel.append(slice(first - low, stop - low, s.step))
            out_sel.append(slice(out_start, out_start + len(range(first, stop, s.step))))
        return ChunkSelection(tuple(index), tuple(chunk_sel), tuple(out_sel))

    def plan(self, key: Any) -> list[ChunkSelection]:
        """The chunks a basic selection touches, with where each piece goes."""
        sel, _ = normalize_selection(key, self.shape)
        per_dim: list[list[tuple[int, Any, slice | None]]] = []
        for s, c in zip(sel, self.chunks):
            pieces: list[tuple[int, Any, slice | None]] = []
            if isinstance(s, int):
                pieces.append((s // c, s % c, None))
            else:
                start, stop, step = s.start, s.stop, s.step
                if start >= stop:
                    per_dim.append([])
                    continue
                out_pos = 0
                first = start
                while first < stop:
                    ci = first // c
                    cend = min((ci + 1) * c, stop)
                    count = len(range(first, cend, step))
                    pieces.append((ci, slice(first - ci * c, cend - ci * c, step),
                                   slice(out_pos, out_pos + count)))
                    out_pos += count
                    first = first + count * step
            per_dim.append(pieces)
        out: list[ChunkSelection] = []
        for combo in itertools.product(*per_dim):
            out.append(ChunkSelection(
                index=tuple(p[0] for p in combo),
                chunk_sel=tuple(p[1] for p in combo),
                out_sel=tuple(p[2] for p in combo if p[2] is not None),
            ))
        return out


def choose_chunks(shape: tuple[int, ...], dtype: np.dtype, chunks: Any,
                  maxshape: tuple[int | None, ...] | None) -> tuple[int, ...]:
    """The chunk shape of a new dataset, h5py's way: ``chunks`` as given (checked against
    ``shape``); None/False: one chunk (refused for an extensible ``maxshape``); True: a
    guess of about 2 MiB, halving the largest dimension first. A scalar has chunks (1,).

    >>> choose_chunks((100, 1000), np.dtype("f8"), True, None)
    (100, 1000)
    >>> choose_chunks((10000, 1000), np.dtype("f8"), True, None)
    (313, 500)
    >>> choose_chunks((4, 6), np.dtype("f8"), (2, 3), None)
    (2, 3)
    """
    if chunks is not None and chunks is not True and chunks is not False:
        chunks = tuple(int(c) for c in chunks)
        if len(chunks) != len(shape) or any(c < 1 for c in chunks):
            raise ValueError(f"chunks {chunks} do not fit shape {shape}")
        return chunks
    if shape == ():
        return (1,)
    if chunks is None or chunks is False:
        if maxshape is not None and None in maxshape:
            raise ValueError("extensible datasets (maxshape None) must be chunked")
        return tuple(max(1, s) for s in shape)
    # aim at about 2 MiB, halving the largest dimension first, like h5py's guess
    target = 2 * 2**20
    itemsize = max(1, dtype.itemsize if not has_vlen(dtype) else 16)
    out = [max(1, s) if s else 1024 for s in shape]
    while math.prod(out) * itemsize > target and max(out) > 1:
        i = out.index(max(out))
        out[i] = math.ceil(out[i] / 2)
    return tuple(out)
