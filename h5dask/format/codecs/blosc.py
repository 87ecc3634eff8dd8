"""The Blosc family: blosclz, lz4, lz4hc, zstd, snappy (HSDS filter ids 32001-32015).

HSDS stores every one of them as a Blosc frame of that compressor (with the byte
shuffle inside); the server decodes any Blosc frame under Reductionist's ``blosc``.
"""

from __future__ import annotations

from ..compression import blosc_decompress
from .base import COMPRESSOR, Codec, MappedFilters, register

#: the compressor code HDF5's Blosc filter keeps in cd_values[6]
_BLOSC_CNAMES = {0: "blosclz", 1: "lz4", 2: "lz4hc", 3: "snappy", 4: "gzip", 5: "zstd"}


class _BloscCodec(Codec):
    role = COMPRESSOR
    levels = (0, 9)
    default_level = 4
    reductionist = ("blosc", "blosc2")

    def reductionist_decode(self, data: bytes | memoryview,
                            max_size: int) -> tuple[bytes | bytearray, bool]:
        return blosc_decompress(data, max_size), True

    def map_hdf5(self, cd_values: tuple, out: MappedFilters) -> None:
        out.compressor, out.level = self.name, None


@register
class BloscLZ(_BloscCodec):
    name = "blosclz"
    aliases = ("blosc",)
    hsds_class = "H5Z_FILTER_BLOSC"
    hdf5_id = 32001
    blosc_cname = "blosclz"

    def map_hdf5(self, cd_values: tuple, out: MappedFilters) -> None:
        # HDF5's Blosc filter: cd_values[4] level, [5] shuffle, [6] compressor code
        cd = cd_values
        out.compressor = _BLOSC_CNAMES.get(int(cd[6]) if len(cd) > 6 else 0, "blosclz")
        out.level = int(cd[4]) if len(cd) > 4 else None
        out.shuffle = out.shuffle or (len(cd) > 5 and int(cd[5]) >= 1)


@register
class Snappy(_BloscCodec):
    name = "snappy"
    hsds_class = "H5Z_FILTER_SNAPPY"
    hdf5_id = 32003
    blosc_cname = "snappy"

    def map_hdf5(self, cd_values: tuple, out: MappedFilters) -> None:
        self.map_as_gzip(out)  # no HDF5 plugin writes this id


@register
class LZ4(_BloscCodec):
    name = "lz4"
    hsds_class = "H5Z_FILTER_LZ4"
    hdf5_id = 32004
    blosc_cname = "lz4"


@register
class LZ4HC(_BloscCodec):
    name = "lz4hc"
    hsds_class = "H5Z_FILTER_LZ4HC"
    hdf5_id = 32005
    blosc_cname = "lz4hc"

    def map_hdf5(self, cd_values: tuple, out: MappedFilters) -> None:
        self.map_as_gzip(out)  # no HDF5 plugin writes this id


@register
class Zstd(_BloscCodec):
    name = "zstd"
    hsds_class = "H5Z_FILTER_ZSTD"
    hdf5_id = 32015
    blosc_cname = "zstd"

    def map_hdf5(self, cd_values: tuple, out: MappedFilters) -> None:
        out.compressor = self.name
        out.level = min(9, int(cd_values[0])) if cd_values else None
