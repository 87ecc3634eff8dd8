"""The chunk codec pipeline: every filter HSDS applies, HDF5's own filter output for
chunks inside HDF5 files, and errors naming the chunk key."""

from __future__ import annotations

import struct
import zlib

import numcodecs
import numpy as np
import pytest
from numcodecs import blosc

import h5dask
from h5dask.errors import CorruptChunkError, UnsupportedFilterError
from h5dask.format.filters import ChunkCodec, filter_json, filter_name, fletcher32

KEY = "db/01234567-89abcdef/d/0000-1a2b3c-4d5e6f/1_2"

CONFIGS = {  # name -> filter list as HSDS writes it
    "none": [],
    "gzip1": [filter_json("gzip", 1)],
    "gzip9": [filter_json("gzip", 9)],
    "gzip+shuffle": [filter_json("shuffle"), filter_json("gzip", 4)],
    "shuffle": [filter_json("shuffle")],
    "lz4": [filter_json("lz4")],
    "lz4hc": [filter_json("lz4hc")],
    "zstd": [filter_json("zstd", 3)],
    "blosclz": [filter_json("blosclz")],
    "bitshuffle": [filter_json("bitshuffle")],
    "bitshuffle+zstd": [filter_json("bitshuffle"), filter_json("zstd")],
    "fletcher32": [filter_json("fletcher32")],
    "shuffle+gzip+fletcher32": [filter_json("shuffle"), filter_json("gzip"),
                                filter_json("fletcher32")],
}
DTYPES = ["<i1", ">i2", "<u4", ">i8", "<f2", ">f4", "<f8", "S5",
          [("a", "<i4"), ("b", ">f8", (2,))]]


