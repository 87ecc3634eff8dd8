"""Blosc-frame chunks, as HSDS writes them, reduce correctly; plus codec unit tests.

HSDS stores a gzip-filtered chunk as a Blosc frame with zlib inside (and its byte
shuffle inside the frame). A client that knows only the HDF5 filters asks for
``compression: gzip`` (and ``filters: shuffle``); the server must detect the frame.
"""

from __future__ import annotations

import base64
import gzip
import json
import struct
import urllib.request
import zlib
from typing import Any

import cbor2
import numcodecs
import numpy as np
import pytest
from activestorage import reductionist

from h5dask.active import codecs
from h5dask.active.errors import ActiveStorageError
from h5dask.active.request import Filter
from h5dask.format.compression import blosc_header

DTYPES = ("int32", "int64", "uint32", "uint64", "float32", "float64")
SHAPE = (6, 7)


def make_array(dtype: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random(SHAPE) * 1000).astype(dtype)


@pytest.fixture(scope="module")
def session(active_store: Any) -> Any:
    s = reductionist.get_session(active_store.access_key, active_store.secret_key, None)
    s.trust_env = False
    yield s
    s.close()


def reduce_all(
    server: Any,
    session: Any,
    url: str,
    size: int,
    a: np.ndarray,
    compression: Any,
    filters: Any,
) -> None:
    """Every operation over everything and along axis 1, compared with numpy."""
    native = a.astype(a.dtype.newbyteorder("="))
    for op in ("count", "min", "max", "sum", "select"):
        for axis in (None, (1,)):
            result, count = reductionist.reduce_chunk(
                session, server.url, url, 0, size, compression, filters,
                (None, None, None, None), a.dtype, SHAPE, "C", None, axis, op,
            )  # fmt: skip
            data = np.ma.getdata(result)
            if op == "select":
                expected = native
            elif op == "count":
                expected = np.full(SHAPE, 1).sum(axis=axis)
            else:
                func = {"min": np.min, "max": np.max, "sum": np.sum}[op]
                kw = {"dtype": native.dtype} if op == "sum" else {}
                expected = func(native, axis=axis, **kw)
            np.testing.assert_allclose(data, expected, rtol=1e-6, err_msg=f"{op} {axis}")
            if op != "select":
                n = SHAPE[1] if axis else a.size
                assert list(count) == [n] * (SHAPE[0] if axis else 1)


# -- chunks written by HSDS itself ------------------------------------------------------------


