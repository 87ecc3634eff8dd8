"""Decompression bombs: a small chunk object that decodes to far more than its chunk.

A chunk's decoded size is known from the metadata (chunk shape x element size), so
h5dask never decodes beyond it: a chunk object that holds more is a CorruptChunkError
naming the chunk, and reading it costs no more memory than a healthy chunk. Each bomb
below is read in a process of its own (``bomb_reader.py``), whose peak RSS growth during
the read must stay under 2 x the chunk size + a constant, and whose address space may
grow by no more than that either (so that an allocation of the decoded bomb fails even
where the kernel counts RSS lazily); unbounded, each would take the reader to ``BOMB``
bytes or more.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
import zlib
from pathlib import Path
from typing import Any

import bitshuffle
import blosc2
import h5py
import hdf5plugin
import lz4.block
import numcodecs
import numpy as np
import pytest
import xarray as xr
import zstandard

import h5dask
from h5dask.errors import MetadataError, SizeLimitError
from h5dask.format import ids
from h5dask.ingest import load_file
from h5dask.storage import open_location, sync
from h5dask.xarray.backend import MAX_BLOCKS_PER_DIMENSION

BOMB = 128 << 20  # what every bomb decodes to
# a linked chunk's byte range is refused before reading when it is larger than a chunk
# can take compressed (h5dask.sources.max_stored_chunk_bytes: about 66 KiB for these
# 1 KiB chunks), so the linked bomb is the largest zlib stream that passes that check
LINKED_BOMB = 48 << 20
CHUNK = (256,)  # float32: 1 KiB chunks, two per variable
CHUNK_BYTES = 256 * 4
MARGIN = 32 << 20  # the constant: interpreter noise, thread stacks, buffers
READER = Path(__file__).with_name("bomb_reader.py")
BLOSC_CODECS = ("blosclz", "lz4", "lz4hc", "zstd")
BUCKET = "h5dask-test"


def bomb_bytes(kind: str) -> bytes:
    """A chunk object of codec ``kind`` that decodes to BOMB (LINKED_BOMB) bytes of zeros."""
    zeros = np.zeros((LINKED_BOMB if kind.startswith("linked") else BOMB) // 4, "<f4")
    if kind == "gzip":  # what HSDS stores for gzip+shuffle: a Blosc frame, zlib inside
        return bytes(numcodecs.Blosc(cname="zlib", clevel=9, shuffle=1).encode(zeros))
    if kind in ("gzip_stream", "linked_gzip"):  # a plain zlib stream (HDF5's own deflate)
        return zlib.compress(zeros.tobytes(), 9)
    if kind in BLOSC_CODECS:
        return bytes(numcodecs.Blosc(cname=kind, clevel=9, shuffle=0).encode(zeros))
    if kind == "bitshuffle":  # HSDS's frame: 8-byte total, 4-byte block bytes, LZ4 blocks
        body = bitshuffle.compress_lz4(zeros, 8192).tobytes()
        return BOMB.to_bytes(8, "big") + (8192 * 4).to_bytes(4, "big") + body
    if kind in LINKED_PLUGIN_KINDS:
        return plugin_bomb(kind, zeros)
    raise AssertionError(kind)


#: HDF5 plugin filters (hdf5plugin) whose chunks stay linked: h5py options per kind
LINKED_PLUGIN_KINDS = {
    "linked_lz4": hdf5plugin.LZ4(), "linked_zstd": hdf5plugin.Zstd(),
    "linked_bitshuffle_lz4": hdf5plugin.Bitshuffle(cname="lz4"),
    "linked_bitshuffle_zstd": hdf5plugin.Bitshuffle(cname="zstd"),
    "linked_blosc": hdf5plugin.Blosc(cname="zstd"), "linked_blosc2": hdf5plugin.Blosc2(),
}


def plugin_bomb(kind: str, zeros: np.ndarray) -> bytes:
    """A chunk of an HDF5 plugin filter's own framing that decodes to LINKED_BOMB bytes.
    Where that framing cannot hold it within a linked chunk's size bound (LZ4 blocks,
    bitshuffle's per-block records), its header states LINKED_BOMB over fewer blocks."""
    raw = zeros.tobytes()
    header = LINKED_BOMB.to_bytes(8, "big")
    if kind == "linked_zstd":
        return zstandard.ZstdCompressor(level=19).compress(raw)
    if kind == "linked_lz4":
        block = lz4.block.compress(raw[:1 << 20], store_size=False)
        return header + (1 << 20).to_bytes(4, "big") + len(block).to_bytes(4, "big") + block
    if kind.startswith("linked_bitshuffle"):
        block = lz4.block.compress(bytes(8192), store_size=False) if kind.endswith("lz4") \
            else zstandard.ZstdCompressor().compress(bytes(8192))
        return header + (8192).to_bytes(4, "big") + (len(block).to_bytes(4, "big") + block) * 4
    if kind == "linked_blosc":
        return bytes(numcodecs.Blosc(cname="zstd", clevel=9, shuffle=0).encode(zeros))
    if kind == "linked_blosc2":
        return bytes(blosc2.SChunk(chunksize=8 << 20, data=raw).to_cframe())
    raise AssertionError(kind)


