"""Copying the chunks of planned datasets (:class:`~.plan.DatasetPlan` with mode "copy")
into the domain: INDIRECT chunk tables first, then every chunk with ``workers`` at a time
on the I/O loop. A chunk stored as it is (a direct copy) is read with one ranged read and
decoded by the source's own filters; any other (rechunked, filters only h5py undoes,
converted values) is read through h5py, in the loader's one h5py thread. Either way it is
written through :meth:`ArraySource.write_chunk_async`. A tqdm bar shows the progress.

A load resumed after an interruption (see :mod:`.load`) tells the copier which chunk
objects are stored already: a chunk whose stored bytes are the ones it would write is
kept, not written again; chunk objects of the load's datasets it did not write are
deleted at the end (:meth:`ChunkCopier.delete_unwritten`).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import sys
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..chunkio import ArraySource, fill_array
from ..errors import CorruptChunkError, H5DaskError, SourceFileError
from ..format import ids
from ..format.chunks import ChunkGrid
from ..format.filters import ChunkCodec
from ..storage.sync import all_ended
from .hdf5 import H5Values, missing_filters, missing_plugin_advice
from .plan import DatasetPlan, StoredChunk, chunk_logical_bytes, copy_jobs, native_filters_json
from .source import Source


@dataclass
class DatasetCopy:
    """One dataset being copied: its plan, its h5py dataset, where its chunks go and
    (for direct copies) the source's codec; ``remaining`` chunks before its h5py reader
    (with its chunk cache) is closed."""

    plan: DatasetPlan
    h5: Any
    target: ArraySource
    src_codec: ChunkCodec | None = None
    remaining: int = 0
    reader: Any = None

    @classmethod
    def of(cls, plan: DatasetPlan, h5: Any, target: ArraySource) -> DatasetCopy:
        src = plan.source
        codec = None
        if plan.direct:
            assert src.chunks is not None
            codec = ChunkCodec.from_filters(native_filters_json(src.filters), src.dtype,
                                            src.chunks, hdf5_native=True)
        return cls(plan, h5, target, codec)


@dataclass(frozen=True)
class TableWrite:
    """The values of an H5D_CHUNKED_REF_INDIRECT chunk table, to write to its dataset."""

    target: ArraySource
    values: np.ndarray


class ChunkCopier:
    """Copies the chunks of ``copies`` (see the module doc); ``h5py_thread`` runs every
    h5py call (h5py serialises them anyway, and the file object under it is not safe for
    concurrent seek/read)."""

    def __init__(self, src: Source, copies: list[DatasetCopy], tables: list[TableWrite],
                 refs: dict[int, str], h5py_thread: Executor, workers: int) -> None:
        self.src = src
        self.copies = copies
        self.tables = tables
        self.refs = refs  # source object address -> new id (references in values)
        self.h5py_thread = h5py_thread
        self.workers = workers
        self.logical_bytes = 0  # uncompressed bytes copied
        self.chunks_done = 0
        self.chunks_total = 0
        self.bar: Any = None
        #: a resumed load: the domain's store, the chunk objects stored already -> their
        #: MD5 if listed
        self.store: Any = None
        self.stored: dict[str, str | None] = {}
        #: ...and the key prefixes of the load's datasets (whose other chunks go)
        self.prefixes: set[str] = set()
        self.chunks_kept = 0
        self.kept: set[str] = set()  # the keys of those chunks
        self._written: set[str] = set()

    def jobs(self) -> Iterator[tuple[DatasetCopy, tuple[int, ...], StoredChunk | None]]:
        """(dataset, new chunk index, stored chunk for a direct copy or None) of every
        chunk to copy, dataset by dataset."""
        for copy in self.copies:
            for index, info in copy_jobs(copy.plan):
                yield copy, index, info

    def count(self) -> int:
        """Count the chunks to copy (per dataset, too); returns their uncompressed bytes."""
        nbytes = 0
        for copy, index, _info in self.jobs():
            self.chunks_total += 1
            nbytes += chunk_logical_bytes(copy.plan, index)
            copy.remaining += 1
        return nbytes

    async def run(self) -> None:
        """Write the chunk tables, then copy every chunk with ``workers`` at a time."""
        loop = asyncio.get_running_loop()
        for table in self.tables:
            await table.target.write_async((), table.values)
        jobs = self.jobs()
        failures: list[Exception] = []

        async def worker() -> None:
            for copy, index, info in jobs:  # one shared generator: each chunk once
                if failures:
                    return
                try:
                    await self._copy(loop, copy, index, info)
                except Exception as exc:  # noqa: BLE001 - raised below, the first one
                    failures.append(exc)
                    return

        # after a failure the other workers take no new chunk but finish the one under
        # way: a write cancelled mid-way would still land from its thread (or its request
        # already sent), after the cleanup listed what to delete, and stay behind
        await asyncio.gather(*(worker() for _ in range(self.workers)))
        if failures:
            raise failures[0]

    async def _copy(self, loop: asyncio.AbstractEventLoop, copy: DatasetCopy,
                    index: tuple[int, ...], info: StoredChunk | None) -> None:
        if info is not None and not info.filter_mask:
            raw = await self._raw_chunk(loop, copy, info)
            where = f"{self.src.url}:{copy.plan.path}[chunk {ids.chunk_name(index)}]"
            assert copy.src_codec is not None
            chunk = await asyncio.to_thread(copy.src_codec.decode, raw, where, None)
        else:
            chunk = await loop.run_in_executor(self.h5py_thread, self._read_region, copy,
                                               index)
        await self._write(copy, index, chunk)
        copy.remaining -= 1
        if copy.remaining == 0 and copy.reader is not None:
            await loop.run_in_executor(self.h5py_thread, self._close_reader, copy)
        logical = chunk_logical_bytes(copy.plan, index)
        self.logical_bytes += logical
        self.chunks_done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"chunks {self.chunks_done}/{self.chunks_total}",
                                     refresh=False)
            self.bar.update(logical)

    async def _write(self, copy: DatasetCopy, index: tuple[int, ...],
                     chunk: np.ndarray) -> None:
        """Write one chunk, unless a resumed load finds exactly its bytes stored."""
        target = copy.target
        key = target.chunk_key(index)
        if key not in self.stored:
            await target.write_chunk_async(index, chunk)
            return
        self._written.add(key)
        data = await target.encode_chunk_async(chunk)
        if await self._holds(key, data):
            self.chunks_kept += 1
            self.kept.add(key)
            return
        await target.put_chunk_async(index, data)

    async def _holds(self, key: str, data: bytes | memoryview) -> bool:
        """Whether the stored object ``key`` holds ``data``: by the MD5 its listing
        showed, else by its bytes."""
        md5 = self.stored[key]
        if md5 is not None:
            return hashlib.md5(data).hexdigest() == md5
        stored = await self.store.get(key, kind="chunk")
        return stored is not None and stored == bytes(data)

    async def delete_unwritten(self) -> None:
        """A resumed load: delete the stored chunk objects of its datasets it did not
        write (left by an earlier run; they would be read as values)."""
        stale = [k for k in self.stored
                 if k not in self._written and k.rsplit("/", 1)[0] in self.prefixes]
        # all ended before a failure is raised: the load's roll-back and lease release
        # come next and must not race deletes still running
        await all_ended((self.store.delete(k, kind="chunk") for k in stale), "chunk deletes")

    async def _raw_chunk(self, loop: asyncio.AbstractEventLoop, copy: DatasetCopy,
                         info: StoredChunk) -> bytes:
        """The stored bytes of one source chunk: one ranged read (concurrent with the
        others) where the file is reachable as an object, else through h5py."""
        if self.src.store is not None and self.src.ranges_ok:
            start, stop = info.byte_offset, info.byte_offset + info.size
            assert self.src.key is not None
            data = await self.src.store.get(self.src.key, kind="chunk", byte_range=(start, stop))
            if data is None or len(data) != info.size:
                raise CorruptChunkError(f"{self.src.url}[{start}:{stop}]", (
                    f"read {0 if data is None else len(data)} of {info.size} bytes"))
            self.src.range_bytes += len(data)
            return data

        def read() -> bytes:
            _mask, data = copy.h5.id.read_direct_chunk(info.offset)
            return bytes(data)

        return await loop.run_in_executor(self.h5py_thread, read)

    # (in the h5py thread)
    def _read_region(self, copy: DatasetCopy, index: tuple[int, ...]) -> np.ndarray:
        """One new chunk read through h5py (which undoes any filter it has a plugin
        for), padded with the fill value at the edges; HDF5's own failures become one
        SourceFileError naming the file and the dataset."""
        try:
            return self._read_region_h5py(copy, index)
        except OSError as exc:
            if isinstance(exc, H5DaskError):
                raise
            missing = missing_filters([code for code, _ in copy.plan.source.filters])
            why = (f"HDF5 has no decoder for its filter {', '.join(missing)}: "
                   f"{missing_plugin_advice()}" if missing else str(exc))
            raise SourceFileError(f"{self.src.url}: dataset {copy.plan.path}: h5py cannot "
                                  f"read it ({why})") from exc

    def _read_region_h5py(self, copy: DatasetCopy, index: tuple[int, ...]) -> np.ndarray:
        src, chunks = copy.plan.source, copy.plan.chunks
        dset = self._region_reader(copy)
        values = H5Values(self.src.h5, self.refs)
        if src.scalar:
            out = np.empty((1,), dtype=src.dtype)
            out[0] = values.array(np.asarray(dset[()]).reshape(()), src.dtype)[()]
            return out
        assert src.shape is not None
        bounds = ChunkGrid(src.shape, chunks).chunk_bounds(index)
        data = values.array(dset[bounds], src.dtype)
        out = np.empty(chunks, dtype=src.dtype)
        if data.shape != chunks:
            fill_array(out, copy.target.fill_value)
        out[tuple(slice(0, b.stop - b.start) for b in bounds)] = data
        return out

    def _region_reader(self, copy: DatasetCopy) -> Any:
        import h5py

        src = copy.plan.source
        if copy.reader is None:
            if src.chunks is None or src.scalar:
                copy.reader = copy.h5
            else:
                # a chunk cache holding the source chunks of one slab of new chunks, so
                # that rechunking reads each source chunk about once
                assert src.shape is not None
                src_bytes = src.file_itemsize * math.prod(src.chunks)
                per_slab = math.ceil(copy.plan.chunks[0] / src.chunks[0]) + 1
                per_slab *= math.prod(math.ceil(s / c) for s, c in zip(
                    src.shape[1:], src.chunks[1:]))
                nbytes = int(min(512 * 2**20, max(2**20, src_bytes * per_slab)))
                dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
                dapl.set_chunk_cache(100003, nbytes, 1.0)
                dsid = h5py.h5d.open(self.src.h5.id, src.path.encode("utf-8"), dapl)
                copy.reader = h5py.Dataset(dsid)
        return copy.reader

    @staticmethod
    def _close_reader(copy: DatasetCopy) -> None:
        copy.reader = None  # the last reference: the dataset and its chunk cache close

    # -- progress -------------------------------------------------------------------
    def open_bar(self, total_bytes: int, verb: str, done_bytes: int = 0,
                 done_chunks: int = 0) -> None:
        """A tqdm bar on stderr for ``total_bytes`` to copy, after ``done_bytes`` in
        ``done_chunks`` already done (linked); ``verb`` names the load in it."""
        from tqdm import tqdm

        name = os.path.basename(self.src.url.rstrip("/")) or self.src.url
        self.chunks_done = done_chunks
        self.chunks_total += done_chunks
        self.bar = tqdm(total=total_bytes + done_bytes, unit="B", unit_scale=True,
                        unit_divisor=1024, desc=f"{verb} {name}", file=sys.stderr,
                        dynamic_ncols=True, mininterval=0.2)
        self.bar.set_postfix_str(f"chunks {self.chunks_done}/{self.chunks_total}",
                                 refresh=False)
        if done_bytes:
            self.bar.update(done_bytes)

    def close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["ChunkCopier", "DatasetCopy", "TableWrite"]
