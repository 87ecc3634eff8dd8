"""bitshuffle (HDF5 plugin filter 32008): HSDS frames it as bitshuffle's LZ4 format
(decoded by :class:`~h5dask.format.filters.ChunkCodec` with the ``bitshuffle`` package)."""

from __future__ import annotations

from .base import BITSHUFFLE, Codec, MappedFilters, register


@register
class Bitshuffle(Codec):
    name = "bitshuffle"
    hsds_class = "H5Z_FILTER_BITSHUFFLE"
    hdf5_id = 32008
    role = BITSHUFFLE

    def map_hdf5(self, cd_values: tuple, out: MappedFilters) -> None:
        # copied as byte shuffle plus the compressor bitshuffle used (2: lz4, 3: zstd)
        out.shuffle = True
        mode = int(cd_values[4]) if len(cd_values) > 4 else 0
        out.compressor = {2: "lz4", 3: "zstd"}.get(mode, out.compressor)
        out.notes.append("bitshuffle -> shuffle")
