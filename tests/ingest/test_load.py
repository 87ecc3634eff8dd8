"""``load_file`` in copy mode: everything in an HDF5 file survives (types, attributes,
references, links, fill values, chunking, filters), rechunking and recompression on request,
the progress bar and the summary, and failures that publish nothing."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask.errors import CorruptChunkError, H5DaskError, LoadOptionError
from h5dask.ingest import LoadSummary, load_file

DATASETS = ["many", "contig", "bigcontig", "f32", "gzf32", "shgz", "shgzf32", "sh", "be",
            "scalar", "sparse", "grp/vstr", "grp/compound", "grp/enum", "grp/refs",
            "grp/empty", "grp/null", "grp/typed"]


def _domain(tmp_path: Path, name: str = "x.h5") -> str:
    (tmp_path / "bucket" / "db").mkdir(parents=True, exist_ok=True)
    return (tmp_path / "bucket" / "home" / name).as_uri()


def _values(h5: h5py.Dataset):
    if h5.shape is None:
        return None
    return h5[()]  # vlen strings as bytes, as h5py and h5dask read datasets


def assert_same_values(got: h5dask.File, want: h5py.File, path: str) -> None:
    d, h = got[path], want[path]
    if h.shape is None:
        assert d.shape is None and d[()] == h5py.Empty(h.dtype)  # as h5py reads it
        return
    assert d.shape == h.shape, path
    value, expected = d[()], _values(h)
    if h5py.check_ref_dtype(h.dtype) is not None:  # references: the new ids of the targets
        expected = np.array([got[want[r].name].id for r in expected.flat], dtype=object)
        assert list(np.asarray(value).flat) == list(expected), path
        return
    np.testing.assert_array_equal(value, expected, err_msg=path)


def test_copy_keeps_types_attributes_links_fill_and_filters(synthetic_h5, tmp_path):
    url = _domain(tmp_path)
    summary = load_file(synthetic_h5, url, progress=False)
    assert (summary.datasets, summary.groups, summary.datatypes) == (len(DATASETS), 2, 1)
    assert summary.links == 2 and summary.skipped == [] and summary.copied == []
    with h5dask.File(url) as f, h5py.File(synthetic_h5) as h:
        for path in DATASETS:
            assert_same_values(f, h, path)
            d, s = f[path], h[path]
            if s.shape is None:
                continue
            assert d.dtype == s.dtype and d.dtype.str == s.dtype.str, path
            if s.chunks is not None:  # the source's chunking and filters are kept
                assert (d.chunks, d.maxshape) == (s.chunks, s.maxshape), path
                assert d.compression == s.compression, path
                assert (d.shuffle, d.fletcher32) == (s.shuffle, s.fletcher32), path
                if s.compression:
                    assert d.compression_opts == s.compression_opts, path
            if s.dtype.kind != "O":  # (h5dask's vlen fill is None, h5py's b"")
                assert d.fillvalue == s.fillvalue, path
        assert f["contig"].chunks == (1000, 3)  # contiguous source: chunks were chosen
        assert f["scalar"][()] == 3.5 and f["scalar"].shape == ()
        assert h5dask.enum_dtype({"RED": 0, "GREEN": 1, "BLUE": 7}, "u1") == f["grp/enum"].dtype
        assert f["grp/enum"].dtype.metadata["enum"] == {"RED": 0, "GREEN": 1, "BLUE": 7}
        assert f["grp/soft"].id == f["many"].id
        assert f["grp"].get("soft", getlink=True).path == "/many"
        assert f["grp/hard"].id == f["f32"].id
        ext = f["grp"].get("ext", getlink=True)
        assert (ext.filename, ext.path) == ("other.h5", "/x")
        typed = f["grp/typed"]._meta.type_json
        assert typed["id"] == f["mytype"].id and f["mytype"].dtype == np.dtype("<i2")
        # attributes of many types, references as the new ids
        a = f.attrs
        assert a["title"] == "synthetic" and a["fixed"] == b"abc"
        assert a["ints"].tolist() == [1, -2, 3] and a["ints"].dtype == np.dtype("<i2")
        assert a["f64"] == 2.5 and a["flag"] == np.True_
        assert a["names"].tolist() == ["x", "yy"]
        assert a["nothing"] == h5py.Empty("f4")  # as h5py reads an empty attribute
        assert a.raw_json("nothing")["shape"] == {"class": "H5S_NULL"}
        assert a["ref"] == f["many"].id
        assert a["record"].tolist() == (7, 1.25, b"r")
        assert f["many"].attrs["units"] == "K"
        assert f["many"].attrs["valid_range"].tolist() == [-5.0, 5.0]
        # unallocated chunks stay unwritten (read as the fill value)
        assert f["many"][59, 0] == -1.0 and f["sparse"][0] == -7
    stored = {"many": 1015, "sparse": 2}
    # (the scalar and the null dataset are H5D_CONTIGUOUS)
    assert summary.layouts == {"H5D_CHUNKED": len(DATASETS) - 2, "H5D_CONTIGUOUS": 2}
    assert summary.chunks_written >= sum(stored.values())


def test_rechunk_and_recompress(synthetic_h5, tmp_path):
    url = _domain(tmp_path)
    chunks = {"many": (10, 35), "/shgz": "auto", "contig": (100, None), "bigcontig": "auto"}
    summary = load_file(synthetic_h5, url, chunks=chunks, compression="zstd",
                        compression_opts=5, progress=False)
    with h5dask.File(url) as f, h5py.File(synthetic_h5) as h:
        assert f["many"].chunks == (10, 35) and f["contig"].chunks == (100, 3)
        assert f["shgz"].chunks == (500,) and f["shgz"].shuffle  # shuffle is kept
        assert f["f32"].chunks == (64,)  # not named: the source's chunks
        for path in ("many", "contig", "shgz", "f32", "bigcontig", "grp/vstr"):
            assert (f[path].compression, f[path].compression_opts) == ("zstd", 5), path
        for path in DATASETS:
            assert_same_values(f, h, path)
    # the h5py chunk cache holds one slab of source chunks: each is read about once
    assert summary.bytes_read < 1.3 * os.path.getsize(synthetic_h5)

    url2 = _domain(tmp_path, "one-shape.h5")
    load_file(synthetic_h5, url2, chunks=(16,), compression="none", progress=False)
    with h5dask.File(url2) as f, h5py.File(synthetic_h5) as h:
        assert f["f32"].chunks == (16,) and f["sparse"].chunks == (16,)
        assert f["grp/vstr"].chunks == (3,)  # clipped to the (fixed) extent
        assert f["many"].chunks == (2, 2)  # another rank: kept
        assert f["many"].compression is None and f["gzf32"].fletcher32
        for path in ("many", "f32", "sparse", "grp/compound", "grp/refs"):
            assert_same_values(f, h, path)

    url3 = _domain(tmp_path, "auto.h5")
    load_file(synthetic_h5, url3, chunks="auto", compression=6, progress=False)
    with h5dask.File(url3) as f:
        assert f["many"].chunks == (60, 70) and f["f32"].chunks == (500,)
        assert (f["many"].compression, f["many"].compression_opts) == ("gzip", 6)


def test_bad_options_fail_before_anything_is_written(synthetic_h5, tmp_path):
    url = _domain(tmp_path)
    # each a LoadOptionError (an h5dask error, still a ValueError) naming what to give
    bad = [({"chunks": {"nope": (4,)}}, "not in .*synthetic.h5.*nope.*h5dask info"),
           ({"compression": "brotli"}, "compression.*or 'none'"),
           ({"compression": "gzip", "compression_opts": 12}, "compression"),
           ({"compression_opts": 4}, "needs compression="),
           ({"chunks": {"many": (4,)}}, "many.*2 dimensions.*give it 2"),
           ({"chunks": (0,)}, "positive"),
           ({"chunks": 1.5}, "must be a shape"),
           ({"link": True, "chunks": "auto"}, "link=True.*load without link=True"),
           ({"max_workers": 0}, "max_workers must be >= 1"),
           ({"inline_chunk_limit": -1}, "inline_chunk_limit must be >= 0")]
    for kwargs, match in bad:
        with pytest.raises(LoadOptionError, match=match) as info:
            load_file(synthetic_h5, url, progress=False, **kwargs)
        assert isinstance(info.value, H5DaskError) and isinstance(info.value, ValueError)
    assert not any((tmp_path / "bucket").rglob("*.json"))


def test_progress_bar_and_summary_numbers(shared_data, s3_bucket_url, storage_options,
                                          domain_db_objects, s3_listing, capfd):
    path = shared_data / "CMIP6_IPSL-CM6A-LR_tas.nc"
    url = f"{s3_bucket_url}/tas.nc"
    summary = load_file(path, url, storage_options=storage_options)
    err = capfd.readouterr().err
    assert "load CMIP6_IPSL-CM6A-LR_tas.nc" in err and "100%" in err
    assert f"chunks {summary.chunks_written}/{summary.chunks_written}" in err
    assert isinstance(summary, LoadSummary) and "tas.nc" in str(summary)

    objects = domain_db_objects(url)
    chunk_objs = {k: v for k, v in objects.items() if not k.endswith(".json")}
    json_objs = {k: v for k, v in objects.items() if k.endswith(".json")}
    domain_json = s3_listing(f"{url}/.domain.json")
    domain_json.update(s3_listing(f"{url}/.h5dask-consolidated.json"))  # beside it
    assert summary.chunks_written == len(chunk_objs) == 6  # bnds has no data stored
    assert summary.chunk_bytes_written == sum(chunk_objs.values())
    assert summary.metadata_bytes_written == sum(json_objs.values()) + sum(
        domain_json.values())
    assert summary.bytes_written == sum(objects.values()) + sum(domain_json.values())
    assert (summary.datasets, summary.groups, summary.attributes) == (7, 1, 103)
    with h5py.File(path) as f:
        values = sum(f[n].nbytes for n in f if n != "bnds")
        stored = sum(f[n].id.get_storage_size() for n in f)
    assert summary.logical_bytes == values
    # every stored byte once (plus HDF5 metadata and one chunk read twice to check offsets)
    assert stored <= summary.bytes_read <= os.path.getsize(path) + 2 * stored
    assert 0 < summary.seconds < 60


def _file_with_a_broken_chunk(tmp_path: Path) -> Path:
    """An HDF5 file of 20 gzip chunks whose chunk 12 does not inflate."""
    src = tmp_path / "bad.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("x", data=np.arange(20 * 1000, dtype="<f8"), chunks=(1000,),
                         compression="gzip")
        info = f["x"].id.get_chunk_info(12)
    with open(src, "r+b") as fh:  # break the zlib stream of chunk 12
        fh.seek(info.byte_offset + 10)
        fh.write(b"\xff" * 32)
    return src


def test_a_failed_load_leaves_no_domain_and_no_objects(tmp_path):
    src = _file_with_a_broken_chunk(tmp_path)
    url = _domain(tmp_path)
    with pytest.raises(CorruptChunkError):
        load_file(src, url, progress=False, max_workers=2)
    bucket = tmp_path / "bucket"
    assert not (bucket / "home" / "x.h5" / ".domain.json").exists()
    assert [p for p in bucket.rglob("*") if p.is_file()] == []  # the chunks written are gone

    # replacing an existing domain: a failure keeps the old one as it was
    good = tmp_path / "good.h5"
    with h5py.File(good, "w") as f:
        f["y"] = np.arange(3)
    load_file(good, url, progress=False)
    with pytest.raises(FileExistsError):
        load_file(good, url, progress=False)
    with pytest.raises(CorruptChunkError):
        load_file(src, url, progress=False, overwrite=True)
    with h5dask.File(url) as f:
        assert list(f) == ["y"] and f["y"][()].tolist() == [0, 1, 2]
    load_file(src.with_name("good.h5"), url, progress=False, overwrite=True)


def test_a_failed_load_waits_for_its_writes_under_way_before_cleaning_up(tmp_path,
                                                                         monkeypatch):
    """A chunk write still under way when another chunk fails must end before the cleanup
    lists what to delete: cancelled instead, its thread would write the object after the
    cleanup, and it would stay behind."""
    import time

    from h5dask.format.filters import ChunkCodec
    from h5dask.storage.local import LocalObjectStore

    src = _file_with_a_broken_chunk(tmp_path)
    write, decode = LocalObjectStore._write, ChunkCodec.decode

    def slow_write(self, key, data):
        if key.endswith("/11"):  # under way while chunk 12 fails
            time.sleep(0.5)
        write(self, key, data)

    def late_decode(self, data, where, *args):
        if where.endswith("[chunk 12]"):  # fails once chunk 11's write has begun
            time.sleep(0.2)
        return decode(self, data, where, *args)

    monkeypatch.setattr(LocalObjectStore, "_write", slow_write)
    monkeypatch.setattr(ChunkCodec, "decode", late_decode)
    with pytest.raises(CorruptChunkError):
        load_file(src, _domain(tmp_path), progress=False, max_workers=2)
    time.sleep(0.6)  # a write left running would have landed by now
    assert [p for p in (tmp_path / "bucket").rglob("*") if p.is_file()] == []


def test_load_from_s3_source_url(shared_data, put_s3, s3_bucket_url, storage_options):
    path = shared_data / "daily_data.nc"
    src = put_s3(path, "daily_data.nc")
    url = f"{s3_bucket_url}/daily.nc"
    summary = load_file(src, url, storage_options=storage_options, progress=False)
    assert summary.source == src
    with xr.open_dataset(path, engine="h5netcdf", decode_cf=False) as want, \
            xr.open_dataset(url, engine="h5cloud", storage_options=storage_options,
                            decode_cf=False) as got:
        xr.testing.assert_identical(got, want)


def test_summary_text_lists_what_was_skipped():
    s = LoadSummary("a.h5", "s3://b/a.h5", linked=False, skipped=["/x: dataset (bitfield)"],
                    seconds=1.0)
    text = str(s)
    assert re.search(r"loaded a\.h5 -> s3://b/a\.h5", text) and "skipped: /x" in text
    assert json.dumps(s.layouts) == "{}"


def test_source_paths_as_domain_paths(tmp_path, monkeypatch):
    """A source path reads as a domain path does: '~' is the home directory, a file://
    URL is percent-encoded, and file://HOST/... is refused (it named /... silently)."""
    from h5dask.errors import DomainURLError

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "in dir").mkdir()
    with h5py.File(tmp_path / "in dir" / "src.h5", "w") as f:
        f["x"] = np.arange(5)
    load_file("~/in dir/src.h5", _domain(tmp_path, "a.h5"), progress=False)
    load_file((tmp_path / "in dir" / "src.h5").as_uri(), _domain(tmp_path, "b.h5"),
              progress=False)
    for name in ("a.h5", "b.h5"):
        with h5dask.File(_domain(tmp_path, name)) as f:
            np.testing.assert_array_equal(f["x"][...], np.arange(5))
    with pytest.raises(DomainURLError, match="names host 'in dir'"):
        load_file("file://in dir/src.h5", _domain(tmp_path, "c.h5"), progress=False)


def test_chunks_are_copied_with_max_workers_in_flight(tmp_path, monkeypatch):
    """User ask 3 (ingest makes ~11 000 requests one after another): the chunk copies of a
    load overlap, max_workers at a time, and each chunk is one PUT."""
    import asyncio

    from h5dask.storage.base import ObjectStore

    src = tmp_path / "many.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("v", data=np.arange(4000.0), chunks=(100,), compression="gzip")
    put = ObjectStore.put
    active, peak, chunk_puts = [0], [0], []

    async def slow_put(self, key, data, *, kind="chunk"):
        if kind == "chunk":
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            chunk_puts.append(key)
            await asyncio.sleep(0.01)  # a store some way off: the copies must overlap
            active[0] -= 1
        await put(self, key, data, kind=kind)

    monkeypatch.setattr(ObjectStore, "put", slow_put)
    summary = load_file(src, _domain(tmp_path), progress=False, max_workers=6)
    assert summary.chunks_written == len(chunk_puts) == len(set(chunk_puts)) == 40
    assert peak[0] == 6
