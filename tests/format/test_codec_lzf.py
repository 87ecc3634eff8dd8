"""The LZF codec (h5dask/format/codecs/lzf.py): h5py's ``compression="lzf"``."""

from __future__ import annotations

import h5py
import lzf
import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask.errors import CorruptChunkError, HSDSUnreadableWarning
from h5dask.format.filters import ChunkCodec, filter_json
from h5dask.ingest import load_file


@pytest.mark.parametrize("shuffle", [False, True])
def test_roundtrip_compressible_and_incompressible(shuffle: bool) -> None:
    filters = [filter_json("shuffle")] * shuffle + [filter_json("lzf")]
    codec = ChunkCodec.from_filters(filters, np.dtype("<f8"), (256,))
    assert codec.level is None  # LZF takes no level
    smooth = np.arange(256, dtype="<f8")
    noise = np.random.default_rng(0).random(256)
    for data in (smooth, noise):
        chunk = codec.encode(data)
        assert len(chunk) <= data.nbytes  # incompressible bytes are stored as they are
        np.testing.assert_array_equal(codec.decode(chunk, "key"), data)
    assert len(codec.encode(smooth)) < smooth.nbytes


def test_a_bomb_is_refused_without_decoding_it() -> None:
    codec = ChunkCodec.from_filters([filter_json("lzf")], np.dtype("<f4"), (100,))
    with pytest.raises(CorruptChunkError, match="more than the chunk's 400 bytes"):
        codec.decode(lzf.compress(bytes(1 << 20)), "bomb")
    with pytest.raises(CorruptChunkError, match="cannot decode"):
        codec.decode(b"\xff\x00\x01", "garbage")


def test_hdf5_native_chunks_of_h5py_decode(tmp_path) -> None:
    data = np.arange(1000, dtype="<i4")
    with h5py.File(tmp_path / "x.h5", "w") as f:
        dset = f.create_dataset("x", data=data, chunks=(500,), compression="lzf", shuffle=True)
        raw = dset.id.read_direct_chunk((500,))[1]
    codec = ChunkCodec.from_filters([filter_json("shuffle"), filter_json("lzf")],
                                    np.dtype("<i4"), (500,), hdf5_native=True)
    np.testing.assert_array_equal(codec.decode(raw, "x"), data[500:])


def test_create_dataset_warns_that_hsds_cannot_read_it(tmp_path) -> None:
    url = (tmp_path / "d.h5").as_uri()
    with pytest.warns(HSDSUnreadableWarning, match="HSDS has no such filter"):
        with h5dask.File(url, "w") as f:
            f.create_dataset("x", data=np.arange(10.0), chunks=(5,), compression="lzf")
    with h5dask.File(url) as f:
        assert f["x"].compression == "lzf" and f["x"].compression_opts is None
        np.testing.assert_array_equal(f["x"][...], np.arange(10.0))
    with h5dask.File(url, "a") as f, pytest.raises(ValueError, match="takes no level"):
        f.create_dataset("y", data=np.arange(10.0), compression="lzf", compression_opts=3)


def test_to_h5cloud_encoding_as_to_netcdf_h5netcdf(tmp_path) -> None:
    ds = xr.Dataset({"v": ("x", np.arange(20.0))})
    url = (tmp_path / "d.h5").as_uri()
    with pytest.warns(HSDSUnreadableWarning):
        h5dask.to_h5cloud(ds, url, encoding={"v": {"compression": "lzf"}})
    with xr.open_dataset(url, engine="h5cloud") as back:
        assert back.v.encoding["compression"] == "lzf"
        assert back.v.encoding["compression_opts"] is None
        xr.testing.assert_identical(back.load(), ds)


def test_load_copies_lzf_as_lz4_which_hsds_reads(tmp_path) -> None:
    src = tmp_path / "x.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("x", data=np.arange(100.0), chunks=(50,), compression="lzf")
    url = (tmp_path / "d.h5").as_uri()
    with pytest.warns(UserWarning, match="lzf -> lz4"):
        load_file(str(src), url, progress=False)
    with h5dask.File(url) as f:
        assert f["x"].compression == "lz4"
        np.testing.assert_array_equal(f["x"][...], np.arange(100.0))
