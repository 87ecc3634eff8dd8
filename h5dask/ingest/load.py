"""``load_file``: import an HDF5 or netCDF-4 file into a domain, copied or linked in place.

Copied (the default): groups, datasets, committed datatypes, attributes of every type
(object references, such as netCDF's ``DIMENSION_LIST`` and ``REFERENCE_LIST``, become
the ids of the new objects), hard/soft/external links, chunking, filters and fill values
are kept; chunk data is copied in parallel (each source chunk read once with one ranged
read, decoded, and written through :meth:`ArraySource.write_chunk_async` in HSDS's
format). ``chunks=`` rechunks and ``compression=`` recompresses.

Linked (``link=True``, for a file in object storage or on a local file system): only
metadata is written. Datasets reference the chunks inside the file with HSDS's layouts
``H5D_CHUNKED_REF`` (small chunk tables inline), ``H5D_CHUNKED_REF_INDIRECT`` (an
anonymous chunk-table dataset) and ``H5D_CONTIGUOUS_REF``; see :mod:`.linked`.

Either way the domain becomes visible (its ``.domain.json`` is written) only at the very
end; a failed load leaves no visible domain and removes what it had written.

>>> import h5py, numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "x.h5")
>>> with h5py.File(path, "w") as f:
...     _ = f.create_dataset("t", data=np.arange(100.0), chunks=(10,), compression="gzip")
>>> s = load_file(path, "memory://docs-load/home/x.h5", progress=False)
>>> (s.datasets, s.chunks_written)
(1, 10)
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..chunkio import ArraySource, fill_array
from ..domain import DomainSession
from ..errors import (
    CorruptChunkError,
    DomainExistsError,
    H5DaskError,
    HSDSUnreadableWarning,
    LocalLinkWarning,
    SourceFileError,
    UnsupportedFilterError,
    UnsupportedTypeError,
)
from ..format import codecs, ids
from ..format.chunks import ChunkGrid, choose_chunks
from ..format.dataspace import Dataspace
from ..format.filters import ChunkCodec, filter_json
from ..format.linked import CHUNK_TABLE_DTYPE, contiguous_ranges
from ..format.metadata import (
    DatasetMeta,
    Link,
    attribute_json,
    chunked_layout,
    chunked_ref_indirect_layout,
    chunked_ref_layout,
    contiguous_layout,
    contiguous_ref_layout,
    dataset_json,
    datatype_json,
    group_json,
)
from ..format.types import dtype_from_json, has_vlen, type_json_from_dtype
from ..sources import array_source
from ..storage import open_location
from ..storage.base import ObjectStore
from ..storage.sync import io_loop
from .hdf5 import H5Types, H5Values, SourceObject, filter_label, missing_filters, same_layout, walk
from .source import Source, check_linkable, open_source

#: chunk tables with more entries than this go to an H5D_CHUNKED_REF_INDIRECT chunk
#: table (SingleObject.md suggests the indirect layout beyond about 1000 chunks)
INLINE_CHUNK_LIMIT = 1000

#: HDF5 pipeline order of the roles a linked layout may hold (reorder, compress, checksum)
_NATIVE_ORDER = ("shuffle", "bitshuffle", "compressor", "checksum")


@dataclass
class LoadSummary:
    """What :func:`load_file` did. ``bytes_read`` counts bytes read from the source file
    (HDF5 metadata and chunks); ``bytes_written`` every object written to the store
    (chunks and metadata); ``logical_bytes`` the uncompressed size of what was copied
    (or, linked, referenced)."""

    source: str
    url: str
    linked: bool
    groups: int = 0
    datasets: int = 0
    datatypes: int = 0
    links: int = 0  # soft and external links
    attributes: int = 0
    chunks_written: int = 0
    chunks_linked: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    chunk_bytes_written: int = 0
    metadata_bytes_written: int = 0
    logical_bytes: int = 0
    seconds: float = 0.0
    layouts: dict[str, int] = field(default_factory=dict)  # layout class -> datasets
    copied: list[str] = field(default_factory=list)  # link=True: datasets copied instead
    skipped: list[str] = field(default_factory=list)  # what could not be imported, and why

    def __str__(self) -> str:
        verb = "linked" if self.linked else "loaded"
        rate = self.logical_bytes / self.seconds / 2**20 if self.seconds else 0.0
        lines = [
            f"{verb} {self.source} -> {self.url} in {self.seconds:.2f} s",
            f"  {self.groups} groups, {self.datasets} datasets, {self.datatypes} datatypes, "
            f"{self.attributes} attributes, {self.links} soft/external links",
            f"  chunks: {self.chunks_written} written, {self.chunks_linked} linked; "
            f"layouts: {', '.join(f'{k} {v}' for k, v in sorted(self.layouts.items()))}",
            f"  bytes: {_size(self.bytes_read)} read, {_size(self.bytes_written)} written "
            f"({_size(self.chunk_bytes_written)} chunks, "
            f"{_size(self.metadata_bytes_written)} metadata), "
            f"{_size(self.logical_bytes)} of values ({rate:.1f} MiB/s)",
        ]
        if self.copied:
            lines.append(f"  copied instead of linked: {', '.join(self.copied)}")
        for item in self.skipped:
            lines.append(f"  skipped: {item}")
        return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


# -- I/O --------------------------------------------------------------------------------
class _CountingStore(ObjectStore):
    """Delegates to a store and counts what is written through it (on the I/O loop)."""

    def __init__(self, inner: ObjectStore) -> None:
        super().__init__(inner.tuning)
        self.inner = inner
        self.root_url = inner.root_url
        self.written: Counter[str] = Counter()  # kind -> bytes
        self.objects: Counter[str] = Counter()  # kind -> objects

    async def get(self, key: str, *, kind: str = "chunk",
                  byte_range: tuple[int, int] | None = None) -> bytes | None:
        return await self.inner.get(key, kind=kind, byte_range=byte_range)

    async def put(self, key: str, data: bytes | memoryview, *, kind: str = "chunk") -> None:
        await self.inner.put(key, data, kind=kind)
        self.written[kind] += len(data)
        self.objects[kind] += 1

    async def delete(self, key: str, *, kind: str = "other") -> None:
        await self.inner.delete(key, kind=kind)

    async def list(self, prefix: str = "") -> list[str]:
        return await self.inner.list(prefix)

    async def _get(self, key: str, byte_range: tuple[int, int] | None) -> bytes | None:
        return await self.inner._get(key, byte_range)

    async def _put(self, key: str, data: bytes) -> None:
        await self.inner._put(key, data)

    async def _delete(self, key: str) -> None:
        await self.inner._delete(key)

    async def _list(self, prefix: str) -> list[str]:
        return await self.inner._list(prefix)

    def _init_args(self) -> tuple:
        return self.inner._init_args()

    def __reduce__(self) -> tuple:
        return self.inner.__reduce__()


# -- options ----------------------------------------------------------------------------
class _ChunkSpec:
    """``chunks=``: None (keep), "auto", one shape (where the rank fits), or a dict of
    dataset path or name -> shape or "auto"; None/-1 in a shape mean the whole extent."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec
        self.used: set[str] = set()
        if isinstance(spec, Mapping):
            self.table = {str(k): self._check(v) for k, v in spec.items()}
        elif spec is not None:
            self._check(spec)

    @staticmethod
    def _check(value: Any) -> Any:
        if value is None or value == "auto":
            return value
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            if isinstance(value, int):
                return (value,)
            raise ValueError(f"chunks must be a shape, 'auto' or a dict, not {value!r}")
        shape = tuple(None if c is None or c == -1 else int(c) for c in value)
        if any(c is not None and c < 1 for c in shape):
            raise ValueError(f"chunk dimensions must be positive: {value!r}")
        return shape

    def for_dataset(self, path: str) -> Any:
        """The request for one dataset: None (keep), "auto" or a shape."""
        if not isinstance(self.spec, Mapping):
            return self._check(self.spec)
        name = path.rsplit("/", 1)[-1]
        for key, value in self.table.items():
            k = "/" + key.strip("/")
            if k == path or ("/" not in key.strip("/") and key.strip("/") == name):
                self.used.add(key)
                return value
        return None

    def unused(self) -> list[str]:
        return sorted(set(self.table) - self.used) if isinstance(self.spec, Mapping) else []


