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

from collections.abc import Sequence

import numpy as np

from h5dask.active.errors import ActiveStorageError, FieldError, too_large
from h5dask.active.request import Filter
from h5dask.format import codecs
from h5dask.format.compression import OutputTooLarge

__all__ = ["decode", "decompress", "unshuffle"]


def decompress(
    data: bytes | memoryview, compression: str, max_size: int
) -> tuple[bytes | bytearray, bool]:
    """Decompress ``data`` with the codec registered for Reductionist id ``compression``;
    return the bytes and whether a Blosc frame was decoded (its shuffle already undone).

    Raises 400 for undecodable data and when the output would exceed ``max_size``
    (Reductionist's InsufficientMemory is a 400 too).

    Example::

        >>> import zlib
        >>> data, blosc_frame = decompress(zlib.compress(b"x" * 8), "gzip", 64)
        >>> bytes(data), blosc_frame
        (b'xxxxxxxx', False)
    """
    codec = codecs.by_reductionist(compression)
    if codec is None:
        raise FieldError("compression", f"unknown id {compression!r}")
    try:
        out, blosc_done = codec.reductionist_decode(data, max_size)
    except OutputTooLarge as exc:
        raise too_large("decompressed data", str(exc)) from None
    except ValueError as exc:
        raise ActiveStorageError(400, "failed to decompress data", [str(exc)]) from None
    return out, blosc_done


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
        if blosc_done and compression in codecs.lookup("gzip").reductionist:
            filters = [f for f in filters if f.id not in ("shuffle", "shuffle_simd")]
    for f in reversed(filters):
        data = unshuffle(data, f.element_size)
    return data
