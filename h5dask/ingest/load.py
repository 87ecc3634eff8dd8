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

Resuming: the ids of a new domain's objects are derived from the domain's URL, the
source file (URL, size, modification time) and the options, so the same load run again
after an interruption (a killed process, or a store that kept failing: then its objects
are left for it) writes to the same keys. It then keeps every chunk object already
stored whose bytes are the ones it would write (their MD5 as listed, else the bytes),
writes the others, and deletes chunk objects of its datasets that it did not write,
before it publishes the domain. A load over an existing domain (``overwrite``) starts
afresh every time. Each run holds a lease (:mod:`.lease`) on the new root's prefix
while it writes: a second run of the same load refuses (LoadInProgressError naming the
first) instead of writing, removing or publishing the same keys, and ``h5dask gc``
leaves the prefix alone.

The phases: each dataset is described (:mod:`.describe`, through h5py) and planned
(:mod:`.plan`, pure: copy, link or metadata only, its layout and filters); this module
writes the metadata objects, then :mod:`.copy` copies the planned chunks.

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
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..chunkio import ArraySource
from ..domain import DomainSession
from ..errors import (
    CorruptChunkError,
    DomainExistsError,
    HSDSUnreadableWarning,
    LoadInProgressError,
    LoadOptionError,
    LocalLinkWarning,
    StorageError,
    UnsupportedFilterError,
    UnsupportedTypeError,
)
from ..format import ids
from ..format.filters import warn_if_hsds_cannot_serve_type
from ..format.metadata import DatasetMeta, Link, attribute_json, datatype_json, group_json
from ..format.types import dtype_from_json
from ..sources import array_source
from ..storage import open_location
from ..storage.base import ObjectStore
from ..storage.sync import io_loop
from .copy import ChunkCopier, DatasetCopy, TableWrite
from .describe import describe_dataset
from .hdf5 import (
    H5Types,
    H5Values,
    SourceObject,
    filter_label,
    has_refs,
    missing_filters,
    missing_plugin_advice,
    walk,
)
from .lease import LoadLease
from .plan import (
    INLINE_CHUNK_LIMIT,
    ChunkSpec,
    Compression,
    DatasetPlan,
    PlanOptions,
    SourceDataset,
    plan_dataset,
)
from .source import Source, check_linkable, open_source


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
    chunks_kept: int = 0  # already stored, as they would be written, by an interrupted run
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
        if self.chunks_kept:
            lines.append(f"  resumed: {self.chunks_kept} chunks stored by an interrupted "
                         "run of this load were kept")
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
class _WriteCounter:
    """The domain's store, counting the objects and bytes this load writes, by kind.

    Why a wrapper and not :func:`h5dask.stats`: those counters are per process, and a
    :class:`LoadSummary` must count this load's writes only, while other loads, reads or
    dask tasks may write in the same process at the same time. Everything but ``put``
    goes to the store as it is.
    """

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.written: Counter[str] = Counter()  # kind -> bytes
        self.objects: Counter[str] = Counter()  # kind -> objects

    async def put(self, key: str, data: bytes | memoryview, *, kind: str = "chunk") -> None:
        await self.inner.put(key, data, kind=kind)
        self.written[kind] += len(data)
        self.objects[kind] += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def __reduce__(self) -> tuple:
        return self.inner.__reduce__()


# -- the loader -------------------------------------------------------------------------
@dataclass(frozen=True)
class _Planned:
    """A dataset written to the domain: its source object, plan and chunk-table id."""

    obj: SourceObject
    plan: DatasetPlan
    table_id: str | None = None


