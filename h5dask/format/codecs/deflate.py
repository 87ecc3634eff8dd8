"""gzip/deflate (HDF5 filter 1).

HSDS stores deflate chunks as Blosc frames with zlib inside (and its byte shuffle
inside too); chunks inside HDF5 files, and older h5dask/HSDS chunks, are plain zlib
streams. Both decode bounded (libdeflate or zlib, :mod:`h5dask.format.compression`).
"""

from __future__ import annotations

import zlib

import numpy as np

from ..compression import OutputTooLarge, blosc_decompress, blosc_header, inflate, inflate_into
from .base import COMPRESSOR, Codec, register

_INFLATE_STEP = 1 << 20


@register
class Deflate(Codec):
    name = "gzip"
    aliases = ("deflate", "zlib")
    hsds_class = "H5Z_FILTER_DEFLATE"
    hdf5_id = 1
    role = COMPRESSOR
    levels = (0, 9)
    default_level = 4
    stores_default_level = True
    reductionist = ("gzip", "zlib")
    blosc_cname = "zlib"
    decodes_native = True
    linkable = True

    def encode(self, raw: bytes, level: int | None) -> bytes:
        return zlib.compress(raw, self.default_level if level is None else level)

    def decode(self, data: bytes | memoryview, limit: int) -> bytes | bytearray:
        return inflate(data, limit)

    def decode_native_into(self, data: bytes | memoryview, out: np.ndarray,
                           element_size: int) -> bool:
        inflate_into(data, out, element_size)
        return True

    def reductionist_decode(self, data: bytes | memoryview,
                            max_size: int) -> tuple[bytes | bytearray, bool]:
        # HSDS layout first (a Blosc frame), else a zlib or gzip stream, as Reductionist
        if blosc_header(data) is not None:
            return blosc_decompress(data, max_size), True
        return inflate_members(data, max_size), False


def inflate_members(data: bytes | memoryview, max_size: int) -> bytearray:
    """Inflate one or more zlib/gzip members (either header), never producing more than
    ``max_size`` bytes (OutputTooLarge); ValueError for corrupt or trailing data.

    >>> import gzip
    >>> bytes(inflate_members(gzip.compress(b"ab") + gzip.compress(b"cd"), 4))
    b'abcd'
    """
    out = bytearray()
    rest: bytes | memoryview = data  # not copied: zlib reads memoryviews
    while True:
        d = zlib.decompressobj(wbits=47)  # 32 + 15: accept a zlib or a gzip header
        buf = rest
        while True:
            try:
                chunk = d.decompress(buf, min(_INFLATE_STEP, max_size + 1 - len(out)))
            except zlib.error as exc:
                raise ValueError(f"zlib/gzip: {exc}") from None
            out += chunk
            if len(out) > max_size:
                raise OutputTooLarge(f"more than the limit of {max_size} bytes")
            buf = d.unconsumed_tail
            if d.eof:
                break
            if not buf and not chunk:
                raise ValueError("zlib/gzip: truncated stream")
        rest = d.unused_data
        if bytes(rest[:2]) != b"\x1f\x8b":  # another gzip member follows, or we are done
            break
    if rest.strip(b"\x00"):
        raise ValueError("zlib/gzip: trailing garbage after the stream")
    return out