def _resolve_chunks(request: Any, shape: tuple[int, ...], dt: np.dtype,
                    maxshape: tuple[int | None, ...], source: tuple[int, ...] | None
                    ) -> tuple[int, ...]:
    if isinstance(request, tuple) and len(request) == len(shape):
        return tuple(max(1, s) if c is None else (c if m is None else min(c, max(1, s)))
                     for c, s, m in zip(request, shape, maxshape))
    if request == "auto" or source is None:
        return choose_chunks(shape, dt, True, maxshape)
    return tuple(source)


def _compression_request(compression: Any, opts: Any) -> tuple[bool, str | None, int | None]:
    """(change?, compressor or None, level) for ``compression=``/``compression_opts=``."""
    if compression is None:
        if opts is not None:
            raise ValueError("compression_opts needs compression=")
        return False, None, None
    if compression is False or (isinstance(compression, str) and compression.lower() in (
            "none", "")):
        return True, None, None
    if isinstance(compression, int) and not isinstance(compression, bool):
        compression, opts = "gzip", compression
    try:
        codec = codecs.compressor(compression)
    except ValueError as exc:
        raise ValueError(f"{exc} or 'none'") from None
    return True, codec.name, codec.check_level(opts)


# -- datasets ---------------------------------------------------------------------------
@dataclass
class _Plan:
    """One source dataset and how it is imported."""

    obj: SourceObject
    type_json: Any
    dtype: np.dtype  # the domain's dtype
    shape: tuple[int, ...] | None
    maxshape: tuple[int | None, ...] | None
    src_layout: int
    src_chunks: tuple[int, ...] | None
    filters: list[tuple[int, tuple]]  # (filter code, cd_values) in pipeline order
    raw_ok: bool  # the file's element bytes are the domain dtype's
    fill_json: Any = None
    mode: str = "copy"  # copy, link, meta (no values: null, empty, unallocated)
    chunks: tuple[int, ...] = ()
    stored: list[Any] = field(default_factory=list)  # h5py StoreInfo of stored chunks
    allocated: bool = True
    source: ArraySource | None = None
    src_codec: ChunkCodec | None = None
    direct: bool = False
    remaining: int = 0
    reader: Any = None  # h5py dataset opened with a chunk cache for region reads
    table: np.ndarray | None = None  # INDIRECT chunk table values
    table_source: ArraySource | None = None

    @property
    def path(self) -> str:
        return self.obj.path

    @property
    def scalar(self) -> bool:
        return self.shape == ()

    @property
    def codes(self) -> list[int]:
        return [c for c, _ in self.filters]

    @property
    def native(self) -> bool:
        """Only filters whose HDF5 output ChunkCodec(hdf5_native=True) undoes (shuffle,
        deflate, fletcher32 and hdf5plugin's Blosc, LZ4, Zstd, Bitshuffle, Blosc2), in
        HDF5's usual order."""
        found = [codecs.by_hdf5_id(c) for c in self.codes]
        if self.undecodable():
            return False
        pos = [_NATIVE_ORDER.index(c.role) for c in found if c is not None]
        if pos != sorted(pos) or len(set(pos)) != len(pos):
            return False
        try:
            ChunkCodec.from_filters(_native_filters_json(self), self.dtype,
                                    self.src_chunks or (1,), hdf5_native=True)
        except UnsupportedFilterError:
            return False
        return True

    def hsds_unreadable(self) -> list[str]:
        """Names of the filters whose HDF5 output HSDS cannot decode in a linked chunk."""
        found = [codecs.by_hdf5_id(c) for c in self.codes]
        return [c.name for c in found if c is not None and not c.linkable]

    def undecodable(self) -> list[str]:
        """The filters h5dask cannot decode as HDF5 wrote them, by name and id."""
        return [filter_label(c) for c, cd in self.filters
                if (codec := codecs.by_hdf5_id(c)) is None or not codec.decodes_native_with(cd)]


