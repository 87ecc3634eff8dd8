"""Bounded decompression: zlib streams, Blosc frames and byte shuffle.

Every function here takes the largest output it may produce (``limit``) and never
allocates or writes more than that, whatever the input claims: a chunk object of a few
kilobytes can inflate to gigabytes (a decompression bomb), and chunk objects come from
storage that others can write. Exceeding the limit raises :class:`OutputTooLarge`; any
other undecodable input raises ``ValueError`` (callers turn both into their own errors
naming the object).

zlib streams are inflated with libdeflate (PyPI ``deflate``) when it is installed: it is
about twice as fast as zlib and takes the output size up front, which is what bounds it.
Blosc frames with zlib inside (what HSDS stores for gzip) are decoded block by block
here, with the same inflate; other Blosc compressors go to numcodecs' Blosc after the
header's sizes were checked against the limit.

>>> import zlib
>>> bytes(inflate(zlib.compress(b"abcd" * 4), 16))
b'abcdabcdabcdabcd'
>>> inflate(zlib.compress(bytes(1000)), 999)
Traceback (most recent call last):
...
h5dask.format.compression.OutputTooLarge: inflates to more than 999 bytes
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numcodecs
import numpy as np
from numcodecs import blosc as _blosc

try:  # libdeflate: the fastest inflate measured here (see BENCHMARKS.md)
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - the pure-zlib path below is the fallback
    _libdeflate = None

__all__ = ["BloscHeader", "OutputTooLarge", "blosc_decompress", "blosc_header", "inflate",
           "unshuffle_into"]


class OutputTooLarge(ValueError):
    """The input decodes to more bytes than the caller allows."""


# -- zlib -------------------------------------------------------------------------
def inflate(data: bytes | memoryview, limit: int) -> bytes | bytearray:
    """Inflate one zlib stream to at most ``limit`` bytes.

    Raises :class:`OutputTooLarge` if it holds more, ``ValueError`` if it is corrupt or
    truncated (zlib streams carry an adler32 checksum, which is checked).
    """
    if _libdeflate is not None:
        try:
            return _libdeflate.zlib_decompress(data, max(limit, 1))
        except _libdeflate.DeflateError:
            pass  # corrupt or too large: zlib below says which, still bounded
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ValueError(f"zlib: {exc}") from None
    if len(out) > limit:
        raise OutputTooLarge(f"inflates to more than {limit} bytes")
    if not inflater.eof:
        raise ValueError("zlib: truncated stream")
    return out


# -- Blosc ------------------------------------------------------------------------
_HEADER = struct.Struct("<BBBBIII")
_SHUFFLE, _MEMCPYED, _BITSHUFFLE, _DONT_SPLIT = 0x01, 0x02, 0x04, 0x10
_ZLIB_FORMAT = 3  # the compressor code in the flags' top three bits
_MAX_SPLITS, _MIN_BUFFERSIZE = 16, 128  # c-blosc 1.x: when a block is split in streams


@dataclass(frozen=True)
class BloscHeader:
    """The 16-byte header of a Blosc frame."""

    version: int
    versionlz: int
    flags: int
    typesize: int
    nbytes: int
    blocksize: int
    cbytes: int

    @property
    def compressor_code(self) -> int:
        return self.flags >> 5


def blosc_header(data: bytes | memoryview) -> BloscHeader | None:
    """The header of ``data`` if it is one whole Blosc frame, else None.

    A frame is recognised by a format version 1..5 in its first byte (a zlib stream
    starts with 0x78, a gzip one with 0x1f) and a compressed size equal to the length
    of ``data``.

    >>> blosc_header(numcodecs.Blosc(cname="zlib").encode(bytes(64))).nbytes
    64
    """
    if len(data) < _HEADER.size:
        return None
    header = BloscHeader(*_HEADER.unpack_from(data, 0))
    if not 1 <= header.version <= 5 or header.typesize == 0 or header.cbytes != len(data):
        return None
    if header.flags & _MEMCPYED and header.cbytes != header.nbytes + _HEADER.size:
        return None
    return header


def blosc_decompress(data: bytes | memoryview, limit: int,
                     out: np.ndarray | None = None) -> bytes | bytearray | None:
    """Decode one Blosc frame of at most ``limit`` bytes, into ``out`` (a C-contiguous
    array of exactly the frame's size; returns None) or into new bytes.

    The header's sizes are checked before anything is allocated; zlib frames are
    inflated here block by block (faster than Blosc's own zlib), others by numcodecs.

    >>> frame = numcodecs.Blosc(cname="zlib", shuffle=1).encode(np.arange(64, dtype="<i4"))
    >>> np.frombuffer(blosc_decompress(frame, 256), "<i4")[-1]
    np.int32(63)
    """
    header = blosc_header(data)
    if header is None:
        raise ValueError("not a Blosc frame (bad header or size)")
    if header.version > 2:
        raise ValueError(f"Blosc2-format frames (format version {header.version}) "
                         "are not supported")
    if header.nbytes > limit:
        raise OutputTooLarge(f"the Blosc header says {header.nbytes} bytes, more than "
                             f"the {limit} expected")
    if out is not None and out.nbytes != header.nbytes:
        raise ValueError(f"the Blosc frame holds {header.nbytes} bytes, not {out.nbytes}")
    if header.nbytes and not 0 < header.blocksize <= header.nbytes:
        raise ValueError(f"Blosc header: block size {header.blocksize} for "
                         f"{header.nbytes} bytes")
    if header.flags & _MEMCPYED:
        body = memoryview(data)[_HEADER.size:]
        if out is None:
            return bytes(body)
        out.reshape(-1).view(np.uint8)[:] = np.frombuffer(body, np.uint8)
        return None
    if header.compressor_code == _ZLIB_FORMAT and not header.flags & (_BITSHUFFLE | 0x08):
        buffer = bytearray(header.nbytes) if out is None else None
        target = np.frombuffer(buffer, np.uint8) if buffer is not None else \
            out.reshape(-1).view(np.uint8)
        _blosc_zlib_into(memoryview(data).cast("B"), header, target)
        return buffer
    try:
        if out is None:
            decoded = _blosc.decompress(data)
        else:
            _blosc.decompress(data, out)
            return None
    except Exception as exc:  # numcodecs raises RuntimeError/ValueError on bad frames
        raise ValueError(f"Blosc: {exc}") from None
    if len(decoded) != header.nbytes:
        raise ValueError("Blosc: wrong output size")
    return decoded


def _blosc_zlib_into(src: memoryview, header: BloscHeader, out: np.ndarray) -> None:
    """The blocks of a Blosc zlib frame, inflated and unshuffled into ``out``
    (c-blosc 1.x layout: a table of block offsets, then per block one zlib stream, or
    ``typesize`` of them when the block was split; a stream exactly as long as its part
    of the block was stored verbatim)."""
    nbytes, blocksize, typesize = header.nbytes, header.blocksize, header.typesize
    if nbytes == 0:
        return
    nblocks = -(-nbytes // blocksize)
    table_end = _HEADER.size + 4 * nblocks
    if table_end > len(src):
        raise ValueError("Blosc: block table runs past the frame")
    starts = np.frombuffer(src[_HEADER.size:table_end], "<u4")
    shuffled = bool(header.flags & _SHUFFLE) and typesize > 1
    for block, start in enumerate(starts.tolist()):
        begin = block * blocksize
        size = min(blocksize, nbytes - begin)
        split = (not header.flags & _DONT_SPLIT and typesize <= _MAX_SPLITS
                 and size // typesize >= _MIN_BUFFERSIZE and size == blocksize)
        nstreams = typesize if split else 1
        if size % nstreams:
            raise ValueError(f"Blosc: a block of {size} bytes split in {nstreams} streams")
        streams = _block_streams(src, start, nstreams, size // nstreams)
        target = out[begin:begin + size]
        if shuffled and split and typesize in _WORDS:
            # shuffled, then split: stream k is byte plane k of the block's elements
            _unshuffle_words(streams, target)
        elif shuffled:
            unshuffle_into(streams[0] if nstreams == 1 else np.concatenate(streams),
                           typesize, target)
        else:
            np.concatenate(streams, out=target)


def _block_streams(src: memoryview, pos: int, nstreams: int,
                   stream_size: int) -> list[np.ndarray]:
    """The ``nstreams`` streams of one block starting at ``pos``, each inflated to
    exactly ``stream_size`` bytes (or taken as stored when it is that long already)."""
    streams = []
    for _ in range(nstreams):
        if pos + 4 > len(src):
            raise ValueError("Blosc: block runs past the frame")
        cbytes = int.from_bytes(src[pos:pos + 4], "little")
        pos += 4
        if cbytes > len(src) - pos:
            raise ValueError("Blosc: block runs past the frame")
        piece = src[pos:pos + cbytes]
        pos += cbytes
        if cbytes != stream_size:
            piece = inflate(piece, stream_size)
            if len(piece) != stream_size:
                raise ValueError("Blosc: a block decodes to the wrong size")
        streams.append(np.frombuffer(piece, np.uint8))
    return streams


def unshuffle_into(src: np.ndarray | bytes | memoryview, element_size: int,
                   out: np.ndarray) -> None:
    """Undo the HDF5/Blosc byte shuffle of ``src`` into ``out`` (uint8, same length);
    trailing bytes that do not fill an element are copied as they are.

    >>> out = np.empty(5, np.uint8)
    >>> unshuffle_into(bytes([1, 3, 2, 4, 9]), 2, out); out.tolist()
    [1, 2, 3, 4, 9]
    """
    raw = np.frombuffer(src, np.uint8)
    count = len(raw) // element_size
    whole = count * element_size
    if element_size in _WORDS and count:
        _unshuffle_words(list(raw[:whole].reshape(element_size, count)), out[:whole])
    elif element_size > 1 and whole:
        numcodecs.Shuffle(elementsize=element_size).decode(raw[:whole], out=out[:whole])
    else:
        out[:whole] = raw[:whole]
    out[whole:] = raw[whole:]


#: element sizes unshuffled with integer arithmetic: byte k of every element is plane k
#: shifted left by 8 k bits in a little-endian word of that size
_WORDS = {2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}


def _unshuffle_words(planes: list[np.ndarray], out: np.ndarray) -> None:
    """Interleave the byte ``planes`` (one per byte of an element, of ``count`` bytes
    each) into ``out``.

    numpy ufuncs release the GIL, so the other dask threads keep running (numcodecs'
    Shuffle holds it throughout), and whole-word arithmetic is also about twice as fast.
    """
    size, count = len(planes), len(planes[0])
    word = _WORDS[size]
    dest = out.view(word)
    shifted = np.empty(count, word)
    np.copyto(dest, planes[0], casting="unsafe")
    for k in range(1, size):
        np.copyto(shifted, planes[k], casting="unsafe")
        np.left_shift(shifted, 8 * k, out=shifted)
        np.bitwise_or(dest, shifted, out=dest)