class _Loader:
    """One load: the metadata phase (:meth:`build`, in the h5py thread: every dataset
    described, planned and created, with links and attributes), the offset check, then
    the chunk copies (a :class:`~.copy.ChunkCopier`, on the I/O loop), then the
    session's flush."""

    def __init__(self, source: Source, session: DomainSession, store: _WriteCounter,
                 summary: LoadSummary, options: PlanOptions, workers: int,
                 progress: bool, resumable: bool = False) -> None:
        #: the session's ids derive from the load (see the module doc): a run again resumes
        self.resumable = resumable
        self.src = source
        self.session = session
        self.store = store
        self.summary = summary
        self.options = options
        self.workers = workers
        self.progress = progress
        self.planned: list[_Planned] = []
        self.refs: dict[int, str] = {}  # source object address -> new id
        # every h5py call runs in this one thread (h5py serialises them anyway, and the
        # file object under it is not safe for concurrent seek/read)
        self.h5py_thread = ThreadPoolExecutor(1, thread_name_prefix="h5dask-load-h5py")
        self.copier: ChunkCopier | None = None

    def object_id(self, kind: str, name: str) -> str | None:
        """The id of the object ``name`` (a source path) of a resumable load, else None
        (a fresh one)."""
        if not self.resumable:
            return None
        return ids.new_object_id(kind, self.session.root_id, name)

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
                obj.new_id = session.new_object("t", datatype_json(tjson),
                                                self.object_id("t", obj.path))
                committed[obj.addr] = obj.new_id
                summary.datatypes += 1
        refs = self.refs
        refs.update({o.addr: o.new_id for o in objects if o.new_id})
        values = H5Values(f, refs)
        described = self._describe_datasets(objects, types, values)
        used_chunk_keys: set[str] = set()
        for obj in objects:
            if obj.kind == "d":
                if obj.addr not in described:
                    continue
                try:
                    planned = self._create_dataset(obj, described[obj.addr])
                except (UnsupportedTypeError, UnsupportedFilterError) as exc:
                    summary.skipped.append(f"{obj.path}: dataset ({exc})")
                    continue
                if planned.plan.chunks_key is not None:
                    used_chunk_keys.add(planned.plan.chunks_key)
                summary.datasets += 1
            elif obj.kind == "g":
                if obj is not root:
                    obj.new_id = session.new_object("g", group_json(),
                                                    self.object_id("g", obj.path))
                summary.groups += 1
            if obj.new_id:
                refs[obj.addr] = obj.new_id
        unused = self.options.chunks.unused(used_chunk_keys)
        if unused:
            raise LoadOptionError(
                f"chunks= names datasets that are not in {self.src.url}: {unused}; give "
                "dataset paths (/group/name) or names that `h5dask info` lists for it")
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
        for planned in self.planned:
            meta = self._meta(planned.obj.new_id)
            summary.layouts[meta.layout.cls] = summary.layouts.get(meta.layout.cls, 0) + 1

    def _describe_datasets(self, objects: list[SourceObject], types: H5Types,
                           values: H5Values) -> dict[int, SourceDataset]:
        """The datasets that can be loaded, by address; the others are listed as skipped:
        types HSDS cannot hold, and references to objects not loaded (checked before any
        object is created, so that no dataset holds null references in their place)."""
        described: dict[int, SourceDataset] = {}
        for obj in objects:
            if obj.kind == "d":
                try:
                    described[obj.addr] = describe_dataset(obj, types, values)
                except UnsupportedTypeError as exc:
                    self.summary.skipped.append(f"{obj.path}: dataset ({exc})")
        with_refs = [o for o in objects if o.addr in described
                     and has_refs(described[o.addr].dtype) and not described[o.addr].empty]
        dropped = True
        while dropped:  # until no skip leaves another reference dangling
            dropped = False
            loaded = {o.addr for o in objects
                      if o.kind == "g" or o.new_id or o.addr in described}
            # every object to be loaded stands for its id: references to others raise
            check = H5Values(values.f, dict.fromkeys(loaded, "-"))
            for obj in [o for o in with_refs if o.addr in described]:
                try:
                    check.array(obj.h5[()], described[obj.addr].dtype)
                except UnsupportedTypeError as exc:
                    self.summary.skipped.append(f"{obj.path}: dataset ({exc})")
                    del described[obj.addr]
                    dropped = True
        return described

    def _create_dataset(self, obj: SourceObject, src: SourceDataset) -> _Planned:
        """Plan and create one dataset (and its INDIRECT chunk table)."""
        plan = plan_dataset(src, self.options)
        self._check_decodable(plan)
        table_id = None
        if plan.chunk_table is not None:
            table_id = self.session.new_object("d", plan.chunk_table_json(),
                                               self.object_id("d", f"{obj.path}\nchunk table"))
        obj.new_id = self.session.new_object("d", plan.dataset_json(table_id),
                                             self.object_id("d", obj.path))
        planned = _Planned(obj, plan, table_id)
        self.planned.append(planned)
        if plan.copied_instead:
            self.summary.copied.append(plan.path)
        self._warn_filters(plan)
        # as File.create_dataset warns: h5dask reads such types, HSDS answers 500
        warn_if_hsds_cannot_serve_type(plan.source.dtype, plan.path)
        for note in plan.notes:
            warnings.warn(f"{plan.path}: {note}", stacklevel=2)
        self.summary.chunks_linked += plan.linked_chunks
        self.summary.logical_bytes += plan.linked_bytes
        return planned

    def _check_decodable(self, plan: DatasetPlan) -> None:
        """UnsupportedFilterError (the dataset is then skipped) for a copy that h5py must
        decode while HDF5 has no plugin for a filter one of its stored chunks went
        through: its chunks would fail to read half-way through the load."""
        src = plan.source
        if plan.mode != "copy" or not src.filters:
            return
        codes = [code for code, _ in src.filters]
        missing = [i for i, code in enumerate(codes) if missing_filters([code])]
        # a chunk whose filter_mask has a filter's bit skipped it; a direct copy decodes
        # the others itself (and h5py reads only the chunks that skipped a filter)
        needed = [i for i in missing
                  if any(not info.filter_mask >> i & 1 and (info.filter_mask or not plan.direct)
                         for info in src.stored)]
        if not needed:
            return
        names = ", ".join(filter_label(codes[i]) for i in needed)
        raise UnsupportedFilterError(
            f"{self.src.url}: HDF5 has no plugin here for its filter {names}, so h5py "
            f"cannot decode its chunks: {missing_plugin_advice()}; then load the file again")

    def _warn_filters(self, plan: DatasetPlan) -> None:
        """Say which linked datasets only h5dask reads, and which filter made a dataset
        a copy instead of a link."""
        src = plan.source
        if plan.mode == "link" and src.hsds_unreadable_filters:
            warnings.warn(f"{self.src.url}: {plan.path}: linked with the "
                          f"{', '.join(src.hsds_unreadable_filters)} filter as HDF5 wrote it, "
                          "which an HSDS server cannot decode (h5dask can); load without "
                          "--link for a copy HSDS can serve", HSDSUnreadableWarning,
                          stacklevel=3)
        if plan.copied_instead and src.layout == "chunked" and src.undecodable_filters:
            names = ", ".join(filter_label(code) for code in src.undecodable_filters)
            warnings.warn(f"{self.src.url}: {plan.path}: copied, not linked: h5dask cannot "
                          f"decode filter {names} as HDF5 wrote it (the copy holds the "
                          "values h5py reads)", stacklevel=3)

    def _meta(self, obj_id: str) -> DatasetMeta:
        meta = self.session.load(obj_id)
        assert isinstance(meta, DatasetMeta)
        return meta

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

    # -- checks ---------------------------------------------------------------------
    def check_offsets(self) -> None:
        """Read one chunk by its reported offset and compare with h5py's read of it: if
        they differ, the offsets cannot be used (ranged reads then go through h5py, and
        linking is refused)."""
        from ..storage.sync import sync

        if self.src.store is None:
            return
        planned = self.planned
        candidates = [(info.size, n, info) for n, p in enumerate(planned)
                      if p.plan.direct or p.plan.mode == "link"
                      for info in p.plan.source.stored[:16]]
        if candidates:
            _size, n, info = min(candidates, key=lambda c: c[:2])  # the cheapest to check
            offset = info.byte_offset
            want = bytes(planned[n].obj.h5.id.read_direct_chunk(info.offset)[1])
        else:  # a linked contiguous dataset: its first elements
            first = next((p for p in planned if p.plan.mode == "link"
                          and p.plan.source.chunks is None and p.plan.source.allocated), None)
            if first is None:
                return
            src, dset = first.plan.source, first.obj.h5
            offset = src.data_offset
            if src.scalar:
                head = np.asarray(dset[()])
            else:
                assert src.shape is not None
                count = max(1, min(src.shape[-1], 4096 // max(1, src.dtype.itemsize)))
                head = dset[(0,) * (len(src.shape) - 1) + (slice(0, count),)]
            want = np.ascontiguousarray(head, dtype=src.dtype).tobytes()
        got = sync(self.src.store.get(self.src.key, kind="chunk",
                                      byte_range=(offset, offset + len(want))))
        self.src.range_bytes += len(got or b"")
        if got == want:
            return
        if any(p.plan.mode == "link" for p in planned):
            raise CorruptChunkError(f"{self.src.url}[{offset}]", (
                "the data offsets HDF5 reports do not address the data's bytes in the file, "
                "so it cannot be linked"))
        self.src.ranges_ok = False

    # -- chunks ---------------------------------------------------------------------
    def make_copier(self) -> ChunkCopier:
        """The copier of every copied dataset's chunks and every INDIRECT chunk table."""
        copies, tables = [], []
        for planned in self.planned:
            plan = planned.plan
            if planned.table_id is not None:
                assert plan.chunk_table is not None
                tables.append(TableWrite(self._target(planned.table_id), plan.chunk_table))
            if plan.mode == "copy":
                copies.append(DatasetCopy.of(plan, planned.obj.h5,
                                             self._target(planned.obj.new_id)))
        return ChunkCopier(self.src, copies, tables, self.refs, self.h5py_thread, self.workers)

    async def find_stored(self) -> None:
        """A resumable load: tell the copier which chunk objects are stored already under
        the domain's root, with their MD5s where listings show them (one listing);
        nothing to find for a fresh root."""
        assert self.copier is not None
        if not self.resumable:
            return
        store = self.store.inner
        prefix = ids.object_prefix(self.session.root_id) + "/"
        listed = await store.list_with_md5(prefix, kind="other")
        stored = {k: md5 for k, md5 in listed.items() if not k.endswith(".json")}
        if not stored:
            return
        self.copier.store = self.store
        self.copier.stored = stored
        # chunk objects of this load's datasets that it does not write: deleted before
        # the domain is published, as they would be read as the dataset's values
        self.copier.prefixes = {ids.object_prefix(p.obj.new_id) for p in self.planned
                                if p.plan.mode != "link"}

    async def check_kept(self) -> None:
        """A resumed load, just before it publishes: the chunk objects it kept are still
        stored. ``h5dask gc --delete`` judges a prefix by its newest object's age, and kept
        chunks may be older than its min_age while this run has written nothing new yet:
        a domain published without them would read fill values there."""
        assert self.copier is not None
        if not self.copier.kept:
            return
        present = set(await self.store.inner.list(ids.object_prefix(self.session.root_id)
                                                  + "/"))
        gone = sorted(self.copier.kept - present)
        if gone:
            raise StorageError(
                f"{len(gone)} chunk objects this load kept from an interrupted run were "
                f"deleted while it ran (the first: {gone[0]}), for example by `h5dask gc "
                "--delete`; nothing was published")

    def _target(self, obj_id: str) -> ArraySource:
        # the chunks are written through the counting wrapper
        return array_source(self.session, self._meta(obj_id), store=self.store)

    def open_bar(self, total_bytes: int) -> None:
        if not self.progress:
            return
        assert self.copier is not None
        link = self.options.link
        self.copier.open_bar(total_bytes, "link" if link else "load",
                             self.summary.logical_bytes if link else 0,
                             self.summary.chunks_linked if link else 0)


def domain_name_for(src: str) -> str:
    """The name ``h5dask load`` gives the domain of ``src`` in a folder: its stem + .h5.

    >>> domain_name_for("runs/tas_1850.nc"), domain_name_for("s3://b/x/run1.h5")
    ('tas_1850.h5', 'run1.h5')
    """
    text = os.fspath(src)
    path = urlsplit(text).path if "://" in text else text  # a path may hold '#' or '?'
    return (PurePosixPath(path).stem or "data") + ".h5"


def load_file(src: Any, url: str, *, chunks: Any = None, compression: Any = None,
              compression_opts: int | None = None, storage_options: Mapping | None = None,
              src_storage_options: Mapping | None = None, progress: bool = True,
              max_workers: int | None = None, link: bool = False, overwrite: bool = False,
              inline_chunk_limit: int = INLINE_CHUNK_LIMIT,
              allowed_link_prefixes: Iterable[str] | None = None) -> LoadSummary:
    """Import the HDF5/netCDF-4 file ``src`` (a local path or an fsspec URL) as the domain
    at ``url`` (see the module doc) and return a :class:`LoadSummary`. A ``url`` ending
    in "/" names a folder: the domain is then FOLDER/NAME.h5 (:func:`domain_name_for`).

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
        raise LoadOptionError("link=True references the file's chunks as they are; chunks= "
                              "and compression= cannot be combined with it: drop them, or "
                              "load without link=True (--link) to rechunk or recompress")
    if link and src_scheme not in ("", "file", "s3", "s3a"):
        raise LoadOptionError(f"link=True needs the file on a file system or in S3 (a path, "
                              f"file:// or s3:// URL), not {src_text!r}: copy it there "
                              "first, or load it without link=True (--link)")
    if link and src_scheme in ("", "file"):
        warnings.warn(
            f"linking the local file {src_text!r}: the domain's chunks stay in that file, so "
            "the domain is readable only where that path exists (this machine or a shared "
            "file system); copy the file to object storage first to share it",
            LocalLinkWarning, stacklevel=2)
    if max_workers is not None and max_workers < 1:
        raise LoadOptionError(f"max_workers must be >= 1 (chunks in flight), not {max_workers}")
    if inline_chunk_limit < 0:
        raise LoadOptionError(f"inline_chunk_limit must be >= 0, not {inline_chunk_limit}")
    chunk_spec = ChunkSpec.parse(chunks)
    compression_req = Compression.parse(compression, compression_opts)
    if src_storage_options is None and src_scheme in ("s3", "s3a") and \
            urlsplit(str(url)).scheme in ("s3", "s3a"):
        src_storage_options = storage_options
    if str(url).endswith("/"):  # a folder, as for cp: the domain is FOLDER/NAME.h5
        url = str(url) + domain_name_for(src_text)
    location = open_location(str(url), storage_options)
    source = open_source(src_text, src_storage_options)
    try:
        if link and source.file_uri is not None:
            check_linkable(source.file_uri, location, allowed_link_prefixes)
        root_id = None if overwrite else ids.new_root_id(_load_seed(
            location.store.identity, location.domain, source, link, chunks, compression,
            compression_opts, inline_chunk_limit))
        try:
            session = DomainSession(location, "w" if overwrite else "w-", new_root_id=root_id)
        except FileExistsError as exc:
            raise DomainExistsError(
                f"domain {location.url!r} already exists: pass overwrite=True (h5dask load "
                "--overwrite) to replace it, or remove it first with h5dask rm") from exc
        store = _WriteCounter(session.store)
        session.store = store  # type: ignore[assignment]  # (metadata writes count too)
        summary = LoadSummary(source=source.url, url=location.url, linked=link)
        workers = max_workers or min(8, store.inner.max_concurrency)
        options = PlanOptions(link, source.file_uri, chunk_spec, compression_req,
                              inline_chunk_limit, source.file_size, source.file_version)
        loader = _Loader(source, session, store, summary, options, workers, progress,
                         resumable=root_id is not None)
        try:
            _run(_load(loader))
        except BaseException:
            session.discard()
            raise
        finally:
            loader.h5py_thread.shutdown(wait=True)
            if loader.copier is not None:
                loader.copier.close_bar()
        summary.bytes_read = source.bytes_read
        summary.chunks_written = store.objects["chunk"]
        summary.chunks_kept = loader.copier.chunks_kept if loader.copier is not None else 0
        summary.chunk_bytes_written = store.written["chunk"]
        summary.metadata_bytes_written = store.written["metadata"]
        summary.bytes_written = sum(store.written.values())
        summary.seconds = time.perf_counter() - started
        return summary
    finally:
        source.close()


async def _load(loader: _Loader) -> None:
    """The lease (:mod:`.lease`), then metadata (in the h5py thread), chunks, the
    metadata objects and, last, the domain; on any failure, nothing is published and
    what was written is removed, unless another run of the same load holds the lease
    (it writes the same keys) or the store failed (kept, for the next run to resume)."""
    loop = asyncio.get_running_loop()
    lease = LoadLease(loader.store.inner, loader.session.root_id, loader.summary.url)
    await lease.acquire()  # refused: nothing of this run written, nothing to remove
    try:
        await _refuse_published(loader)
        total_bytes = await loop.run_in_executor(loader.h5py_thread, _prepare, loader)
        loader.open_bar(total_bytes)
        assert loader.copier is not None
        await loader.find_stored()
        await loader.copier.run()
        await loader.copier.delete_unwritten()
        await loader.check_kept()
        loader.summary.logical_bytes += loader.copier.logical_bytes
        await lease.check_held()
        await loader.session.flush_async()
    except BaseException as exc:
        loader.session.discard()
        if loader.resumable and isinstance(exc, StorageError):
            exc.add_note("The chunks written so far are kept, unpublished: run the same "
                         "load again to resume it, or remove them with `h5dask gc`.")
            raise
        if loader.resumable and (isinstance(exc, LoadInProgressError | DomainExistsError)
                                 or await lease.others_live()):
            raise  # the keys are another run's too (or a published domain's)
        await _remove_new_objects(loader)
        raise
    finally:
        await lease.release()


async def _refuse_published(loader: _Loader) -> None:
    """DomainExistsError if another run of this load published the domain between this
    run's open (which found none) and its lease: this run would write its keys again."""
    location = loader.session.location
    if loader.resumable and await location.store.get(location.domain_key,
                                                     kind="metadata") is not None:
        raise DomainExistsError(
            f"domain {location.url!r} was published while this load started (by another "
            "run of it, or another writer): pass overwrite=True (h5dask load --overwrite) "
            "to replace it")


def _load_seed(store: str, domain: str, source: Source, *options: Any) -> str:
    """What a load's ids derive from: where the domain goes, the source file as it is now
    (its URL, size and, for a local file, modification time) and the options that shape
    what is written. Any change gives other ids: a load of a changed file never meets
    the objects of an earlier one (and chunks kept are checked byte for byte anyway)."""
    parts = [store, domain, source.url, str(source.file_size), str(source.modified_ns),
             *(repr(o) for o in options)]
    return "h5dask load\n" + "\n".join(parts)


def _prepare(loader: _Loader) -> int:
    """The metadata phase and the checks; returns the bytes of values to copy."""
    loader.build()
    loader.check_offsets()
    loader.copier = loader.make_copier()
    return loader.copier.count()


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
