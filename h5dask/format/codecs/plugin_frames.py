"""The chunk framings of the HDF5 filter plugins that ``hdf5plugin`` ships, decoded bounded.

Chunks inside an HDF5 file (linked layouts) are each plugin's own output, which is not
what HSDS or numcodecs write for a filter of the same name:

- LZ4 (32004): 8-byte big-endian decoded size, 4-byte big-endian block size, then per
  block a 4-byte big-endian compressed size and an LZ4 block (a block whose compressed
  size equals its size is stored as is);
- Zstd (32015): one plain zstd frame;
- Bitshuffle (32008): with LZ4 or zstd, 8-byte big-endian decoded size, 4-byte big-endian
  block size in bytes, then per block of bitshuffled elements a 4-byte big-endian size
  and the compressed block, then the trailing ``size % 8`` elements as they are; without
  compression, the bitshuffled bytes alone;
- Blosc2 (32026): a Blosc2 contiguous frame (a b2nd array for multi-dimensional chunks).

Each decoder takes ``limit``, the most bytes the chunk may decode to, checks every size
the input states against it before allocating, and raises
:class:`~h5dask.format.compression.OutputTooLarge` beyond it and ``ValueError`` for
anything malformed. Libraries: python-lz4, zstandard, bitshuffle, python-blosc2.

>>> import lz4.block
>>> body = lz4.block.compress(bytes(64), store_size=False)
>>> frame = (64).to_bytes(8, "big") + (64).to_bytes(4, "big") + len(body).to_bytes(4, "big")
>>> bytes(lz4_hdf5_decode(frame + body, 64)) == bytes(64)
True
"""

from __future__ import annotations

import numpy as np

from ..compression import OutputTooLarge

__all__ = ["bitshuffle_hdf5_decode", "blosc2_available", "blosc2_decode", "lz4_hdf5_decode",
           "zstd_decode"]

_HEADER = 12  # LZ4 and compressed bitshuffle: u64 BE decoded size, u32 BE block size


def _header(data: memoryview, limit: int, what: str) -> tuple[int, int]:
    if len(data) < _HEADER:
        raise ValueError(f"{what}: {len(data)} bytes, too short for its 12-byte header")
    total = int.from_bytes(data[:8], "big")
    block = int.from_bytes(data[8:12], "big")
    if total > limit:
        raise OutputTooLarge(f"{what}: the header says {total} bytes, more than the "
                             f"{limit} expected")
    return total, block


def _blocks(data: memoryview, pos: int, sizes: list[int], what: str, decode) -> bytearray:
    """Decode consecutive (4-byte big-endian length, block) records of the given decoded
    sizes; the input must hold exactly them (plus ``tail`` handled by the caller)."""
    out = bytearray()
    for size in sizes:
        if pos + 4 > len(data):
            raise ValueError(f"{what}: truncated (block header at byte {pos})")
        stored = int.from_bytes(data[pos:pos + 4], "big")
        pos += 4
        if pos + stored > len(data):
            raise ValueError(f"{what}: a block of {stored} bytes runs past the chunk's end")
        piece = decode(data[pos:pos + stored], size)
        if len(piece) != size:
            raise ValueError(f"{what}: a block decoded to {len(piece)} bytes, not {size}")
        out += piece
        pos += stored
    if pos != len(data):
        raise ValueError(f"{what}: {len(data) - pos} bytes after the last block")
    return out


def _lz4_block(data: memoryview, size: int) -> bytes:
    import lz4.block

    try:  # the output buffer is ``size`` bytes: LZ4 cannot write past it
        return lz4.block.decompress(bytes(data), uncompressed_size=size)
    except lz4.block.LZ4BlockError as exc:
        raise ValueError(f"LZ4: {exc}") from None


