"""The codec registry: one small class per HDF5/HSDS filter, in one module each.

Every part of h5dask that needs to know about a filter asks here: the chunk reader
and writer (:class:`h5dask.format.filters.ChunkCodec`), ``File.create_dataset`` and
``to_h5cloud`` (names, levels), ``h5dask load`` (HDF5 filter ids -> HSDS filter JSON,
which chunks can stay linked), the active-storage server (Reductionist compression
names) and pushdown (what to ask the server for). Adding a codec is one module with a
:class:`Codec` subclass decorated with :func:`register`.

>>> lookup("deflate").name, lookup({"id": 32015}).name, by_hdf5_id(1).hsds_class
('gzip', 'zstd', 'H5Z_FILTER_DEFLATE')
>>> lookup("gzip").json(6)
{'class': 'H5Z_FILTER_DEFLATE', 'id': 1, 'name': 'gzip', 'level': 6}
"""

from __future__ import annotations

# the built-in codecs register themselves on import
from . import bitshuffle, blosc, deflate, fletcher32, lzf, shuffle, unsupported  # noqa: F401
from .base import (
    Codec,
    MappedFilters,
    all_codecs,
    by_hdf5_id,
    by_reductionist,
    compressor,
    compressors,
    lookup,
    register,
    unregister,
)

__all__ = ["Codec", "MappedFilters", "all_codecs", "by_hdf5_id", "by_reductionist", "compressor",
           "compressors", "lookup", "register", "unregister"]