def _mapped_filters(plan: _Plan) -> codecs.MappedFilters:
    """The source's filter pipeline mapped onto what HSDS stores (other compressors
    become the nearest HSDS one)."""
    out = codecs.MappedFilters()
    for code, cd in plan.filters:
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


def _native_filters_json(plan: _Plan) -> list:
    """The source's own filters as HSDS filter JSON (level: HDF5's first cd_value)."""
    out = []
    for code, cd in plan.filters:
        codec = codecs.by_hdf5_id(code)
        assert codec is not None  # plan.native checked it
        out.append(codec.native_json(cd))
    return out


def _make_plan(obj: SourceObject, types: H5Types, values: H5Values) -> _Plan:
    from h5py import h5d, h5s

    dset = obj.h5
    tid = dset.id.get_type()
    type_json = types.json(tid)
    dt = dtype_from_json(type_json)
    if dt.subdtype is not None:
        raise UnsupportedTypeError(
            "a dataset whose element type is an HDF5 array type (h5py reads it as extra "
            "axes); HSDS chunk layouts have no equivalent")
    space = dset.id.get_space()
    stype = space.get_simple_extent_type()
    if stype == h5s.NULL:
        shape, maxshape = None, None
    elif stype == h5s.SCALAR:
        shape, maxshape = (), ()
    else:
        shape = tuple(int(s) for s in dset.shape)
        maxshape = tuple(None if m is None else int(m) for m in dset.maxshape)
    dcpl = dset.id.get_create_plist()
    layout = dcpl.get_layout()
    filters = [(int(code), tuple(cd)) for code, _flags, cd, _name in
               (dcpl.get_filter(i) for i in range(dcpl.get_nfilters()))]
    plan = _Plan(obj, type_json, dt, shape, maxshape, layout,
                 tuple(dset.chunks) if layout == h5d.CHUNKED else None, filters,
                 same_layout(tid, dt))
    if dcpl.fill_value_defined() == h5d.FILL_VALUE_USER_DEFINED and not has_vlen(dt):
        try:
            plan.fill_json = values.one(dset.fillvalue, dt)
        except (UnsupportedTypeError, TypeError, ValueError):
            plan.fill_json = None
    if shape is None or math.prod(shape) == 0:
        plan.mode = "meta"
        return plan
    if layout == h5d.CHUNKED:
        stored: list[Any] = []
        if hasattr(dset.id, "chunk_iter"):
            dset.id.chunk_iter(stored.append)
        else:  # HDF5 older than 1.14
            stored = [dset.id.get_chunk_info(i) for i in range(dset.id.get_num_chunks())]
        plan.stored = stored
        plan.allocated = bool(stored)
    elif layout == h5d.CONTIGUOUS and dcpl.get_external_count() == 0:
        plan.allocated = dset.id.get_storage_size() > 0
    return plan


