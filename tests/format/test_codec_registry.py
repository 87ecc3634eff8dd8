"""The codec registry: a codec defined only here is used by every part of h5dask.

``BZip2`` below (HDF5 filter 307, which hdf5plugin's BZip2 filter writes) is registered
by this module alone. The tests show that the reader, ``File.create_dataset``,
``to_h5cloud``'s encoding, ``h5dask load`` (an h5py file written with that filter) and
the active server (request validation, decoding, and the pushdown request body) all
pick it up, with no change anywhere else.
"""

from __future__ import annotations

import bz2
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask.active import codecs as server_codecs
from h5dask.active.pushdown import chunk_request_body
from h5dask.active.request import ReductionRequest
from h5dask.errors import CorruptChunkError, HSDSUnreadableWarning
from h5dask.format import codecs, ids
from h5dask.format.compression import OutputTooLarge
from h5dask.format.filters import ChunkCodec
from h5dask.ingest import load_file
from h5dask.storage import open_location, sync

BZIP2_ID = 307


class BZip2(codecs.Codec):
    """bzip2, bounded: never decodes more than ``limit`` bytes."""

    name = "bzip2"
    hsds_class = "H5Z_FILTER_BZIP2"
    hdf5_id = BZIP2_ID
    role = "compressor"
    levels = (1, 9)
    default_level = 9
    reductionist = ("bzip2",)
    hsds_decodes = False
    decodes_native = True

    def encode(self, raw: bytes, level: int | None) -> bytes:
        return bz2.compress(raw, level or self.default_level)

    def decode(self, data: bytes | memoryview, limit: int) -> bytes:
        decoder = bz2.BZ2Decompressor()
        out = decoder.decompress(bytes(data), max_length=limit + 1) if data else b""
        if len(out) > limit:
            raise OutputTooLarge(f"bzip2: more than {limit} bytes")
        if not decoder.eof:
            raise ValueError("bzip2: truncated stream")
        return out


@pytest.fixture
def bzip2() -> Iterator[codecs.Codec]:
    codecs.register(BZip2)
    try:
        yield codecs.lookup("bzip2")
    finally:
        codecs.unregister("bzip2")


def test_registered_codec_is_known_by_every_name(bzip2: codecs.Codec) -> None:
    assert codecs.lookup({"class": "H5Z_FILTER_BZIP2"}) is bzip2
    assert codecs.lookup({"id": BZIP2_ID}) is codecs.by_hdf5_id(BZIP2_ID) is bzip2
    assert codecs.by_reductionist("bzip2") is bzip2
    assert "bzip2" in codecs.compressors()
    assert bzip2.json(3) == {"class": "H5Z_FILTER_BZIP2", "id": BZIP2_ID, "name": "bzip2",
                             "level": 3}
    with pytest.raises(ValueError, match="1-9"):
        bzip2.check_level(0)


def test_unregistered_codec_is_unknown() -> None:
    assert codecs.by_hdf5_id(BZIP2_ID) is None
    with pytest.raises(ValueError, match="not one of"):
        codecs.compressor("bzip2")


def test_reader_decodes_bounded(bzip2: codecs.Codec) -> None:
    codec = ChunkCodec.from_filters([{"class": "H5Z_FILTER_SHUFFLE", "id": 2}, bzip2.json(5)],
                                    np.dtype("<i4"), (100,))
    data = np.arange(100, dtype="<i4")
    chunk = codec.encode(data)
    assert bz2.decompress(chunk) != data.tobytes()  # shuffled before compressing
    np.testing.assert_array_equal(codec.decode(chunk, "key"), data)
    with pytest.raises(CorruptChunkError, match="more than the chunk's 400 bytes"):
        codec.decode(bz2.compress(bytes(10_000)), "key")


def test_file_create_dataset_writes_and_reads_it(bzip2: codecs.Codec, tmp_path: Any) -> None:
    url = (tmp_path / "bz.h5").as_uri()
    data = np.arange(60.0).reshape(6, 10)
    with pytest.warns(HSDSUnreadableWarning, match="bzip2"):
        with h5dask.File(url, "w") as f:
            f.create_dataset("x", data=data, chunks=(3, 5), compression="bzip2",
                             compression_opts=2)
    with h5dask.File(url) as f:
        assert f["x"].compression == "bzip2" and f["x"].compression_opts == 2
        np.testing.assert_array_equal(f["x"][...], data)
        stored = sync(open_location(url).store.get(ids.chunk_key(f["x"].id, (1, 1))))
    assert bz2.decompress(stored) == data[3:, 5:].tobytes()  # bzip2, not a Blosc frame


def test_to_h5cloud_encoding_uses_it(bzip2: codecs.Codec, tmp_path: Any) -> None:
    url = (tmp_path / "bz.h5").as_uri()
    ds = xr.Dataset({"v": (("y", "x"), np.arange(20.0).reshape(4, 5))})
    with pytest.warns(HSDSUnreadableWarning):
        h5dask.to_h5cloud(ds, url, encoding={"v": {"compression": "bzip2",
                                                   "compression_opts": 4}})
    with xr.open_dataset(url, engine="h5cloud") as back:
        assert back.v.encoding["compression"] == "bzip2"
        assert back.v.encoding["compression_opts"] == 4
        xr.testing.assert_identical(back.load(), ds)


def test_load_maps_the_hdf5_filter_to_it(bzip2: codecs.Codec, tmp_path: Any) -> None:
    h5py = pytest.importorskip("h5py")
    hdf5plugin = pytest.importorskip("hdf5plugin")
    src = tmp_path / "bz.h5"
    data = np.arange(200, dtype="<f8")
    with h5py.File(src, "w") as f:
        f.create_dataset("x", data=data, chunks=(50,), **hdf5plugin.BZip2(blocksize=7))
    url = (tmp_path / "domain.h5").as_uri()
    load_file(str(src), url, progress=False)
    with h5dask.File(url) as f:
        assert f["x"].compression == "bzip2" and f["x"].compression_opts == 7
        np.testing.assert_array_equal(f["x"][...], data)


def test_server_accepts_and_decodes_it(bzip2: codecs.Codec) -> None:
    raw = np.arange(12, dtype="<i4").tobytes()
    request = ReductionRequest.from_dict({"interface_type": "s3", "url": "http://h/b/k",
                                          "dtype": "int32", "compression": {"id": "bzip2"}})
    assert request.compression == "bzip2"
    assert server_codecs.decode(bz2.compress(raw), "bzip2", (), 1 << 10) == raw
    with pytest.raises(Exception, match="too large"):
        server_codecs.decode(bz2.compress(bytes(4096)), "bzip2", (), 1024)


def test_pushdown_asks_the_server_for_it(bzip2: codecs.Codec, seaweedfs: Any) -> None:
    url = f"s3://h5dask-test/codecs-{uuid.uuid4().hex}/bz.h5"
    with pytest.warns(HSDSUnreadableWarning), \
            h5dask.File(url, "w", storage_options=seaweedfs.storage_options()) as f:
        dset = f.create_dataset("x", data=np.arange(8, dtype="<i4"), chunks=(8,),
                                compression="bzip2")
        body = chunk_request_body(dset.source(), (0,), (slice(0, 8, 1),), (0,), (), False)
    assert body is not None and body["compression"] == {"id": "bzip2"}
    assert ReductionRequest.from_dict(body).compression == "bzip2"
