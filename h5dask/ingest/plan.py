"""Planning a load, without touching any storage: from what a source dataset is
(:class:`SourceDataset`, read from the file by :mod:`.describe`) and the load's options
(:class:`PlanOptions`) to how it is imported (:class:`DatasetPlan`, immutable): copied
(rechunked, recompressed or chunk for chunk), linked in place, or metadata only, with the
new dataset's layout and filter JSON and, to copy, which chunks (:func:`copy_jobs`).

>>> import numpy as np
>>> src = SourceDataset("/t", {"class": "H5T_FLOAT", "base": "H5T_IEEE_F64LE"},
...                     np.dtype("<f8"), 8, (100,), (100,), "contiguous", None, ())
>>> plan = plan_dataset(src, PlanOptions(chunks=ChunkSpec.parse((25,))))
>>> (plan.mode, plan.chunks, [index for index, _ in copy_jobs(plan)])
('copy', (25,), [(0,), (1,), (2,), (3,)])
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import LoadOptionError, SizeLimitError, UnsupportedFilterError
from ..format import codecs, ids
from ..format.chunks import ChunkGrid, choose_chunks
from ..format.dataspace import Dataspace
from ..format.filters import ChunkCodec, filter_json, native_filters_json
from ..format.linked import (
    CHUNK_TABLE_DTYPE,
    LINKED_FILE_PATH_KEY,
    LINKED_FILE_SIZE_KEY,
    LINKED_FILE_VERSION_KEY,
    contiguous_ranges,
)
from ..format.metadata import (
    CONTIGUOUS_REF_CHUNK_MAX,
    _contiguous_chunks,
    chunked_layout,
    chunked_ref_indirect_layout,
    chunked_ref_layout,
    contiguous_layout,
    contiguous_ref_layout,
    dataset_json,
)
from ..format.types import type_json_from_dtype

#: chunk tables with more entries than this go to an H5D_CHUNKED_REF_INDIRECT chunk
#: table (SingleObject.md suggests the indirect layout beyond about 1000 chunks)
INLINE_CHUNK_LIMIT = 1000

#: HDF5 pipeline order of the roles a linked layout may hold (reorder, compress, checksum)
_NATIVE_ORDER = ("shuffle", "bitshuffle", "compressor", "checksum")


# -- what planning is given ---------------------------------------------------------------
@dataclass(frozen=True)
class StoredChunk:
    """One chunk stored in the source file (h5py's ``StoreInfo``): the element offset of
    its first element, where its bytes are, and the filters it skipped (a bit each)."""

    offset: tuple[int, ...]
    byte_offset: int
    size: int
    filter_mask: int = 0

    def index(self, chunks: tuple[int, ...]) -> tuple[int, ...]:
        """Its index in a grid of ``chunks``-shaped chunks."""
        return tuple(o // c for o, c in zip(self.offset, chunks))


@dataclass(frozen=True)
class SourceDataset:
    """What planning needs to know of one dataset of the source file.

    ``dtype`` is the domain's dtype, ``file_itemsize`` the size of an element as h5py
    reads it; ``shape`` None for a null dataspace, () for a scalar; ``layout`` one of
    "chunked", "contiguous", "compact", "virtual"; ``filters`` (HDF5 filter id,
    cd_values) in pipeline order; ``raw_ok``: the file's element bytes are the domain
    dtype's; ``data_offset``/``storage_size``: where a contiguous dataset's bytes are.
    """

    path: str
    type_json: Any
    dtype: np.dtype
    file_itemsize: int
    shape: tuple[int, ...] | None
    maxshape: tuple[int | None, ...] | None
    layout: str
    chunks: tuple[int, ...] | None
    filters: tuple[tuple[int, tuple], ...]
    raw_ok: bool = True
    fill_json: Any = None
    stored: tuple[StoredChunk, ...] = ()
    allocated: bool = True
    external: bool = False
    data_offset: int | None = None
    storage_size: int = 0
    #: H5D_FILL_TIME_NEVER: unwritten values read as zeros (``fill_json`` is then None)
    fill_time_never: bool = False

    @property
    def scalar(self) -> bool:
        return self.shape == ()

    @property
    def empty(self) -> bool:
        """No values to import: a null dataspace or a zero-sized extent."""
        return self.shape is None or math.prod(self.shape) == 0

    @property
    def native(self) -> bool:
        """Only filters whose HDF5 output ChunkCodec(hdf5_native=True) undoes (shuffle,
        deflate, fletcher32 and hdf5plugin's Blosc, LZ4, Zstd, Bitshuffle, Blosc2), in
        HDF5's usual order."""
        if self.undecodable_filters:
            return False
        found = [codecs.by_hdf5_id(code) for code, _ in self.filters]
        pos = [_NATIVE_ORDER.index(c.role) for c in found if c is not None]
        if pos != sorted(pos) or len(set(pos)) != len(pos):
            return False
        try:
            ChunkCodec.from_filters(native_filters_json(self.filters), self.dtype,
                                    self.chunks or (1,), hdf5_native=True)
        except UnsupportedFilterError:
            return False
        return True

    @property
    def undecodable_filters(self) -> tuple[int, ...]:
        """The ids of the filters h5dask cannot decode as HDF5 wrote them."""
        return tuple(code for code, cd in self.filters
                     if (codec := codecs.by_hdf5_id(code)) is None
                     or not codec.decodes_native_with(cd))

    @property
    def hsds_unreadable_filters(self) -> tuple[str, ...]:
        """Names of the filters whose HDF5 output an HSDS server cannot decode in a
        linked chunk (h5dask can)."""
        found = [codecs.by_hdf5_id(code) for code, _ in self.filters]
        return tuple(c.name for c in found if c is not None and not c.linkable)


@dataclass(frozen=True)
class ChunkSpec:
    """``chunks=``: None (keep), "auto", one shape (where the rank fits), or a dict of
    dataset path or name -> shape or "auto"; None/-1 in a shape mean the whole extent.

    >>> ChunkSpec.parse({"t": [5, -1]}).request("/g/t")
    ('t', (5, None))
    """

    spec: Any = None
    table: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def parse(cls, spec: Any) -> ChunkSpec:
        """Check ``spec`` (ValueError naming the bad value)."""
        if isinstance(spec, Mapping):
            return cls(spec, tuple((str(k), _check_chunks(v)) for k, v in spec.items()))
        if spec is not None:
            _check_chunks(spec)
        return cls(spec)

    @property
    def by_dataset(self) -> bool:
        return isinstance(self.spec, Mapping)

    def request(self, path: str) -> tuple[str | None, Any]:
        """(the dict key that matched or None, the request for the dataset at ``path``:
        None (keep), "auto" or a shape)."""
        if not self.by_dataset:
            return None, _check_chunks(self.spec)
        name = path.rsplit("/", 1)[-1]
        for key, value in self.table:
            k = "/" + key.strip("/")
            if k == path or ("/" not in key.strip("/") and key.strip("/") == name):
                return key, value
        return None, None

    def unused(self, used: set[str]) -> list[str]:
        """The dict keys not in ``used`` (the keys that matched a dataset)."""
        return sorted({k for k, _ in self.table} - used)


def _check_chunks(value: Any) -> Any:
    if value is None or value == "auto":
        return value
    if isinstance(value, str) or not hasattr(value, "__iter__"):
        if isinstance(value, int):
            return (value,)
        raise LoadOptionError(f"chunks must be a shape (e.g. (10, 180, 360)), 'auto' or a "
                              f"dict of dataset -> shape, not {value!r}")
    shape = tuple(None if c is None or c == -1 else int(c) for c in value)
    if any(c is not None and c < 1 for c in shape):
        raise LoadOptionError(f"chunk dimensions must be positive (None or -1 for a whole "
                              f"dimension): {value!r}")
    return shape


@dataclass(frozen=True)
class Compression:
    """``compression=``/``compression_opts=``: keep the source's (``change`` False) or
    use ``compressor`` (None: uncompressed) at ``level``.

    >>> Compression.parse(5, None)
    Compression(change=True, compressor='gzip', level=5)
    """

    change: bool = False
    compressor: str | None = None
    level: int | None = None

    @classmethod
    def parse(cls, compression: Any, opts: Any) -> Compression:
        if compression is None:
            if opts is not None:
                raise LoadOptionError("compression_opts needs compression= (e.g. "
                                      "compression='gzip', compression_opts=4)")
            return cls()
        if compression is False or (isinstance(compression, str) and compression.lower() in (
                "none", "")):
            return cls(True)
        if isinstance(compression, int) and not isinstance(compression, bool):
            compression, opts = "gzip", compression
        try:
            codec = codecs.compressor(compression)
        except ValueError as exc:  # 'none' is the other choice to an unknown codec
            raise LoadOptionError(f"compression: {exc} or 'none'") from None
        try:
            level = codec.check_level(opts)
        except ValueError as exc:
            raise LoadOptionError(f"compression: {exc}") from None
        return cls(True, codec.name, level)


@dataclass(frozen=True)
class PlanOptions:
    """The load's options that decide plans. ``file_uri``: the source file as a linked
    layout names it (None: it cannot be linked); ``file_size`` and ``file_version``: its
    size and version (as its store tells them), recorded in linked layouts so that
    readers can tell a rewritten file (see :func:`h5dask.sources.linked_chunk_refs`)."""

    link: bool = False
    file_uri: str | None = None
    chunks: ChunkSpec = field(default_factory=ChunkSpec)
    compression: Compression = field(default_factory=Compression)
    inline_limit: int = INLINE_CHUNK_LIMIT
    file_size: int | None = None
    file_version: str | None = None


# -- what planning gives ------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetPlan:
    """How one source dataset is imported.

    ``mode``: "copy", "link" or "meta" (no values to copy: a null or empty dataspace, or
    nothing stored); ``chunks``: the new chunk shape of a copy; ``direct``: copy each
    stored chunk as it is (decoded by the source's own filters, no rechunking);
    ``chunk_table``: the entries of an H5D_CHUNKED_REF_INDIRECT table (read-only);
    ``chunks_key``: the ``chunks=`` dict key that chose the chunks; ``copied_instead``:
    ``link=True`` but copied; ``notes``: filter changes to warn about; ``linked_chunks``/
    ``linked_bytes``: chunks referenced and their uncompressed size.
    """

    source: SourceDataset
    mode: str
    layout: dict | None
    filters: tuple[dict, ...] = ()
    chunks: tuple[int, ...] = ()
    direct: bool = False
    file_uri: str | None = None
    chunk_table: np.ndarray | None = None
    chunks_key: str | None = None
    copied_instead: bool = False
    notes: tuple[str, ...] = ()
    linked_chunks: int = 0
    linked_bytes: int = 0
    file_size: int | None = None  # of the linked file, recorded in its layout
    file_version: str | None = None  # likewise

    @property
    def path(self) -> str:
        return self.source.path

    def layout_json(self, table_id: str | None = None) -> dict | None:
        """The new dataset's layout; an INDIRECT one names its chunk-table dataset. A
        linked one records the linked file's size and version and the dataset's path in
        it (:data:`LINKED_FILE_SIZE_KEY`, :data:`LINKED_FILE_VERSION_KEY`,
        :data:`LINKED_FILE_PATH_KEY`)."""
        layout = self.layout
        if self.chunk_table is not None:
            assert table_id is not None and self.source.chunks is not None
            layout = chunked_ref_indirect_layout(self.source.chunks, self.file_uri, table_id)
        if self.mode == "link" and self.file_size is not None and layout is not None:
            layout = {**layout, LINKED_FILE_SIZE_KEY: self.file_size}
            if self.file_version is not None:
                layout.update({LINKED_FILE_VERSION_KEY: self.file_version,
                               LINKED_FILE_PATH_KEY: self.path})
        return layout

    def dataset_json(self, table_id: str | None = None) -> dict:
        """The body of the new dataset (``table_id``: see :meth:`layout_json`)."""
        src = self.source
        body = dataset_json(src.type_json, Dataspace(src.shape, src.maxshape),
                            self.layout_json(table_id), list(self.filters), src.fill_json)
        if src.fill_time_never:  # as h5pyd records it (HSDS itself does not use it)
            body["creationProperties"]["fillTime"] = "H5D_FILL_TIME_NEVER"
        return body

    def chunk_table_json(self) -> dict:
        """The body of the chunk-table dataset of an INDIRECT layout."""
        assert self.chunk_table is not None
        shape = self.chunk_table.shape
        return dataset_json(type_json_from_dtype(CHUNK_TABLE_DTYPE), Dataspace(shape, shape),
                            chunked_layout(choose_chunks(shape, CHUNK_TABLE_DTYPE, True,
                                                         shape)), [])


def plan_dataset(src: SourceDataset, options: PlanOptions) -> DatasetPlan:
    """How ``src`` is imported: linked where ``options.link`` asks and the dataset allows,
    else copied (chunks and filters as ``options`` say) or metadata only.

    >>> src = SourceDataset("/s", "H5T_STD_I32LE", np.dtype("<i4"), 4, (), (), "compact",
    ...                     None, ())
    >>> plan_dataset(src, PlanOptions()).layout
    {'class': 'H5D_CONTIGUOUS'}
    """
    mode = "meta" if src.empty else "copy"
    if src.shape is None:  # a null dataspace: no values, no layout
        return DatasetPlan(src, mode, None)
    if _linkable(src, options):
        return _linked(src, options)
    copied_instead = options.link and mode != "meta"
    if src.scalar:  # one chunk "0", as HSDS stores a scalar
        return DatasetPlan(src, mode, contiguous_layout(), copied_instead=copied_instead)
    assert src.maxshape is not None
    key, request = options.chunks.request(src.path)
    if (isinstance(request, tuple) and len(request) != len(src.shape)
            and options.chunks.by_dataset):
        raise LoadOptionError(f"chunks= gives {src.path} the chunk shape {request}, but it "
                              f"has {len(src.shape)} dimensions (shape {src.shape}): give "
                              f"it {len(src.shape)} chunk dimensions")
    chunks = resolve_chunks(request, src.shape, src.dtype, src.maxshape, src.chunks)
    mapped = mapped_filters(src.filters)
    comp, level = mapped.compressor, mapped.level
    if options.compression.change:
        comp, level = options.compression.compressor, options.compression.level
    if not src.allocated:
        mode = "meta"  # nothing stored: every value is the fill value
    direct = (src.layout == "chunked" and src.native and src.raw_ok
              and tuple(chunks) == src.chunks)
    return DatasetPlan(src, mode, chunked_layout(chunks),
                       tuple(_filters_json(comp, level, mapped)), chunks, direct,
                       chunks_key=key, copied_instead=copied_instead,
                       notes=tuple(mapped.notes))


def resolve_chunks(request: Any, shape: tuple[int, ...], dt: np.dtype,
                   maxshape: tuple[int | None, ...], source: tuple[int, ...] | None
                   ) -> tuple[int, ...]:
    """The chunk shape a ``chunks=`` request (None, "auto" or a shape) gives a dataset
    whose source chunks are ``source`` (None: contiguous or compact)."""
    if isinstance(request, tuple) and len(request) == len(shape):
        return tuple(max(1, s) if c is None else (c if m is None else min(c, max(1, s)))
                     for c, s, m in zip(request, shape, maxshape))
    if request == "auto" or source is None:
        return choose_chunks(shape, dt, True, maxshape)
    return tuple(source)


def _linkable(src: SourceDataset, options: PlanOptions) -> bool:
    if not options.link or options.file_uri is None or not src.raw_ok:
        return False
    if src.layout == "chunked":
        # a chunk that skipped a filter (filter_mask) cannot share the dataset's codec
        return src.native and not any(info.filter_mask for info in src.stored)
    if src.layout == "contiguous":
        if src.external:
            return False
        return not src.allocated or src.data_offset is not None
    return False  # compact (the data is in the object header) or virtual


def _linked(src: SourceDataset, options: PlanOptions) -> DatasetPlan:
    """A linked dataset's plan: its layout names the source's bytes."""
    assert src.shape is not None
    uri = options.file_uri
    filters = tuple(native_filters_json(src.filters))
    itemsize = src.dtype.itemsize
    shape = src.shape if src.shape else (1,)

    def plan(layout: dict | None, chunks: int, nbytes: int, **kw: Any) -> DatasetPlan:
        return DatasetPlan(src, "link", layout, filters, file_uri=uri, linked_chunks=chunks,
                           linked_bytes=nbytes, file_size=options.file_size,
                           file_version=options.file_version, **kw)

    if src.layout == "contiguous":
        offset = src.data_offset if src.allocated else None
        size = src.storage_size if offset is not None else 0
        if src.scalar:
            # a one-chunk table: HSDS 1.0.2 cannot serve H5D_CONTIGUOUS_REF for scalars
            table = {"0": [int(offset), size]} if offset is not None else {}
            return plan(chunked_ref_layout((1,), uri, table), len(table),
                        itemsize if table else 0)
        chunks = _contiguous_chunks(shape, itemsize, CONTIGUOUS_REF_CHUNK_MAX)
        ranges = contiguous_ranges(shape, itemsize, chunks, int(offset or 0), size)
        return plan(contiguous_ref_layout(uri, int(offset or 0), size), len(ranges),
                    sum(n for _, _, n in ranges))
    chunks = src.chunks
    assert chunks is not None
    grid = ChunkGrid(shape, chunks)
    indices = [info.index(chunks) for info in src.stored]
    nbytes = sum(itemsize * math.prod(b.stop - b.start for b in grid.chunk_bounds(i))
                 for i in indices)
    if len(src.stored) <= options.inline_limit:
        table = {ids.chunk_name(i): [int(info.byte_offset), int(info.size)]
                 for i, info in zip(indices, src.stored)}
        return plan(chunked_ref_layout(chunks, uri, table), len(indices), nbytes)
    values = np.zeros(grid.grid_shape, dtype=CHUNK_TABLE_DTYPE)
    for i, info in zip(indices, src.stored):
        if info.size >= 2**31:
            raise SizeLimitError(f"{src.path}: a chunk of {info.size} bytes does not fit the "
                                 "int32 size field of an HSDS chunk table: load the file "
                                 "without link=True (--link) to copy it in smaller chunks")
        values[i] = (info.byte_offset, info.size)
    values.flags.writeable = False
    return plan(None, len(indices), nbytes, chunk_table=values)


# -- filters ------------------------------------------------------------------------------
def mapped_filters(filters: tuple[tuple[int, tuple], ...]) -> codecs.MappedFilters:
    """A source filter pipeline mapped onto what HSDS stores (other compressors become
    the nearest HSDS one; level clamped to 0-9)."""
    out = codecs.MappedFilters()
    for code, cd in filters:
        codec = codecs.by_hdf5_id(code)
        if codec is None:
            out.compressor, out.level = "gzip", 4
            out.notes.append(f"filter {code} -> gzip")
        else:
            codec.map_hdf5(cd, out)
    out.level = None if out.level is None else max(0, min(9, out.level))
    return out


def _filters_json(comp: str | None, level: int | None, mapped: codecs.MappedFilters) -> list:
    out = []
    if mapped.shuffle:
        out.append(filter_json("shuffle"))
    if mapped.bitshuffle:
        out.append(filter_json("bitshuffle"))
    if comp:
        out.append(filter_json(comp, level))
    if mapped.fletcher32:
        out.append(filter_json("fletcher32"))
    return out


# -- chunks to copy -----------------------------------------------------------------------
def copy_jobs(plan: DatasetPlan) -> Iterator[tuple[tuple[int, ...], StoredChunk | None]]:
    """(new chunk index, the stored source chunk for a direct copy or None) of every
    chunk a copy writes, in the source's (or C) order; none unless ``plan.mode`` is
    "copy". Rechunked, only new chunks that overlap a stored source chunk."""
    src = plan.source
    if plan.mode != "copy":
        return
    if src.scalar:
        yield (0,), None
        return
    assert src.shape is not None
    if plan.direct:
        for info in src.stored:
            yield info.index(plan.chunks), info
        return
    grid = ChunkGrid(src.shape, plan.chunks)
    if src.chunks is None:
        yield from ((index, None) for index in grid.indices())
        return
    alloc = np.zeros(ChunkGrid(src.shape, src.chunks).grid_shape, dtype=bool)
    for info in src.stored:
        alloc[info.index(src.chunks)] = True
    for index in grid.indices():
        region = tuple(slice(b.start // c, (b.stop - 1) // c + 1)
                       for b, c in zip(grid.chunk_bounds(index), src.chunks))
        if alloc[region].any():
            yield index, None


def chunk_logical_bytes(plan: DatasetPlan, index: tuple[int, ...]) -> int:
    """The uncompressed size (as the file holds it) of the values of new chunk ``index``."""
    src = plan.source
    if src.scalar:
        return src.file_itemsize
    assert src.shape is not None
    bounds = ChunkGrid(src.shape, plan.chunks).chunk_bounds(index)
    return src.file_itemsize * math.prod(b.stop - b.start for b in bounds)


__all__ = ["INLINE_CHUNK_LIMIT", "ChunkSpec", "Compression", "DatasetPlan", "PlanOptions",
           "SourceDataset", "StoredChunk", "chunk_logical_bytes", "copy_jobs",
           "mapped_filters", "native_filters_json", "plan_dataset", "resolve_chunks"]