# -- the loader -------------------------------------------------------------------------
class _Loader:
    """One load: the metadata phase (:meth:`build`, in the h5py thread), then the chunk
    copies (:meth:`run`, on the I/O loop), then the session's flush."""

    def __init__(self, source: Source, session: DomainSession, store: _CountingStore,
                 summary: LoadSummary, link: bool, chunk_spec: _ChunkSpec,
                 compression: tuple[bool, str | None, int | None], inline_limit: int,
                 workers: int, progress: bool) -> None:
        self.src = source
        self.session = session
        self.store = store
        self.summary = summary
        self.link = link
        self.chunk_spec = chunk_spec
        self.compression = compression
        self.inline_limit = inline_limit
        self.workers = workers
        self.progress = progress
        self.plans: list[_Plan] = []
        self.refs: dict[int, str] = {}  # source object address -> new id
        # every h5py call runs in this one thread (h5py serialises them anyway, and the
        # file object under it is not safe for concurrent seek/read)
        self.reader = ThreadPoolExecutor(1, thread_name_prefix="h5dask-load-h5py")
        self.bar: Any = None
        self.chunks_total = 0
        self.chunks_done = 0

    # -- metadata -----------------------------------------------------------------
    def build(self) -> None:
        f = self.src.h5
        summary = self.summary
        session = self.session
        objects = walk(f, summary.skipped)
        root = objects[0]
        root.new_id = session.root_id
        committed: dict[int, str] = {}
        types = H5Types(committed)
        # datatypes first (datasets name them), then datasets and groups
        for obj in objects:
            if obj.kind == "t":
                try:
                    tjson = types.json(obj.h5.id, top=False)
                except UnsupportedTypeError as exc:
                    summary.skipped.append(f"{obj.path}: datatype ({exc})")
                    continue
                obj.new_id = session.new_object("t", datatype_json(tjson))
                committed[obj.addr] = obj.new_id
                summary.datatypes += 1
        refs = self.refs
        refs.update({o.addr: o.new_id for o in objects if o.new_id})
        values = H5Values(f, refs)
        for obj in objects:
            if obj.kind == "d":
                try:
                    plan = _make_plan(obj, types, values)
                    body = self._dataset_body(plan)
                except UnsupportedTypeError as exc:
                    summary.skipped.append(f"{obj.path}: dataset ({exc})")
                    continue
                obj.new_id = session.new_object("d", body)
                self.plans.append(plan)
                summary.datasets += 1
            elif obj.kind == "g":
                if obj is not root:
                    obj.new_id = session.new_object("g", group_json())
                summary.groups += 1
            if obj.new_id:
                refs[obj.addr] = obj.new_id
        unused = self.chunk_spec.unused()
        if unused:
            raise ValueError(f"chunks= names datasets that are not in the file: {unused}")
        # links, then attributes (references resolve to the new ids)
        now = time.time()
        for obj in objects:
            if obj.kind != "g" or not obj.new_id:
                continue
            links = {ln.name: ln.to_json(now) for ln in obj.links}
            summary.links += len(obj.links)
            for name, addr in obj.hard:
                if refs.get(addr):
                    links[name] = Link(name, "hard", id=refs[addr]).to_json(now)
            if links:
                ordered = {n: links[n] for n in obj.h5 if n in links}  # the file's order
                session.update(obj.new_id, lambda o, ln=ordered: o.__setitem__("links", ln))
        for obj in objects:
            if obj.new_id:
                attrs = self._attributes(obj, types, values)
                if attrs:
                    session.update(obj.new_id, lambda o, a=attrs: o.setdefault(
                        "attributes", {}).update(a))
        for plan in self.plans:
            meta = session.load(plan.obj.new_id)
            assert isinstance(meta, DatasetMeta)
            if plan.mode == "copy":
                plan.source = array_source(session, meta, store=self.store)
            summary.layouts[meta.layout.cls] = summary.layouts.get(meta.layout.cls, 0) + 1

    def _attributes(self, obj: SourceObject, types: H5Types, values: H5Values) -> dict:
        import h5py
        from h5py import h5s

        out = {}
        now = time.time()
        for name in obj.h5.attrs:
            try:
                aid = h5py.h5a.open(obj.h5.id, name.encode("utf-8"))
                type_json = types.json(aid.get_type())
                dt = dtype_from_json(type_json)
                if aid.get_space().get_simple_extent_type() == h5s.NULL:
                    out[name] = attribute_json(type_json, None, None, now)
                else:
                    shape = tuple(aid.shape)
                    out[name] = attribute_json(
                        type_json, shape, values.nd(obj.h5.attrs[name], dt, len(shape)), now)
            except (UnsupportedTypeError, OSError, TypeError, ValueError) as exc:
                self.summary.skipped.append(f"{obj.path} attribute {name!r} ({exc})")
                continue
            self.summary.attributes += 1
        return out

    def _linkable(self, plan: _Plan) -> bool:
        from h5py import h5d

        if not self.link or self.src.file_uri is None or not plan.raw_ok:
            return False
        dset = plan.obj.h5
        if plan.src_layout == h5d.CHUNKED:
            # a chunk that skipped a filter (filter_mask) cannot share the dataset's codec
            return plan.native and not any(info.filter_mask for info in plan.stored)
        if plan.src_layout == h5d.CONTIGUOUS:
            if dset.id.get_create_plist().get_external_count():
                return False
            return not plan.allocated or dset.id.get_offset() is not None
        return False  # compact (the data is in the object header) or virtual

    def _dataset_body(self, plan: _Plan) -> dict:
        layout, filters = self._layout(plan)
        return dataset_json(plan.type_json, Dataspace(plan.shape, plan.maxshape), layout,
                            filters, plan.fill_json)

    def _layout(self, plan: _Plan) -> tuple[dict | None, list]:
        """The new dataset's layout and filters JSON; sets the plan's mode and codecs."""
        from h5py import h5d

        if plan.shape is None:  # a null dataspace: no values, no layout
            return None, []
        if self._linkable(plan):
            layout = self._linked_layout(plan)
            plan.mode = "link"
            unreadable = plan.hsds_unreadable()
            if unreadable:
                warnings.warn(f"{self.src.url}: {plan.path}: linked with the "
                              f"{', '.join(unreadable)} filter as HDF5 wrote it, which an "
                              "HSDS server cannot decode (h5dask can); load without --link "
                              "for a copy HSDS can serve", HSDSUnreadableWarning, stacklevel=2)
            return layout, _native_filters_json(plan)
        if self.link and plan.mode != "meta":
            self.summary.copied.append(plan.path)
            undecodable = plan.undecodable() if plan.src_layout == h5d.CHUNKED else []
            if undecodable:
                warnings.warn(f"{self.src.url}: {plan.path}: copied, not linked: h5dask "
                              f"cannot decode filter {', '.join(undecodable)} as HDF5 wrote "
                              "it (the copy holds the values h5py reads)", stacklevel=2)
        if plan.scalar:  # one chunk "0", as HSDS stores a scalar
            return contiguous_layout(), []
        assert plan.maxshape is not None
        request = self.chunk_spec.for_dataset(plan.path)
        if (isinstance(request, tuple) and len(request) != len(plan.shape)
                and isinstance(self.chunk_spec.spec, Mapping)):
            raise ValueError(f"chunks= gives {plan.path} the chunk shape {request}, but it "
                             f"has {len(plan.shape)} dimensions (shape {plan.shape})")
        plan.chunks = _resolve_chunks(request, plan.shape, plan.dtype, plan.maxshape,
                                      plan.src_chunks)
        mapped = _mapped_filters(plan)
        comp, level = mapped.compressor, mapped.level
        change, new_comp, new_level = self.compression
        if change:
            comp, level = new_comp, new_level
        for note in mapped.notes:
            warnings.warn(f"{plan.path}: {note}", stacklevel=2)
        if plan.mode != "meta" and not plan.allocated:
            plan.mode = "meta"  # nothing stored: every value is the fill value
        plan.direct = (plan.src_layout == h5d.CHUNKED and plan.native and plan.raw_ok
                       and tuple(plan.chunks) == plan.src_chunks)
        if plan.direct:
            assert plan.src_chunks is not None
            plan.src_codec = ChunkCodec.from_filters(
                _native_filters_json(plan), plan.dtype, plan.src_chunks, hdf5_native=True)
        return chunked_layout(plan.chunks), _filters_json(comp, level, mapped)

    def _linked_layout(self, plan: _Plan) -> dict:
        from h5py import h5d

        from ..format.metadata import CONTIGUOUS_REF_CHUNK_MAX, _contiguous_chunks

        uri = self.src.file_uri
        dset = plan.obj.h5
        itemsize = plan.dtype.itemsize
        shape = plan.shape if plan.shape else (1,)
        if plan.src_layout == h5d.CONTIGUOUS:
            offset = dset.id.get_offset() if plan.allocated else None
            size = int(dset.id.get_storage_size()) if offset is not None else 0
            if plan.scalar:
                # a one-chunk table: HSDS 1.0.2 cannot serve H5D_CONTIGUOUS_REF for scalars
                table = {"0": [int(offset), size]} if offset is not None else {}
                self._count_linked(len(table), itemsize if table else 0)
                return chunked_ref_layout((1,), uri, table)
            chunks = _contiguous_chunks(shape, itemsize, CONTIGUOUS_REF_CHUNK_MAX)
            ranges = contiguous_ranges(shape, itemsize, chunks, int(offset or 0), size)
            self._count_linked(len(ranges), sum(n for _, _, n in ranges))
            return contiguous_ref_layout(uri, int(offset or 0), size)
        chunks = plan.src_chunks
        assert chunks is not None
        grid = ChunkGrid(shape, chunks)
        indices = [tuple(o // c for o, c in zip(info.chunk_offset, chunks))
                   for info in plan.stored]
        self._count_linked(len(indices), sum(
            itemsize * math.prod(b.stop - b.start for b in grid.chunk_bounds(i))
            for i in indices))
        if len(plan.stored) <= self.inline_limit:
            table = {ids.chunk_name(i): [int(info.byte_offset), int(info.size)]
                     for i, info in zip(indices, plan.stored)}
            return chunked_ref_layout(chunks, uri, table)
        values = np.zeros(grid.grid_shape, dtype=CHUNK_TABLE_DTYPE)
        for i, info in zip(indices, plan.stored):
            if info.size >= 2**31:
                raise ValueError(f"{plan.path}: a chunk of {info.size} bytes does not fit the "
                                 "int32 size field of an HSDS chunk table")
            values[i] = (info.byte_offset, info.size)
        table_shape = grid.grid_shape
        table_chunks = choose_chunks(table_shape, CHUNK_TABLE_DTYPE, True, table_shape)
        table_id = self.session.new_object("d", dataset_json(
            type_json_from_dtype(CHUNK_TABLE_DTYPE), Dataspace(table_shape, table_shape),
            chunked_layout(table_chunks), []))
        meta = self.session.load(table_id)
        assert isinstance(meta, DatasetMeta)
        plan.table = values
        plan.table_source = array_source(self.session, meta, store=self.store)
        return chunked_ref_indirect_layout(chunks, uri, table_id)

    def _count_linked(self, chunks: int, logical: int) -> None:
        self.summary.chunks_linked += chunks
        self.summary.logical_bytes += logical

    # -- checks ---------------------------------------------------------------------
    def check_offsets(self) -> None:
        """Read one chunk by its reported offset and compare with h5py's read of it: if
        they differ, the offsets cannot be used (ranged reads then go through h5py, and
        linking is refused)."""
        from ..storage.sync import sync

        if self.src.store is None:
            return
        candidates = [(info.size, n, info) for n, p in enumerate(self.plans)
                      if p.direct or p.mode == "link" for info in p.stored[:16]]
        if candidates:
            _size, n, info = min(candidates, key=lambda c: c[:2])  # the cheapest to check
            offset = info.byte_offset
            want = bytes(self.plans[n].obj.h5.id.read_direct_chunk(info.chunk_offset)[1])
        else:  # a linked contiguous dataset: its first elements
            plan = next((p for p in self.plans if p.mode == "link" and p.src_chunks is None
                         and p.allocated), None)
            if plan is None:
                return
            dset = plan.obj.h5
            offset = dset.id.get_offset()
            if plan.scalar:
                head = np.asarray(dset[()])
            else:
                assert plan.shape is not None
                count = max(1, min(plan.shape[-1], 4096 // max(1, plan.dtype.itemsize)))
                head = dset[(0,) * (len(plan.shape) - 1) + (slice(0, count),)]
            want = np.ascontiguousarray(head, dtype=plan.dtype).tobytes()
        got = sync(self.src.store.get(self.src.key, kind="chunk",
                                      byte_range=(offset, offset + len(want))))
        self.src.range_bytes += len(got or b"")
        if got == want:
            return
        if any(p.mode == "link" for p in self.plans):
            raise CorruptChunkError(f"{self.src.url}[{offset}]", (
                "the data offsets HDF5 reports do not address the data's bytes in the file, "
                "so it cannot be linked"))
        self.src.ranges_ok = False

    # -- chunk jobs -----------------------------------------------------------------
    def jobs(self) -> Iterator[tuple[_Plan, tuple[int, ...], Any]]:
        """(plan, target chunk index, StoreInfo for a direct copy or None) of every chunk
        to copy, dataset by dataset, in the source's (or C) order."""
        for plan in self.plans:
            if plan.mode == "copy":
                yield from self._plan_jobs(plan)

    def _plan_jobs(self, plan: _Plan) -> Iterator[tuple[_Plan, tuple[int, ...], Any]]:
        if plan.scalar:
            yield plan, (0,), None
            return
        assert plan.shape is not None
        if plan.direct:
            for info in plan.stored:
                yield plan, tuple(o // c for o, c in zip(info.chunk_offset, plan.chunks)), info
            return
        grid = ChunkGrid(plan.shape, plan.chunks)
        if plan.src_chunks is None:
            yield from ((plan, index, None) for index in grid.indices())
            return
        # rechunked: only target chunks that overlap a stored source chunk
        alloc = np.zeros(ChunkGrid(plan.shape, plan.src_chunks).grid_shape, dtype=bool)
        for info in plan.stored:
            alloc[tuple(o // c for o, c in zip(info.chunk_offset, plan.src_chunks))] = True
        for index in grid.indices():
            region = tuple(slice(b.start // c, (b.stop - 1) // c + 1)
                           for b, c in zip(grid.chunk_bounds(index), plan.src_chunks))
            if alloc[region].any():
                yield plan, index, None

    def count_jobs(self) -> tuple[int, int]:
        chunks = nbytes = 0
        for plan, index, _info in self.jobs():
            chunks += 1
            nbytes += self._logical(plan, index)
            plan.remaining += 1
        return chunks, nbytes

    def _logical(self, plan: _Plan, index: tuple[int, ...]) -> int:
        itemsize = plan.obj.h5.dtype.itemsize
        if plan.scalar:
            return itemsize
        assert plan.shape is not None
        bounds = ChunkGrid(plan.shape, plan.chunks).chunk_bounds(index)
        return itemsize * math.prod(b.stop - b.start for b in bounds)

    async def run(self) -> None:
        """Write the chunk tables, then copy every chunk with ``workers`` at a time."""
        loop = asyncio.get_running_loop()
        for plan in self.plans:
            if plan.table_source is not None:
                await plan.table_source.write_async((), plan.table)
        jobs = self.jobs()

        async def worker() -> None:
            for plan, index, info in jobs:  # one shared generator: each chunk once
                await self._copy(loop, plan, index, info)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(self.workers):
                    group.create_task(worker())
        except BaseExceptionGroup as group_error:  # the first failure, as itself
            first: BaseException = group_error
            while isinstance(first, BaseExceptionGroup):
                first = first.exceptions[0]
            raise first from None

    async def _copy(self, loop: asyncio.AbstractEventLoop, plan: _Plan,
                    index: tuple[int, ...], info: Any) -> None:
        assert plan.source is not None
        if info is not None and not info.filter_mask:
            raw = await self._raw_chunk(loop, plan, info)
            where = f"{self.src.url}:{plan.path}[chunk {ids.chunk_name(index)}]"
            assert plan.src_codec is not None
            chunk = await asyncio.to_thread(plan.src_codec.decode, raw, where, None)
        else:
            chunk = await loop.run_in_executor(self.reader, self._read_region, plan, index)
        await plan.source.write_chunk_async(index, chunk)
        plan.remaining -= 1
        if plan.remaining == 0 and plan.reader is not None:
            await loop.run_in_executor(self.reader, self._close_reader, plan)
        logical = self._logical(plan, index)
        self.summary.logical_bytes += logical
        self.chunks_done += 1
        if self.bar is not None:
            self.bar.set_postfix_str(f"chunks {self.chunks_done}/{self.chunks_total}",
                                     refresh=False)
            self.bar.update(logical)

    async def _raw_chunk(self, loop: asyncio.AbstractEventLoop, plan: _Plan,
                         info: Any) -> bytes:
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
            _mask, data = plan.obj.h5.id.read_direct_chunk(info.chunk_offset)
            return bytes(data)

        return await loop.run_in_executor(self.reader, read)

    # (in the h5py thread)
    def _read_region(self, plan: _Plan, index: tuple[int, ...]) -> np.ndarray:
        """One target chunk read through h5py (which undoes any filter it has a plugin
        for), padded with the fill value at the edges; HDF5's own failures become one
        SourceFileError naming the file and the dataset."""
        try:
            return self._read_region_h5py(plan, index)
        except OSError as exc:
            if isinstance(exc, H5DaskError):
                raise
            missing = missing_filters(plan.codes)
            why = (f"HDF5 has no decoder for its filter {', '.join(missing)} (install "
                   "hdf5plugin, or a plugin in HDF5_PLUGIN_PATH)" if missing else str(exc))
            raise SourceFileError(f"{self.src.url}: dataset {plan.path}: h5py cannot read "
                                  f"it ({why})") from exc

    def _read_region_h5py(self, plan: _Plan, index: tuple[int, ...]) -> np.ndarray:
        assert plan.source is not None
        dset = self._region_reader(plan)
        values = H5Values(self.src.h5, self.refs)
        if plan.scalar:
            out = np.empty((1,), dtype=plan.dtype)
            out[0] = values.array(np.asarray(dset[()]).reshape(()), plan.dtype)[()]
            return out
        assert plan.shape is not None
        bounds = ChunkGrid(plan.shape, plan.chunks).chunk_bounds(index)
        data = values.array(dset[bounds], plan.dtype)
        out = np.empty(plan.chunks, dtype=plan.dtype)
        if data.shape != plan.chunks:
            fill_array(out, plan.source.fill_value)
        out[tuple(slice(0, b.stop - b.start) for b in bounds)] = data
        return out

    def _region_reader(self, plan: _Plan) -> Any:
        import h5py

        if plan.reader is None:
            if plan.src_chunks is None or plan.scalar:
                plan.reader = plan.obj.h5
            else:
                # a chunk cache holding the source chunks of one slab of target chunks,
                # so that rechunking reads each source chunk about once
                assert plan.shape is not None
                src_bytes = plan.obj.h5.dtype.itemsize * math.prod(plan.src_chunks)
                per_slab = math.ceil(plan.chunks[0] / plan.src_chunks[0]) + 1
                per_slab *= math.prod(math.ceil(s / c) for s, c in zip(
                    plan.shape[1:], plan.src_chunks[1:]))
                nbytes = int(min(512 * 2**20, max(2**20, src_bytes * per_slab)))
                dapl = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
                dapl.set_chunk_cache(100003, nbytes, 1.0)
                dsid = h5py.h5d.open(self.src.h5.id, plan.path.encode("utf-8"), dapl)
                plan.reader = h5py.Dataset(dsid)
        return plan.reader

    @staticmethod
    def _close_reader(plan: _Plan) -> None:
        plan.reader = None  # the last reference: the dataset and its chunk cache close

    # -- progress -------------------------------------------------------------------
    def open_bar(self, total_bytes: int) -> None:
        if not self.progress:
            return
        from tqdm import tqdm

        name = os.path.basename(self.src.url.rstrip("/")) or self.src.url
        linked = self.summary.logical_bytes if self.link else 0
        self.chunks_done = self.summary.chunks_linked if self.link else 0
        self.chunks_total += self.chunks_done
        self.bar = tqdm(total=total_bytes + linked, unit="B", unit_scale=True,
                        unit_divisor=1024, desc=f"{'link' if self.link else 'load'} {name}",
                        file=sys.stderr, dynamic_ncols=True, mininterval=0.2)
        self.bar.set_postfix_str(f"chunks {self.chunks_done}/{self.chunks_total}",
                                 refresh=False)
        if linked:
            self.bar.update(linked)


def load_file(src: Any, url: str, *, chunks: Any = None, compression: Any = None,
              compression_opts: int | None = None, storage_options: Mapping | None = None,
              src_storage_options: Mapping | None = None, progress: bool = True,
              max_workers: int | None = None, link: bool = False, overwrite: bool = False,
              inline_chunk_limit: int = INLINE_CHUNK_LIMIT,
              allowed_link_prefixes: Iterable[str] | None = None) -> LoadSummary:
    """Import the HDF5/netCDF-4 file ``src`` (a local path or an fsspec URL) as the domain
    at ``url`` (see the module doc) and return a :class:`LoadSummary`.

    - ``chunks``: None (keep the source's; contiguous datasets get chunks chosen as
      :meth:`h5dask.Group.create_dataset` chooses them), "auto" (choose for every
      dataset), one shape (for every dataset of that rank; None or -1 for a whole
      dimension) or a dict of dataset path or name -> shape or "auto".
    - ``compression``: None (keep the source's filters, mapped onto HSDS's compressors),
      "gzip", "lz4", "zstd", "blosclz", "lz4hc", "snappy", a gzip level, or "none";
      ``compression_opts``: its level, 0-9.
    - ``storage_options``: for the domain's store; ``src_storage_options``: for the source
      (by default ``storage_options`` when both are s3:// URLs).
    - ``progress``: a tqdm bar on stderr counting bytes and chunks.
    - ``max_workers``: chunks in flight at once (default 8).
    - ``link``: reference the chunks in the file instead of copying them (the file must be
      a local path, file:// or s3:// URL). Datasets that cannot be linked (variable-length
      or reference data, compact storage, filters other than gzip/shuffle/fletcher32) are
      copied and listed in ``LoadSummary.copied``. Readers resolve the file only inside
      the domain's store (S3: any bucket of its endpoint; file://: inside its bucket
      root) unless they allow more (:mod:`h5dask.storage.links`); a file they would
      refuse is refused here, before anything is written, unless
      ``allowed_link_prefixes`` (or ``H5DASK_ALLOWED_LINK_PREFIXES``) allows it.
    - ``overwrite``: replace an existing domain (else FileExistsError).
    - ``inline_chunk_limit``: the most chunks of an inline H5D_CHUNKED_REF table; larger
      tables become H5D_CHUNKED_REF_INDIRECT chunk-table datasets.
    """
    started = time.perf_counter()
    src_text = os.fspath(src)
    src_scheme = urlsplit(src_text).scheme.lower()
    if link and (chunks is not None or compression is not None):
        raise ValueError("link=True references the file's chunks as they are; chunks= and "
                         "compression= cannot be combined with it")
    if link and src_scheme not in ("", "file", "s3", "s3a"):
        raise ValueError(f"link=True needs the file on a file system or in S3 (a path, "
                         f"file:// or s3:// URL), not {src_text!r}")
    if link and src_scheme in ("", "file"):
        warnings.warn(
            f"linking the local file {src_text!r}: the domain's chunks stay in that file, so "
            "the domain is readable only where that path exists (this machine or a shared "
            "file system); copy the file to object storage first to share it",
            LocalLinkWarning, stacklevel=2)
    if max_workers is not None and max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, not {max_workers}")
    if inline_chunk_limit < 0:
        raise ValueError("inline_chunk_limit must be >= 0")
    chunk_spec = _ChunkSpec(chunks)
    compression_req = _compression_request(compression, compression_opts)
    if src_storage_options is None and src_scheme in ("s3", "s3a") and \
            urlsplit(str(url)).scheme in ("s3", "s3a"):
        src_storage_options = storage_options
    location = open_location(str(url), storage_options)
    source = open_source(src_text, src_storage_options)
    try:
        if link and source.file_uri is not None:
            check_linkable(source.file_uri, location, allowed_link_prefixes)
        try:
            session = DomainSession(location, "w" if overwrite else "w-")
        except FileExistsError as exc:
            raise DomainExistsError(
                f"domain {location.url!r} already exists: pass overwrite=True (h5dask load "
                "--overwrite) to replace it, or remove it first with h5dask rm") from exc
        store = _CountingStore(session.store)
        session.store = store  # metadata writes are counted too
        summary = LoadSummary(source=source.url, url=location.url, linked=link)
        workers = max_workers or min(8, store.max_concurrency)
        loader = _Loader(source, session, store, summary, link, chunk_spec, compression_req,
                         inline_chunk_limit, workers, progress)
        try:
            _run(_load(loader))
        except BaseException:
            session.discard()
            raise
        finally:
            loader.reader.shutdown(wait=True)
            if loader.bar is not None:
                loader.bar.close()
        summary.bytes_read = source.bytes_read
        summary.chunks_written = store.objects["chunk"]
        summary.chunk_bytes_written = store.written["chunk"]
        summary.metadata_bytes_written = store.written["metadata"]
        summary.bytes_written = sum(store.written.values())
        summary.seconds = time.perf_counter() - started
        return summary
    finally:
        source.close()


async def _load(loader: _Loader) -> None:
    """Metadata (in the h5py thread), chunks, then the metadata objects and, last, the
    domain; on any failure, nothing is published and what was written is removed."""
    loop = asyncio.get_running_loop()
    try:
        total_bytes = await loop.run_in_executor(loader.reader, _prepare, loader)
        loader.open_bar(total_bytes)
        await loader.run()
        await loader.session.flush_async()
    except BaseException:
        loader.session.discard()
        await _remove_new_objects(loader)
        raise


def _prepare(loader: _Loader) -> int:
    loader.build()
    loader.check_offsets()
    chunks, nbytes = loader.count_jobs()
    loader.chunks_total = chunks
    return nbytes


async def _remove_new_objects(loader: _Loader) -> None:
    """Best effort: delete what this load wrote (everything is under the new root)."""
    store = loader.store.inner
    prefix = ids.object_prefix(loader.session.root_id) + "/"
    try:
        keys = await store.list(prefix)
        await asyncio.gather(*(store.delete(k) for k in keys), return_exceptions=True)
        await store.prune(prefix)  # no empty db/<root>/ left to look like a domain's
    except Exception:  # noqa: BLE001 - the cleanup must not hide the real error
        pass


def _run(coro: Any) -> None:
    future = asyncio.run_coroutine_threadsafe(coro, io_loop())
    try:
        future.result()
    except BaseException:
        future.cancel()  # e.g. KeyboardInterrupt: stop copying (nothing is published)
        raise


__all__ = ["INLINE_CHUNK_LIMIT", "LoadSummary", "load_file"]
