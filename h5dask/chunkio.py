"""Reading and writing the chunks of one dataset: the hot path of h5dask.

:class:`ArraySource` is everything a reader or writer of a dataset's chunks needs,
and nothing more: the store, the dataset id, shape, chunk shape, dtype, codec and
fill value. It is small and picklable, so dask tasks carry it cheaply to workers
(the store pickles as its settings and is rebuilt once per process).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from .errors import (
    CorruptChunkError,
    LinkedFileChangedError,
    ObjectChangedError,
    StorageError,
    StoragePermissionError,
    ValueOutOfRangeError,
)
from .format.chunks import ChunkGrid, ChunkSelection, normalize_selection
from .format.filters import ChunkCodec
from .format.ids import chunk_key, chunk_name, object_prefix
from .format.types import has_vlen, integer_range_problem
from .readahead import DEFAULT_BUDGET, get_readahead
from .storage.base import ObjectStore, ObjectVersion
from .storage.sync import Launch, all_ended, launch, on_io_loop, sync

T = TypeVar("T")

#: A read of more chunks than this lists the stored chunks first (see read_async)
LIST_FIRST_ABOVE = 1024
_READ_WINDOW = 1024  # pieces read concurrently at most, so memory is bounded too


#: the version of a linked file that was missing when the session opened it: its chunks
#: are never read (a file there now was written after the open, of any layout), and a
#: read says whether it is still missing (compared by value: it travels pickled)
MISSING_FILE = ObjectVersion(-1, "missing")


@dataclass(frozen=True)
class ChunkRef:
    """Where a linked chunk lives: a byte range of an object (inside an HDF5 file).
    ``version``: the file's version the session accepted (its HEAD at open); the range
    is read on condition of it (:meth:`ObjectStore.get_buffer`), so a file written after
    the open is refused, not read; :data:`MISSING_FILE`: the file was missing at the
    open, and no read is made. ``origin`` names the dataset and domain for that error.
    The chunks of one file share these objects (pickled once for a task)."""

    store: ObjectStore
    key: str
    offset: int
    size: int
    version: ObjectVersion | None = None
    origin: str = ""


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
        prefix = self.__dict__.get("_key_prefix")
        if prefix is None:  # the dataset id checked and formatted once per instance
            prefix = chunk_key(self.dataset_id, index)[: -len(chunk_name(index))]
            object.__setattr__(self, "_key_prefix", prefix)
        return prefix + chunk_name(index)

    def _linked_ref(self, index: tuple[int, ...]) -> ChunkRef | None:
        assert self.linked is not None
        table = self.__dict__.get("_linked_table")
        if table is None:  # built once per instance: a lookup per chunk must not be O(n)
            table = dict(self.linked)
            object.__setattr__(self, "_linked_table", table)
        return table.get(chunk_name(index))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for cached in ("_linked_table", "_key_prefix"):  # rebuilt on demand
            state.pop(cached, None)
        return state

    def _fill_chunk(self) -> np.ndarray:
        out = np.empty(self.chunks, dtype=self.dtype)
        fill_array(out, self.fill_value)
        return out

    # -- reading ------------------------------------------------------------------
    def _ref_key(self, index: tuple[int, ...]) -> tuple[ChunkRef | None, str]:
        """For a linked chunk, its byte range (None if not stored); and its name."""
        if self.linked is None:
            return None, self.chunk_key(index)
        ref = self._linked_ref(index)
        if ref is None:
            return None, self.chunk_key(index)
        return ref, f"{ref.key}[{ref.offset}:{ref.offset + ref.size}]"

    async def _fetch(self, index: tuple[int, ...]) -> tuple[bytes | memoryview | None, str]:
        """The stored bytes of one chunk (None if never written) and the key naming them."""
        ref, key = self._ref_key(index)
        if ref is not None:
            if ref.version == MISSING_FILE:
                raise _missing_at_open(ref, await ref.store.stat(ref.key))
            try:
                data = await ref.store.get_buffer(
                    ref.key, kind="chunk", byte_range=(ref.offset, ref.offset + ref.size),
                    version=ref.version)
            except ObjectChangedError as exc:
                raise _changed_while_read(ref, exc, await _stat_or_none(ref)) from exc
            return _linked_bytes(ref, data), key
        if self.linked is not None:
            return None, key
        bound = self._stored_bound()
        if bound is None:
            return await self.store.get_buffer(key, kind="chunk"), key
        return await self.store.get_bounded(key, bound, kind="chunk"), key

    def _stored_bound(self) -> int | None:
        """Bytes one stored chunk of this dataset can hold at most, encoded as HSDS and
        h5dask encode (the decoded size, plus what a compressor adds to data it cannot
        shrink: well under 1 %, and headers); None for variable-length types."""
        if has_vlen(self.dtype):
            return None
        nbytes = math.prod(self.chunks) * self.dtype.itemsize
        return nbytes + nbytes // 64 + 4096

    def _fetch_sync(self, index: tuple[int, ...]) -> tuple[bytes | memoryview | None, str]:
        """:meth:`_fetch` in the calling thread (which blocks); a chunk fetched ahead
        for this task (:mod:`h5dask.readahead`) is taken from there."""
        ref, key = self._ref_key(index)
        found, data = get_readahead().take(self, index)
        if found:
            return data, key
        if ref is not None:
            if ref.version == MISSING_FILE:
                raise _missing_at_open(ref, sync(ref.store.stat(ref.key)))
            try:
                data = ref.store.get_buffer_sync(
                    ref.key, kind="chunk", byte_range=(ref.offset, ref.offset + ref.size),
                    version=ref.version)
            except ObjectChangedError as exc:
                raise _changed_while_read(ref, exc, sync(_stat_or_none(ref))) from exc
            return _linked_bytes(ref, data), key
        if self.linked is not None:
            return None, key
        bound = self._stored_bound()
        if bound is None:
            return self.store.get_buffer_sync(key, kind="chunk"), key
        return self.store.get_bounded_sync(key, bound, kind="chunk"), key

    def _edge(self, index: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(b.stop - b.start for b in self.grid.chunk_bounds(index))

    def _full(self, arr: np.ndarray) -> np.ndarray:
        if arr.shape != self.chunks:  # stored clipped at the edge: pad to the full chunk
            full = self._fill_chunk()
            full[tuple(slice(0, s) for s in arr.shape)] = arr
            arr = full
        return arr

    async def read_chunk_async(self, index: tuple[int, ...]) -> np.ndarray | None:
        """The decoded chunk (full chunk shape, read-only), or None if never written."""
        data, key = await self._fetch(index)
        if data is None:
            return None
        return self._full(await _decode(self.codec, data, key, self._edge(index)))

    async def _read_piece(self, piece: ChunkSelection, out: np.ndarray) -> None:
        """Fetch one chunk and put its part of the selection in place in ``out``."""
        target = out[(*piece.out_sel, Ellipsis)]  # a view, even 0-d
        found, data = await get_readahead().take_async(self, piece.index)
        if found:
            key = self._ref_key(piece.index)[1]
        else:
            data, key = await self._fetch(piece.index)
        if data is None:  # never written: the fill value, only where this chunk goes
            fill_array(target, self.fill_value)
            return
        # a whole chunk that lands on contiguous output is decoded straight into it
        if target.shape == self.chunks and await _decode_into(self.codec, data, key, target):
            return
        chunk = self._full(await _decode(self.codec, data, key, self._edge(piece.index)))
        out[piece.out_sel] = chunk[piece.chunk_sel]

    def _read_piece_sync(self, piece: ChunkSelection, out: np.ndarray) -> None:
        """:meth:`_read_piece` in the calling thread: fetch, decode (GIL released) and
        place, with no trip through the I/O loop."""
        data, key = self._fetch_sync(piece.index)
        self._place(piece, data, key, out)

    async def read_async(self, selection: Any = ()) -> np.ndarray:
        """Read a basic selection, fetching the touched chunks concurrently.

        A selection of more than :data:`LIST_FIRST_ABOVE` chunks (say a whole long
        coordinate) starts from the fill value and fetches only the chunks that are
        stored (one LIST), so that its cost follows the chunk objects that exist, not
        the number the metadata claims."""
        sel, out_shape = normalize_selection(selection, self.shape)
        out = np.empty(out_shape, dtype=self.dtype)
        if self.grid.count(selection) <= LIST_FIRST_ABOVE:
            plan = self.grid.plan(selection)
            await asyncio.gather(*(self._read_piece(p, out) for p in plan))
            return out
        fill_array(out, self.fill_value)
        stored: Iterable[tuple[int, ...]]
        try:
            stored = await self._stored_indices()
        except StoragePermissionError:  # no LIST allowed: every chunk, a window at a time
            stored = self.grid.indices()
        pieces = (p for index in stored if (p := self.grid.piece(index, sel)) is not None)
        while window := list(itertools.islice(pieces, _READ_WINDOW)):
            await asyncio.gather(*(self._read_piece(p, out) for p in window))
        return out

    async def _stored_indices(self) -> list[tuple[int, ...]]:
        """The indices of the chunks that are stored (one LIST, or the linked table)."""
        if self.linked is not None:
            names = [name for name, _ in self.linked]
        else:
            prefix = object_prefix(self.dataset_id) + "/"
            names = [k[len(prefix):] for k in await self.store.list(prefix)]
        rank = len(self.chunks)
        # ASCII digits only: int() also takes other scripts' digits ("١") and
        # str.isdigit() superscripts it cannot parse ("²"); both are not chunk names.
        return [tuple(int(i) for i in n.split("_")) for n in names
                if n.isascii() and n.replace("_", "").isdigit() and n.count("_") == rank - 1]

    def read(self, selection: Any = ()) -> np.ndarray:
        """Synchronous :meth:`read_async`. A selection inside one chunk (a dask block of
        a variable chunked as stored) is read in the calling thread; one of several
        chunks is fetched concurrently on the I/O loop and placed in the calling thread
        (:meth:`_read_pieces_sync`)."""
        sel, out_shape = normalize_selection(selection, self.shape)
        count = self.grid.count(sel)
        if count > LIST_FIRST_ABOVE:
            return sync(self.read_async(sel))
        if count != 1:  # several chunks, or none (an empty selection)
            out = np.empty(out_shape, dtype=self.dtype)
            self._read_pieces_sync(self.grid.plan(sel), out)
            return out
        index = tuple((s if isinstance(s, int) else s.start) // c
                      for s, c in zip(sel, self.chunks))
        piece = self.grid.piece(index, sel)
        assert piece is not None
        out = np.empty(out_shape, dtype=self.dtype)
        self._read_piece_sync(piece, out)
        return out

    def _read_pieces_sync(self, plan: list[ChunkSelection], out: np.ndarray) -> None:
        """Fetch the chunks of ``plan`` concurrently on the I/O loop (started with one
        wake-up; those fetched ahead taken from :mod:`h5dask.readahead`) and place each in
        ``out`` in the calling thread as it arrives. The copies and decodes of a dask
        block then run in its task's thread, in parallel with the other tasks' and with
        the loop receiving, instead of one after another on the loop."""
        if on_io_loop():
            raise RuntimeError("ArraySource.read() called from the I/O loop; await read_async")
        ra = get_readahead()
        pieces: dict[concurrent.futures.Future, ChunkSelection] = {}
        ahead: set[concurrent.futures.Future] = set()
        batch: list[Launch] = []
        for piece in plan:
            future = ra.claim(self, piece.index)
            if future is not None:
                ahead.add(future)
            else:
                future = concurrent.futures.Future()
                batch.append((future, functools.partial(self._fetch, piece.index)))
            pieces[future] = piece
        window = self._block_window()
        queued = collections.deque(batch[window:])
        launch(batch[:window])
        try:
            for future in concurrent.futures.as_completed(pieces):
                if queued and future not in ahead:  # one of ours ended: start the next
                    launch([queued.popleft()])
                piece = pieces.pop(future)
                try:
                    data, key = future.result()
                except Exception:
                    if future not in ahead:
                        raise
                    data, key = self._fetch_sync(piece.index)  # its own read reports errors
                else:
                    if future in ahead:
                        ra.count_used()
                self._place(piece, data, key, out)
        finally:
            for future in pieces:  # after an error: nobody will wait for the rest
                future.cancel()

    def _block_window(self) -> int:
        """How many of a block's chunk GETs its task keeps in flight at once: half the
        read-ahead budget's worth (the default threaded scheduler runs two tasks on two
        cores), at least two.

        A block of dozens of chunks fetched all at once holds all their buffers together
        (dask's "auto" blocks: 32 chunks of 4 MiB per task), and freshly allocated memory
        costs the kernel zeroing, every block; within a window the buffers are placed and
        reused as they arrive, and with the window about the bandwidth-delay product the
        GETs still cover the store's latency."""
        budget = get_readahead().budget or DEFAULT_BUDGET
        chunk_bytes = math.prod(self.chunks) * self.dtype.itemsize
        return max(2, budget // 2 // max(chunk_bytes, 1))

    def _place(self, piece: ChunkSelection, data: bytes | memoryview | None, key: str,
               out: np.ndarray) -> None:
        """Decode one chunk's stored bytes (None: never written) into its part of ``out``."""
        target = out[(*piece.out_sel, Ellipsis)]
        if data is None:
            fill_array(target, self.fill_value)
            return
        if target.shape == self.chunks and self.codec.decode_into(data, key, target):
            return
        chunk = self._full(self.codec.decode(data, key, self._edge(piece.index)))
        out[piece.out_sel] = chunk[piece.chunk_sel]

    # -- writing ------------------------------------------------------------------
    async def write_chunk_async(self, index: tuple[int, ...], chunk: np.ndarray) -> None:
        """Write one full chunk (already padded to the chunk shape)."""
        await self.put_chunk_async(index, await self.encode_chunk_async(chunk))

    async def encode_chunk_async(self, chunk: np.ndarray) -> bytes | memoryview:
        """The stored bytes of one full chunk, encoded in a worker thread."""
        if self.linked is not None:
            raise PermissionError("datasets linked to chunks inside an HDF5 file are read-only")
        return await asyncio.to_thread(self.codec.encode, chunk)

    async def put_chunk_async(self, index: tuple[int, ...], data: bytes | memoryview) -> None:
        """Store the encoded bytes of chunk ``index``."""
        await self.store.put(self.chunk_key(index), data, kind="chunk")

    async def write_async(self, selection: Any, values: Any) -> None:
        """Write ``values`` into a basic selection; partial chunks are read, merged and
        rewritten (read-modify-write), whole chunks are encoded straight from the values.

        Every chunk is merged and encoded before the first is stored: a value that
        does not encode (a reference that is no object id) or a stored chunk that does
        not decode used to fail its chunk after the others of the same write were
        stored. The encoded chunks of one call are held together (about the size of
        ``values``; a dask write calls this once per block)."""
        sel, out_shape = normalize_selection(selection, self.shape)
        values = _fitting(values, self.dtype, self.dataset_id) if not has_vlen(self.dtype) \
            else _object_array(values, self.dtype, out_shape)
        values = np.broadcast_to(values, out_shape)
        plan = self.grid.plan(selection)

        async def encoded(p: Any) -> bytes | memoryview:
            covers_all = self._covers_chunk(p)
            piece = values[p.out_sel]
            if covers_all and piece.shape == self.chunks:
                # a whole chunk, not clipped at the edge: encoded straight from the values
                return await self.encode_chunk_async(piece)
            if covers_all:
                chunk = self._fill_chunk()
            else:
                existing = await self.read_chunk_async(p.index)
                chunk = self._fill_chunk() if existing is None else existing.copy()
            chunk[p.chunk_sel] = piece
            return await self.encode_chunk_async(chunk)

        data = await all_ended((encoded(p) for p in plan), "chunk reads and encodings")
        await all_ended((self.put_chunk_async(p.index, d) for p, d in zip(plan, data)),
                        "chunk PUTs")

    def _covers_chunk(self, piece: ChunkSelection) -> bool:
        """Whether a write of ``piece`` covers its whole chunk (edge chunks: the part
        inside the dataset), so that nothing stored there needs to be read first."""
        return all(
            isinstance(cs, slice) and cs.step == 1 and cs.start == 0
            and cs.stop >= b.stop - b.start
            for cs, b in zip(piece.chunk_sel, self.grid.chunk_bounds(piece.index)))

    def merged_chunks(self, selection: Any) -> list[tuple[int, ...]]:
        """The indices of the chunks a write of ``selection`` only partly covers: those
        it reads, merges and rewrites (two such writes of one chunk at the same time
        would lose one of them, see :mod:`h5dask.xarray.writer`).

        >>> src = ArraySource(None, "d-0", (12,), (5,), np.dtype("<i4"),
        ...                   ChunkCodec(np.dtype("<i4"), (5,)), 0)
        >>> src.merged_chunks(slice(3, 12))  # chunk 1 whole, chunk 2 to the dataset's end
        [(0,)]
        """
        return [p.index for p in self.grid.plan(selection) if not self._covers_chunk(p)]

    def write(self, selection: Any, values: Any) -> None:
        """Synchronous :meth:`write_async`."""
        sync(self.write_async(selection, values))

    async def shrink_async(self, new_shape: tuple[int, ...]) -> None:
        """Before the dataset shrinks to ``new_shape``: delete the chunks wholly outside it
        and reset the part of edge chunks outside it to the fill value, as HSDS does, so
        that growing the dataset again shows the fill value there, not old data."""
        indices = await self._stored_indices()

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

        await all_ended((one(i) for i in indices), "chunk operations")


    async def delete_chunks_async(self) -> None:
        """Delete every stored chunk object of this dataset (not its metadata): the
        chunks a failed write stored for a dataset it created, which no metadata
        would ever name."""
        if self.linked is not None:
            raise PermissionError("datasets linked to chunks inside an HDF5 file are read-only")
        prefix = object_prefix(self.dataset_id) + "/"
        keys = [k for k in await self.store.list(prefix)
                if not k[len(prefix):].startswith(".")]  # .dataset.json stays
        await all_ended((self.store.delete(k, kind="chunk") for k in keys), "chunk deletes")


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
        # and each element gets its own array so that changing one changes no other;
        # in native byte order, as h5py reads sequences
        for idx in np.ndindex(out.shape):
            out[idx] = np.array([] if value is None else value, dtype=vlen.newbyteorder("="))
        return
    out[...] = (b"" if vlen is bytes else "") if value is None else value


def _fitting(values: Any, dtype: np.dtype, dataset_id: str) -> np.ndarray:
    """``values`` as ``dtype``; numbers an integer ``dtype`` cannot hold (out of range,
    NaN, inf) raise ValueOutOfRangeError instead of wrapping around (300 as uint8 was
    44; h5py saturates to 255: either way not the value written)."""
    arr = np.asarray(values)
    if dtype.kind in "iu" and arr.dtype.kind in "iuf" and arr.dtype != dtype and arr.size:
        problem = integer_range_problem(arr, dtype, f"its dtype {dtype}")
        if problem:
            raise ValueOutOfRangeError(f"dataset {dataset_id}: {problem}; write values in "
                                       "range, or into a dataset of a wider dtype")
    return np.asarray(arr, dtype=dtype)


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


async def _decode(codec: ChunkCodec, data: bytes | memoryview, key: str,
                  edge: tuple[int, ...]) -> np.ndarray:
    # decompression releases the GIL: large chunks decode in a thread, off the I/O loop
    if codec.is_identity and not has_vlen(codec.dtype):
        return codec.decode(data, key, edge)
    if len(data) >= _DECODE_IN_THREAD:
        return await asyncio.to_thread(codec.decode, data, key, edge)
    return codec.decode(data, key, edge)


async def _decode_into(codec: ChunkCodec, data: bytes | memoryview, key: str,
                       out: np.ndarray) -> bool:
    # as _decode: decompression of large chunks in a thread; a plain copy on the loop
    if codec.compressor is not None and len(data) >= _DECODE_IN_THREAD:
        return await asyncio.to_thread(codec.decode_into, data, key, out)
    return codec.decode_into(data, key, out)


async def _stat_or_none(ref: ChunkRef) -> ObjectVersion | None:
    """The linked file's version now, for the words of an error (None: untold)."""
    try:
        return await ref.store.stat(ref.key)
    except Exception:  # noqa: BLE001 - the refusal stands; only its wording is less precise
        return None


def _local_times(version: ObjectVersion | None) -> dict[str, str]:
    """The fields of a local file's version tag (``mtime_ns=.. ctime_ns=.. ino=..``,
    :func:`h5dask.storage.local._file_version`); {} for other stores' tags."""
    fields = dict(part.partition("=")[::2] for part in ((version and version.tag) or "").split())
    return fields if {"mtime_ns", "ctime_ns", "ino"} <= fields.keys() else {}


def _what_changed(accepted: ObjectVersion | None, now: ObjectVersion | None
                  ) -> str | None:
    """What the file did after the session accepted ``accepted``, in words that claim no
    more than the versions show: a local file whose size and modification time are
    unchanged had only its status changed (chmod, a hard link, an xattr) or was replaced
    by a copy that kept its times; that cannot be told from a rewrite that set the
    modification time back, so it is refused all the same, but not called a write."""
    old, new = _local_times(accepted), _local_times(now)
    if not old or not new or accepted is None or now is None or accepted.size != now.size \
            or old["mtime_ns"] != new["mtime_ns"]:
        return None  # written (or untold): the store's own words say how
    if old["ino"] != new["ino"]:
        return ("which was replaced after this session opened it by a file of the same size "
                "and modification time (a copy that kept the times: cp -p, rsync, a restore)")
    return ("whose status changed after this session opened it, not its size or "
            "modification time (a chmod, chown, hard link or extended attribute does that; "
            "so does a write that set the modification time back, which h5dask cannot "
            "tell apart)")


def _changed_while_read(ref: ChunkRef, exc: ObjectChangedError, now: ObjectVersion | None
                        ) -> LinkedFileChangedError:
    """The error of a linked chunk whose file changed after the session accepted its
    version (``exc``: what the store saw; ``now``: the file's version now, if told)."""
    uri = ref.store.url_of(ref.key)
    what = _what_changed(ref.version, now)
    if what is None:
        what = f"which was written after this session opened it ({exc})"
    else:  # (the store's words say "written": not what the versions show here)
        assert ref.version is not None and now is not None
        what += f" (version {ref.version.tag} then, {now.tag} now)"
    return LinkedFileChangedError(
        f"{ref.origin or 'a linked dataset'} reads its chunks from {uri}, {what}; its "
        f"bytes [{ref.offset}:"
        f"{ref.offset + ref.size}) may be other data now, and were not read. Open the "
        "domain again (its open checks the file's layout anew), or if the file was "
        "regenerated, link it again (h5dask load --link --overwrite)",
        dataset=ref.origin, uri=uri)


def _missing_at_open(ref: ChunkRef, now: ObjectVersion | None) -> Exception:
    """The error of a read of a linked file that was missing when the session opened
    it (``now``: its HEAD at this read): still missing, or there now but never checked
    (a regeneration that deleted, then wrote it, may have put other data there)."""
    uri = ref.store.url_of(ref.key)
    if now is None:
        return StorageError(
            f"{ref.origin or 'a linked dataset'} reads its chunks from {uri}, which does "
            "not exist (it was missing already when this session opened the domain): "
            "restore it, and open the domain again", key=ref.key, attempts=1)
    return LinkedFileChangedError(
        f"{ref.origin or 'a linked dataset'} reads its chunks from {uri}, which was missing "
        f"when this session opened the domain and exists now ({now.size} bytes): it was "
        "written after the open, and its layout was never checked, so its bytes "
        f"[{ref.offset}:{ref.offset + ref.size}) were not read. Open the domain again (its "
        "open checks the file's layout), or if the file was regenerated, link it again "
        "(h5dask load --link --overwrite)", dataset=ref.origin, uri=uri)


def _linked_bytes(ref: ChunkRef, data: bytes | memoryview | None) -> bytes | memoryview:
    """A stored linked chunk's bytes; its file missing is an error, not the fill value,
    and so is a range cut short by the file's end (a prefix of a stored chunk can have
    the size of a clipped edge chunk, and would be read as one)."""
    if data is None:
        raise StorageError(
            f"{ref.store.root_url}/{ref.key}, the file a linked dataset's chunks are in, does "
            "not exist: restore it, or reload the domain", key=ref.key, attempts=1)
    if len(data) != ref.size:
        raise CorruptChunkError(
            f"{ref.key}[{ref.offset}:{ref.offset + ref.size}]",
            f"the file holds {len(data)} of the chunk's {ref.size} bytes there: it was "
            "truncated or rewritten since it was linked; restore it, or link it again")
    return data
