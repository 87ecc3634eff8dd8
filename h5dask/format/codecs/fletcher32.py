"""Fletcher-32 checksum (filter 3): HSDS lists it but does not apply it; in chunks inside
HDF5 files it is a 4-byte trailer that :class:`~h5dask.format.filters.ChunkCodec` checks."""

from __future__ import annotations

from .base import CHECKSUM, Codec, register


@register
class Fletcher32(Codec):
    name = "fletcher32"
    hsds_class = "H5Z_FILTER_FLETCHER32"
    hdf5_id = 3
    role = CHECKSUM
    decodes_native = True
    linkable = True
