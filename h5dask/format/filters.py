"""The chunk codec pipeline: HSDS filter JSON -> decode/encode of chunk bytes.

How HSDS stores filtered chunks (its storage code is the reference): any compressor,
including deflate/gzip, is applied as a **Blosc frame** (gzip becomes Blosc's zlib),
and byte-shuffle, when combined with a compressor, happens inside Blosc. Shuffle
alone is a plain HDF5-style byte shuffle; bitshuffle is bitshuffle's LZ4 frame.
HSDS accepts but does not apply fletcher32, nbit and scaleoffset, so for its own
chunks they are no-ops. Chunks that live inside an HDF5 file (linked layouts) are
HDF5's own filter output instead: raw zlib, HDF5 shuffle, a fletcher32 trailer.

>>> codec = ChunkCodec.from_filters([{"class": "H5Z_FILTER_DEFLATE", "id": 1, "level": 4}],
...                                 np.dtype("<f4"), (10,))
>>> arr = np.arange(10, dtype="<f4")
>>> bool((codec.decode(codec.encode(arr), "key") == arr).all())
True
"""

from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass, field
from typing import Any

import numcodecs
import numpy as np

from ..errors import CorruptChunkError, HSDSUnreadableWarning, UnsupportedFilterError
from . import codecs as registry
from .codecs.plugin_frames import bitshuffle_hdf5_decode
from .compression import OutputTooLarge, blosc_decompress, unshuffle_into
from .types import has_vlen, hsds_type_problem
from .vlen import (
    REF_LAYOUT_HSDS,
    REF_LAYOUT_KEY,
    REF_LAYOUT_LEGACY,
    decode_vlen,
    encode_vlen,
    has_refs,
)

COMPRESSORS = registry.compressors()  # the built-in ones; registry.compressors() is current

def warn_if_hsds_cannot_read(codec: registry.Codec) -> None:
    """Warn that a dataset written with ``codec`` is readable by h5dask but not by HSDS."""
    if not codec.hsds_decodes:
        warnings.warn(f"compression {codec.name!r}: HSDS has no such filter; an HSDS server "
                      "lists this dataset but cannot read its values (h5dask can). Use gzip, "
                      f"lz4 or zstd for data HSDS must serve.", HSDSUnreadableWarning,
                      stacklevel=4)  # the caller of File.create_dataset


def warn_if_hsds_cannot_serve_type(dtype: np.dtype, name: str) -> None:
    """Warn that dataset ``name`` of ``dtype`` is readable by h5dask (and h5py) but that
    HSDS cannot serve its values (see :func:`types.hsds_type_problem`)."""
    problem = hsds_type_problem(dtype)
    if problem:
        warnings.warn(f"dataset {name!r}: its type holds {problem}, which HSDS 1.0.2 cannot "
                      "store or serve (h5dask and h5py read it); an HSDS server lists this "
                      "dataset but answers 500 for its values", HSDSUnreadableWarning,
                      stacklevel=3)  # the caller of File.create_dataset


#: The most bytes one variable-length chunk may decode to (fixed-size chunks decode to
#: exactly their size). A bound is needed because the decoded size of such a chunk is
#: not known in advance; raise it with the environment variable named below.
VLEN_LIMIT_VARIABLE = "H5DASK_MAX_VLEN_CHUNK_BYTES"
MAX_VLEN_CHUNK_BYTES = int(os.environ.get(VLEN_LIMIT_VARIABLE, 256 << 20))


def filter_name(item: Any) -> str:
    """The canonical name of one filter JSON item (class, id or name)."""
    return registry.lookup(item).name


def native_filters_json(filters: tuple[tuple[int, tuple], ...]) -> list:
    """An HDF5 filter pipeline, ``(filter id, client data)`` pairs as h5py's
    ``dcpl.get_filter`` gives them, as HSDS filter JSON: what reading its chunks as HDF5
    wrote them needs (:meth:`Codec.native_json`). A filter h5dask has no codec for is
    an :class:`~h5dask.errors.UnsupportedFilterError`.

    >>> [f["class"] for f in native_filters_json(((2, (4,)), (1, (5,))))]
    ['H5Z_FILTER_SHUFFLE', 'H5Z_FILTER_DEFLATE']
    """
    out = []
    for code, cd in filters:
        codec = registry.by_hdf5_id(code)
        if codec is None:
            raise UnsupportedFilterError(f"HDF5 filter {code}")
        out.append(codec.native_json(cd))
    return out


