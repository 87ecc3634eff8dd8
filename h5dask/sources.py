"""A dataset's chunk-level reader/writer (:class:`ArraySource`) built from its metadata.

:func:`array_source` is the one way the h5py-like API, the xarray backend and the loader
turn a :class:`~h5dask.format.metadata.DatasetMeta` into an :class:`ArraySource`. For
HSDS's linked layouts (chunks inside an HDF5 file, :mod:`h5dask.format.linked`) it also
resolves where each chunk lives: ``file_uri`` is ``s3://bucket/key`` (any bucket of the
domain's S3 endpoint, with the domain store's credentials), ``file:///abs/path`` inside a
``file://`` domain's bucket root, or HSDS's ``bucket/key``; anything else must be allowed
by the reader (:mod:`h5dask.storage.links`, checked before any I/O). Each linked chunk is
then one ranged GET.

>>> import h5dask
>>> with h5dask.File("memory://doc/home/sources.h5", "w") as f:
...     _ = f.create_dataset("x", data=[1, 2, 3], chunks=(2,))
>>> with h5dask.File("memory://doc/home/sources.h5") as f:
...     src = array_source(f._session, f["x"]._meta)
...     (src.shape, src.chunks, src.read(slice(None)).tolist())
((3,), (2,), [1, 2, 3])
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np

from .chunkio import MISSING_FILE, ArraySource, ChunkRef
from .errors import (
    LinkedFileChangedError,
    MetadataError,
    ObjectChangedError,
    UnsupportedTypeError,
    UnverifiedLinkWarning,
)
from .format.chunks import ChunkGrid
from .format.ids import chunk_name
from .format.linked import (
    LINKED_FILE_PATH_KEY,
    LINKED_FILE_SIZE_KEY,
    LINKED_FILE_VERSION_KEY,
    contiguous_ranges,
)
from .format.metadata import DatasetMeta
from .linked_files import changed_error, check_layout, domain_facts
from .storage.base import ObjectStore, ObjectVersion
from .storage.links import VERIFY_ENV_VAR
from .storage.sync import sync

_CACHE_ATTR = "_h5dask_linked_refs"
_VERSIONS_ATTR = "_h5dask_linked_file_versions"


def array_source(session: Any, meta: DatasetMeta, name: str | None = None,
                 store: ObjectStore | None = None, path: str | None = None) -> ArraySource:
    """The :class:`ArraySource` of the dataset ``meta`` of ``session`` (a
    :class:`~h5dask.domain.DomainSession`): a scalar is read as shape ``(1,)``; a linked
    dataset's chunk references are resolved through the session's link policy (refused
    ones raise LinkedReferenceRefused naming ``name``, else the object key). ``store``
    replaces the session's store for the chunk objects (e.g. a counting wrapper).
    ``path``: the dataset's path in the domain (default: ``name`` if it is one), where
    a linked layout that recorded none is looked for in its file.

    A null dataspace has no data: TypeError, as in h5py."""
    if meta.space.is_null:
        raise TypeError(f"dataset {name or meta.key!r} has a null dataspace and no data")
    shape = meta.shape if meta.shape != () else (1,)
    linked = linked_chunk_refs(session, meta, name, path) if meta.layout.is_linked else None
    return ArraySource(store if store is not None else session.store, meta.id, shape,
                       meta.chunk_shape, meta.dtype, meta.codec, meta.fill_value(), linked)


# -- chunk references -------------------------------------------------------------------
def linked_chunk_refs(session: Any, meta: DatasetMeta, name: str | None = None,
                      path: str | None = None) -> tuple[tuple[str, ChunkRef], ...]:
    """Every stored chunk of a linked dataset as ``(chunk name, ChunkRef)``, sorted by name.

    Chunks with no entry (or size 0) are not stored: they read as the fill value. The
    file each ``file_uri`` names must pass the session's ``link_policy`` (else
    LinkedReferenceRefused, naming the dataset: ``name``, or its object key). The
    result is cached on the session (linked datasets are read-only); an
    H5D_CHUNKED_REF_INDIRECT chunk table is read once.

    A layout ``h5dask load --link`` wrote recorded the file's size and version: one HEAD
    per file and session compares them with the file's now. The same: read. Another
    version (or size): the file was written since, and the layout is checked against the
    file's own metadata (:mod:`h5dask.linked_files`, once per file version and process):
    values edited in place are read as they are now, a layout that no longer holds raises
    LinkedFileChangedError. Each chunk is then read on condition of the version
    accepted here (:class:`~h5dask.chunkio.ChunkRef`): a file written after this open
    fails the read with LinkedFileChangedError instead of giving its new bytes.

    A layout with no recorded version (HSDS's hsload --link; earlier h5dask, which
    recorded the size only; a store that tells no version) cannot tell a rewrite of the
    same size: it is refused on another size only, and read unverified with a
    :class:`~h5dask.errors.UnverifiedLinkWarning` (once per domain and process), unless
    the session's policy has ``verify_unversioned`` (``verify_unversioned_links=True``
    or ``H5DASK_VERIFY_UNVERSIONED_LINKS=1``): then the layout is checked against the
    file's metadata as for a changed version (once per file version and process; the
    dataset is looked for at its recorded path, else at its path in the domain). A
    chunk table naming a file per chunk (HSDS): one HEAD per distinct file and session
    too, its reads conditional on the version seen; the layout is checked when all the
    chunks are in one file, and where no one file holds them all the warning says so."""
    cache = session.__dict__.setdefault(_CACHE_ATTR, {})
    cached = cache.get(meta.id)
    if cached is not None:
        return cached
    dataset = f"dataset {name or meta.key!r}"
    if path is None and name and name.startswith("/"):
        path = name
    files: list[tuple[ObjectStore, str, ObjectVersion, str]] = []
    refs = _refs(session, meta, dataset, files, path)
    _check_ranges(refs, meta, dataset)
    if files:
        in_files = {(ref.store.identity, ref.key) for _, ref in refs}
        if len(in_files) > 1:
            # a chunk table naming several files: each file holds some chunks only,
            # maybe under another path or at other positions; no one file's metadata
            # can confirm the layout
            _unverified(session, files[0][3], (
                f"{dataset} has its chunks in {len(in_files)} files (a chunk table "
                "naming a file per chunk), so verify_unversioned_links cannot check its "
                "layout against one file's metadata; each chunk is read on condition of "
                "its file's version when the domain was opened, but a file rewritten "
                "before that"), hint="link each file with h5dask (h5dask load --link), "
                "which records its version and checks it")
        else:
            _check_layout(meta, refs, dataset, *files[0], path=path)
    cache[meta.id] = refs
    return refs


def max_stored_chunk_bytes(meta: DatasetMeta) -> int | None:
    """The most bytes one stored chunk of ``meta`` can take in its file: the chunk's
    size, plus what any codec may add to incompressible data (zlib, LZ4, zstd, Blosc
    and bitshuffle add well under 1/8 and a few headers). None for variable-length
    types, whose stored size the chunk shape does not bound.

    >>> from h5dask.format.metadata import parse_dataset
    >>> max_stored_chunk_bytes(parse_dataset("db/k/d/x/.dataset.json", {
    ...     "id": "d-0123abcd-4567ef01-0000-000000-000000",
    ...     "type": {"class": "H5T_FLOAT", "base": "H5T_IEEE_F32LE"},
    ...     "shape": {"class": "H5S_SIMPLE", "dims": [100]},
    ...     "creationProperties": {"layout": {"class": "H5D_CHUNKED", "dims": [10]}}}))
    65581
    """
    if meta.dtype.hasobject:
        return None
    nbytes = meta.dtype.itemsize * math.prod(meta.chunk_shape)
    return nbytes + nbytes // 8 + 65536


def _check_ranges(refs: Iterable[tuple[str, ChunkRef]], meta: DatasetMeta,
                  dataset: str) -> None:
    """Refuse a chunk reference claiming more bytes than a chunk can take (the reader
    would fetch them all: a few bytes of layout naming a 50 GB object of the bucket)
    or a negative offset, before any of it is read."""
    bound = max_stored_chunk_bytes(meta)
    for name, ref in refs:
        if ref.offset < 0 or (bound is not None and ref.size > bound):
            raise MetadataError(
                meta.key, f"{dataset}: chunk {name} is said to be {ref.size} bytes at "
                f"offset {ref.offset} of {ref.key}, but a chunk of shape "
                f"{meta.chunk_shape} and type {meta.dtype} takes at most {bound} bytes "
                "stored; the layout is wrong (or hostile) and h5dask does not read it")


def _refs(session: Any, meta: DatasetMeta, dataset: str,
          changed: list[tuple[ObjectStore, str, ObjectVersion, str]], path: str | None
          ) -> tuple[tuple[str, ChunkRef], ...]:
    """The dataset's chunk references; ``changed`` receives the layout's file, if it was
    written since it was linked (or recorded no version, and the policy verifies those)
    and its layout is to be checked."""
    layout = meta.layout
    stores: dict[str, tuple[ObjectStore, str, ObjectVersion | None]] = {}
    raw_layout = _raw_layout(meta)
    linked_size = _linked_file_size(meta, raw_layout)
    linked_version = _linked_text(meta, raw_layout, LINKED_FILE_VERSION_KEY)
    verify = linked_version is None and session.link_policy.verify_unversioned
    # a read names the dataset by its path where known (xarray's name is the object key)
    origin = (f"dataset {path!r}" if path else dataset) + f" of the domain {session.location.url}"
    if linked_version is not None:
        _check_versioned(meta, dataset, session.location.url, linked_size)

    def resolve(uri: str) -> tuple[ObjectStore, str, ObjectVersion | None]:
        if uri not in stores:
            fstore, key = session.link_policy.resolve(uri, session.location.store, dataset)
            accepted = None
            if uri == layout.file_uri and (linked_size is not None or verify):
                accepted, check = _check_file(session, (fstore, key), uri, linked_size,
                                              linked_version, dataset, verify)
                if check:
                    changed.append((fstore, key, accepted, uri))
            elif verify:
                # a chunk table's own file_uri (HSDS): nothing recorded of its file, but
                # its version now makes the reads conditional, and the layout checkable
                accepted, check = _check_file(session, (fstore, key), uri, None, None,
                                              dataset, verify)
                if check:
                    changed.append((fstore, key, accepted, uri))
            elif linked_version is None:
                # nothing recorded to compare with, no check asked for: read as it is
                _unverified(session, uri)
            stores[uri] = (fstore, key, accepted)
        return stores[uri]

    def ref(target: tuple[ObjectStore, str, ObjectVersion | None], offset: int,
            size: int) -> ChunkRef:
        return ChunkRef(target[0], target[1], offset, size, target[2], origin)

    shape = meta.shape or ()
    if layout.cls == "H5D_CHUNKED_REF":
        assert layout.file_uri is not None
        target = resolve(layout.file_uri)
        return tuple((name, ref(target, off, size))
                     for name, (off, size) in sorted(layout.chunk_table.items()) if size > 0)
    if layout.cls == "H5D_CONTIGUOUS_REF":
        assert layout.file_uri is not None
        target = resolve(layout.file_uri)
        ranges = contiguous_ranges(shape, meta.dtype.itemsize, meta.chunk_shape,
                                   layout.offset, layout.size)
        return tuple(sorted((chunk_name(i), ref(target, start, n))
                            for i, start, n in ranges))
    if layout.cls != "H5D_CHUNKED_REF_INDIRECT":
        raise MetadataError(meta.key, f"layout {layout.cls} is not a linked layout")
    hyper = raw_layout.get("hyper_dims")
    if hyper is not None and list(hyper) != list(meta.chunk_shape):
        raise UnsupportedTypeError(
            f"dataset {meta.key!r}: H5D_CHUNKED_REF_INDIRECT with hyper_dims {hyper} (several "
            "HDF5 chunks per chunk) is not supported")
    uri = layout.file_uri
    if uri:
        resolve(uri)  # refused before the chunk table is read
    table = _read_chunk_table(session, meta)
    grid = ChunkGrid(shape, meta.chunk_shape).grid_shape
    table = table[tuple(slice(0, g) for g in grid)]
    out = []
    for index in zip(*np.nonzero(table["size"] > 0)):
        entry = table[index]
        target = resolve(uri if uri else _text(entry["file_uri"], meta.key))
        out.append((chunk_name(tuple(int(i) for i in index)),
                    ref(target, int(entry["offset"]), int(entry["size"]))))
    return tuple(sorted(out))


def _check_versioned(meta: DatasetMeta, dataset: str, domain: str,
                     linked_size: int | None) -> None:
    """Refuse a layout recording its file's version without the file it is of (a
    layout-level ``file_uri``) or without its size. ``h5dask load --link`` records all
    three together, so only edited (or hostile) metadata lacks one; read, such a layout
    would match no branch of the version checks and its chunks be read unconditionally,
    with no warning. Refused rather than read as an unversioned layout: that reads
    unverified by default (a warning, then maybe another file's bytes), a refusal never
    gives wrong data."""
    missing = ("file_uri" if not meta.layout.file_uri
               else LINKED_FILE_SIZE_KEY if linked_size is None else None)
    if missing is None:
        return
    raise MetadataError(
        meta.key, f"{dataset} of the domain {domain}: its {meta.layout.cls} layout records "
        f"{LINKED_FILE_VERSION_KEY} but no {missing}; h5dask load --link records "
        f"{LINKED_FILE_VERSION_KEY}, {LINKED_FILE_SIZE_KEY} and file_uri together, so the "
        "layout was edited (or is hostile) and h5dask does not read it. Link the file "
        "again (h5dask load --link --overwrite)")


def _linked_file_size(meta: DatasetMeta, raw_layout: dict) -> int | None:
    """The size the layout recorded of its file when it was linked (None: not recorded,
    as in domains HSDS or older h5dask versions linked)."""
    size = raw_layout.get(LINKED_FILE_SIZE_KEY)
    if size is None:
        return None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise MetadataError(meta.key, f"layout {LINKED_FILE_SIZE_KEY} must be a byte count, "
                                      f"not {size!r}")
    return size


def _linked_text(meta: DatasetMeta, raw_layout: dict, name: str) -> str | None:
    """A text the layout recorded of its file when it was linked (None: not recorded)."""
    value = raw_layout.get(name)
    if value is not None and not isinstance(value, str):
        raise MetadataError(meta.key, f"layout {name} must be a string, not {value!r}")
    return value


def _check_file(session: Any, target: tuple[ObjectStore, str], uri: str,
                linked_size: int | None, linked_version: str | None, dataset: str,
                verify: bool) -> tuple[ObjectVersion | None, bool]:
    """The linked file's version now (:data:`~h5dask.chunkio.MISSING_FILE`: the file is
    missing, and its chunks are never read: a file written there later is not the one
    linked, nor checked), the one its chunks are read on condition of; and whether the
    layout is to be checked against the file: its version is not the one linked, or none
    was recorded and ``verify``. A file of another size than linked is refused."""
    fstore, key = target
    versions = session.__dict__.setdefault(_VERSIONS_ATTR, {})
    if (fstore, key) not in versions:  # one HEAD per file and session
        versions[fstore, key] = sync(fstore.stat(key))
    now: ObjectVersion | None = versions[fstore, key]
    if now is None:
        return MISSING_FILE, False
    if linked_version is not None:
        return now, not (now.tag == linked_version and now.size == linked_size)
    size = now.size
    if linked_size is not None and size != linked_size:
        raise LinkedFileChangedError(
            f"{dataset} reads its chunks from {uri}, which is {size} bytes now but was "
            f"{linked_size} bytes when it was linked: the file was rewritten since, and "
            "the byte offsets the domain holds may point at other data. Link the file "
            "again (h5dask load --link) or restore the file that was linked",
            dataset=dataset, uri=uri)
    if not verify:
        _unverified(session, uri)
        return now, False
    if now.tag is None:  # nothing tells a rewrite: a check could not be remembered
        _unverified(session, uri, f"its store tells no version of {uri}")
        return now, False
    return now, True


#: domains warned about (UnverifiedLinkWarning), once per process each
_warned: set[str] = set()
_warned_lock = threading.Lock()


def _unverified(session: Any, uri: str, why: str | None = None,
                hint: str | None = None) -> None:
    """Warn, once per domain and process, that a linked layout of it is read without
    knowing whether its file was rewritten since it was linked (``why``: what stopped
    a check asked for; ``hint``: what to do about it)."""
    domain = session.location.url
    with _warned_lock:
        if domain in _warned:
            return
        _warned.add(domain)
    if why is None:
        why = (f"its linked layouts recorded no version of the files they read (e.g. "
               f"{uri}): written by HSDS's hsload --link or an earlier h5dask")
        hint = ("pass verify_unversioned_links=True (h5dask.File, xr.open_dataset) or set "
                f"{VERIFY_ENV_VAR}=1 to check each layout against its file's metadata "
                "(once per file version), or link the files again with this h5dask "
                "(h5dask load --link --overwrite)")
    elif hint is None:
        hint = "link the files again from a store that tells versions (ETags, file times)"
    warnings.warn(
        f"domain {domain}: {why}, so a file rewritten since it was linked (at the same "
        f"size) would be read as it is now, its bytes taken for the domain's chunks; {hint}",
        UnverifiedLinkWarning, stacklevel=4)


def _check_layout(meta: DatasetMeta, refs: tuple[tuple[str, ChunkRef], ...], dataset: str,
                  fstore: ObjectStore, key: str, now: ObjectVersion, uri: str, *,
                  path: str | None = None) -> None:
    """Refuse a dataset whose file was written since it was linked (or that recorded
    no version of it), unless its layout holds there
    (:func:`h5dask.linked_files.check_layout`); ``path``: the dataset's path in the
    domain, where it is looked for in the file if the layout recorded none."""
    raw_layout = _raw_layout(meta)
    recorded = _linked_text(meta, raw_layout, LINKED_FILE_PATH_KEY)
    linked = raw_layout.get(LINKED_FILE_VERSION_KEY)
    if recorded is None and linked is not None:
        raise MetadataError(meta.key, f"the layout records {LINKED_FILE_VERSION_KEY} "
                                      f"without {LINKED_FILE_PATH_KEY}")
    path = recorded or path
    if path is None:  # (an unversioned layout opened without its path in the domain)
        raise LinkedFileChangedError(
            f"{dataset} reads its chunks from {uri}, whose layout is to be verified "
            "(verify_unversioned_links), but the dataset's path in that file is unknown "
            "here: open it by its path (h5dask.File(...)['/path']), or link the file again "
            "(h5dask load --link --overwrite)", dataset=dataset, uri=uri)
    if meta.layout.cls == "H5D_CONTIGUOUS_REF":
        size = meta.layout.size or 0
        stored = (("contiguous", int(meta.layout.offset or 0), size),) if size else ()
        chunks = None
    else:
        stored = tuple((name, ref.offset, ref.size) for name, ref in refs)
        chunks = meta.chunk_shape if meta.shape else None  # a scalar: contiguous in the file
        if chunks is None:
            stored = tuple(("contiguous", ref.offset, ref.size) for _, ref in refs)
    claimed = domain_facts(meta.shape or (), meta.dtype, chunks, list(meta.filters),
                           meta.fill_value(), stored)
    try:
        why = check_layout(fstore, key, now, path, claimed)
    except ObjectChangedError as exc:
        raise LinkedFileChangedError(
            f"{dataset} reads its chunks from {uri}, which was written while its layout "
            f"was being checked ({exc}): open the domain again once the file is written",
            dataset=dataset, uri=uri) from exc
    if why is not None:
        raise changed_error(dataset, uri, path, str(linked or "not recorded"), now, why)


def _raw_layout(meta: DatasetMeta) -> dict:
    cp = meta.raw.get("creationProperties") or {}
    layout = cp.get("layout") if isinstance(cp, dict) else None
    return layout if isinstance(layout, dict) else (meta.raw.get("layout") or {})


def _read_chunk_table(session: Any, meta: DatasetMeta) -> np.ndarray:
    table_id = meta.layout.chunk_table_id
    assert table_id is not None
    tmeta = session.load(table_id)
    where = f"chunk table {table_id} of {meta.key!r}"
    if not isinstance(tmeta, DatasetMeta):
        raise MetadataError(meta.key, f"{where} is not a dataset")
    names = tmeta.dtype.names or ()
    if "offset" not in names or "size" not in names:
        raise MetadataError(meta.key, f"{where} has type {tmeta.dtype}, not a compound of "
                                      "offset and size")
    if not meta.layout.file_uri and "file_uri" not in names:
        raise MetadataError(meta.key, "H5D_CHUNKED_REF_INDIRECT without file_uri, and its "
                                      f"{where} has no file_uri field")
    tshape = tmeta.shape or ()
    grid = ChunkGrid(meta.shape or (), meta.chunk_shape).grid_shape
    if len(tshape) != len(grid) or any(t < g for t, g in zip(tshape, grid)):
        raise MetadataError(meta.key, f"{where} has shape {tshape}; the chunk grid is {grid}")
    if math.prod(tshape) == 0:
        return np.zeros(grid, dtype=tmeta.dtype)
    if tmeta.layout.is_linked:
        raise MetadataError(meta.key, f"{where} is itself linked")
    # the table's own shape (a scalar dataset's table is 0-d), not array_source's (1,)
    source = ArraySource(session.store, tmeta.id, tshape, tmeta.chunk_shape, tmeta.dtype,
                         tmeta.codec, tmeta.fill_value())
    return sync(source.read_async(()))


def _text(value: Any, key: str) -> str:
    if isinstance(value, bytes | np.bytes_):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MetadataError(key, f"a file_uri in its chunk table is not UTF-8: {exc}"
                                ) from exc
    return str(value)


__all__ = ["array_source", "linked_chunk_refs", "max_stored_chunk_bytes"]