def lz4_hdf5_decode(data: bytes | memoryview, limit: int) -> bytearray:
    """Undo HDF5's LZ4 filter (32004, ``hdf5plugin.LZ4``)."""
    view = memoryview(data).cast("B")
    total, block = _header(view, limit, "HDF5 LZ4")
    if total == 0:
        if len(view) != _HEADER:
            raise ValueError("HDF5 LZ4: bytes after an empty chunk's header")
        return bytearray()
    if block == 0:
        raise ValueError("HDF5 LZ4: block size 0")
    sizes = [block] * (total // block) + ([total % block] if total % block else [])

    def one(piece: memoryview, size: int) -> bytes:
        return bytes(piece) if len(piece) == size else _lz4_block(piece, size)

    return _blocks(view, _HEADER, sizes, "HDF5 LZ4", one)


def zstd_decode(data: bytes | memoryview, limit: int) -> bytearray:
    """Decode zstd frames (HDF5's Zstd filter 32015 writes one), at most ``limit`` bytes;
    a stream that ends early is a ValueError."""
    import zstandard

    src = bytes(data)
    out = bytearray()
    try:
        # a frame's stated content size is not trusted: the reader is bounded by read()
        with zstandard.ZstdDecompressor().stream_reader(src, read_across_frames=True) as r:
            while len(out) <= limit:
                piece = r.read(limit + 1 - len(out))
                if not piece:
                    break
                out += piece
    except zstandard.ZstdError as exc:
        raise ValueError(f"zstd: {exc}") from None
    if len(out) > limit:
        raise OutputTooLarge(f"zstd: decodes to more than {limit} bytes")
    if src and not out and limit:
        raise ValueError("zstd: no complete frame")
    return out


def _zstd_block(data: memoryview, size: int) -> bytearray:
    return zstd_decode(data, size)


def bitshuffle_hdf5_decode(data: bytes | memoryview, itemsize: int, limit: int,
                           cname: str = "lz4", block_elements: int = 0) -> bytes:
    """Undo HDF5's bitshuffle filter (32008, ``hdf5plugin.Bitshuffle``): ``cname`` is the
    compression it applied ("lz4", "zstd" or "none"), ``block_elements`` the block size of
    an uncompressed chunk (0: bitshuffle's default; compressed chunks state theirs)."""
    import bitshuffle

    view = memoryview(data).cast("B")
    what = f"HDF5 bitshuffle ({cname})"
    if cname == "none":
        if len(view) > limit:
            raise OutputTooLarge(f"{what}: {len(view)} bytes, more than the {limit} expected")
        raw, block = view, block_elements
    else:
        decode = {"lz4": _lz4_block, "zstd": _zstd_block}.get(cname)
        if decode is None:
            raise ValueError(f"{what}: unknown compression")
        total, block_bytes = _header(view, limit, what)
        if total % itemsize or block_bytes % itemsize:
            raise ValueError(f"{what}: sizes {total}/{block_bytes} are not whole elements of "
                             f"{itemsize} bytes")
        block = block_bytes // itemsize
        if block == 0 or block % 8:
            raise ValueError(f"{what}: block of {block} elements (must be a multiple of 8)")
        count = total // itemsize
        last = count % block - count % block % 8
        sizes = [block * itemsize] * (count // block) + ([last * itemsize] if last else [])
        tail = count % 8 * itemsize  # stored as is, after the blocks
        head = _blocks(view[:len(view) - tail], _HEADER, sizes, what, decode)
        raw = memoryview(bytes(head) + bytes(view[len(view) - tail:]))
    if len(raw) % itemsize:
        raise ValueError(f"{what}: {len(raw)} bytes are not whole elements of {itemsize}")
    elements = np.frombuffer(raw, dtype=f"V{itemsize}")
    return bitshuffle.bitunshuffle(elements, block).tobytes()


def blosc2_available() -> bool:
    """True when python-blosc2 is installed (Blosc2 chunks can be decoded); it is not
    imported here: it is heavy, and needed only when a Blosc2 chunk is read."""
    import importlib.util

    return importlib.util.find_spec("blosc2") is not None


def blosc2_decode(data: bytes | memoryview, limit: int) -> bytes:
    """Undo HDF5's Blosc2 filter (32026, ``hdf5plugin.Blosc2``): a Blosc2 frame, whose
    multi-dimensional (b2nd) chunks are stored block by block and read back in C order."""
    import blosc2

    try:
        schunk = blosc2.schunk_from_cframe(bytes(data), copy=True)
    except Exception as exc:  # noqa: BLE001 - c-blosc2 raises plain errors
        raise ValueError(f"Blosc2: not a frame ({exc})") from None
    if schunk.nbytes > limit:
        raise OutputTooLarge(f"Blosc2: the frame says {schunk.nbytes} bytes, more than the "
                             f"{limit} expected")
    try:
        if "b2nd" in schunk.meta:
            array = blosc2.ndarray_from_cframe(bytes(data), copy=True)
            if int(np.prod(array.shape)) * array.dtype.itemsize > limit:
                raise OutputTooLarge(f"Blosc2: an array of {array.shape} is more than the "
                                     f"{limit} bytes expected")
            return np.ascontiguousarray(array[...]).tobytes()
        return bytes(schunk[:])
    except OutputTooLarge:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ValueError(f"Blosc2: {exc}") from None