def stated_level(filters: list | None) -> int | None:
    """The level the compression filter's JSON states, None if it states none: what
    h5pyd reports as ``compression_opts`` (HSDS then compresses at its own default,
    h5dask at the codec's; no decoder needs it).

    >>> stated_level([{"class": "H5Z_FILTER_LZ4", "id": 32004, "name": "lz4"}]) is None
    True
    >>> stated_level([{"class": "H5Z_FILTER_DEFLATE", "id": 1, "level": 6}])
    6
    """
    for item in filters or []:
        try:
            codec = registry.lookup(item)
        except UnsupportedFilterError:
            continue
        if codec.role == "compressor":
            level = item.get("level") if isinstance(item, dict) else None
            return level if isinstance(level, int) and not isinstance(level, bool) else None
    return None


def filter_json(name: str, level: int | None = None) -> dict:
    """HSDS filter JSON for a filter name ('gzip', 'shuffle', 'lz4', 'zstd', ...)."""
    return registry.lookup(name).json(level)


def is_blosc_frame(data: bytes | memoryview, expected_nbytes: int | None = None) -> bool:
    """True if ``data`` is one whole Blosc frame (of ``expected_nbytes`` decoded)."""
    # header: version, versionlz, flags, typesize, then u32 LE nbytes, blocksize, cbytes
    if len(data) < 16 or data[0] not in (1, 2):
        return False
    nbytes, _blocksize, cbytes = struct.unpack_from("<III", data, 4)
    return cbytes == len(data) and (expected_nbytes is None or nbytes == expected_nbytes)


