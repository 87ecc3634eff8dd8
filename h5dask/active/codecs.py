"""Decompression and unfiltering of fetched chunk bytes, bounded in output size.

Pipeline (as Reductionist): decompress, then undo the filters in reverse order.

* ``gzip`` / ``zlib``: HSDS stores gzip-filtered chunks as Blosc frames (zlib
  inside, its byte shuffle inside too), so a Blosc header is looked for first and
  the frame decoded with Blosc; otherwise the data is inflated as a zlib or gzip
  stream (either header is accepted for either id). When a Blosc frame was found
  under these ids, a ``shuffle`` filter is taken as already undone by Blosc, as
  HSDS's own reader does.
* ``blosc`` / ``blosc2``: a Blosc (format 1/2) frame, decoded with numcodecs;
  the filters are then applied as requested.
* filters ``shuffle`` / ``shuffle_simd``: HDF5 byte shuffle with ``element_size``;
  trailing bytes that do not fill an element are left as they are (as HDF5).

Example::

    >>> import zlib
    >>> bytes(decode(zlib.compress(b"abcd" * 4), "zlib", (), max_size=1024))
    b'abcdabcdabcdabcd'
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np

from h5dask.active.errors import ActiveStorageError, FieldError
from h5dask.active.request import Filter
from h5dask.format.compression import (
    BloscHeader,
    OutputTooLarge,
    blosc_decompress,
    blosc_header,
)

__all__ = ["BloscHeader", "blosc_header", "decode", "decompress", "unshuffle"]

_INFLATE_STEP = 1 << 20


def _blosc_decode(data: bytes | memoryview, max_size: int) -> bytes | bytearray:
    """One Blosc frame, decoded by the client's bounded decoder (format/compression.py)."""
    try:
        out = blosc_decompress(data, max_size)
    except OutputTooLarge as exc:
        raise ActiveStorageError(413, "decompressed data too large", [str(exc)]) from None
    except ValueError as exc:
        raise ActiveStorageError(400, "failed to decompress data", [str(exc)]) from None
    assert out is not None
    return out


def _inflate(data: bytes | memoryview, max_size: int) -> bytearray:
    """Inflate one or more zlib/gzip members, never producing more than ``max_size`` bytes."""
    out = bytearray()
    rest: bytes | memoryview = data
    while True:
        d = zlib.decompressobj(wbits=47)  # 32 + 15: accept a zlib or a gzip header
        buf = rest
        while True:
            try:
                chunk = d.decompress(buf, min(_INFLATE_STEP, max_size + 1 - len(out)))
            except zlib.error as exc:
                raise ActiveStorageError(
                    400, "failed to decompress data", [f"zlib/gzip: {exc}"]
                ) from None
            out += chunk
            if len(out) > max_size:
                raise ActiveStorageError(
                    413,
                    "decompressed data too large",
                    [f"more than the limit of {max_size} bytes"],
                )
            buf = d.unconsumed_tail
            if d.eof:
                break
            if not buf and not chunk:
                raise ActiveStorageError(
                    400, "failed to decompress data", ["zlib/gzip: truncated stream"]
                )
        rest = d.unused_data
        if bytes(rest[:2]) != b"\x1f\x8b":  # another gzip member follows, or we are done
            break
    if rest.strip(b"\x00"):
        raise ActiveStorageError(
            400, "failed to decompress data", ["zlib/gzip: trailing garbage after the stream"]
        )
    return out


def decompress(
    data: bytes | memoryview, compression: str, max_size: int
) -> tuple[bytes | bytearray, bool]:
    """Decompress ``data``; return the bytes and whether a Blosc frame was decoded.

    Raises 400 for undecodable data and 413 when the output would exceed ``max_size``.

    Example::

        >>> data, blosc_frame = decompress(zlib.compress(b"x" * 8), "gzip", 64)
        >>> bytes(data), blosc_frame
        (b'xxxxxxxx', False)
    """
    header = blosc_header(data)
    if compression in ("blosc", "blosc2"):
        if header is None:
            raise ActiveStorageError(
                400, "failed to decompress data", ["not a Blosc frame (bad header or size)"]
            )
        return _blosc_decode(data, max_size), True
    if compression in ("gzip", "zlib"):
        if header is not None:
            return _blosc_decode(data, max_size), True
        return _inflate(data, max_size), False
    raise FieldError("compression", f"unknown id {compression!r}")


def unshuffle(data: bytes | memoryview, element_size: int) -> bytes | bytearray:
    """Undo the HDF5 byte shuffle of ``data`` made of ``element_size``-byte elements.

    Example::

        >>> bytes(unshuffle(bytes([1, 3, 2, 4]), 2))
        b'\\x01\\x02\\x03\\x04'
    """
    n = len(data) // element_size
    if element_size == 1 or n == 0:
        return bytes(data)
    raw = np.frombuffer(data, dtype=np.uint8)
    out = bytearray(len(raw))  # one output buffer: the transpose is written into it
    dest = np.frombuffer(out, dtype=np.uint8)
    body = n * element_size
    dest[:body].reshape(n, element_size)[...] = raw[:body].reshape(element_size, n).T
    dest[body:] = raw[body:]
    return out


def decode(
    data: bytes | memoryview,
    compression: str | None,
    filters: Sequence[Filter],
    max_size: int,
) -> bytes | bytearray | memoryview:
    """Run the whole pipeline: decompress, then undo ``filters`` in reverse order.

    Example::

        >>> bytes(decode(bytes([1, 3, 2, 4]), None, [Filter("shuffle", 2)], 64))
        b'\\x01\\x02\\x03\\x04'
    """
    blosc_done = False
    if compression is not None:
        data, blosc_done = decompress(data, compression, max_size)
        # HSDS layout: a gzip/zlib chunk that is a Blosc frame carries its shuffle inside.
        if blosc_done and compression in ("gzip", "zlib"):
            filters = [f for f in filters if f.id not in ("shuffle", "shuffle_simd")]
    for f in reversed(filters):
        data = unshuffle(data, f.element_size)
    return data