def create_options(kind: str) -> dict[str, Any]:
    if kind == "gzip":
        return {"compression": "gzip", "shuffle": True}
    if kind == "gzip_stream":
        return {"compression": "gzip"}
    return {"compression": kind}


HSDS_KINDS = ("gzip", "gzip_stream", *BLOSC_CODECS, "bitshuffle")


@pytest.fixture(scope="module")
def bombs(seaweedfs: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A domain with a bombed and a healthy variable per codec, and a domain linked to
    an HDF5 file whose gzip chunk is a bomb. Returns URLs, options and chunk keys."""
    options = seaweedfs.storage_options()
    prefix = f"s3://{BUCKET}/bombs-{uuid.uuid4().hex}"
    url = f"{prefix}/hsds.h5"
    keys: dict[str, str] = {}
    data = np.arange(512, dtype="<f4")
    with h5dask.File(url, "w", storage_options=options) as f:
        for kind in HSDS_KINDS:
            for name in (kind, f"ok_{kind}"):
                f.create_dataset(name, data=data, chunks=CHUNK, **create_options(kind))
            keys[kind] = ids.chunk_key(f[kind].id, (0,))
    store = open_location(url, options).store
    for kind in HSDS_KINDS:
        sync(store.put(keys[kind], bomb_bytes(kind), kind="chunk"))

    path = tmp_path_factory.mktemp("bombs") / "linked.h5"
    with h5py.File(path, "w") as h5:
        for name in ("linked_gzip", "ok_linked_gzip"):
            h5.create_dataset(name, data=data, chunks=CHUNK, compression="gzip")
        h5["linked_gzip"].id.write_direct_chunk((0,), bomb_bytes("linked_gzip"))
        for kind, plugin in LINKED_PLUGIN_KINDS.items():
            for name in (kind, f"ok_{kind}"):
                h5.create_dataset(name, data=data, chunks=CHUNK, **plugin)
            h5[kind].id.write_direct_chunk((0,), bomb_bytes(kind))
            keys[kind] = "linked.h5["
    h5_url = f"{prefix}/files/linked.h5"
    seaweedfs.s3_client().put_object(Bucket=BUCKET, Key=h5_url.split(f"{BUCKET}/", 1)[1],
                                     Body=path.read_bytes())
    linked_url = f"{prefix}/linked.h5"
    load_file(h5_url, linked_url, link=True, storage_options=options, progress=False)
    keys["linked_gzip"] = "linked.h5["  # a linked chunk is named by its byte range
    return {"url": url, "linked_url": linked_url, "options": options, "keys": keys}


def read_in_child(url: str, options: dict, name: str, how: str) -> dict[str, Any]:
    budget = 2 * CHUNK_BYTES + MARGIN
    run = subprocess.run([sys.executable, str(READER), url, json.dumps(options), name, how,
                          str(budget)], capture_output=True, text=True, timeout=240,
                         env={**os.environ, "MALLOC_ARENA_MAX": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


CASES = [(kind, "file") for kind in (*HSDS_KINDS, "linked_gzip", *LINKED_PLUGIN_KINDS)] + [
    (kind, "xarray") for kind in ("gzip", "gzip_stream", "zstd", "linked_gzip")]


@pytest.mark.parametrize(("kind", "how"), CASES)
def test_a_bomb_chunk_is_refused_without_inflating_it(bombs: dict, kind: str, how: str) -> None:
    url = bombs["linked_url"] if kind.startswith("linked") else bombs["url"]
    got = read_in_child(url, bombs["options"], kind, how)
    assert got["error"] == "CorruptChunkError" and got["h5dask"], got
    assert "MemoryError" not in got["chain"], f"the bomb was decoded until memory ran out: {got}"
    assert bombs["keys"][kind] in got["message"], got
    if kind != "bitshuffle":  # bitshuffle's own header states the size, checked first
        assert "more than the chunk's 1024 bytes" in got["message"], got
    assert got["added"] < 2 * CHUNK_BYTES + MARGIN, (
        f"reading a {kind} bomb grew the reader by {got['added'] >> 20} MiB")


def test_healthy_chunks_of_every_codec_still_read(bombs: dict) -> None:
    with h5dask.File(bombs["url"], storage_options=bombs["options"]) as f:
        for kind in HSDS_KINDS:
            np.testing.assert_array_equal(f[f"ok_{kind}"][...], np.arange(512, dtype="<f4"))
    with h5dask.File(bombs["linked_url"], storage_options=bombs["options"]) as f:
        for kind in ("linked_gzip", *LINKED_PLUGIN_KINDS):
            np.testing.assert_array_equal(f[f"ok_{kind}"][...], np.arange(512, dtype="<f4"))


# -- metadata that claims more than it holds ------------------------------------------------
def test_an_attribute_claiming_2_to_the_40_elements_is_a_metadata_error(tmp_path: Path) -> None:
    """The dataspace of an attribute says 2**40 elements, its JSON value holds 3: the
    element count is checked against the value before anything is allocated."""
    url = f"file://{tmp_path}/attr.h5"
    with h5dask.File(url, "w") as f:
        f.create_dataset("v", data=np.arange(4.0))
        f["v"].attrs["big"] = np.arange(3)
        key = f["v"]._meta.key
    store = open_location(url).store
    obj = json.loads(sync(store.get(key)))
    obj["attributes"]["big"]["shape"] = {"class": "H5S_SIMPLE", "dims": [2**40]}
    sync(store.put(key, json.dumps(obj).encode()))

    with h5dask.File(url) as f, pytest.raises(MetadataError) as info:
        f["v"].attrs["big"]
    assert key in str(info.value) and "'big'" in str(info.value)
    assert "1099511627776" in str(info.value)
    with pytest.raises(MetadataError, match="attribute 'big'"):
        xr.open_dataset(url, engine="h5cloud")


# -- open-time bombs: a few KB of metadata claiming millions of chunks --------------------
OPEN_CHUNKS = 2**22


def dimension_scale(f: h5dask.File, name: str, **kw: Any) -> None:
    """A dataset that xarray reads as the dimension coordinate ``name`` (a netCDF
    dimension scale), with no chunk stored."""
    x = f.create_dataset(name, **kw)
    x.attrs["CLASS"] = np.bytes_(b"DIMENSION_SCALE")
    x.attrs["NAME"] = np.bytes_(name.encode())


def test_opening_2_to_the_22_chunks_costs_metadata_not_chunks(tmp_path: Path) -> None:
    """A variable and its dimension coordinate of 2**22 one-element chunks (metadata of a
    few KB, no chunk stored): the open does no per-chunk request and stays under 200 MB
    and a few CPU seconds (before: 4 KB and a GET per chunk, minutes)."""
    url = f"file://{tmp_path}/open.h5"
    with h5dask.File(url, "w") as f:
        dimension_scale(f, "x", shape=(OPEN_CHUNKS,), dtype="<f8", chunks=(1,), fillvalue=0.5)
        f.create_dataset("v", shape=(OPEN_CHUNKS,), dtype="<f4", chunks=(1,))
    run = subprocess.run([sys.executable, str(READER.with_name("open_reader.py")), url],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["coords"] == {"x": OPEN_CHUNKS}
    # no per-chunk work: at most one LIST for the coordinate, no GET per chunk
    assert got["chunk_stats"]["read_requests"] <= 1, got["chunk_stats"]
    # dask's graph grows with the blocks per dimension: they are bounded
    (blocks,) = got["numblocks"]["v"]
    assert blocks <= MAX_BLOCKS_PER_DIMENSION < OPEN_CHUNKS
    assert any("dask blocks" in w for w in got["warnings"]), got["warnings"]
    assert got["added"] < 200 << 20, f"the open took {got['added'] >> 20} MB"
    # CPU seconds of the child, not wall time (0.1 s measured; 2 s is the promise)
    assert got["cpu_seconds"] < 2, got["cpu_seconds"]


def test_a_2_to_the_28_value_coordinate_fails_clearly_and_the_limit_can_be_raised(
        tmp_path: Path) -> None:
    url = f"file://{tmp_path}/coord.h5"
    with h5dask.File(url, "w") as f:
        dimension_scale(f, "x", shape=(2**28,), dtype="<f8", chunks=(2**20,))
        dimension_scale(f, "small", shape=(4096,), dtype="<f8", chunks=(512,), fillvalue=1.0)
    with pytest.raises(SizeLimitError, match="max_coordinate_bytes") as info:
        xr.open_dataset(url, engine="h5cloud", chunks={})
    assert "'x'" in str(info.value) and "2147483648 bytes" in str(info.value)
    ds = xr.open_dataset(url, engine="h5cloud", chunks={}, drop_variables=["x"])
    assert ds["small"].size == 4096

    with pytest.raises(SizeLimitError):
        xr.open_dataset(url, engine="h5cloud", drop_variables=["x"], max_coordinate_bytes=1024)
    ds = xr.open_dataset(url, engine="h5cloud", drop_variables=["x"], max_coordinate_bytes=None)
    assert (ds["small"].values == 1.0).all()
