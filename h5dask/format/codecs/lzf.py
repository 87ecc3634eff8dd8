"""LZF (HDF5 filter 32000, h5py's built-in ``compression="lzf"``), via python-lzf.

Chunks are stored as HDF5's LZF filter writes them: the LZF stream of the (shuffled)
element bytes, or the bytes themselves when LZF would not make them smaller. An HSDS
server has no LZF filter: it lists such a dataset but cannot read its chunks, so
h5dask warns when it writes one
(:class:`~h5dask.errors.HSDSUnreadableWarning`). ``h5dask load``
copies LZF datasets as lz4, which HSDS reads.
"""

from __future__ import annotations

from .base import COMPRESSOR, Codec, MappedFilters, register


def _lzf():
    try:
        import lzf
    except ImportError as exc:  # pragma: no cover - python-lzf is a dependency
        from ...errors import UnsupportedFilterError

        raise UnsupportedFilterError("LZF chunks need the 'python-lzf' package "
                                     "(pip install python-lzf)") from exc
    return lzf


@register
class LZF(Codec):
    name = "lzf"
    hsds_class = "H5Z_FILTER_LZF"
    hdf5_id = 32000
    role = COMPRESSOR
    hsds_decodes = False
    decodes_native = True

    def encode(self, raw: bytes, level: int | None) -> bytes:
        packed = _lzf().compress(raw, max(len(raw) - 1, 1)) if raw else None
        return packed if packed is not None else raw

    def decode(self, data: bytes | memoryview, limit: int) -> bytes:
        if len(data) == limit:  # stored as is: LZF would not have made it smaller
            return bytes(data)
        out = _lzf().decompress(bytes(data), limit)
        if out is None:  # python-lzf: the output does not fit in ``limit``
            from ..compression import OutputTooLarge

            raise OutputTooLarge(f"LZF: decodes to more than {limit} bytes")
        return out

    def map_hdf5(self, cd_values: tuple, out: MappedFilters) -> None:
        out.compressor, out.level = "lz4", None  # a copy HSDS can read
        out.notes.append("lzf -> lz4")
