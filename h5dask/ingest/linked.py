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
domain store's credentials), ``file:///abs/path`` inside a ``file://`` domain's bucket
root, or HSDS's ``bucket/key``; anything else must be allowed by the reader
(:mod:`h5dask.storage.links`, checked before any I/O). Each chunk is then one ranged GET.

>>> contiguous_ranges((10, 4), 2, (5, 4), offset=100, size=80)
[((0, 0), 100, 40), ((1, 0), 140, 40)]
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from ..chunkio import ArraySource, ChunkRef
from ..errors import LinkedReferenceRefused, MetadataError, UnsupportedTypeError
from ..format.chunks import ChunkGrid
from ..format.ids import chunk_name
from ..format.metadata import DatasetMeta
from ..storage import Location, open_object
from ..storage.base import ObjectStore
from ..storage.links import ENV_VAR, LinkPolicy
from ..storage.s3_options import TUNING_OPTIONS
from ..storage.sync import sync

#: the element type of an H5D_CHUNKED_REF_INDIRECT chunk table (HSDS, hsload --link)
CHUNK_TABLE_DTYPE = np.dtype([("offset", "<i8"), ("size", "<i4")])

_CACHE_ATTR = "_h5dask_linked_refs"


# -- where a file_uri points -----------------------------------------------------------
def open_source_store(uri: str, storage_options: Mapping[str, Any] | None = None
                      ) -> tuple[ObjectStore, str] | None:
    """A store and key for ranged reads of a source file (local path, file://, s3://);
    None for other protocols. ``storage_options`` are s3fs-style, as for domains (for a
    local file, only the tuning ones apply).

    >>> store, key = open_source_store("/data/run/x.h5")
    >>> (store.root_url, key)
    ('file:///data/run', 'x.h5')
    """
    scheme = urlsplit(uri).scheme.lower()
    options = dict(storage_options or {})
    if scheme in ("", "file"):
        options = {k: v for k, v in options.items() if k in TUNING_OPTIONS}
    elif scheme not in ("s3", "s3a"):
        return None
    return open_object(uri, options)


def check_linkable(file_uri: str, location: Location,
                   allowed_link_prefixes: Iterable[str] | None = None) -> None:
    """Refuse, before a load writes anything, to link a file that readers of the domain
    at ``location`` would refuse (LinkedReferenceRefused, saying what to do).

    >>> from h5dask.storage import open_location
    >>> location = open_location("file:///tmp/b/home/x.h5", {"bucket_root": "/tmp/b"})
    >>> check_linkable("file:///tmp/b/files/x.h5", location)  # inside the bucket root
    """
    policy = LinkPolicy.from_option(allowed_link_prefixes)
    try:
        policy.resolve(file_uri, location.store, "the domain")
    except LinkedReferenceRefused as exc:
        raise LinkedReferenceRefused(
            f"cannot link the file into {location.url}: {exc} Place the file inside the "
            "domain's store or copy it (without link=True / --link); if you allow it "
            f"(h5dask load: set {ENV_VAR}), every reader of the domain needs the same "
            "allowance.", "", file_uri) from exc


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


def linked_chunk_refs(session: Any, meta: DatasetMeta, name: str | None = None
                      ) -> tuple[tuple[str, ChunkRef], ...]:
    """Every stored chunk of a linked dataset as ``(chunk name, ChunkRef)``, sorted by name.

    Chunks with no entry (or size 0) are not stored: they read as the fill value. The
    file each ``file_uri`` names must pass the session's ``link_policy`` (else
    LinkedReferenceRefused, naming the dataset: ``name``, or its object key). The
    result is cached on the session (linked datasets are read-only); an
    H5D_CHUNKED_REF_INDIRECT chunk table is read once."""
    cache = session.__dict__.setdefault(_CACHE_ATTR, {})
    cached = cache.get(meta.id)
    if cached is not None:
        return cached
    dataset = f"dataset {name or meta.key!r}"
    refs = _refs(session, meta, dataset)
    _check_ranges(refs, meta, dataset)
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


def _refs(session: Any, meta: DatasetMeta, dataset: str) -> tuple[tuple[str, ChunkRef], ...]:
    layout = meta.layout
    stores: dict[str, tuple[ObjectStore, str]] = {}

    def resolve(uri: str) -> tuple[ObjectStore, str]:
        if uri not in stores:
            stores[uri] = session.link_policy.resolve(uri, session.location.store, dataset)
        return stores[uri]

    raw_layout = _raw_layout(meta)
    shape = meta.shape or ()
    if layout.cls == "H5D_CHUNKED_REF":
        assert layout.file_uri is not None
        fstore, key = resolve(layout.file_uri)
        return tuple((name, ChunkRef(fstore, key, off, size))
                     for name, (off, size) in sorted(layout.chunk_table.items()) if size > 0)
    if layout.cls == "H5D_CONTIGUOUS_REF":
        assert layout.file_uri is not None
        fstore, key = resolve(layout.file_uri)
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
    uri = layout.file_uri
    if uri:
        resolve(uri)  # refused before the chunk table is read
    table = _read_chunk_table(session, meta)
    grid = ChunkGrid(shape, meta.chunk_shape).grid_shape
    table = table[tuple(slice(0, g) for g in grid)]
    out = []
    for index in zip(*np.nonzero(table["size"] > 0)):
        entry = table[index]
        fstore, key = resolve(uri if uri else _text(entry["file_uri"], meta.key))
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


__all__ = ["CHUNK_TABLE_DTYPE", "contiguous_ranges", "linked_chunk_refs", "max_stored_chunk_bytes",
           "open_source_store"]