def _sample(dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    n = int(np.prod(shape))
    raw = (np.arange(n * dtype.itemsize, dtype=np.uint64) * 7919 % 251).astype(np.uint8)
    arr = raw.view(dtype) if dtype.kind != "f" else np.linspace(-3, 3, n).astype(dtype)
    return arr.reshape(shape)


@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_roundtrip(config: str, dtype: object) -> None:
    dt = np.dtype(dtype)
    codec = ChunkCodec.from_filters(CONFIGS[config], dt, (6, 7))
    arr = _sample(dt, (6, 7))
    data = codec.encode(arr)
    back = codec.decode(data, KEY)
    assert back.dtype == dt and back.shape == (6, 7)
    assert back.tobytes() == arr.tobytes()


def test_codec_flags() -> None:
    codec = ChunkCodec.from_filters(CONFIGS["shuffle+gzip+fletcher32"], np.dtype("<f4"), (4,))
    assert (codec.compressor, codec.shuffle, codec.fletcher32) == ("gzip", True, True)
    assert ChunkCodec.from_filters(CONFIGS["gzip9"], np.dtype("<f4"), (4,)).level == 9
    assert ChunkCodec.from_filters([], np.dtype("<f4"), (4,)).is_identity
    # HSDS accepts fletcher32 but does not apply it: its chunks are stored plain
    plain = ChunkCodec.from_filters([], np.dtype("<f4"), (4,))
    f32 = ChunkCodec.from_filters(CONFIGS["fletcher32"], np.dtype("<f4"), (4,))
    arr = np.arange(4, dtype="<f4")
    assert f32.encode(arr) == plain.encode(arr) == arr.tobytes()


@pytest.mark.parametrize("config", ["gzip1", "gzip+shuffle", "lz4", "zstd", "blosclz"])
def test_compressors_write_blosc_frames(config: str) -> None:
    """HSDS stores every compressor's output as a Blosc frame, gzip as Blosc's zlib."""
    dt = np.dtype("<i4")
    codec = ChunkCodec.from_filters(CONFIGS[config], dt, (100,))
    data = codec.encode(np.arange(100, dtype=dt))
    # Blosc header: version, versionlz, flags, typesize, u32 nbytes, blocksize, cbytes
    flags, typesize = data[2], data[3]
    nbytes, _, cbytes = struct.unpack_from("<III", data, 4)
    assert (nbytes, cbytes, typesize) == (400, len(data), 4)
    assert bool(flags & 0x1) == (config == "gzip+shuffle")  # Blosc's byte shuffle
    expected = {"gzip1": "zlib", "gzip+shuffle": "zlib", "lz4": "lz4", "zstd": "zstd",
                "blosclz": "blosclz"}[config]
    assert blosc.cbuffer_complib(data).lower() == expected


def test_gzip_raw_zlib_fallback() -> None:
    """A plain zlib stream (not a Blosc frame) decodes too, as in HSDS's reader."""
    arr = np.arange(50, dtype=">i4")
    codec = ChunkCodec.from_filters(CONFIGS["gzip1"], arr.dtype, (50,))
    np.testing.assert_array_equal(codec.decode(zlib.compress(arr.tobytes()), KEY), arr)
    codec = ChunkCodec.from_filters(CONFIGS["gzip+shuffle"], arr.dtype, (50,))
    shuffled = numcodecs.Shuffle(elementsize=4).encode(arr.tobytes())
    np.testing.assert_array_equal(codec.decode(zlib.compress(bytes(shuffled)), KEY), arr)


def test_vlen_chunks() -> None:
    strs = np.empty((2, 2), dtype=h5dask.string_dtype())
    strs[...] = [["a", "bé"], ["", "long " * 20]]
    for config in ("none", "gzip1", "lz4"):
        codec = ChunkCodec.from_filters(CONFIGS[config], strs.dtype, (2, 2))
        assert codec.decode(codec.encode(strs), KEY).tolist() == strs.tolist()
    raw = ChunkCodec(strs.dtype, (2, 2)).encode(strs)
    assert raw[:5] == b"\x01\x00\x00\x00a"  # 4-byte little-endian length, then the bytes
    seq = np.empty(3, dtype=h5dask.vlen_dtype(">f4"))
    seq[:] = [np.arange(3, dtype=">f4"), np.zeros(0, ">f4"), np.ones(1, ">f4")]
    codec = ChunkCodec.from_filters(CONFIGS["zstd"], seq.dtype, (3,))
    back = codec.decode(codec.encode(seq), KEY)
    assert [b.tolist() for b in back] == [[0, 1, 2], [], [1]]
    mixed = np.dtype([("n", "<i2"), ("s", h5dask.string_dtype())])
    rec = np.empty(2, dtype=mixed)
    rec[0], rec[1] = (1, "x"), (-2, "yz")
    codec = ChunkCodec(mixed, (2,))
    # a string member of a compound reads back as bytes, as h5py and h5netcdf read it
    assert codec.decode(codec.encode(rec), KEY).tolist() == [(1, b"x"), (-2, b"yz")]


def test_edge_chunk_stored_clipped() -> None:
    codec = ChunkCodec.from_filters([], np.dtype("<i2"), (4, 4))
    clipped = np.arange(8, dtype="<i2").reshape(2, 4)
    back = codec.decode(clipped.tobytes(), KEY, shape=(2, 4))
    np.testing.assert_array_equal(back, clipped)


# -- interoperability with HSDS's own (de)compression code --------------------------------
@pytest.fixture(scope="module")
def hsds_stor():
    return pytest.importorskip("hsds.util.storUtil")


@pytest.mark.parametrize("compressor, shuffle", [
    ("zlib", 0), ("zlib", 1), ("lz4", 0), ("lz4", 1), ("zstd", 1), ("blosclz", 0),
])
def test_hsds_interop(hsds_stor, compressor: str | None, shuffle: int) -> None:
    dt, shape = np.dtype("<f8"), (8, 16)
    arr = _sample(dt, shape)
    filters = []
    if shuffle == 1:
        filters.append(filter_json("shuffle"))
    if compressor:
        filters.append(filter_json("gzip" if compressor == "zlib" else compressor))
    codec = ChunkCodec.from_filters(filters, dt, shape)
    ops = {"compressor": compressor, "shuffle": shuffle, "level": 5, "dtype": dt,
           "chunk_shape": shape}
    theirs = hsds_stor._compress(arr.tobytes(), **ops)
    np.testing.assert_array_equal(codec.decode(theirs, KEY), arr)  # we read what HSDS writes
    ours = codec.encode(arr)
    assert hsds_stor._uncompress(ours, **ops) == arr.tobytes()  # HSDS reads what we write


def test_bitshuffle_both_forms(hsds_stor) -> None:
    """HSDS 1.0.2 lists bitshuffle but stores such chunks unshuffled (its filter lookup only
    knows H5Z_FILTER_SHUFFLE); its own bitshuffle frame (12-byte header + LZ4 blocks) must
    still decode, as must the raw bytes h5dask writes."""
    dt, shape = np.dtype("<i4"), (16, 16)
    arr = _sample(dt, shape)
    frame = hsds_stor._shuffle(2, arr.tobytes(), chunk_shape=shape, dtype=dt)
    assert frame[:8] == arr.nbytes.to_bytes(8, "big")
    for filters in (CONFIGS["bitshuffle"], CONFIGS["bitshuffle+zstd"]):
        codec = ChunkCodec.from_filters(filters, dt, shape)
        np.testing.assert_array_equal(codec.decode(frame, KEY), arr)
        np.testing.assert_array_equal(codec.decode(codec.encode(arr), KEY), arr)
    codec = ChunkCodec.from_filters(CONFIGS["bitshuffle"], dt, shape)
    assert codec.encode(arr) == arr.tobytes()
    assert hsds_stor._uncompress(codec.encode(arr), compressor=None, shuffle=0, dtype=dt,
                                 chunk_shape=shape) == arr.tobytes()


# -- chunks inside HDF5 files (linked layouts): HDF5's own filter output ------------------
@pytest.mark.parametrize("kwargs, filters", [
    ({"compression": "gzip"}, [filter_json("gzip")]),
    ({"compression": "gzip", "shuffle": True}, [filter_json("shuffle"), filter_json("gzip")]),
    ({"shuffle": True}, [filter_json("shuffle")]),
    ({"fletcher32": True, "compression": "gzip", "shuffle": True},
     [filter_json("shuffle"), filter_json("gzip"), filter_json("fletcher32")]),
    ({"fletcher32": True}, [filter_json("fletcher32")]),
])
def test_hdf5_native_chunks(tmp_path, kwargs: dict, filters: list) -> None:
    h5py = pytest.importorskip("h5py")
    arr = np.arange(1000, dtype=">i4").reshape(10, 100) * 37
    with h5py.File(tmp_path / "x.h5", "w") as f:
        ds = f.create_dataset("x", data=arr, chunks=(5, 100), **kwargs)
        _, raw = ds.id.read_direct_chunk((5, 0))
    codec = ChunkCodec.from_filters(filters, arr.dtype, (5, 100), hdf5_native=True)
    np.testing.assert_array_equal(codec.decode(raw, KEY), arr[5:])
    if kwargs.get("fletcher32"):
        bad = bytearray(raw)
        bad[3] ^= 0x40
        with pytest.raises(CorruptChunkError, match="fletcher32 checksum mismatch") as err:
            codec.decode(bytes(bad), KEY)
        assert err.value.key == KEY


@pytest.mark.parametrize("data", [
    np.full(720, 255, "u1"), np.full(7, 255, "u1"), np.zeros(0, "u1"),
    np.arange(1001, dtype="u1"), np.random.default_rng(5).integers(0, 256, 4099).astype("u1"),
], ids=["all-ff-one-block", "odd-all-ff", "empty", "odd", "random"])
def test_fletcher32_matches_hdf5(tmp_path, data: np.ndarray) -> None:
    h5py = pytest.importorskip("h5py")
    if data.size == 0:
        assert fletcher32(b"") == 0
        return
    with h5py.File(tmp_path / "f.h5", "w") as f:
        ds = f.create_dataset("x", data=data, chunks=data.shape, fletcher32=True)
        _, raw = ds.id.read_direct_chunk((0,))
    assert fletcher32(raw[:-4]) == struct.unpack("<I", raw[-4:])[0]


# -- names and unsupported filters -------------------------------------------------------
def test_filter_names() -> None:
    assert filter_name({"class": "H5Z_FILTER_DEFLATE", "id": 1, "level": 4}) == "gzip"
    assert filter_name({"id": 32015}) == "zstd"
    assert filter_name({"name": "Deflate"}) == "gzip"
    assert filter_name("blosc") == "blosclz"
    assert filter_json("deflate", 6) == {"class": "H5Z_FILTER_DEFLATE", "id": 1,
                                         "name": "gzip", "level": 6}
    assert filter_json("shuffle") == {"class": "H5Z_FILTER_SHUFFLE", "id": 2,
                                      "name": "shuffle"}
    with pytest.raises(UnsupportedFilterError, match="nosuch"):
        filter_json("nosuch")


@pytest.mark.parametrize("filters, named", [
    ([{"class": "H5Z_FILTER_MAGIC", "id": 31999}], "H5Z_FILTER_MAGIC"),
    ([{"id": 307}], "307"),
    ([{"class": "H5Z_FILTER_SZIP", "id": 4}], "szip"),
    ([{"class": "H5Z_FILTER_NBIT", "id": 5}, filter_json("lzf"), filter_json("gzip")],
     "two compressors"),
    ([filter_json("gzip"), filter_json("lz4")], "two compressors"),
    (["not-a-dict-but-a-name"], "not-a-dict-but-a-name"),
    ([17], "17"),
])
def test_unsupported_filters(filters: list, named: str) -> None:
    with pytest.raises(UnsupportedFilterError, match=named):
        ChunkCodec.from_filters(filters, np.dtype("<f4"), (4,))


def test_hdf5_native_lz4_is_hdf5s_framing_not_a_blosc_frame() -> None:
    """Linked lz4 chunks are HDF5's LZ4 plugin framing (tests/ingest/test_plugin_filters.py):
    an HSDS-style Blosc frame there is a corrupt chunk, never decoded as if it fitted."""
    codec = ChunkCodec.from_filters([filter_json("lz4")], np.dtype("<f4"), (4,),
                                    hdf5_native=True)
    frame = ChunkCodec.from_filters([filter_json("lz4")], np.dtype("<f4"), (4,)).encode(
        np.arange(4, dtype="<f4"))
    with pytest.raises(CorruptChunkError):
        codec.decode(frame, "key")


# -- corrupt chunks: an error naming the key, never wrong values --------------------------
@pytest.mark.parametrize("config", ["none", "gzip1", "gzip+shuffle", "shuffle", "lz4",
                                    "zstd", "bitshuffle", "bitshuffle+zstd"])
@pytest.mark.parametrize("damage", ["truncated", "extended", "garbage", "empty",
                                    "wrong-size-frame"])
def test_corrupt_chunk(config: str, damage: str) -> None:
    dt, shape = np.dtype("<f8"), (8, 8)
    codec = ChunkCodec.from_filters(CONFIGS[config], dt, shape)
    good = codec.encode(_sample(dt, shape))
    if damage == "truncated":
        data = good[: len(good) // 2]
    elif damage == "extended":
        data = good + b"\x00" * 8
    elif damage == "garbage":
        data = bytes(range(256)) * 3
    elif damage == "empty":
        data = b""
    else:  # a well-formed chunk of another size
        other = ChunkCodec.from_filters(CONFIGS[config], dt, (8, 4))
        data = other.encode(_sample(dt, (8, 4)))
    with pytest.raises(CorruptChunkError) as err:
        codec.decode(data, KEY)
    assert err.value.key == KEY and KEY in str(err.value)


def test_corrupt_vlen_chunk() -> None:
    dt = h5dask.string_dtype()
    codec = ChunkCodec(dt, (3,))
    good = codec.encode(np.array(["ab", "cd", "ef"], dtype=object).astype(dt))
    for data in (good[:-1], good + b"x", good[:5], b"\xff\xff\xff\x7f" + good):
        with pytest.raises(CorruptChunkError, match="1_2"):
            codec.decode(data, KEY)


D_ID = "d-6365dc28-b7187a80-6773-02f05a-9230d2"
G_ID = "g-6365dc28-b7187a80-ebed-54a03f-90f208"


def _ref_field(text: str) -> bytes:
    return text.encode("ascii").ljust(48, b"\0")


def test_references_inside_compounds_and_sequences_are_hsds_fixed_fields() -> None:
    """HSDS (h5json) stores an object reference as a 48-byte NUL-padded 'collection/id'
    wherever it is: in a compound record, an array member, a sequence. The chunk below is
    what HSDS 1.0.2 wrote for h5pyd's ``[(d.ref, 5), (f.ref, 6), null]`` (records of 52
    bytes); h5dask called it corrupt and wrote length-prefixed ids HSDS cannot read."""
    rec = np.dtype([("r", h5dask.format.types.OBJ_REF), ("n", "<i4")])
    hsds = b"".join(_ref_field(r) + struct.pack("<i", n)
                    for r, n in ((f"datasets/{D_ID}", 5), (f"groups/{G_ID}", 6), ("", 0)))
    codec = ChunkCodec(rec, (3,))
    assert codec.decode(hsds, KEY).tolist() == [(D_ID, 5), (G_ID, 6), ("", 0)]
    values = np.empty(3, rec)
    values[:] = [(D_ID, 5), (G_ID, 6), (None, 0)]
    assert codec.encode(values) == hsds  # the bytes HSDS reads, byte for byte
    # a sequence of references: its byte count, then the fixed fields (h5json's copyElement)
    seq_dt = h5dask.vlen_dtype(h5dask.format.types.OBJ_REF)
    seq = np.empty(1, seq_dt)
    seq[0] = np.array([D_ID, G_ID], dtype=object)
    raw = ChunkCodec(seq_dt, (1,)).encode(seq)
    assert raw == struct.pack("<I", 96) + _ref_field(f"datasets/{D_ID}") + _ref_field(
        f"groups/{G_ID}")
    assert ChunkCodec(seq_dt, (1,)).decode(raw, KEY)[0].tolist() == [D_ID, G_ID]


def _legacy_ref(x: str | None) -> bytes:
    """A reference as h5dask wrote it inside compounds and sequences before 12/2026."""
    return struct.pack("<I", len(x or "")) + (x or "").encode()


def _legacy_seqs(*seqs: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(s)) + s for s in seqs)


REC = np.dtype([("r", h5dask.format.types.OBJ_REF), ("n", "<i4")])
SEQ_REFS = h5dask.vlen_dtype(h5dask.format.types.OBJ_REF)
SEQ_RECS = h5dask.vlen_dtype(REC)


def test_compound_references_h5dask_wrote_before_still_read() -> None:
    """Chunks of earlier h5dask versions (a reference member as a 4-byte length and the
    bare id) still read: a compound chunk holds a fixed number of records, and the
    strict parse of HSDS's 48-byte fields rejects these bytes."""
    legacy = (struct.pack("<I", len(D_ID)) + D_ID.encode() + struct.pack("<i", 5)
              + struct.pack("<I", 0) + struct.pack("<i", 6))
    assert ChunkCodec(REC, (2,)).decode(legacy, KEY).tolist() == [(D_ID, 5), ("", 6)]


def test_legacy_sequences_of_references_are_not_misread() -> None:
    """Sequences as earlier h5dask wrote them whose byte counts are multiples of the new
    record size: 13 records (null, 7) are 104 bytes, two 52-byte records of the new
    layout; a reference, a group reference and 3 nulls are 96 bytes, two 48-byte fields.
    The lax parse read them as 2 wrong values (and a partial write then stored those)."""
    recs = _legacy_seqs(b"".join(_legacy_ref(None) + struct.pack("<i", 7) for _ in range(13)))
    got = ChunkCodec(SEQ_RECS, (1,)).decode(recs, KEY)[0]
    assert got.tolist() == [("", 7)] * 13
    mixed = _legacy_seqs(b"".join(_legacy_ref(x) for x in (D_ID, G_ID, None, None, None)))
    assert len(mixed) - 4 == 2 * 48
    assert ChunkCodec(SEQ_REFS, (1,)).decode(mixed, KEY)[0].tolist() == [D_ID, G_ID, "", "", ""]


def test_null_reference_sequences_that_read_both_ways() -> None:
    """12 null references of the old layout are 48 zero bytes, one null of HSDS's: the
    bytes cannot tell, so the dataset's marker decides (h5dask writes it); without one
    the chunk is refused with what to do, never guessed."""
    from h5dask.format import vlen
    chunk = _legacy_seqs(_legacy_ref(None) * 12, b"")
    with pytest.raises(CorruptChunkError, match=vlen.REF_LAYOUT_KEY) as err:
        ChunkCodec(SEQ_REFS, (2,)).decode(chunk, KEY)
    assert err.value.key == KEY
    old = ChunkCodec(SEQ_REFS, (2,), ref_layout=vlen.REF_LAYOUT_LEGACY).decode(chunk, KEY)
    assert [len(x) for x in old] == [12, 0]
    new = ChunkCodec(SEQ_REFS, (2,), ref_layout=vlen.REF_LAYOUT_HSDS).decode(chunk, KEY)
    assert new[0].tolist() == [""] and len(new[1]) == 0
    # a sequence of references that both layouts read the same way reads without a marker
    assert len(ChunkCodec(SEQ_REFS, (1,)).decode(_legacy_seqs(b""), KEY)[0]) == 0


def test_marker_written_for_types_with_references_and_read_back() -> None:
    from h5dask.format import metadata, vlen
    from h5dask.format.dataspace import Dataspace
    from h5dask.format.types import type_json_from_dtype
    body = metadata.dataset_json(type_json_from_dtype(SEQ_RECS), Dataspace((2,), (2,)),
                                 metadata.chunked_layout((2,)), [])
    assert body[vlen.REF_LAYOUT_KEY] == vlen.REF_LAYOUT_HSDS
    plain = metadata.dataset_json("H5T_STD_I8LE", Dataspace((2,), (2,)),
                                  metadata.chunked_layout((2,)), [])
    assert vlen.REF_LAYOUT_KEY not in plain
    obj = {"id": "d-6365dc28-b7187a80-6773-02f05a-9230d2", **body}
    assert metadata.parse_dataset(KEY, obj).codec.ref_layout == vlen.REF_LAYOUT_HSDS
    with pytest.raises(h5dask.errors.MetadataError, match=vlen.REF_LAYOUT_KEY):
        metadata.parse_dataset(KEY, {**obj, vlen.REF_LAYOUT_KEY: "guess"})
    # no marker: h5dask (every version) wrote the layout at the top too, HSDS does not
    unmarked = {k: v for k, v in obj.items() if k != vlen.REF_LAYOUT_KEY}
    assert metadata.parse_dataset(KEY, unmarked).codec.ref_layout is None
    by_hsds = {k: v for k, v in unmarked.items() if k != "layout"}
    assert metadata.parse_dataset(KEY, by_hsds).codec.ref_layout == vlen.REF_LAYOUT_HSDS


@pytest.mark.parametrize("field", [
    b"X" * 48,  # no NUL, not a reference
    f"groups/g{D_ID[1:]}".encode() + b"\0jj",
    f"groups/{D_ID}".encode().ljust(48, b"\0"),  # a dataset id in the groups collection
    b"\0\0\0\0" + D_ID.encode().ljust(44, b"\0"),  # leading NULs
    b"datasets/d-zz".ljust(48, b"\0"),
    "datasets/d-\u00e9".encode().ljust(48, b"\0"),  # not ASCII
], ids=["no-nul", "junk-after-nul", "wrong-collection", "leading-nuls", "bad-id", "utf8"])
def test_malformed_reference_fields_are_corrupt(field: bytes) -> None:
    assert len(field) == 48
    chunk = field + struct.pack("<i", 1)
    with pytest.raises(CorruptChunkError) as err:
        ChunkCodec(REC, (1,)).decode(chunk, KEY)
    assert err.value.key == KEY
    with pytest.raises(CorruptChunkError):
        ChunkCodec(h5dask.format.types.OBJ_REF, (1,)).decode(field, KEY)


def test_reference_field_forms_hsds_may_write() -> None:
    """The bare id, and a 48-character 'datatypes/t-...' with no NUL at all, are valid."""
    t_id = "t" + D_ID[1:]
    for field in (D_ID.encode().ljust(48, b"\0"), f"datatypes/{t_id}".encode()):
        assert len(field) == 48
        want = D_ID if field.startswith(b"d-") else t_id
        assert ChunkCodec(h5dask.format.types.OBJ_REF, (1,)).decode(field, KEY).tolist() == [want]


@pytest.mark.timeout(60)  # the lax decoder looped forever on it
def test_sequence_of_records_of_no_bytes_is_corrupt_not_endless() -> None:
    seq = h5dask.vlen_dtype(np.dtype([("r", h5dask.format.types.OBJ_REF, (0,))]))
    with pytest.raises(CorruptChunkError, match="no bytes"):
        ChunkCodec(seq, (1,)).decode(struct.pack("<I", 4) + b"abcd", KEY)
