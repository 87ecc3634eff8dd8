"""Datasets whose chunks live inside an HDF5 file: HSDS's linked layouts, read directly.

HSDS ("HDF5 as a single object", ``docs/design/single_object/SingleObject.md``) knows
three layouts that point into an HDF5 file in object storage instead of at chunk objects:

- ``H5D_CHUNKED_REF``: ``"chunks": {"i_j": [offset, size]}`` inline in the layout;
- ``H5D_CHUNKED_REF_INDIRECT``: ``"chunk_table": "d-..."``, an anonymous dataset with one
  element per chunk (a compound of ``offset`` int64 and ``size`` int32, and ``file_uri``
  when the layout has none), with the dataset's rank and shape ``ceil(shape / dims)``;
- ``H5D_CONTIGUOUS_REF``: ``"offset"`` and ``"size"`` of a contiguous dataset, read in
  virtual chunks (:func:`h5dask.format.metadata._contiguous_chunks`, as HSDS splits it).

``file_uri`` is ``s3://bucket/key`` (any bucket of the domain's S3 endpoint, with the
domain store's credentials), ``file:///abs/path``, or ``bucket/key`` relative to the
domain store's storage (HSDS's POSIX form). Each chunk is then one ranged GET.

>>> contiguous_ranges((10, 4), 2, (5, 4), offset=100, size=80)
[((0, 0), 100, 40), ((1, 0), 140, 40)]
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from ..chunkio import ArraySource, ChunkRef
from ..errors import MetadataError, UnsupportedTypeError
from ..format.chunks import ChunkGrid
from ..format.ids import chunk_name
from ..format.metadata import DatasetMeta
from ..storage.base import ObjectStore, RetryPolicy, cached_store
from ..storage.sync import sync

#: the element type of an H5D_CHUNKED_REF_INDIRECT chunk table (HSDS, hsload --link)
CHUNK_TABLE_DTYPE = np.dtype([("offset", "<i8"), ("size", "<i4")])

_CACHE_ATTR = "_h5dask_linked_refs"


# -- where a file_uri points -----------------------------------------------------------
def resolve_file_uri(uri: str, domain_store: ObjectStore) -> tuple[ObjectStore, str]:
    """The store and key of the HDF5 file a linked layout names, reached with the domain
    store's credentials and settings where they apply.

    >>> from h5dask.storage.local import LocalObjectStore
    >>> store, key = resolve_file_uri("file:///data/run/x.h5", LocalObjectStore("/tmp"))
    >>> (store.root_url, key)
    ('file:///data/run', 'x.h5')
    """
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("s3", "s3a"):
        bucket, key = parts.netloc, parts.path.lstrip("/")
        if not bucket or not key:
            raise ValueError(f"file_uri {uri!r} needs the form s3://bucket/key")
        return _s3_store(bucket, domain_store), key
    if scheme == "file" or (scheme == "" and uri.startswith("/")):
        path = unquote(parts.path) if scheme else uri
        return _local_store(os.path.dirname(path)), os.path.basename(path)
    if scheme == "":
        # HSDS's bucket-relative form "bucket/key", in the domain store's storage
        from ..storage.local import LocalObjectStore
        from ..storage.s3 import S3ObjectStore

        bucket, _, key = uri.partition("/")
        if not bucket or not key:
            raise ValueError(f"file_uri {uri!r} is neither a URL nor of the form bucket/key")
        if isinstance(domain_store, S3ObjectStore):
            return _s3_store(bucket, domain_store), key
        if isinstance(domain_store, LocalObjectStore):
            path = domain_store.root.parent / bucket / key
            return _local_store(str(path.parent)), path.name
        raise ValueError(f"cannot resolve the bucket-relative file_uri {uri!r} for "
                         f"{domain_store.root_url}")
    from ..storage.fsspec_store import FsspecObjectStore

    options: Any = ()
    if isinstance(domain_store, FsspecObjectStore) and domain_store.protocol == scheme:
        options = domain_store.options
    path = f"{parts.netloc}{unquote(parts.path)}"
    directory, key = os.path.dirname(path), os.path.basename(path)
    if scheme == "memory":
        directory = "/" + directory.lstrip("/")
    return cached_store(FsspecObjectStore, (scheme, directory, options, 32, RetryPolicy())), key


def open_source_store(uri: str, storage_options: Mapping[str, Any] | None = None
                      ) -> tuple[ObjectStore, str] | None:
    """A store and key for ranged reads of a source file (local path, file://, s3://);
    None for other protocols. ``storage_options`` are s3fs-style, as for domains."""
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("s3", "s3a"):
        from ..storage.s3 import S3ObjectStore
        from ..storage.s3_options import TUNING_OPTIONS, resolve_s3_settings

        options = {k: v for k, v in (storage_options or {}).items() if k not in TUNING_OPTIONS}
        settings = resolve_s3_settings(options)
        store = cached_store(S3ObjectStore, (parts.netloc, settings, 64, RetryPolicy(),
                                             32 * 2**20, 8 * 2**20, 60.0, 10.0))
        return store, parts.path.lstrip("/")
    if scheme in ("", "file"):
        path = os.path.abspath(unquote(parts.path) if scheme else uri)
        return _local_store(os.path.dirname(path)), os.path.basename(path)
    return None


def _s3_store(bucket: str, domain_store: ObjectStore) -> ObjectStore:
    from ..storage.s3 import S3ObjectStore
    from ..storage.s3_options import resolve_s3_settings

    if isinstance(domain_store, S3ObjectStore):
        args = domain_store._init_args()
        return cached_store(S3ObjectStore, (bucket, *args[1:]))
    settings = resolve_s3_settings({})
    return cached_store(S3ObjectStore, (bucket, settings, 64, RetryPolicy(), 32 * 2**20,
                                        8 * 2**20, 60.0, 10.0))


def _local_store(directory: str) -> ObjectStore:
    from ..storage.local import LocalObjectStore

    return cached_store(LocalObjectStore, (os.path.abspath(directory or "/"), 32,
                                           RetryPolicy(max_attempts=2)))


# -- chunk references -------------------------------------------------------------------
def contiguous_ranges(shape: tuple[int, ...], itemsize: int, chunks: tuple[int, ...],
                      offset: int, size: int) -> list[tuple[tuple[int, ...], int, int]]:
    """(chunk index, file offset, byte count) of each virtual chunk of a contiguous dataset
    stored at ``offset`` (``size`` bytes): HSDS's arithmetic for H5D_CONTIGUOUS_REF. The
    chunks must be contiguous byte ranges (1s, then one split dimension, then whole
    extents), as :func:`~h5dask.format.metadata._contiguous_chunks` makes them."""
    if size <= 0 or math.prod(shape) == 0:
        return []
    rank = len(shape)
    split = next((d for d in range(rank) if chunks[d] != 1), rank - 1)
    if any(chunks[d] != shape[d] for d in range(split + 1, rank)):
        raise MetadataError("layout", f"virtual chunks {chunks} of shape {shape} are not "
                                      "contiguous byte ranges")
    strides = [itemsize * math.prod(shape[d + 1:]) for d in range(rank)]
    grid = ChunkGrid(tuple(shape), tuple(chunks))
    end = offset + size
    out = []
    for index in grid.indices():
        start = offset + sum(i * c * s for i, c, s in zip(index, chunks, strides))
        # an edge chunk is read clipped (HSDS reads a whole chunk's worth of bytes there,
        # running into the next rows, and drops them; h5dask does not fetch them)
        nbytes = itemsize * math.prod(b.stop - b.start for b in grid.chunk_bounds(index))
        length = min(nbytes, end - start)
        if length > 0:
            out.append((index, start, length))
    return out


def linked_chunk_refs(session: Any, meta: DatasetMeta) -> tuple[tuple[str, ChunkRef], ...]:
    """Every stored chunk of a linked dataset as ``(chunk name, ChunkRef)``, sorted by name.

    Chunks with no entry (or size 0) are not stored: they read as the fill value. The
    result is cached on the session (linked datasets are read-only); an
    H5D_CHUNKED_REF_INDIRECT chunk table is read once."""
    cache = session.__dict__.setdefault(_CACHE_ATTR, {})
    cached = cache.get(meta.id)
    if cached is not None:
        return cached
    refs = _refs(session, meta)
    cache[meta.id] = refs
    return refs


def _refs(session: Any, meta: DatasetMeta) -> tuple[tuple[str, ChunkRef], ...]:
    layout = meta.layout
    store = session.store
    raw_layout = _raw_layout(meta)
    shape = meta.shape or ()
    if layout.cls == "H5D_CHUNKED_REF":
        assert layout.file_uri is not None
        fstore, key = resolve_file_uri(layout.file_uri, store)
        return tuple((name, ChunkRef(fstore, key, off, size))
                     for name, (off, size) in sorted(layout.chunk_table.items()) if size > 0)
    if layout.cls == "H5D_CONTIGUOUS_REF":
        assert layout.file_uri is not None
        fstore, key = resolve_file_uri(layout.file_uri, store)
        ranges = contiguous_ranges(shape, meta.dtype.itemsize, meta.chunk_shape,
                                   layout.offset, layout.size)
        return tuple(sorted((chunk_name(i), ChunkRef(fstore, key, start, n))
                            for i, start, n in ranges))
    if layout.cls != "H5D_CHUNKED_REF_INDIRECT":
        raise MetadataError(meta.key, f"layout {layout.cls} is not a linked layout")
    hyper = raw_layout.get("hyper_dims")
    if hyper is not None and list(hyper) != list(meta.chunk_shape):
        raise UnsupportedTypeError(
            f"dataset {meta.key!r}: H5D_CHUNKED_REF_INDIRECT with hyper_dims {hyper} (several "
            "HDF5 chunks per chunk) is not supported")
    table = _read_chunk_table(session, meta)
    grid = ChunkGrid(shape, meta.chunk_shape).grid_shape
    table = table[tuple(slice(0, g) for g in grid)]
    uri = layout.file_uri
    stores: dict[str, tuple[ObjectStore, str]] = {}
    out = []
    for index in zip(*np.nonzero(table["size"] > 0)):
        entry = table[index]
        file_uri = uri if uri else _text(entry["file_uri"])
        if file_uri not in stores:
            stores[file_uri] = resolve_file_uri(file_uri, store)
        fstore, key = stores[file_uri]
        out.append((chunk_name(tuple(int(i) for i in index)),
                    ChunkRef(fstore, key, int(entry["offset"]), int(entry["size"]))))
    return tuple(sorted(out))


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
    if meta.layout.file_uri is None and "file_uri" not in names:
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
    source = ArraySource(session.store, tmeta.id, tshape, tmeta.chunk_shape, tmeta.dtype,
                         tmeta.codec, tmeta.fill_value())
    return sync(source.read_async(()))


def _text(value: Any) -> str:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8")
    return str(value)


__all__ = ["CHUNK_TABLE_DTYPE", "contiguous_ranges", "linked_chunk_refs", "open_source_store",
           "resolve_file_uri"]
