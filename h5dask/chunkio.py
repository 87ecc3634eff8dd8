"""Reading and writing the chunks of one dataset: the hot path of h5dask.

:class:`ArraySource` is everything a reader or writer of a dataset's chunks needs,
and nothing more: the store, the dataset id, shape, chunk shape, dtype, codec and
fill value. It is small and picklable, so dask tasks carry it cheaply to workers
(the store pickles as its settings and is rebuilt once per process).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np

from .format.chunks import ChunkGrid, normalize_selection
from .format.filters import ChunkCodec
from .format.ids import chunk_key, chunk_name, object_prefix
from .format.types import has_vlen
from .storage.base import ObjectStore
from .storage.sync import sync


@dataclass(frozen=True)
class ChunkRef:
    """Where a linked chunk lives: a byte range of an object (inside an HDF5 file)."""

    store: ObjectStore
    key: str
    offset: int
    size: int


@dataclass(frozen=True)
class ArraySource:
    """The chunk-level view of one dataset.

    >>> from h5dask.storage import open_location
    >>> from h5dask.format.filters import ChunkCodec
    >>> loc = open_location("memory://doc/home/a.h5")
    >>> src = ArraySource(loc.store, "d-0123abcd-4567ef01-0000-000000-000001", (4,), (2,),
    ...                   np.dtype("<i4"), ChunkCodec(np.dtype("<i4"), (2,)), 0)
    >>> src.write(slice(None), np.arange(4, dtype="<i4"))
    >>> src.read(slice(1, 3)).tolist()
    [1, 2]
    """

    store: ObjectStore
    dataset_id: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: np.dtype
    codec: ChunkCodec
    fill_value: Any
    linked: tuple[tuple[str, ChunkRef], ...] | None = None  # chunk name -> ref

    @property
    def grid(self) -> ChunkGrid:
        return ChunkGrid(self.shape, self.chunks)

    def chunk_key(self, index: tuple[int, ...]) -> str:
        return chunk_key(self.dataset_id, index)

    def _linked_ref(self, index: tuple[int, ...]) -> ChunkRef | None:
        assert self.linked is not None
        table = self.__dict__.get("_linked_table")
        if table is None:  # built once per instance: a lookup per chunk must not be O(n)
            table = dict(self.linked)
            object.__setattr__(self, "_linked_table", table)
        return table.get(chunk_name(index))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_linked_table", None)  # rebuilt on demand; keeps the pickle small
        return state

    def _fill_chunk(self) -> np.ndarray:
        out = np.empty(self.chunks, dtype=self.dtype)
        fill_array(out, self.fill_value)
        return out

    # -- reading ------------------------------------------------------------------
    async def read_chunk_async(self, index: tuple[int, ...]) -> np.ndarray | None:
        """The decoded chunk (full chunk shape, read-only), or None if never written."""
        bounds = self.grid.chunk_bounds(index)
        edge = tuple(b.stop - b.start for b in bounds)
        if self.linked is not None:
            ref = self._linked_ref(index)
            if ref is None:
                return None
            data = await ref.store.get(ref.key, kind="chunk",
                                       byte_range=(ref.offset, ref.offset + ref.size))
            key = f"{ref.key}[{ref.offset}:{ref.offset + ref.size}]"
        else:
            key = self.chunk_key(index)
            data = await self.store.get(key, kind="chunk")
        if data is None:
            return None
        arr = await _decode(self.codec, data, key, edge)
        if arr.shape != self.chunks:  # stored clipped at the edge: pad to the full chunk
            full = self._fill_chunk()
            full[tuple(slice(0, s) for s in arr.shape)] = arr
            arr = full
        return arr

    async def read_async(self, selection: Any = ()) -> np.ndarray:
        """Read a basic selection, fetching the touched chunks concurrently."""
        _, out_shape = normalize_selection(selection, self.shape)
        out = np.empty(out_shape, dtype=self.dtype)
        plan = self.grid.plan(selection)
        chunks = await asyncio.gather(*(self.read_chunk_async(p.index) for p in plan))
        for p, chunk in zip(plan, chunks):
            if chunk is None:  # never written: the fill value, only where this chunk goes
                fill_array(out[(*p.out_sel, Ellipsis)], self.fill_value)  # a view, even 0-d
            else:
                out[p.out_sel] = chunk[p.chunk_sel]
        return out

    def read(self, selection: Any = ()) -> np.ndarray:
        """Synchronous :meth:`read_async`."""
        return sync(self.read_async(selection))

    # -- writing ------------------------------------------------------------------
    async def write_chunk_async(self, index: tuple[int, ...], chunk: np.ndarray) -> None:
        """Write one full chunk (already padded to the chunk shape)."""
        if self.linked is not None:
            raise PermissionError("datasets linked to chunks inside an HDF5 file are read-only")
        data = await asyncio.to_thread(self.codec.encode, chunk)
        await self.store.put(self.chunk_key(index), data, kind="chunk")

    async def write_async(self, selection: Any, values: Any) -> None:
        """Write ``values`` into a basic selection; partial chunks are read, merged and
        rewritten (read-modify-write), whole chunks are written straight away."""
        sel, out_shape = normalize_selection(selection, self.shape)
        values = np.asarray(values, dtype=self.dtype) if not has_vlen(self.dtype) else \
            _object_array(values, self.dtype, out_shape)
        values = np.broadcast_to(values, out_shape)
        plan = self.grid.plan(selection)

        async def one(p: Any) -> None:
            bounds = self.grid.chunk_bounds(p.index)
            covers_all = all(
                isinstance(cs, slice) and cs.step == 1 and cs.start == 0
                and cs.stop >= b.stop - b.start
                for cs, b in zip(p.chunk_sel, bounds)
            )
            if covers_all:
                chunk = self._fill_chunk()
            else:
                existing = await self.read_chunk_async(p.index)
                chunk = self._fill_chunk() if existing is None else existing.copy()
            chunk[p.chunk_sel] = values[p.out_sel]
            await self.write_chunk_async(p.index, chunk)

        await asyncio.gather(*(one(p) for p in plan))

    def write(self, selection: Any, values: Any) -> None:
        """Synchronous :meth:`write_async`."""
        sync(self.write_async(selection, values))

    async def shrink_async(self, new_shape: tuple[int, ...]) -> None:
        """Before the dataset shrinks to ``new_shape``: delete the chunks wholly outside it
        and reset the part of edge chunks outside it to the fill value, as HSDS does, so
        that growing the dataset again shows the fill value there, not old data."""
        prefix = object_prefix(self.dataset_id) + "/"
        names = [k[len(prefix):] for k in await self.store.list(prefix)]
        indices = [tuple(int(i) for i in n.split("_")) for n in names
                   if n.replace("_", "").isdigit() and n.count("_") == len(self.chunks) - 1]

        async def one(index: tuple[int, ...]) -> None:
            starts = [i * c for i, c in zip(index, self.chunks)]
            if any(s >= n for s, n in zip(starts, new_shape)):
                await self.store.delete(self.chunk_key(index), kind="chunk")
            elif any(s + c > n for s, c, n in zip(starts, self.chunks, new_shape)):
                old = await self.read_chunk_async(index)
                if old is not None:
                    chunk = self._fill_chunk()
                    keep = tuple(slice(0, n - s) for s, n in zip(starts, new_shape))
                    chunk[keep] = old[keep]
                    await self.write_chunk_async(index, chunk)

        await asyncio.gather(*(one(i) for i in indices))


def fill_array(out: np.ndarray, value: Any) -> None:
    """Set every element of ``out`` to ``value``; for variable-length parts, None (no fill
    value set) means the empty value: ``""``, ``b""`` or an empty sequence."""
    dt = out.dtype
    if dt.names and has_vlen(dt):
        for name in dt.names:
            fill_array(out[name], None if value is None else value[name])
        return
    if dt.kind != "O":
        out[...] = value
        return
    vlen = (dt.metadata or {}).get("vlen")
    if isinstance(vlen, np.dtype):
        # element by element: a sequence assigned to an object array would be broadcast,
        # and each element gets its own array so that changing one changes no other
        for idx in np.ndindex(out.shape):
            out[idx] = np.array([] if value is None else value, dtype=vlen)
        return
    out[...] = (b"" if vlen is bytes else "") if value is None else value


def _object_array(values: Any, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    """``values`` as an array of variable-length ``dtype`` that broadcasts to ``shape``."""
    if dtype.names:
        return np.asarray(values, dtype=dtype)
    vlen = (dtype.metadata or {}).get("vlen")
    if isinstance(vlen, np.dtype) and not (isinstance(values, np.ndarray)
                                           and values.dtype.kind == "O"):
        # nested lists of sequences: the sequences are elements, not one more axis
        # (np.asarray would make equal-length sequences a 2-d array)
        out = np.empty(shape, dtype=dtype)
        for idx in np.ndindex(shape):
            item = values
            for i in idx:
                item = item[i]
            out[idx] = np.asarray(item, dtype=vlen)
        return out
    arr = np.asarray(values, dtype=object)
    out = np.empty(arr.shape, dtype=dtype)
    out[...] = arr
    return out


_DECODE_IN_THREAD = 256 * 1024


async def _decode(codec: ChunkCodec, data: bytes, key: str, edge: tuple[int, ...]) -> np.ndarray:
    # decompression releases the GIL: large chunks decode in a thread, off the I/O loop
    if codec.is_identity and not has_vlen(codec.dtype):
        return codec.decode(data, key, edge)
    if len(data) >= _DECODE_IN_THREAD:
        return await asyncio.to_thread(codec.decode, data, key, edge)
    return codec.decode(data, key, edge)
