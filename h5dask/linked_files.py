"""Whether the HDF5 file a linked dataset reads is still laid out as when it was linked.

``h5dask load --link`` records, in each linked layout, the file's size and version as its
store tells them (:class:`~h5dask.storage.base.ObjectVersion`: an S3 ETag, a local file's
modification and change times and inode) and the dataset's path in the file. The HEAD an
open makes anyway (:func:`h5dask.sources.linked_chunk_refs`) shows the version now:

- the same version: the file was not written since; nothing more is done;
- another version: the file was written since. Its values may have been edited in place
  (h5py ``"r+"``: the same offsets, new values, to be read as they are now) or the file
  regenerated (other chunking, other variable order: other offsets, even at the same
  size). :func:`check_layout` tells them apart from the file's own metadata: h5py reads
  it over ranged GETs of :data:`BLOCK_SIZE` bytes (never a chunk on purpose: a block
  may hold some), re-derives the dataset's shape, type, filters with their options, fill
  value and every chunk's offset and size, and compares them with the domain's. The
  same: the dataset is read (and that is remembered in this process for that file
  version, so it is checked once, not per open or per chunk). Different:
  :class:`~h5dask.errors.LinkedFileChangedError` naming the dataset, the file, what
  differs and what to do.

A check makes at most ``MAX_CHECK_REQUESTS + chunks // 16`` GETs (the chunk index grows
with the chunks); beyond that it gives up with LinkedFileChangedError rather than read
without knowing. Its first :data:`MAX_REOPENS` GETs are made with h5py closed, not under
h5py's process-wide lock (other threads' h5py calls go on meanwhile); only a bigger
metadata walk holds that lock while it waits on the rest.

>>> facts = LayoutFacts((4,), "<f8", (2,), (), "00" * 8, (("0", 100, 16), ("1", 116, 16)))
>>> facts.difference(LayoutFacts((4,), "<f8", (2,), (), "00" * 8,
...                              (("0", 100, 16), ("1", 132, 16))))
'chunk 1 is 16 bytes at offset 116 in the domain, 16 bytes at offset 132 in the file'
"""

from __future__ import annotations

import hashlib
import io
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import LinkedFileChangedError, UnsupportedFilterError
from .format.filters import native_filters_json
from .format.ids import chunk_name
from .format.types import has_vlen
from .storage.base import ObjectStore, ObjectVersion
from .storage.sync import sync

#: bytes per ranged GET of the file's metadata: HDF5's metadata of one dataset (object
#: header, chunk index nodes) are small records, mostly near each other
BLOCK_SIZE = 64 * 1024
#: GETs a check may make besides one per 16 chunks of the dataset (index nodes)
MAX_CHECK_REQUESTS = 64
#: times a check opens the file again in h5py, each after one GET of a block h5py lacked
#: (made outside h5py: h5py holds one lock for the whole process while it reads, so any
#: other thread's h5py call would wait on the GET). Each pass walks the metadata read so
#: far again, so a big chunk index (many blocks) would cost passes times its size: after
#: these, the rest of its blocks are fetched as h5py reads, h5py's lock held.
MAX_REOPENS = 16
_BLOCKS_KEPT = 64  # per file, the last read: bounded memory (4 MiB)
_FILES_KEPT = 4  # files whose blocks are kept for the checks of their other datasets
_RESULTS_KEPT = 4096  # layouts found to hold (or not), by file version


@dataclass(frozen=True)
class LayoutFacts:
    """What decides whether a linked dataset's bytes mean what the domain says: its
    shape, element type (``dtype.str``, or ``descr`` for compounds), chunk shape (``()``
    for a contiguous dataset), filter pipeline (each filter's HSDS JSON, options
    included: what decoding needs), the bytes (hex) of the value unwritten elements read
    as (the fill value; ``""`` for variable-length types), and each stored chunk's
    ``(name, offset, size)`` in the file (a contiguous dataset: one entry named
    "contiguous"; a chunk with no entry reads as the fill value)."""

    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    filters: tuple[str, ...]
    fill: str
    stored: tuple[tuple[str, int, int], ...]

    def difference(self, file: LayoutFacts) -> str | None:
        """What differs between this layout (the domain's) and ``file``'s, in words;
        None when they agree."""
        for what, mine, theirs in (("shape", self.shape, file.shape),
                                   ("element type", self.dtype, file.dtype),
                                   ("chunk shape", self.chunks, file.chunks),
                                   ("filters", self.filters, file.filters),
                                   ("fill value (bytes)", self.fill, file.fill)):
            if mine != theirs:
                return f"its {what} is {mine} in the domain, {theirs} in the file"
        if self.stored == file.stored:
            return None
        mine_by = {name: (off, n) for name, off, n in self.stored}
        theirs_by = {name: (off, n) for name, off, n in file.stored}
        for name in sorted(mine_by.keys() | theirs_by.keys()):
            a, b = mine_by.get(name), theirs_by.get(name)
            if a != b:
                return (f"chunk {name} is {_where(a)} in the domain, {_where(b)} in the file")
        return "its chunks are listed in another order"


