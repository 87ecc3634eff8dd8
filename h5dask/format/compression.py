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
here: each stream is inflated straight into its place (libdeflate's C API, which the
``deflate`` package's library exports, writes into a given buffer), and a shuffled frame
is then unshuffled by numcodecs' c-blosc in one GIL-free call. Other Blosc compressors
go to numcodecs' Blosc after the header's sizes were checked against the limit.

>>> import zlib
>>> bytes(inflate(zlib.compress(b"abcd" * 4), 16))
b'abcdabcdabcdabcd'
>>> inflate(zlib.compress(bytes(1000)), 999)
Traceback (most recent call last):
...
h5dask.format.compression.OutputTooLarge: inflates to more than 999 bytes
"""

from __future__ import annotations

import ctypes
import struct
import threading
import zlib
from dataclasses import dataclass

import numcodecs
import numpy as np
from numcodecs import blosc as _blosc

try:  # libdeflate: the fastest inflate measured here (see BENCHMARKS.md)
    import deflate as _libdeflate
except ImportError:  # pragma: no cover - the pure-zlib path below is the fallback
    _libdeflate = None


def _libdeflate_c_api(package: object | None) -> ctypes.CDLL | None:
    """libdeflate's own C functions, from the library the ``deflate`` package ships (its
    extension exports libdeflate's public API), to inflate into a buffer given to it (the
    package's Python functions always return a new bytearray); None when absent."""
    path = getattr(getattr(package, "_deflate", None), "__file__", None)
    if path is None:
        return None
    try:
        lib = ctypes.CDLL(path)
        alloc, free = lib.libdeflate_alloc_decompressor, lib.libdeflate_free_decompressor
        decompress = lib.libdeflate_zlib_decompress
    except (OSError, AttributeError):  # pragma: no cover - a build that hides its symbols
        return None
    alloc.restype, alloc.argtypes = ctypes.c_void_p, []
    free.restype, free.argtypes = None, [ctypes.c_void_p]
    # (decompressor, in, in_nbytes, out, out_nbytes_avail, *actual_out_nbytes) -> result;
    # ctypes releases the GIL for the call
    decompress.restype = ctypes.c_int
    decompress.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t,
                           ctypes.c_void_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_size_t)]
    return lib


_libdeflate_c = _libdeflate_c_api(_libdeflate)
_LIBDEFLATE_INSUFFICIENT_SPACE = 3  # enum libdeflate_result: the stream holds more

__all__ = ["BloscHeader", "OutputTooLarge", "blosc_decompress", "blosc_header", "inflate",
           "inflate_into", "unshuffle_into"]


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


def inflate_into(data: bytes | memoryview, out: np.ndarray, element_size: int = 1) -> None:
    """Inflate one zlib stream into exactly ``out`` (C-contiguous uint8), undoing HDF5's
    byte shuffle of ``element_size``-byte elements on the way when that is above 1 (what
    a linked HDF5 file's gzip+shuffle chunk needs, with no buffer of the decoded size
    in between when libdeflate's C API is there).

    Raises :class:`OutputTooLarge` if the stream holds more, ``ValueError`` if it holds
    less or is corrupt (``out`` may then be partly written).

    >>> import zlib
    >>> out = np.empty(4, np.uint8)
    >>> inflate_into(zlib.compress(bytes([1, 3, 2, 4])), out, 2); out.tolist()
    [1, 2, 3, 4]
    """
    src = np.frombuffer(data, np.uint8)
    if element_size <= 1 or element_size > 255 or len(out) > _BLOSC_MAX_BYTES:
        # (outside what a c-blosc frame describes: numpy unshuffles)
        target = out if element_size <= 1 else np.empty_like(out)
        with _Inflater(src, target) as inflater:
            inflater.inflate(0, len(src), 0, len(out))
        if element_size > 1:
            unshuffle_into(target, element_size, out)
        return
    nbytes = len(out)
    header = BloscHeader(2, 1, _SHUFFLE | _DONT_SPLIT, element_size, nbytes, max(nbytes, 1), 0)
    raw = _raw_frame(header, 1)
    with _Inflater(src, raw) as inflater:
        inflater.inflate(0, len(src), _raw_block_at(1, nbytes, 0), nbytes)
    if nbytes:
        _blosc.decompress(raw, out)