def fletcher32(data: bytes | memoryview) -> int:
    """HDF5's Fletcher-32 checksum (16-bit big-endian words), bit for bit as
    ``H5_checksum_fletcher32`` computes it."""
    buf = bytes(data)
    words = np.frombuffer(buf, dtype=">u2", count=len(buf) // 2).astype(np.uint64)

    def fold(s: int) -> int:
        # HDF5 folds the carry back in (one's complement), which is not a modulo:
        # a sum that is a multiple of 65535 ends as 0xffff, not 0
        return (s & 0xFFFF) + (s >> 16)

    sum1 = sum2 = 0
    # HDF5 sums blocks of 360 words in uint32 and folds after each block
    for start in range(0, len(words), 360):
        csum = np.cumsum(words[start:start + 360]) + sum1
        sum1 = fold(int(csum[-1]) & 0xFFFFFFFF)
        sum2 = fold((sum2 + int(csum.sum())) & 0xFFFFFFFF)
    if len(buf) % 2:  # the odd last byte is the high byte of one more word
        sum1 = sum1 + (buf[-1] << 8)
        sum2 = fold(sum2 + sum1)
        sum1 = fold(sum1)
    return (fold(sum2) << 16) | fold(sum1)


def _typed_view(arr: np.ndarray) -> np.ndarray:
    """A flat unsigned-int view with the element size, so Blosc shuffles by it."""
    size = arr.dtype.itemsize
    flat = arr.reshape(-1).view(np.uint8)
    return flat.view(f"u{size}") if size in (1, 2, 4, 8) else flat


@dataclass(frozen=True)
class ChunkCodec:
    """Decodes and encodes the chunk objects of one dataset.

    ``hdf5_native`` is for chunks inside an HDF5 file (linked layouts), whose filter
    output is HDF5's own rather than HSDS's.
    """

    dtype: np.dtype
    chunk_shape: tuple[int, ...]
    compressor: str | None = None
    level: int | None = 4
    shuffle: bool = False
    bitshuffle: bool = False
    fletcher32: bool = False
    hdf5_native: bool = False
    #: the registry's codec for ``compressor`` (looked up once, here, not per chunk)
    compressor_codec: registry.Codec | None = field(default=None, compare=False, repr=False)
    #: HDF5's bitshuffle filter in a linked chunk: its compression (lz4, zstd, none) and
    #: the block size in elements of an uncompressed one (0: bitshuffle's default)
    bitshuffle_cname: str = "lz4"
    bitshuffle_block: int = 0
    #: how the dataset says its references inside sequences are laid out (its
    #: :data:`~h5dask.format.vlen.REF_LAYOUT_KEY`): decides a chunk that reads both ways
    ref_layout: str | None = None

    def __post_init__(self) -> None:
        if self.compressor is not None and self.compressor_codec is None:
            object.__setattr__(self, "compressor_codec", registry.lookup(self.compressor))

    @classmethod
    def from_filters(cls, filters: list | None, dtype: np.dtype, chunk_shape: tuple[int, ...],
                     hdf5_native: bool = False) -> ChunkCodec:
        """Build from a ``creationProperties.filters`` list; raises UnsupportedFilterError."""
        comp, level, shuffle, bshuf, f32 = None, 4, False, False, False
        bshuf_item: dict = {}
        for item in filters or []:
            codec = registry.lookup(item)
            # a filter h5dask does not write may still be read as HDF5 wrote it (Blosc2)
            readable = codec.supported or (hdf5_native and codec.decodes_native)
            role = codec.role if readable else None
            if role == "compressor":
                if comp is not None:
                    raise UnsupportedFilterError(f"two compressors: {comp.name} and {codec.name}")
                comp, level = codec, codec.level_of(item)
            elif role == "shuffle":
                shuffle = True
            elif role == "bitshuffle":
                bshuf = True
                bshuf_item = item if isinstance(item, dict) else {}
            elif role == "checksum":
                f32 = True
            elif codec.hsds_noop and not hdf5_native:
                pass  # HSDS stores such chunks as they are: read as HSDS reads them
            elif hdf5_native:
                # HDF5's own output of the filter (scaleoffset, nbit, szip: lossy or
                # packed), in chunks linked inside the file: read raw it would be wrong
                raise UnsupportedFilterError(
                    f"filter {codec.name!r} (HDF5 filter {codec.hdf5_id}) in chunks linked "
                    "inside an HDF5 file: h5dask cannot decode HDF5's output of it; load "
                    "the file without --link (h5dask load copies the values HDF5 decodes)")
            else:
                raise UnsupportedFilterError(
                    f"filter {codec.name!r} is not supported by h5dask (supported: "
                    f"{', '.join(c.name for c in registry.all_codecs() if c.supported)})")
        if hdf5_native and comp is not None and not comp.decodes_native:
            raise UnsupportedFilterError(f"filter {comp.name!r} in a linked HDF5 file")
        if hdf5_native and bshuf and (comp is not None or shuffle):
            raise UnsupportedFilterError("HDF5's bitshuffle filter combined with another "
                                         "shuffle or compressor in a linked HDF5 file")
        if bshuf and comp is not None and comp.blosc_cname is None:
            raise UnsupportedFilterError(f"bitshuffle with {comp.name!r} is not supported")
        return cls(np.dtype(dtype), tuple(chunk_shape), comp and comp.name, level, shuffle, bshuf,
                   f32, hdf5_native, comp, str(bshuf_item.get("cname", "lz4")),
                   int(bshuf_item.get("blocksize", 0)))

    @property
    def is_identity(self) -> bool:
        return self.compressor is None and not (self.shuffle or self.bitshuffle or (
            self.fletcher32 and self.hdf5_native))

    # -- decoding -----------------------------------------------------------------
    def decode_bytes(self, data: bytes | memoryview, key: str, nbytes: int | None) -> bytes:
        """Undo the filters: the chunk's raw element bytes (vlen: encoded sequence).

        Never produces more than ``nbytes`` (the full chunk's size; for variable-length
        chunks :data:`MAX_VLEN_CHUNK_BYTES`): a chunk that holds more is a
        CorruptChunkError naming ``key``, raised before the excess is allocated."""
        limit = MAX_VLEN_CHUNK_BYTES if nbytes is None else nbytes
        try:
            if self.hdf5_native:
                return self._decode_hdf5(data, limit)
            if self.bitshuffle:
                if self.compressor is not None and is_blosc_frame(data):
                    data = blosc_decompress(data, limit)
                if nbytes is not None and len(data) == nbytes:
                    return bytes(data)  # HSDS 1.0.2 lists bitshuffle but stores raw bytes
                return self._bitshuffle_decode(data, key)
            if self.compressor_codec is not None:
                if self.compressor_codec.blosc_cname is not None and is_blosc_frame(data):
                    self._check_blosc_flags(data, key)
                    return blosc_decompress(data, limit)
                raw = self.compressor_codec.decode(data, limit)
                return self._unshuffle(raw) if self.shuffle else raw
            if self.shuffle and nbytes is not None and len(data) == nbytes:
                return self._unshuffle(data)
            return bytes(data) if not isinstance(data, bytes) else data
        except CorruptChunkError:
            raise
        except OutputTooLarge as exc:
            raise CorruptChunkError(key, self._too_large(exc, nbytes)) from None
        except Exception as exc:
            raise CorruptChunkError(key, f"cannot decode ({self._describe()}): {exc}") from exc

    def _too_large(self, exc: OutputTooLarge, nbytes: int | None) -> str:
        """Why a chunk that decodes to too many bytes was refused, and what to do."""
        if nbytes is not None:
            return (f"decodes to more than the chunk's {nbytes} bytes ({exc}; "
                    f"{self._describe()}): damaged or forged, not decoded further")
        return (f"a variable-length chunk larger than {MAX_VLEN_CHUNK_BYTES} bytes decoded "
                f"({exc}; {self._describe()}); if it is genuine, raise the limit with the "
                f"environment variable {VLEN_LIMIT_VARIABLE}")

    def _check_blosc_flags(self, data: bytes | memoryview, key: str) -> None:
        """Blosc frames have no checksum: a flipped shuffle flag or type size would
        unshuffle into wrong values without an error. Both must agree with the dataset
        (h5dask writes the element size, HSDS writes 1, where shuffling does nothing)."""
        flags, typesize = data[2], data[3]
        if typesize not in (1, self.dtype.itemsize) and not has_vlen(self.dtype):
            raise CorruptChunkError(key, f"Blosc header: element size {typesize}, "
                                         f"expected {self.dtype.itemsize} or 1")
        if typesize > 1 and bool(flags & 0x01) != self.shuffle:
            raise CorruptChunkError(key, "Blosc header: shuffle flag "
                                         f"{'set' if flags & 0x01 else 'unset'} but the dataset "
                                         f"{'has' if self.shuffle else 'has no'} shuffle filter")

    def _decode_hdf5(self, data: bytes | memoryview, limit: int) -> bytes:
        # a compressor reads the stored bytes in place; otherwise they are copied once
        buf = data if self.compressor_codec is not None and not self.fletcher32 else bytes(data)
        if self.fletcher32:
            if len(buf) < 4:
                raise ValueError("too short for its fletcher32 checksum")
            stored = struct.unpack("<I", buf[-4:])[0]
            buf = buf[:-4]
            if fletcher32(buf) != stored:
                raise ValueError("fletcher32 checksum mismatch")
        if self.compressor_codec is not None:
            buf = self.compressor_codec.decode_native(buf, limit)
        if self.bitshuffle:
            buf = bitshuffle_hdf5_decode(buf, self.dtype.itemsize, limit, self.bitshuffle_cname,
                                         self.bitshuffle_block)
        if self.shuffle:
            buf = self._unshuffle(buf)
        return buf

    def _decode_hdf5_into(self, data: bytes | memoryview, out: np.ndarray) -> bool:
        """A linked HDF5 chunk (gzip, with or without shuffle) decoded straight into
        ``out``. A chunk that does not decode to exactly ``out`` returns False after all
        (``out`` partly written): :meth:`decode` then decodes it again and says what is
        wrong, or finds an edge chunk stored clipped."""
        if self.fletcher32 or self.compressor_codec is None:
            return False
        element_size = self.dtype.itemsize if self.shuffle else 1
        try:
            return self.compressor_codec.decode_native_into(
                data, out.reshape(-1).view(np.uint8), element_size)
        except ValueError:  # OutputTooLarge included
            return False

    def _unshuffle(self, data: bytes | memoryview) -> bytearray:
        out = bytearray(len(data))
        unshuffle_into(data, self.dtype.itemsize, np.frombuffer(out, np.uint8))
        return out

    def _bitshuffle_decode(self, data: bytes | memoryview, key: str) -> bytes:
        # HSDS frame: 8-byte big-endian total size, 4-byte big-endian block bytes, LZ4 data
        try:
            import bitshuffle
        except ImportError as exc:
            raise UnsupportedFilterError("bitshuffle chunks need the 'bitshuffle' package") from exc
        buf = np.frombuffer(data, dtype=np.uint8)
        if len(buf) < 12:
            raise CorruptChunkError(key, "too short for a bitshuffle header")
        total = int.from_bytes(bytes(buf[:8]), "big")
        block = int.from_bytes(bytes(buf[8:12]), "big") // self.dtype.itemsize
        if total != int(np.prod(self.chunk_shape)) * self.dtype.itemsize:
            raise CorruptChunkError(key, f"bitshuffle header says {total} bytes")
        return bitshuffle.decompress_lz4(buf[12:], self.chunk_shape, self.dtype, block).tobytes()

    def decode(self, data: bytes | memoryview, key: str,
               shape: tuple[int, ...] | None = None) -> np.ndarray:
        """The chunk as an array of the full chunk shape (or ``shape``, an edge chunk
        stored clipped). Raises CorruptChunkError naming ``key`` for bad bytes or size."""
        full = self.chunk_shape
        if has_vlen(self.dtype):
            raw = self.decode_bytes(data, key, None)
            count = int(np.prod(full))
            if has_refs(self.dtype):
                return self._decode_refs(raw, key, count).reshape(full)
            try:
                return decode_vlen(raw, self.dtype, count).reshape(full)
            except ValueError as exc:
                raise CorruptChunkError(key, str(exc)) from exc
        itemsize = self.dtype.itemsize
        want_full = int(np.prod(full)) * itemsize
        want_edge = int(np.prod(shape)) * itemsize if shape is not None else want_full
        raw = self.decode_bytes(data, key, want_full)
        if len(raw) == want_full:
            return self._elements(raw, full)
        if len(raw) == want_edge and shape is not None:
            return self._elements(raw, shape)
        raise CorruptChunkError(
            key, f"decoded to {len(raw)} bytes, expected {want_full} for chunk shape {full} "
                 f"of {self.dtype} ({self._describe()})")

    def _decode_refs(self, raw: bytes, key: str, count: int) -> np.ndarray:
        """Elements holding references: HSDS's 48-byte fields, or (chunks of h5dask before
        12/2026) a byte count and the bare id. Both parses are strict, so bytes read both
        ways only where every reference is null inside a sequence (12 nulls of the old
        layout are 1 of the new); such a chunk reads as the dataset's marker says, and
        without one it is refused rather than guessed."""
        try:
            new = decode_vlen(raw, self.dtype, count)
        except ValueError as exc:
            try:
                return decode_vlen(raw, self.dtype, count, legacy_refs=True)
            except ValueError:
                raise CorruptChunkError(key, str(exc)) from exc
        if self.ref_layout == REF_LAYOUT_HSDS:
            return new
        try:
            old = decode_vlen(raw, self.dtype, count, legacy_refs=True)
        except ValueError:
            return new
        if self.ref_layout == REF_LAYOUT_LEGACY or encode_vlen(old) == encode_vlen(new):
            return old
        raise CorruptChunkError(key, (
            "its sequences of null object references read as HSDS's 48-byte layout and as "
            "the layout h5dask wrote before 12/2026 (4 bytes a null reference), with "
            "different lengths, and the dataset does not say which it holds: refused "
            f"rather than guessed. If HSDS, h5pyd or h5dask 12/2026 or later wrote it, add "
            f'"{REF_LAYOUT_KEY}": "{REF_LAYOUT_HSDS}" to the dataset\'s .dataset.json; if '
            f'an earlier h5dask did, "{REF_LAYOUT_KEY}": "{REF_LAYOUT_LEGACY}"'))

    def _elements(self, raw: bytes | bytearray, shape: tuple[int, ...]) -> np.ndarray:
        # an HDF5 array type (numpy subarray dtype) becomes trailing axes, as h5py reads it
        return np.frombuffer(raw, dtype=self.dtype.base).reshape(shape + self.dtype.shape)

    def decode_into(self, data: bytes | memoryview, key: str, out: np.ndarray) -> bool:
        """Decode a whole chunk straight into ``out`` (C-contiguous, this dtype, the full
        chunk shape), with no buffer in between, when the stored bytes are the raw elements,
        one Blosc frame of exactly ``out.nbytes`` or (linked HDF5 chunks) one zlib stream
        with or without HDF5's shuffle. Returns False when the chunk needs the general
        :meth:`decode` (other filters, a chunk stored clipped at the edge, bytes of the
        wrong size: decode says what is wrong); ``out`` is then untouched, but for a linked
        zlib stream that did not inflate to exactly ``out``.

        >>> codec = ChunkCodec.from_filters(["gzip"], np.dtype("<f4"), (4,))
        >>> out = np.empty(4, "<f4")
        >>> codec.decode_into(codec.encode(np.arange(4, dtype="<f4")), "key", out), out
        (True, array([0., 1., 2., 3.], dtype=float32))
        """
        if (self.bitshuffle or out.dtype != self.dtype or out.shape != self.chunk_shape
                or not out.flags.c_contiguous or has_vlen(self.dtype)):
            return False
        if self.hdf5_native:
            return self._decode_hdf5_into(data, out)
        if self.compressor_codec is not None:
            if self.compressor_codec.blosc_cname is None or not is_blosc_frame(data, out.nbytes):
                return False
            self._check_blosc_flags(data, key)
            try:
                blosc_decompress(data, out.nbytes, out)
            except Exception as exc:
                raise CorruptChunkError(key, f"cannot decode ({self._describe()}): {exc}") from exc
            return True
        if self.shuffle or len(data) != out.nbytes:
            return False
        out.reshape(-1).view(np.uint8)[:] = np.frombuffer(data, dtype=np.uint8)
        return True

    # -- encoding -----------------------------------------------------------------
    def encode(self, chunk: np.ndarray) -> bytes:
        """Bytes of a full chunk as HSDS stores them."""
        arr = np.ascontiguousarray(chunk, dtype=self.dtype)
        if arr.shape != self.chunk_shape:
            raise ValueError(f"chunk of shape {arr.shape}, expected {self.chunk_shape}")
        vlen = has_vlen(self.dtype)
        raw = (encode_vlen(arr, legacy_refs=self.ref_layout == REF_LAYOUT_LEGACY) if vlen
               else arr.tobytes())
        if self.bitshuffle and not vlen and self.compressor_codec is None:
            # HSDS 1.0.2 accepts the bitshuffle filter but neither applies nor undoes it;
            # writing the bytes unshuffled keeps such domains readable by HSDS
            return raw
        if self.compressor_codec is not None and self.compressor_codec.blosc_cname is not None:
            byte_shuffle = self.shuffle and not (vlen or self.bitshuffle)
            # pass the array, not bytes: Blosc takes its shuffle typesize from the itemsize
            return bytes(numcodecs.Blosc(
                cname=self.compressor_codec.blosc_cname, clevel=self.level,
                shuffle=numcodecs.Blosc.SHUFFLE if byte_shuffle else numcodecs.Blosc.NOSHUFFLE,
            ).encode(raw if vlen else _typed_view(arr)))
        if self.shuffle and self.dtype.itemsize > 1 and not vlen:
            raw = bytes(numcodecs.Shuffle(elementsize=self.dtype.itemsize).encode(raw))
        if self.compressor_codec is None:
            return raw
        return self.compressor_codec.encode(raw, self.level)

    def _describe(self) -> str:
        parts = [p for p, on in (("shuffle", self.shuffle), ("bitshuffle", self.bitshuffle),
                                 ("fletcher32", self.fletcher32)) if on]
        if self.compressor:
            parts.append(self.compressor)
        return "filters: " + (", ".join(parts) if parts else "none")
