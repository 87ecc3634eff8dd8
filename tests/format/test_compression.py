"""Bounded decompression (h5dask/format/compression.py): the fast path (libdeflate, Blosc
zlib frames inflated block by block here) gives exactly what numcodecs and zlib give,
with and without libdeflate, and nothing decodes beyond its limit."""

from __future__ import annotations

import itertools
import random
import zlib

import numcodecs
import numpy as np
import pytest
from numcodecs import blosc

from h5dask.errors import CorruptChunkError
from h5dask.format import compression, filters
from h5dask.format.compression import OutputTooLarge, blosc_decompress, inflate
from h5dask.format.filters import ChunkCodec


@pytest.fixture(params=["libdeflate C API", "libdeflate", "zlib"])
def inflater(request, monkeypatch) -> str:
    """Run a test with libdeflate's C API (inflating into place), with the ``deflate``
    package's Python API, and with the pure-zlib fallback."""
    if request.param != "zlib":
        pytest.importorskip("deflate")
    if request.param != "libdeflate C API":
        monkeypatch.setattr(compression, "_libdeflate_c", None)
    if request.param == "zlib":
        monkeypatch.setattr(compression, "_libdeflate", None)
    return request.param


def test_libdeflate_c_api_is_found_in_the_deflate_package() -> None:
    """The fast path inflates into place through the C functions the ``deflate``
    package's library exports; a build of it without them would silently fall back."""
    pytest.importorskip("deflate")
    assert compression._libdeflate_c is not None


def _payload(kind: str, nbytes: int, rng: np.random.Generator) -> bytes:
    if kind == "random":  # incompressible: Blosc stores such blocks verbatim
        return rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes()
    n = nbytes // 4 + 1
    smooth = 280 + 10 * np.sin(np.arange(n) / 50) + rng.normal(0, 0.5, n)
    return np.round(smooth, 2).astype("<f4").tobytes()[:nbytes]


@pytest.mark.parametrize("typesize", [1, 2, 4, 8, 16, 3])
def test_blosc_zlib_frames_decode_as_numcodecs_does(inflater: str, typesize: int) -> None:
    rng = np.random.default_rng(typesize)
    for count, level, shuffle, kind in itertools.product(
            [0, 1, 31, 1000, 40_001], [0, 4, 9], [0, 1], ["random", "smooth"]):
        raw = _payload(kind, count * typesize, rng)
        items = np.frombuffer(raw, f"V{typesize}") if typesize > 1 and raw else raw
        frame = bytes(numcodecs.Blosc(cname="zlib", clevel=level, shuffle=shuffle).encode(items))
        case = (typesize, count, level, shuffle, kind)
        assert blosc_decompress(frame, len(raw)) == raw, case
        if raw:  # (numcodecs refuses empty frames)
            assert blosc.decompress(frame) == raw, case
        out = np.empty(len(raw), np.uint8)
        assert blosc_decompress(frame, len(raw), out) is None
        assert out.tobytes() == raw, case


def test_a_4_mib_float_chunk_decodes_identically(inflater: str) -> None:
    """The benchmark's chunk: 4 MiB of float32, gzip(4) + shuffle as HSDS stores it."""
    values = np.frombuffer(_payload("smooth", 4 << 20, np.random.default_rng(0)), "<f4")
    codec = ChunkCodec.from_filters(["shuffle", "gzip"], np.dtype("<f4"), values.shape)
    stored = codec.encode(values)
    np.testing.assert_array_equal(codec.decode(stored, "k"), values)
    out = np.empty_like(values)
    assert codec.decode_into(stored, "k", out)
    assert out.tobytes() == values.tobytes()


def test_hdf5_native_gzip_shuffle_decodes_identically(inflater: str) -> None:
    values = np.frombuffer(_payload("smooth", 1 << 16, np.random.default_rng(1)), "<f4")
    shuffled = numcodecs.Shuffle(elementsize=4).encode(values)
    codec = ChunkCodec.from_filters(["shuffle", "gzip"], np.dtype("<f4"), values.shape,
                                    hdf5_native=True)
    got = codec.decode(zlib.compress(bytes(shuffled), 6), "k")
    assert got.tobytes() == values.tobytes()