# -- Blosc ------------------------------------------------------------------------
_HEADER = struct.Struct("<BBBBIII")
_SHUFFLE, _MEMCPYED, _BITSHUFFLE, _DONT_SPLIT = 0x01, 0x02, 0x04, 0x10
_ZLIB_FORMAT = 3  # the compressor code in the flags' top three bits
_MAX_SPLITS, _MIN_BUFFERSIZE = 16, 128  # c-blosc 1.x: when a block is split in streams
_BLOSC_MAX_BYTES = 2**31 - 1 - 16  # c-blosc 1.x: the largest buffer a frame holds


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
    """The blocks of a Blosc zlib frame, inflated into ``out`` (c-blosc 1.x layout: a
    table of block offsets, then per block one zlib stream, or ``typesize`` of them when
    the block was split, each a consecutive part of the block; a stream exactly as long
    as its part was stored verbatim).

    A shuffled frame is inflated into a frame of raw blocks (:func:`_raw_frame`) that
    c-blosc then unshuffles into ``out``, in C with the GIL released (a numpy unshuffle
    took a tenth of the chunk's decode time)."""
    nbytes, blocksize, typesize = header.nbytes, header.blocksize, header.typesize
    if nbytes == 0:
        return
    nblocks = -(-nbytes // blocksize)
    table_end = _HEADER.size + 4 * nblocks
    if table_end > len(src):
        raise ValueError("Blosc: block table runs past the frame")
    starts = np.frombuffer(src[_HEADER.size:table_end], "<u4")
    shuffled = bool(header.flags & _SHUFFLE) and typesize > 1
    raw = _raw_frame(header, nblocks) if shuffled else None
    with _Inflater(np.frombuffer(src, np.uint8), out if raw is None else raw) as inflater:
        for block, start in enumerate(starts.tolist()):
            begin = block * blocksize
            size = min(blocksize, nbytes - begin)
            split = (not header.flags & _DONT_SPLIT and typesize <= _MAX_SPLITS
                     and size // typesize >= _MIN_BUFFERSIZE and size == blocksize)
            nstreams = typesize if split else 1
            if size % nstreams:
                raise ValueError(f"Blosc: a block of {size} bytes split in {nstreams} streams")
            at = begin if raw is None else _raw_block_at(nblocks, blocksize, block)
            _inflate_block(inflater, start, nstreams, size // nstreams, at)
    if raw is not None:
        try:
            _blosc.decompress(raw, out)
        except Exception as exc:  # pragma: no cover - a raw frame built above is valid
            raise ValueError(f"Blosc: unshuffle: {exc}") from None


def _raw_frame(header: BloscHeader, nblocks: int) -> np.ndarray:
    """A Blosc frame of ``header``'s sizes, flagged shuffled, whose blocks are each one
    stream stored verbatim (as long as the block), left for the caller to fill: what
    c-blosc decodes by copying each block and unshuffling it, its SIMD unshuffle.

    Block ``b``'s bytes start at :func:`_raw_block_at`; the frame holds the decoded size
    plus 8 bytes a block and the header (an inflated block is that block's shuffled
    bytes whether or not it was split: the split streams are its consecutive parts)."""
    table_end = _HEADER.size + 4 * nblocks
    frame = _scratch(table_end + 4 * nblocks + header.nbytes)
    _HEADER.pack_into(frame, 0, 2, 1, _SHUFFLE | _DONT_SPLIT, header.typesize,
                      header.nbytes, header.blocksize, len(frame))
    starts = table_end + np.arange(nblocks, dtype="<u8") * (4 + header.blocksize)
    frame[_HEADER.size:table_end].view("<u4")[:] = starts
    sizes = np.full(nblocks, header.blocksize, "<u4")
    sizes[-1] = header.nbytes - (nblocks - 1) * header.blocksize
    for start, size in zip(starts.tolist(), sizes.tolist()):
        frame[start:start + 4].view("<u4")[0] = size
    return frame


_SCRATCH = threading.local()
#: the largest scratch buffer a thread keeps between chunks (16 MiB chunks and smaller:
#: what h5dask and HSDS write), so the memory held is at most this per decoding thread
SCRATCH_KEPT_BYTES = 16 << 20


def _scratch(nbytes: int) -> np.ndarray:
    """``nbytes`` of uint8 scratch memory of the calling thread, kept for its next chunk:
    a 4 MiB buffer allocated afresh per chunk costs its page faults each time wherever
    glibc hands freed memory straight back (a dask worker's nanny makes it do so), about
    as much as the unshuffle itself."""
    if nbytes > SCRATCH_KEPT_BYTES:
        return np.empty(nbytes, np.uint8)
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or len(buffer) < nbytes:
        buffer = _SCRATCH.buffer = np.empty(max(nbytes, 1 << 20), np.uint8)
    return buffer[:nbytes]


def _raw_block_at(nblocks: int, blocksize: int, block: int) -> int:
    """Where block ``block``'s bytes start in a :func:`_raw_frame`."""
    return _HEADER.size + 4 * nblocks + block * (4 + blocksize) + 4


_U32 = struct.Struct("<I")


def _inflate_block(inflater: _Inflater, pos: int, nstreams: int, stream_size: int,
                   at: int) -> None:
    """The ``nstreams`` streams of one block starting at ``pos`` in the frame, each
    inflated to exactly ``stream_size`` bytes (or copied when stored that long already),
    one after the other into the output from ``at`` on."""
    src = inflater.src
    for k in range(nstreams):
        if pos + 4 > len(src):
            raise ValueError("Blosc: block runs past the frame")
        cbytes = _U32.unpack_from(src, pos)[0]
        pos += 4
        if cbytes > len(src) - pos:
            raise ValueError("Blosc: block runs past the frame")
        if cbytes == stream_size:
            inflater.copy(pos, cbytes, at + k * stream_size)
        else:
            inflater.inflate(pos, cbytes, at + k * stream_size, stream_size)
        pos += cbytes


class _Inflater:
    """Inflates zlib streams that lie in ``src`` into given places of ``out`` (both
    C-contiguous uint8 arrays), each to exactly the size it is given, never writing
    outside it: straight into place with libdeflate's C API, else through
    :func:`inflate` and a copy. A context manager (it holds a libdeflate decompressor).

    >>> import zlib
    >>> out = np.zeros(6, np.uint8)
    >>> with _Inflater(np.frombuffer(zlib.compress(b"abcd"), np.uint8), out) as inflater:
    ...     inflater.inflate(0, len(inflater.src), 1, 4)
    >>> out.tobytes()
    b'\\x00abcd\\x00'
    """

    def __init__(self, src: np.ndarray, out: np.ndarray) -> None:
        self.src, self.out = src, out
        self._lib = _libdeflate_c
        self._decompressor = None
        if self._lib is not None:
            self._decompressor = self._lib.libdeflate_alloc_decompressor()
            if not self._decompressor:  # pragma: no cover
                raise MemoryError("libdeflate: cannot allocate a decompressor")
            self._src_address, self._out_address = src.ctypes.data, out.ctypes.data
            self._actual = ctypes.c_size_t()

    def __enter__(self) -> _Inflater:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._decompressor is not None:
            self._lib.libdeflate_free_decompressor(self._decompressor)
            self._decompressor = None

    def _check(self, pos: int, size: int, at: int, nbytes: int) -> None:
        # the C call takes raw addresses: both ranges are checked here, whatever the caller
        if pos < 0 or size < 0 or pos + size > len(self.src) or at < 0 \
                or at + nbytes > len(self.out):
            raise ValueError("Blosc: a stream or its place lies outside the frame")

    def copy(self, pos: int, size: int, at: int) -> None:
        """Copy ``size`` stored bytes from ``pos`` to ``at``."""
        self._check(pos, size, at, size)
        self.out[at:at + size] = self.src[pos:pos + size]

    def inflate(self, pos: int, size: int, at: int, nbytes: int) -> None:
        """Inflate the ``size``-byte zlib stream at ``pos`` into ``nbytes`` bytes at
        ``at``: OutputTooLarge if it holds more, ValueError if less or corrupt."""
        self._check(pos, size, at, nbytes)
        if self._decompressor is None:
            piece = inflate(self.src[pos:pos + size], nbytes)
            if len(piece) != nbytes:
                raise ValueError(f"zlib: a stream inflates to {len(piece)} bytes, not {nbytes}")
            self.out[at:at + nbytes] = np.frombuffer(piece, np.uint8)
            return
        result = self._lib.libdeflate_zlib_decompress(
            self._decompressor, self._src_address + pos, size, self._out_address + at,
            nbytes, ctypes.byref(self._actual))
        if result == _LIBDEFLATE_INSUFFICIENT_SPACE:
            raise OutputTooLarge(f"a zlib stream inflates to more than {nbytes} bytes")
        if result != 0:
            raise ValueError("zlib: corrupt stream (or its adler32 checksum is wrong)")
        if self._actual.value != nbytes:
            raise ValueError(f"zlib: a stream inflates to {self._actual.value} bytes, "
                             f"not {nbytes}")


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
