"""Chunks inside HDF5 files (linked layouts) are HDF5's own filter output: raw zlib, HDF5's
byte shuffle and a fletcher32 trailer. ChunkCodec(hdf5_native=True) must decode exactly
what h5py (libhdf5) writes, for every combination, dtype and (odd) chunk size."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from h5dask.errors import CorruptChunkError
from h5dask.format.filters import ChunkCodec, filter_json

VARIANTS = {
    "gzip": {"compression": "gzip", "compression_opts": 6},
    "shuffle+gzip": {"compression": "gzip", "shuffle": True},
    "fletcher32": {"fletcher32": True},
    "gzip+fletcher32": {"compression": "gzip", "fletcher32": True},
    "shuffle+gzip+fletcher32": {"compression": "gzip", "shuffle": True, "fletcher32": True},
    "shuffle": {"shuffle": True},
}
DTYPES = ["<f4", ">i8", "u1", "<f8", "<i2", ">u2"]


def _codec(dset: h5py.Dataset) -> ChunkCodec:
    filters = []
    if dset.shuffle:
        filters.append(filter_json("shuffle"))
    if dset.compression:
        filters.append(filter_json("gzip", dset.compression_opts))
    if dset.fletcher32:
        filters.append(filter_json("fletcher32"))
    return ChunkCodec.from_filters(filters, dset.dtype, dset.chunks, hdf5_native=True)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_hdf5_native_decode_matches_h5py(variant, tmp_path):
    path = tmp_path / "f.h5"
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        for dt in DTYPES:
            data = (rng.normal(size=(37, 11)) * 100).astype(dt)
            # 7 x 5 chunks: 35 elements, an odd byte count for 1-byte types
            f.create_dataset(dt, data=data, chunks=(7, 5), **VARIANTS[variant])
    checked = 0
    with h5py.File(path) as f:
        for dt in DTYPES:
            dset = f[dt]
            codec = _codec(dset)
            whole = dset[()]
            for i in range(dset.id.get_num_chunks()):
                info = dset.id.get_chunk_info(i)
                mask, raw = dset.id.read_direct_chunk(info.chunk_offset)
                assert mask == 0
                chunk = codec.decode(raw, f"{dt}[{i}]")
                region = tuple(slice(o, min(o + c, s))
                               for o, c, s in zip(info.chunk_offset, dset.chunks, dset.shape))
                edge = tuple(slice(0, r.stop - r.start) for r in region)
                np.testing.assert_array_equal(chunk[edge], whole[region])
                checked += 1
    assert checked == len(DTYPES) * 6 * 3


def test_fletcher32_mismatch_is_a_corrupt_chunk(tmp_path):
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(64, dtype="<i4"), chunks=(64,), fletcher32=True)
    with h5py.File(path) as f:
        codec = _codec(f["x"])
        _mask, raw = f["x"].id.read_direct_chunk((0,))
    bad = bytearray(raw)
    bad[5] ^= 0xFF
    with pytest.raises(CorruptChunkError, match="fletcher32"):
        codec.decode(bytes(bad), "x/0")