@pytest.mark.parametrize("shuffle", [0, 1], ids=["noshuffle", "shuffle"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_hsds_written_gzip_chunks(
    active_server: Any, session: Any, put_object: Any, dtype: str, shuffle: int
) -> None:
    stor_util = pytest.importorskip("hsds.util.storUtil")
    a = make_array(dtype, seed=shuffle)
    chunk = stor_util._compress(
        a.tobytes(), compressor="gzip", level=5, shuffle=shuffle, dtype=a.dtype, chunk_shape=SHAPE
    )
    chunk = bytes(chunk)
    assert blosc_header(chunk) is not None  # HSDS really wrote a Blosc frame
    url = put_object(f"blosc/hsds-{dtype}-{shuffle}", chunk)
    filters = [numcodecs.Shuffle(a.dtype.itemsize)] if shuffle else None
    reduce_all(active_server, session, url, len(chunk), a, numcodecs.GZip(), filters)


# -- Blosc frames made with numcodecs -------------------------------------------------------

BLOSC_CASES = [
    # (cname, blosc shuffle, request codec id, also send the HDF5 shuffle filter)
    ("zlib", numcodecs.Blosc.NOSHUFFLE, "gzip", False),
    ("zlib", numcodecs.Blosc.SHUFFLE, "gzip", True),
    ("zlib", numcodecs.Blosc.SHUFFLE, "zlib", False),
    ("zlib", numcodecs.Blosc.BITSHUFFLE, "gzip", True),
    ("zlib", numcodecs.Blosc.SHUFFLE, "blosc", False),
    ("lz4", numcodecs.Blosc.SHUFFLE, "blosc", False),
    ("zstd", numcodecs.Blosc.BITSHUFFLE, "blosc", False),
    ("blosclz", numcodecs.Blosc.NOSHUFFLE, "blosc", False),
]


@pytest.mark.parametrize(("cname", "blosc_shuffle", "codec_id", "with_filter"), BLOSC_CASES)
def test_numcodecs_blosc_frames(
    active_server: Any,
    session: Any,
    put_object: Any,
    cname: str,
    blosc_shuffle: int,
    codec_id: str,
    with_filter: bool,
) -> None:
    i = BLOSC_CASES.index((cname, blosc_shuffle, codec_id, with_filter))
    dtype = DTYPES[i % len(DTYPES)]
    a = make_array(dtype, seed=i).astype(np.dtype(dtype).newbyteorder("<>"[i % 2]))
    blosc = numcodecs.Blosc(cname=cname, clevel=5, shuffle=blosc_shuffle)
    chunk = bytes(blosc.encode(a))  # an ndarray: Blosc shuffles with typesize = itemsize
    url = put_object(f"blosc/numcodecs-{i}", chunk)
    codec = {"gzip": numcodecs.GZip(), "zlib": numcodecs.Zlib(), "blosc": blosc}[codec_id]
    filters = [numcodecs.Shuffle(a.dtype.itemsize)] if with_filter else None
    reduce_all(active_server, session, url, len(chunk), a, codec, filters)


def test_blosc2_id_accepts_blosc_frames(
    active_server: Any, active_store: Any, put_object: Any
) -> None:
    a = np.arange(12, dtype="<f8")
    url = put_object("blosc/blosc2-id", bytes(numcodecs.Blosc(cname="lz4").encode(a)))
    body = {"interface_type": "s3", "url": url, "dtype": "float64", "compression": {"id": "blosc2"}}
    token = base64.b64encode(f"{active_store.access_key}:{active_store.secret_key}".encode())
    req = urllib.request.Request(
        active_server.url + "/v2/sum/",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Basic {token.decode()}"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=30) as resp:
        reply = cbor2.loads(resp.read())
    assert np.frombuffer(reply["bytes"], "float64").tolist() == [66.0]
    assert reply["count"] == [12]


# -- codec unit tests ----------------------------------------------------------------------


def test_blosc_header_detection() -> None:
    raw = np.arange(100, dtype="<i8").tobytes()
    frame = bytes(numcodecs.Blosc(cname="zlib", shuffle=1).encode(raw))
    header = blosc_header(frame)
    assert header is not None and header.nbytes == len(raw) and header.cbytes == len(frame)
    assert blosc_header(zlib.compress(raw)) is None
    assert blosc_header(gzip.compress(raw)) is None
    assert blosc_header(frame[:-1]) is None  # size must match
    assert blosc_header(b"\x02\x01") is None
    assert blosc_header(raw) is None  # plain numbers are not a frame


def test_decode_pipeline_variants() -> None:
    raw = np.arange(50, dtype="<u4").tobytes()
    shuffled = bytes(numcodecs.Shuffle(4).encode(raw))
    assert codecs.decode(raw, None, (), 1 << 20) == raw
    assert codecs.decode(shuffled, None, [Filter("shuffle", 4)], 1 << 20) == raw
    assert codecs.decode(shuffled, None, [Filter("shuffle_simd", 4)], 1 << 20) == raw
    for comp in (zlib.compress, gzip.compress):
        for cid in ("gzip", "zlib"):  # either header is accepted for either id
            assert codecs.decode(comp(shuffled), cid, [Filter("shuffle", 4)], 1 << 20) == raw
    two_members = gzip.compress(raw[:100]) + gzip.compress(raw[100:])
    assert codecs.decode(two_members, "gzip", (), 1 << 20) == raw
    # An explicit blosc id applies the requested filters literally.
    frame = bytes(numcodecs.Blosc(cname="zlib", shuffle=0).encode(shuffled))
    assert codecs.decode(frame, "blosc", [Filter("shuffle", 4)], 1 << 20) == raw


def test_unshuffle_leaves_trailing_bytes() -> None:
    data = bytes([1, 3, 5, 2, 4, 6, 9])  # 3 elements of 2 bytes, shuffled, plus 1 byte
    assert codecs.unshuffle(data, 2) == bytes([1, 2, 3, 4, 5, 6, 9])
    assert codecs.unshuffle(data, 1) == data


@pytest.mark.parametrize(
    ("data", "cid", "status"),
    [
        (zlib.compress(bytes(5000)), "gzip", 400),
        (zlib.compress(bytes(100))[:-5], "zlib", 400),
        (zlib.compress(bytes(100)) + b"junk", "zlib", 400),
        (b"not compressed at all", "zlib", 400),
        (zlib.compress(bytes(100)), "blosc", 400),
        (struct.pack("<BBBBIII", 3, 1, 0, 4, 64, 64, 32) + bytes(16), "blosc2", 400),
    ],
    ids=["too-large", "truncated", "trailing-garbage", "not-compressed", "not-blosc", "blosc2-v3"],
)
def test_decompress_errors(data: bytes, cid: str, status: int) -> None:
    with pytest.raises(ActiveStorageError) as info:
        codecs.decompress(data, cid, max_size=1000)
    assert info.value.status == status