def test_inflate_is_bounded_and_checked(inflater: str) -> None:
    stream = zlib.compress(bytes(range(256)) * 64)
    assert bytes(inflate(stream, 1 << 14)) == bytes(range(256)) * 64
    with pytest.raises(OutputTooLarge):
        inflate(stream, (1 << 14) - 1)
    with pytest.raises(ValueError):  # truncated
        inflate(stream[:-10], 1 << 14)
    flipped = bytearray(stream)
    flipped[-1] ^= 1  # the adler32 checksum
    with pytest.raises(ValueError):
        inflate(bytes(flipped), 1 << 14)


def test_a_blosc_header_claiming_too_much_is_refused_before_decoding() -> None:
    frame = bytearray(numcodecs.Blosc(cname="zstd").encode(bytes(1 << 16)))
    frame[4:8] = (2**31 - 1).to_bytes(4, "little")  # nbytes: 2 GiB
    with pytest.raises(OutputTooLarge, match="2147483647"):
        blosc_decompress(bytes(frame), 1 << 16)


def test_damaged_blosc_zlib_frames_raise_value_errors(inflater: str) -> None:
    """Random damage to a frame's header, block table and streams: the right bytes, or
    a ValueError (never another exception, never more than the limit)."""
    raw = _payload("smooth", 1 << 16, np.random.default_rng(2))
    frame = bytes(numcodecs.Blosc(cname="zlib", clevel=4, shuffle=1).encode(
        np.frombuffer(raw, "<f4")))
    rng = random.Random(3)
    for _ in range(400):
        damaged = bytearray(frame)
        for _ in range(rng.randint(1, 3)):
            damaged[rng.randrange(len(frame))] = rng.randrange(256)
        try:
            got = blosc_decompress(bytes(damaged), len(raw))
        except ValueError:
            continue
        assert len(got) <= len(raw)


def test_a_variable_length_chunk_is_bounded_too(monkeypatch) -> None:
    dt = np.dtype("O", metadata={"vlen": str})
    codec = ChunkCodec.from_filters(["gzip"], dt, (4,))
    stored = codec.encode(np.array(["a" * 5000] * 4, dtype=object))
    monkeypatch.setattr(filters, "MAX_VLEN_CHUNK_BYTES", 1000)
    with pytest.raises(CorruptChunkError, match=filters.VLEN_LIMIT_VARIABLE):
        codec.decode(stored, "db/x/d/0")


@pytest.mark.parametrize("element_size", [1, 2, 3, 4, 5, 8, 16])
@pytest.mark.parametrize("count", [0, 1, 7, 1000])
@pytest.mark.parametrize("tail", [0, 1])
def test_unshuffle_into_matches_numcodecs(element_size: int, count: int, tail: int) -> None:
    """Word arithmetic (element sizes 2, 4, 8) and the numcodecs fallback give HDF5's
    unshuffle exactly, trailing bytes that fill no element copied as they are."""
    raw = np.random.default_rng(count).integers(0, 256, count * element_size + tail,
                                                dtype=np.uint8)
    whole = count * element_size
    expected = raw.copy()
    if element_size > 1 and whole:
        expected[:whole] = numcodecs.Shuffle(elementsize=element_size).decode(raw[:whole])
    out = np.empty_like(raw)
    compression.unshuffle_into(raw.tobytes(), element_size, out)
    assert out.tobytes() == expected.tobytes()


