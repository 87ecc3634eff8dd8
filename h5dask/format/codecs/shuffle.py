"""HDF5 byte shuffle (filter 2). Undone by :class:`~h5dask.format.filters.ChunkCodec`
(inside the Blosc frame when HSDS stores it with a compressor)."""

from __future__ import annotations

from .base import SHUFFLE, Codec, register


@register
class Shuffle(Codec):
    name = "shuffle"
    hsds_class = "H5Z_FILTER_SHUFFLE"
    hdf5_id = 2
    role = SHUFFLE
    decodes_native = True
    linkable = True