def _where(entry: tuple[int, int] | None) -> str:
    return "not stored" if entry is None else f"{entry[1]} bytes at offset {entry[0]}"


def file_facts(dset: Any) -> LayoutFacts | str:
    """The :class:`LayoutFacts` of an h5py dataset as its file's metadata says them, or
    why it cannot be linked at all now (compact or virtual storage, a chunk that skipped
    a filter). Reads metadata only.

    >>> import h5py, os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "f.h5")
    >>> with h5py.File(path, "w") as f:
    ...     _ = f.create_dataset("x", data=np.arange(4.0), chunks=(2,))
    >>> with h5py.File(path) as f:
    ...     [name for name, _, _ in file_facts(f["x"]).stored]
    ['0', '1']
    """
    from h5py import h5d

    dcpl = dset.id.get_create_plist()
    pipeline = tuple((int(code), tuple(cd)) for code, _flags, cd, _name in
                     (dcpl.get_filter(i) for i in range(dcpl.get_nfilters())))
    try:
        filters = _filters_text(native_filters_json(pipeline))
    except UnsupportedFilterError as exc:
        return f"it has a filter h5dask cannot decode now ({exc})"
    shape = tuple(int(s) for s in (dset.shape or ()))
    dtype = _dtype_text(dset.dtype)
    fill = _fill_text(_unwritten_reads_as(dset, dcpl), dset.dtype)
    layout = dcpl.get_layout()
    if layout == h5d.CONTIGUOUS:
        size = int(dset.id.get_storage_size())
        offset = dset.id.get_offset() if size else None
        stored = (("contiguous", int(offset), size),) if offset is not None else ()
        return LayoutFacts(shape, dtype, (), filters, fill, stored)
    if layout != h5d.CHUNKED:
        return "it is no longer stored contiguous or chunked (compact or virtual now)"
    chunks = tuple(int(c) for c in dset.chunks)
    infos: list[Any] = []
    if hasattr(dset.id, "chunk_iter"):
        dset.id.chunk_iter(infos.append)
    else:  # HDF5 older than 1.14
        infos = [dset.id.get_chunk_info(i) for i in range(dset.id.get_num_chunks())]
    if any(info.filter_mask for info in infos):
        return "a chunk of it skipped a filter (HDF5 filter mask), which a link cannot say"
    stored = tuple(sorted(
        (chunk_name(tuple(int(o) // c for o, c in zip(info.chunk_offset, chunks))),
         int(info.byte_offset), int(info.size)) for info in infos if info.size > 0))
    return LayoutFacts(shape, dtype, chunks, filters, fill, stored)


def _unwritten_reads_as(dset: Any, dcpl: Any) -> Any:
    """What h5py reads an unwritten element of ``dset`` as: its fill value, or zeros when
    HDF5 never writes one (H5D_FILL_TIME_NEVER, or no fill value defined, leaves h5py's
    zeroed buffer)."""
    from h5py import h5d

    # an undefined fill value (older files): HDF5 fills nothing either, and the load
    # gave the domain no fill value (ingest/describe.py)
    if (dcpl.get_fill_time() == h5d.FILL_TIME_NEVER
            or dcpl.fill_value_defined() == h5d.FILL_VALUE_UNDEFINED):
        return np.zeros((), dset.dtype)[()]
    return dset.fillvalue


def _fill_text(value: Any, dt: np.dtype) -> str:
    """The bytes of ``value`` as a ``dt`` element, in hex; every NaN alike (a NaN's
    payload is not kept by the domain's JSON); ``""`` for variable-length types, whose
    fill is an empty sequence on both sides.

    >>> _fill_text(-1.0, np.dtype("<f4")), _fill_text(float("nan"), np.dtype(">f8"))
    ('000080bf', '7ff8000000000000')
    """
    if has_vlen(dt):
        return ""
    try:
        one = np.array(value, dtype=dt)
    except (TypeError, ValueError):  # an unreadable fill value: never equal to a real one
        return f"unreadable {value!r}"
    if dt.kind in "fc":
        one = np.where(np.isnan(one), np.array(np.nan, dt), one).astype(dt)
    return one.tobytes().hex()


def _filters_text(filters: list) -> tuple[str, ...]:
    """Each filter's HSDS JSON, canonical: comparable whatever the key order."""
    return tuple(json.dumps(f, sort_keys=True) for f in filters)


def _dtype_text(dt: np.dtype) -> str:
    """``dt``'s layout of bytes, without h5py's metadata (string encodings, enum names).

    >>> _dtype_text(np.dtype([("a", "<i4"), ("s", "S3")]))
    '{a:<i4@0,s:|S3@4}7'
    """
    if dt.names:
        fields = ",".join(f"{n}:{_dtype_text(dt.fields[n][0])}@{dt.fields[n][1]}"
                          for n in dt.names)
        return f"{{{fields}}}{dt.itemsize}"
    if dt.subdtype is not None:
        return f"{_dtype_text(dt.subdtype[0])}{dt.subdtype[1]}"
    return dt.str


def domain_facts(shape: tuple[int, ...], dtype: np.dtype, chunks: tuple[int, ...] | None,
                 filters: list, fill: Any, stored: tuple[tuple[str, int, int], ...]
                 ) -> LayoutFacts:
    """The :class:`LayoutFacts` a linked layout claims (``chunks`` None: contiguous;
    ``filters``: the domain's filter JSON; ``fill``: the value it reads unwritten
    elements as)."""
    return LayoutFacts(tuple(shape), _dtype_text(dtype), tuple(chunks or ()),
                       _filters_text(filters), _fill_text(fill, dtype), tuple(sorted(stored)))


class StoreFile(io.RawIOBase):
    """A read-only file object over one object of a store, for h5py: reads are served
    from whole :data:`BLOCK_SIZE` blocks, the last few kept. A block not yet read is not
    fetched here, inside h5py (which holds its process-wide lock around every read:
    every other thread's h5py call would wait on the GET), but recorded as
    :class:`BlockNeeded` in :attr:`failure`, the read failing; :meth:`fetch` then GETs
    it (kind "metadata") outside h5py, and the caller opens the file again. With
    :attr:`fetch_inside` set (after :data:`MAX_REOPENS`) a missing block is fetched at
    once, h5py's lock held. More than ``max_requests`` GETs raise
    :class:`CheckTooCostly`."""

    def __init__(self, store: ObjectStore, key: str, size: int, max_requests: int,
                 blocks: OrderedDict[int, bytes] | None = None,
                 version: ObjectVersion | None = None) -> None:
        super().__init__()
        self.store, self.key, self.size = store, key, size
        # each block read on condition of the version checked (the one whose answer is
        # remembered): a file written meanwhile raises ObjectChangedError, never mixes in
        self.version = version
        self.max_requests = max_requests
        self.requests = 0
        self.failure: BaseException | None = None
        self.fetch_inside = False
        self._pos = 0
        self._blocks = OrderedDict() if blocks is None else blocks

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        if self.failure is not None:
            return 0
        try:
            return self._readinto(buffer)
        except Exception as exc:
            # raised through h5py, it leaves HDF5 a half-open file (a crash at exit):
            # kept for the caller, which then trusts nothing h5py made of the reads,
            # without the traceback, whose frames would keep h5py's file access alive
            self.failure = exc.with_traceback(None)
            return 0

    def _readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        stop = min(self._pos + len(out), self.size)
        done = 0
        while self._pos + done < stop:
            at = self._pos + done
            block = self._block(at // BLOCK_SIZE)
            piece = block[at % BLOCK_SIZE: at % BLOCK_SIZE + (stop - at)]
            if not piece:  # the file is shorter than its HEAD said: it is being written
                break
            out[done: done + len(piece)] = piece
            done += len(piece)
        self._pos += done
        return done

    def _block(self, index: int) -> bytes:
        if index not in self._blocks:
            if not self.fetch_inside:
                raise BlockNeeded(index)
            self.fetch(index)
        self._blocks.move_to_end(index)
        return self._blocks[index]

    def fetch(self, index: int) -> None:
        """GET block ``index`` (not from inside h5py: see the class)."""
        if self.requests >= self.max_requests:
            raise CheckTooCostly(self.requests)
        self.requests += 1
        start = index * BLOCK_SIZE
        block = sync(self.store.get_buffer(
            self.key, kind="metadata", byte_range=(start, min(start + BLOCK_SIZE, self.size)),
            version=self.version))
        self._blocks[index] = bytes(block) if block else b""
        if len(self._blocks) > _BLOCKS_KEPT:
            self._blocks.popitem(last=False)


class BlockNeeded(Exception):
    """h5py read a block of the file not fetched yet (``args[0]``: its index)."""


class CheckTooCostly(Exception):
    """A layout check would need more GETs than it may make."""


_lock = threading.Lock()
#: the blocks read of the last few files checked, by (store, key, version): the checks of
#: a file's other datasets read its superblock and groups from here
_blocks: OrderedDict[tuple, OrderedDict[int, bytes]] = OrderedDict()
_results: OrderedDict[tuple, str | None] = OrderedDict()


def check_layout(store: ObjectStore, key: str, now: ObjectVersion, path: str,
                 claimed: LayoutFacts) -> str | None:
    """Why the layout ``claimed`` of the dataset at ``path`` in the file ``key`` of
    ``store`` (``now``: its version) no longer holds, in words; None when it holds. The
    answer is remembered in this process for that file version and claim. The file's
    metadata is read on condition of ``now`` (:class:`StoreFile`): a file written since
    raises :class:`~h5dask.errors.ObjectChangedError` (where the store can tell), and
    nothing is remembered."""
    # a digest, not the claim: a claim lists every chunk, and answers are kept
    memo = (store.identity, key, now, path,
            hashlib.sha256(repr(claimed).encode()).hexdigest())
    with _lock:
        if memo in _results:
            _results.move_to_end(memo)
            return _results[memo]
    try:
        answer = _check(store, key, now, path, claimed)
    except CheckTooCostly as exc:  # not remembered: it says nothing of the file
        return (f"checking it would take more than {exc.args[0]} reads of the file's "
                "metadata, where h5dask stops")
    with _lock:
        _results[memo] = answer
        while len(_results) > _RESULTS_KEPT:
            _results.popitem(last=False)
    return answer


def _check(store: ObjectStore, key: str, now: ObjectVersion, path: str,
           claimed: LayoutFacts) -> str | None:
    name = (store.identity, key, now)
    with _lock:
        blocks = _blocks.pop(name, None) or OrderedDict()
        _blocks[name] = blocks
        while len(_blocks) > _FILES_KEPT:
            _blocks.popitem(last=False)
    budget = MAX_CHECK_REQUESTS + len(claimed.stored) // 16
    raw = StoreFile(store, key, now.size, budget, blocks, version=now)
    try:
        for reopen in range(MAX_REOPENS + 1):  # h5py reads what blocks are here; the
            raw.fetch_inside = reopen == MAX_REOPENS  # one it lacks is fetched, again
            answer = _read_metadata(raw, path, claimed)
            failure, raw.failure = raw.failure, None
            if not isinstance(failure, BlockNeeded):
                break
            raw.fetch(failure.args[0])
    finally:
        raw.close()
    if failure is not None:  # too many reads, or the store's own error
        raise failure
    return answer


def _read_metadata(raw: StoreFile, path: str, claimed: LayoutFacts) -> str | None:
    """One pass of h5py over ``raw``'s blocks: the answer, meaningless when a read
    failed (``raw.failure``)."""
    import h5py

    raw.seek(0)
    try:
        with h5py.File(raw, "r") as h5:
            return _compare(h5, path, claimed)
    except Exception as exc:  # noqa: BLE001 - a failed read: whatever h5py made of it
        if raw.failure is None:
            if not isinstance(exc, OSError):
                raise
            return f"h5py cannot read the file's metadata now ({exc})"
        return None


def _compare(h5: Any, path: str, claimed: LayoutFacts) -> str | None:
    found = h5.get(path)
    if found is None or not hasattr(found, "dtype"):
        return f"the file has no dataset {path!r} any more"
    facts = file_facts(found)
    return facts if isinstance(facts, str) else claimed.difference(facts)


def changed_error(dataset: str, uri: str, path: str, linked: str, now: ObjectVersion,
                  why: str) -> LinkedFileChangedError:
    """The error of a layout that no longer holds in its file (``why``)."""
    since = (f"which was rewritten since it was linked (version {linked} then"
             if linked != "not recorded" else
             "whose version when it was linked was not recorded (a check was asked for")
    return LinkedFileChangedError(
        f"{dataset} reads its chunks from {path!r} in {uri}, {since}, "
        f"{now.tag} and {now.size} bytes now), and the "
        f"domain's layout cannot be confirmed there: {why}. Its byte offsets may read "
        "other data as values: link the file again (h5dask load --link --overwrite) or "
        "restore the file that was linked", dataset=dataset, uri=uri)


__all__ = ["BLOCK_SIZE", "MAX_CHECK_REQUESTS", "MAX_REOPENS", "LayoutFacts", "StoreFile",
           "check_layout", "changed_error", "domain_facts", "file_facts"]