@pytest.mark.parametrize("dtype", ["<i2", "<f4", ">f4", "<f8", "<c8"])
def test_gzip_shuffle_chunks_decode_without_numcodecs_shuffle(dtype: str, monkeypatch) -> None:
    """Blosc zlib frames and linked HDF5 chunks of 2-, 4- and 8-byte elements are
    unshuffled by c-blosc or numpy word arithmetic (both release the GIL), never by
    numcodecs' Shuffle (which holds it while two dask threads could be decoding)."""
    values = np.frombuffer(_payload("smooth", 1 << 18, np.random.default_rng(4)), "<f4")
    values = values.view(np.uint8)[:(1 << 18) // 16 * 16].view(dtype)
    blosc_codec = ChunkCodec.from_filters(["shuffle", "gzip"], values.dtype, values.shape)
    native_codec = ChunkCodec.from_filters(["shuffle", "gzip"], values.dtype, values.shape,
                                           hdf5_native=True)
    stored = blosc_codec.encode(values)
    linked = zlib.compress(numcodecs.Shuffle(elementsize=values.dtype.itemsize).encode(
        values.view(np.uint8)).tobytes())

    def refuse(*args, **kwargs):
        raise AssertionError("numcodecs.Shuffle used on the read path")

    monkeypatch.setattr(numcodecs.Shuffle, "decode", refuse)
    out = np.empty_like(values)
    assert blosc_codec.decode_into(stored, "k", out)
    assert out.tobytes() == values.tobytes()
    assert blosc_codec.decode(stored, "k").tobytes() == values.tobytes()
    assert native_codec.decode(linked, "k").tobytes() == values.tobytes()


def test_a_split_block_that_is_no_multiple_of_its_streams_is_refused() -> None:
    """A forged frame whose block cannot be split in ``typesize`` equal streams would
    leave bytes of the output unwritten: a ValueError instead."""
    size, typesize = 4099, 4  # split (>= 128 elements, flag unset) but not divisible
    body = b"".join(len(part).to_bytes(4, "little") + part
                    for part in [zlib.compress(bytes(size // typesize))] * typesize)
    table = (16 + 4).to_bytes(4, "little")
    header = bytes([2, 1, 0x01 | (3 << 5), typesize]) + b"".join(
        n.to_bytes(4, "little") for n in (size, size, 16 + len(table) + len(body)))
    with pytest.raises(ValueError, match="split in 4 streams"):
        blosc_decompress(header + table + body, size)


def _zlib_frame(streams: list[bytes], size: int, typesize: int = 4) -> bytes:
    """A Blosc zlib frame of one split, shuffled block of ``size`` bytes made of
    ``streams`` (stored as given: forged frames for the error paths)."""
    body = b"".join(len(part).to_bytes(4, "little") + part for part in streams)
    table = (16 + 4).to_bytes(4, "little")
    header = bytes([2, 1, 0x01 | (3 << 5), typesize]) + b"".join(
        n.to_bytes(4, "little") for n in (size, size, 16 + len(table) + len(body)))
    return header + table + body


@pytest.mark.parametrize("into", [False, True])
def test_a_stream_longer_or_shorter_than_its_part_is_refused(inflater: str, into: bool) -> None:
    """Each stream inflates into exactly its part of the block: one that holds more is
    OutputTooLarge (nothing written past its part), one that holds less a ValueError."""
    part = 1024
    good = [zlib.compress(bytes([k]) * part) for k in range(4)]
    out = np.empty(4 * part, np.uint8)
    expected = np.repeat(np.arange(4, dtype=np.uint8)[None, :], part, axis=0).tobytes()
    if into:
        assert blosc_decompress(_zlib_frame(good, 4 * part), 4 * part, out) is None
        assert out.tobytes() == expected
    else:
        assert bytes(blosc_decompress(_zlib_frame(good, 4 * part), 4 * part)) == expected
    for bad, error in ((zlib.compress(bytes(part + 1)), OutputTooLarge),
                       (zlib.compress(bytes(part - 1)), ValueError),
                       (zlib.compress(bytes(part))[:-3], ValueError)):
        frame = _zlib_frame([*good[:3], bad], 4 * part)
        with pytest.raises(error):
            blosc_decompress(frame, 4 * part, out if into else None)


def test_two_threads_decode_frames_at_once() -> None:
    """The frames decoded concurrently (two dask threads) come out exactly right: the
    inflate and the unshuffle keep no state shared between calls."""
    import concurrent.futures

    rng = np.random.default_rng(7)
    values = [np.frombuffer(_payload("smooth", 1 << 20, rng), "<f4") for _ in range(8)]
    codec = ChunkCodec.from_filters(["shuffle", "gzip"], np.dtype("<f4"), values[0].shape)
    frames = [codec.encode(v) for v in values]

    def decode(i: int) -> bool:
        out = np.empty_like(values[i % 8])
        return codec.decode_into(frames[i % 8], "k", out) and out.tobytes() == \
            values[i % 8].tobytes()

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        assert all(pool.map(decode, range(32)))


@pytest.mark.parametrize("element_size", [1, 2, 3, 4, 8, 16, 300])
@pytest.mark.parametrize("tail", [0, 3])
def test_inflate_into_undoes_hdf5_shuffle_as_numcodecs_does(inflater: str, element_size: int,
                                                            tail: int) -> None:
    """A linked HDF5 chunk's zlib stream of shuffled bytes, inflated and unshuffled into
    place (c-blosc's unshuffle up to 255-byte elements, numpy's beyond): exactly HDF5's
    bytes, trailing bytes that fill no element as they are."""
    raw = np.frombuffer(_payload("smooth", 1000 * element_size + tail,
                                 np.random.default_rng(element_size)), np.uint8)
    whole = len(raw) // element_size * element_size
    shuffled = raw.copy()
    if element_size > 1:
        shuffled[:whole] = numcodecs.Shuffle(elementsize=element_size).encode(raw[:whole])
    out = np.empty_like(raw)
    compression.inflate_into(zlib.compress(shuffled.tobytes(), 4), out, element_size)
    assert out.tobytes() == raw.tobytes()


@pytest.mark.parametrize("dtype", ["<f4", "<f8", "<i2", "u1"])
def test_linked_gzip_chunks_decode_into_place(inflater: str, dtype: str) -> None:
    """Linked HDF5 gzip chunks, shuffled or not, decode straight into the output
    (decode_into) to exactly what the general decode gives."""
    values = np.frombuffer(_payload("smooth", 1 << 16, np.random.default_rng(5)), "<f4")
    values = values.view(np.uint8).view(dtype).reshape(16, -1)
    for shuffle in (False, True):
        filters_ = ["shuffle", "gzip"] if shuffle else ["gzip"]
        codec = ChunkCodec.from_filters(filters_, values.dtype, values.shape, hdf5_native=True)
        raw = values.tobytes()
        if shuffle:
            raw = numcodecs.Shuffle(elementsize=values.dtype.itemsize).encode(raw).tobytes()
        stored = zlib.compress(raw, 4)
        out = np.empty_like(values)
        assert codec.decode_into(stored, "k", out)
        assert out.tobytes() == values.tobytes() == codec.decode(stored, "k").tobytes()


def test_a_linked_chunk_of_the_wrong_size_is_refused_naming_its_key(inflater: str) -> None:
    """A linked zlib stream that inflates to more or less than the chunk: decode_into
    leaves it to decode, which raises CorruptChunkError naming the chunk."""
    codec = ChunkCodec.from_filters(["shuffle", "gzip"], np.dtype("<f4"), (256,),
                                    hdf5_native=True)
    out = np.empty(256, "<f4")
    for nbytes, message in ((1025, "more than the chunk's 1024 bytes"),
                            (1020, "decoded to 1020 bytes")):
        stored = zlib.compress(bytes(nbytes))
        assert not codec.decode_into(stored, "file.h5[0:9]", out)
        with pytest.raises(CorruptChunkError, match=message) as caught:
            codec.decode(stored, "file.h5[0:9]")
        assert "file.h5[0:9]" in str(caught.value)
    assert not codec.decode_into(zlib.compress(bytes(1024))[:-4], "k", out)  # truncated


def test_the_kept_scratch_buffer_never_leaks_into_another_chunk(monkeypatch) -> None:
    """Shuffled frames are inflated into a thread's kept scratch buffer (or a fresh one
    above SCRATCH_KEPT_BYTES): chunks of growing and shrinking sizes, one after the
    other, each decode exactly, with the buffer kept or not."""
    rng = np.random.default_rng(8)
    for kept in (compression.SCRATCH_KEPT_BYTES, 1024):
        monkeypatch.setattr(compression, "SCRATCH_KEPT_BYTES", kept)
        for nbytes in (1 << 22, 4096, 1 << 21, 40, 1 << 22):
            raw = _payload("smooth", nbytes, rng)
            frame = bytes(numcodecs.Blosc(cname="zlib", clevel=4, shuffle=1).encode(
                np.frombuffer(raw, "<f4")))
            assert bytes(blosc_decompress(frame, nbytes)) == raw
            out = np.empty(nbytes, np.uint8)
            compression.inflate_into(zlib.compress(numcodecs.Shuffle(elementsize=4).encode(
                raw).tobytes()), out, 4)
            assert out.tobytes() == raw
