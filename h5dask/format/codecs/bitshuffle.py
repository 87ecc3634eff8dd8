"""bitshuffle (HDF5 plugin filter 32008).

HSDS's own bitshuffle chunks are bitshuffle's LZ4 format behind a 12-byte header
(decoded by :class:`~h5dask.format.filters.ChunkCodec` with the ``bitshuffle`` package);
HSDS 1.0.2 lists the filter but neither applies nor undoes it. Chunks of
``hdf5plugin.Bitshuffle`` inside HDF5 files (linked) are that same framing with LZ4, the
same with zstd blocks, or bare bitshuffled bytes: the linked filter JSON says which
(``"cname"``: absent for LZ4, as HSDS means it, else "zstd" or "none", with the
``"blocksize"`` in elements of a bare chunk).
"""

from __future__ import annotations

from .base import BITSHUFFLE, Codec, MappedFilters, register

#: cd_values[4] of HDF5's bitshuffle filter: its compression
_MODES = {0: "none", 2: "lz4", 3: "zstd"}


def mode(cd_values: tuple) -> str:
    """The compression of an HDF5 bitshuffle filter with these cd_values."""
    code = int(cd_values[4]) if len(cd_values) > 4 else 0
    return _MODES.get(code, f"unknown ({code})")


@register
class Bitshuffle(Codec):
    name = "bitshuffle"
    hsds_class = "H5Z_FILTER_BITSHUFFLE"
    hdf5_id = 32008
    role = BITSHUFFLE
    decodes_native = True

    def native_json(self, cd_values: tuple) -> dict:
        out = self.json()
        cname = mode(cd_values)
        if cname != "lz4":
            out["cname"] = cname
        if cname == "none" and len(cd_values) > 3 and int(cd_values[3]):
            out["blocksize"] = int(cd_values[3])
        return out

    def map_hdf5(self, cd_values: tuple, out: MappedFilters) -> None:
        # HSDS's filter of the same name, with the compressor bitshuffle applied inside
        # (HSDS 1.0.2 stores bitshuffle chunks unshuffled: so does h5dask)
        out.bitshuffle = True
        cname = mode(cd_values)
        if cname in ("lz4", "zstd"):
            out.compressor, out.level = cname, None
