"""The Blosc family: blosclz, lz4, lz4hc, zstd, snappy (HSDS filter ids 32001-32015).

HSDS stores every one of them as a Blosc frame of that compressor (with the byte
shuffle inside); the server decodes any Blosc frame under Reductionist's ``blosc``.

Inside HDF5 files (linked chunks), ``hdf5plugin``'s filters of the same ids write their
own framings (:mod:`.plugin_frames`): Blosc (32001) a Blosc frame with its own shuffle,
which HSDS decodes too; LZ4 (32004) and Zstd (32015) frames HSDS cannot decode; and
Blosc2 (32026), for which HSDS has no filter at all. ``h5dask load`` copies each of them
as the HSDS compressor of the same name (Blosc and Blosc2: the compressor inside).
"""

from __future__ import annotations

from numcodecs import blosc as _numcodecs_blosc

from ..compression import blosc_decompress
from .base import COMPRESSOR, Codec, MappedFilters, register
from .plugin_frames import blosc2_available, blosc2_decode, lz4_hdf5_decode, zstd_decode

#: the compressor code HDF5's Blosc and Blosc2 filters keep in cd_values[6]
_BLOSC_CNAMES = {0: "blosclz", 1: "lz4", 2: "lz4hc", 3: "snappy", 4: "gzip", 5: "zstd"}


def _map_blosc_filter(cd: tuple, out: MappedFilters, filter_name: str) -> None:
    """Copy chunks of HDF5's Blosc/Blosc2 filter as HSDS's compressor of the same name:
    cd_values[4] level, [5] shuffle (1 byte, 2 bit: HSDS byte-shuffles), [6] compressor."""
    cname = _BLOSC_CNAMES.get(int(cd[6]) if len(cd) > 6 else 0, "blosclz")
    if cname != "gzip" and cname not in _numcodecs_blosc.list_compressors():
        out.notes.append(f"{filter_name} {cname} -> lz4 (HSDS's Blosc has no {cname})")
        cname = "lz4"
    out.compressor = cname
    out.level = int(cd[4]) if len(cd) > 4 else None
    out.shuffle = out.shuffle or (len(cd) > 5 and int(cd[5]) >= 1)


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
    decodes_native = True
    linkable = True  # HSDS decodes any Blosc frame, whatever its compressor and shuffle

    def decode_native(self, data: bytes | memoryview, limit: int) -> bytes | bytearray:
        return blosc_decompress(data, limit)  # HDF5's Blosc filter writes one Blosc frame

    def decodes_native_with(self, cd_values: tuple) -> bool:
        # numcodecs' Blosc (h5dask's and HSDS's) lacks snappy
        cname = _BLOSC_CNAMES.get(int(cd_values[6]) if len(cd_values) > 6 else 0)
        return cname == "gzip" or cname in _numcodecs_blosc.list_compressors()

    def native_json(self, cd_values: tuple) -> dict:
        return self.json(int(cd_values[4]) if len(cd_values) > 4 else None)

    def map_hdf5(self, cd_values: tuple, out: MappedFilters) -> None:
        _map_blosc_filter(cd_values, out, "blosc")


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
    decodes_native = True

    def decode_native(self, data: bytes | memoryview, limit: int) -> bytes | bytearray:
        return lz4_hdf5_decode(data, limit)

    def native_json(self, cd_values: tuple) -> dict:
        return self.json()  # cd_values[0] is the LZ4 block size, not a level


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
    decodes_native = True

    def decode_native(self, data: bytes | memoryview, limit: int) -> bytes | bytearray:
        return zstd_decode(data, limit)

    def native_json(self, cd_values: tuple) -> dict:
        return self.json(max(0, min(9, int(cd_values[0]))) if cd_values else None)

    def map_hdf5(self, cd_values: tuple, out: MappedFilters) -> None:
        out.compressor = self.name
        out.level = min(9, int(cd_values[0])) if cd_values else None


@register
class Blosc2(Codec):
    """HDF5's Blosc2 filter (``hdf5plugin.Blosc2``). HSDS has no Blosc2 filter: h5dask
    reads such chunks linked (with python-blosc2) and copies them as the HSDS compressor
    inside them; HSDS cannot serve a linked Blosc2 dataset."""

    name = "blosc2"
    hsds_class = "H5Z_FILTER_BLOSC2"
    hdf5_id = 32026
    role = COMPRESSOR
    supported = False  # not a compressor to write with: HSDS cannot read it
    hsds_decodes = False
    decodes_native = blosc2_available()

    def decode_native(self, data: bytes | memoryview, limit: int) -> bytes | bytearray:
        return blosc2_decode(data, limit)

    def native_json(self, cd_values: tuple) -> dict:
        return self.json()

    def map_hdf5(self, cd_values: tuple, out: MappedFilters) -> None:
        _map_blosc_filter(cd_values, out, "blosc2")
        out.notes.append(f"blosc2 -> {out.compressor} (HSDS has no Blosc2 filter)")
