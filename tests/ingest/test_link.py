"""``load_file(..., link=True)``: domains whose datasets reference the chunks inside an HDF5
file in object storage (HSDS's H5D_CHUNKED_REF, H5D_CHUNKED_REF_INDIRECT and
H5D_CONTIGUOUS_REF layouts). Values are equal, no chunk data is copied (the domain's
objects prove it), every chunk task is one ranged GET, and HSDS serves such a domain."""

from __future__ import annotations

import json
import math
import os
import threading
from urllib.parse import urlsplit

import h5py
import numpy as np
import pytest
import xarray as xr
from ingest_helpers import BIG_CONTIG_SHAPE, MANY_SHAPE, assert_h5pyd_equals_h5py

import h5dask
from h5dask import linked_files
from h5dask.errors import CorruptChunkError, LinkedFileChangedError, LoadOptionError
from h5dask.format import ids
from h5dask.format.chunks import ChunkGrid
from h5dask.format.linked import CHUNK_TABLE_DTYPE, contiguous_ranges
from h5dask.ingest import load_file
from h5dask.storage.links import LinkPolicy

FILES = ["CMIP6_IPSL-CM6A-LR_tas.nc", "obs4MIPS_CERES-EBAF_L3B_Ed2-8_rlut.nc", "daily_data.nc"]
LINKED = {  # dataset -> layout it gets
    "many": "H5D_CHUNKED_REF_INDIRECT", "contig": "H5D_CONTIGUOUS_REF",
    "bigcontig": "H5D_CONTIGUOUS_REF", "f32": "H5D_CHUNKED_REF", "gzf32": "H5D_CHUNKED_REF",
    "shgz": "H5D_CHUNKED_REF", "shgzf32": "H5D_CHUNKED_REF", "sh": "H5D_CHUNKED_REF",
    "be": "H5D_CHUNKED_REF", "scalar": "H5D_CHUNKED_REF", "sparse": "H5D_CHUNKED_REF",
    "grp/compound": "H5D_CHUNKED_REF", "grp/enum": "H5D_CONTIGUOUS_REF",
    "grp/typed": "H5D_CONTIGUOUS_REF", "grp/empty": "H5D_CHUNKED_REF",
}
COPIED = ["/grp/refs", "/grp/vstr"]  # references and variable-length strings: not linkable


def _layout(f: h5dask.File, path: str) -> dict:
    raw = f[path]._meta.raw
    assert raw["layout"] == raw["creationProperties"]["layout"]  # both places, as HSDS had
    return raw["creationProperties"]["layout"]


def _same(got, want, path):
    if h5py.check_ref_dtype(want.dtype) is None:  # vlen strings as bytes, as in h5py
        np.testing.assert_array_equal(got[()], want[()], err_msg=path)
    if h5py.check_string_dtype(want.dtype) is not None and want.dtype.kind == "O":
        np.testing.assert_array_equal(got.asstr()[()], want.asstr()[()], err_msg=path)


@pytest.mark.parametrize("name", FILES)
def test_link_shared_file(name, shared_data, put_s3, s3_bucket_url, storage_options,
                          domain_db_objects):
    path = shared_data / name
    src = put_s3(path, name)
    url = f"{s3_bucket_url}/linked-{name}"
    summary = load_file(src, url, link=True, storage_options=storage_options, progress=False)
    assert summary.linked and summary.copied == [] and summary.skipped == []
    assert summary.chunks_written == summary.chunk_bytes_written == 0
    assert summary.chunks_linked > 0

    for decode in ({}, {"decode_cf": False}):
        with xr.open_dataset(path, engine="h5netcdf", **decode) as want, \
                xr.open_dataset(url, engine="h5cloud", storage_options=storage_options,
                                **decode) as got:
            xr.testing.assert_identical(got, want)

    # no chunk data copied: the domain holds JSON metadata only
    objects = domain_db_objects(url)
    assert objects and all(k.endswith((".group.json", ".dataset.json")) for k in objects)
    with h5py.File(path) as f:
        n_datasets = sum(isinstance(o, h5py.Dataset) for o in f.values())
    assert len(objects) == 1 + n_datasets
    assert sum(objects.values()) < summary.metadata_bytes_written < 200_000
    with h5dask.File(url, storage_options=storage_options) as f:
        for name_ in f:
            assert _layout(f, name_)["file_uri"] == src

    # one ranged GET of exactly the chunk's bytes per chunk task
    ds = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=storage_options)
    # dask-backed variables: one task per chunk; scalars stay lazy (one read, one chunk);
    # index coordinates were read by open_dataset
    lazy = {n: v for n, v in ds.variables.items() if n not in ds.indexes}
    tasks = sum(math.prod(len(c) for c in v.chunks) if v.chunks is not None else 1
                for v in lazy.values())
    assert all(v.chunks is not None or v.ndim == 0 for v in lazy.values())
    h5dask.reset_stats()
    ds.compute()
    io = h5dask.stats()
    assert io["chunk"]["read_requests"] == tasks > 0
    assert io["metadata"]["read_requests"] == 0
    with h5py.File(path) as f:
        stored = sum(f[n].id.get_storage_size() for n in lazy)
    assert io["chunk"]["read_bytes"] == stored


def test_link_synthetic_layouts(synthetic_h5, put_s3, s3_bucket_url, storage_options,
                                domain_db_objects):
    src = put_s3(synthetic_h5, "synthetic.h5")
    url = f"{s3_bucket_url}/synthetic-linked.h5"
    summary = load_file(src, url, link=True, storage_options=storage_options, progress=False)
    assert summary.copied == COPIED and summary.skipped == []
    with h5dask.File(url, storage_options=storage_options) as f, \
            h5py.File(synthetic_h5) as h:
        for path, layout in LINKED.items():
            assert _layout(f, path)["class"] == layout, path
            assert _layout(f, path)["file_uri"] == src
            _same(f[path], h[path], path)
        for path in COPIED:
            assert _layout(f, path)["class"] == "H5D_CHUNKED"
        _same(f["grp/vstr"], h["grp/vstr"], "vstr")
        assert f["grp/refs"][()].tolist() == [f["many"].id, f["grp"].id]
        assert f["grp/hard"].id == f["f32"].id and f["grp/soft"].id == f["many"].id
        assert f["many"].chunks == (2, 2) and f["contig"].chunks is None
        assert f["many"][59, 69] == -1.0 and f["sparse"][0] == -7  # not stored: fill value
        with pytest.raises(PermissionError):
            f["f32"].source().write(slice(0, 2), [1, 2])

        # the chunk table: an anonymous dataset of (offset int64, size int32)
        table_id = _layout(f, "many")["chunk_table"]
        table = f._session.load(table_id)
        assert table.dtype == CHUNK_TABLE_DTYPE
        assert table.shape == ChunkGrid(MANY_SHAPE, (2, 2)).grid_shape == (30, 35)
        infos = []
        h["many"].id.chunk_iter(infos.append)
        assert len(infos) == 1015 and summary.chunks_linked > 1015

        # one ranged GET per chunk
        h5dask.reset_stats()
        np.testing.assert_array_equal(f["many"][()], h["many"][()])
        io = h5dask.stats()["chunk"]
        assert io["read_requests"] == 1015
        assert io["read_bytes"] == sum(i.size for i in infos)
        h5dask.reset_stats()
        f["bigcontig"][()]
        assert h5dask.stats()["chunk"]["read_requests"] == 2  # two HSDS virtual chunks
        assert h5dask.stats()["chunk"]["read_bytes"] == math.prod(BIG_CONTIG_SHAPE) * 4

    # nothing but metadata, the chunk table's chunks, and the two copied datasets
    objects = domain_db_objects(url)
    table_prefix = ids.object_prefix(table_id) + "/"
    with h5dask.File(url, storage_options=storage_options) as f:
        copied = tuple(ids.object_prefix(f[p].id) + "/" for p in COPIED)
    data = {k: v for k, v in objects.items() if not k.endswith(".json")}
    assert all(k.startswith((table_prefix, *copied)) for k in data)
    table_chunks = [k for k in data if k.startswith(table_prefix)]
    assert len(table_chunks) == 1 and data[table_chunks[0]] == 30 * 35 * 12
    assert summary.chunks_written == len(data) == 3
    assert summary.chunk_bytes_written == sum(data.values())


def test_link_local_file_and_inline_limit(synthetic_h5, tmp_path):
    (tmp_path / "bucket" / "db").mkdir(parents=True)
    url = (tmp_path / "bucket" / "home" / "local.h5").as_uri()
    # a local file is linked from inside the domain's bucket root (else it is refused:
    # tests/reliability/test_linked_escape.py)
    (tmp_path / "bucket" / "files").mkdir()
    inside = tmp_path / "bucket" / "files" / "synthetic.h5"
    inside.write_bytes(synthetic_h5.read_bytes())
    summary = load_file(inside, url, link=True, inline_chunk_limit=5, progress=False)
    assert summary.copied == COPIED
    with h5dask.File(url) as f, h5py.File(synthetic_h5) as h:
        assert _layout(f, "f32")["file_uri"] == inside.as_uri()
        assert _layout(f, "shgz")["class"] == "H5D_CHUNKED_REF_INDIRECT"  # 8 chunks > 5
        assert _layout(f, "sparse")["class"] == "H5D_CHUNKED_REF"  # 2 chunks
        for path in LINKED:
            _same(f[path], h[path], path)

    # engine h5cloud, one dask task per chunk of the H5D_CHUNKED_REF_INDIRECT dataset: a
    # ranged GET per stored chunk, none for the 35 chunks the file never stored
    ds = xr.open_dataset(url, engine="h5cloud", chunks={})
    many = ds["many"].data
    assert many.npartitions == 1050
    h5dask.reset_stats()
    values = many.compute()
    assert h5dask.stats()["chunk"]["read_requests"] == 1015
    with h5py.File(synthetic_h5) as h:
        np.testing.assert_array_equal(values, h["many"][()])

    # as hsload --link writes them: the top-level layout a plain H5D_CHUNKED chunk shape,
    # the reference only in creationProperties
    for meta in (tmp_path / "bucket").rglob(".dataset.json"):
        obj = json.loads(meta.read_text())
        layout = obj.get("creationProperties", {}).get("layout", {})
        if layout.get("class", "").endswith("_REF") or "chunk_table" in layout:
            obj["layout"] = {"class": "H5D_CHUNKED", "dims": layout.get("dims", [1])}
            meta.write_text(json.dumps(obj))
    with h5dask.File(url) as f, h5py.File(synthetic_h5) as h:
        for path in LINKED:
            _same(f[path], h[path], path)


def test_link_needs_a_file_in_storage_or_on_disk(synthetic_h5, tmp_path):
    with pytest.raises(LoadOptionError, match="file system or in S3.*copy it there first"):
        load_file("https://example.invalid/x.h5", (tmp_path / "d.h5").as_uri(), link=True,
                  progress=False)
    with pytest.raises(LoadOptionError, match="chunks= and compression="):
        load_file(synthetic_h5, (tmp_path / "d.h5").as_uri(), link=True, compression="gzip")


def test_contiguous_ranges_are_hsds_arithmetic():
    h5json = pytest.importorskip("h5json.dset_util")
    from h5dask.format.metadata import CONTIGUOUS_REF_CHUNK_MAX, _contiguous_chunks

    for shape, itemsize in [((100, 2000, 3000), 4), ((7,), 8), ((3, 5, 1100, 1000), 2),
                            ((12345, 3), 8), ((1, 1, 1), 1)]:
        layout = h5json.getContiguousLayout({"class": "H5S_SIMPLE", "dims": list(shape)},
                                            itemsize, chunk_min=h5json.CHUNK_MIN,
                                            chunk_max=h5json.CHUNK_MAX)
        chunks = _contiguous_chunks(shape, itemsize, CONTIGUOUS_REF_CHUNK_MAX)
        assert chunks == tuple(layout), shape
        size = itemsize * math.prod(shape)
        ranges = contiguous_ranges(shape, itemsize, chunks, 1000, size)
        # HSDS: offset + sum(index[d] * chunks[d] * itemsize * prod(shape[d+1:]))
        for index, start, n in ranges:
            extent, offset = itemsize, 1000
            for d in reversed(range(len(shape))):
                offset += index[d] * chunks[d] * extent
                extent *= shape[d]
            assert start == offset and 0 < n <= itemsize * math.prod(chunks)
        assert sum(n for _, _, n in ranges) == size  # every byte once


def test_file_uri_forms(storage_options, tmp_path):
    from h5dask.storage import open_location

    resolve = LinkPolicy().resolve
    domain_store = open_location("s3://bucket-a/home/x.h5",
                                 {**storage_options, "max_attempts": 3}).store
    store, key = resolve("s3://bucket-b/dir/f.h5", domain_store, "d")
    assert (store.root_url, key) == ("s3://bucket-b", "dir/f.h5")
    assert store.settings == domain_store.settings  # the domain store's credentials
    assert store.retry == domain_store.retry  # and the user's tuning
    store, key = resolve("bucket-c/f.h5", domain_store, "d")  # HSDS's relative form
    assert (store.root_url, key) == ("s3://bucket-c", "f.h5")
    # allowed: a local file, opened with the domain store's tuning
    allowed = LinkPolicy.from_option(["file:///data/"])
    store, key = allowed.resolve("file:///data/run%201/f.h5", domain_store, "d")
    assert (urlsplit(store.root_url).path, key) == ("/data/run%201", "f.h5")
    assert store.retry == domain_store.retry

    # file://: inside the bucket root, as an absolute URL or HSDS's BUCKET/key
    root = tmp_path / "bucket"
    (root / "db").mkdir(parents=True)
    domain_store = open_location((root / "home" / "x.h5").as_uri()).store
    for uri in ((root / "files" / "f.h5").as_uri(), "bucket/files/f.h5",
                "file://bucket/files/f.h5"):
        assert resolve(uri, domain_store, "d") == (domain_store, "files/f.h5"), uri


@pytest.mark.hsds
def test_hsds_serves_a_linked_domain(synthetic_h5, shared_data, put_s3, hsds_s3,
                                     storage_options, fresh):
    h5pyd = pytest.importorskip("h5pyd")
    src = put_s3(synthetic_h5, "synthetic.h5")  # another bucket than HSDS's own
    domain = f"/home/{hsds_s3.username}/{fresh('linked.h5')}"
    load_file(src, f"s3://{hsds_s3.bucket}{domain}", link=True, storage_options=storage_options,
              progress=False)
    kwargs = {"retries": 1, **hsds_s3.h5pyd_kwargs()}
    # Not read here, and why (HSDS 1.0.2):
    # - "f32" (fletcher32 without compression): HSDS ignores the filter, gets 4 bytes too
    #   many per chunk and fails ("cannot reshape array of size 66 into shape (64,)" in
    #   its log, h5pyd: "Error retrieving data" after HSDS's retries, ~40 s). With gzip
    #   ("gzf32", "shgzf32") it works: zlib stops at the end of its stream.
    # - "grp/refs" (copied, not linked): HSDS stores object references in chunks as fixed
    #   48-byte strings, h5dask as variable-length ids ("buffer size must be a multiple of
    #   element size"); an h5dask format matter, not a linked layout.
    # - all of "many" (1050 chunks of 16 bytes: a minute through HSDS here); two corners
    #   of it, stored and unstored chunks, go through its chunk table all the same (and
    #   of "bigcontig", a slice across its two virtual chunks).
    with h5pyd.File(domain, "r", **kwargs) as g, h5py.File(synthetic_h5) as h:
        for path in LINKED:
            if path in ("f32", "many", "bigcontig"):
                continue
            np.testing.assert_array_equal(g[path][()], h[path][()], err_msg=path)
            assert g[path].dtype == h[path].dtype, path
        for corner in (np.s_[:4, :6], np.s_[55:60, 64:70]):
            np.testing.assert_array_equal(g["many"][corner], h["many"][corner])
        across = np.s_[:, 1030:1040, ::50]  # both virtual chunks of H5D_CONTIGUOUS_REF
        np.testing.assert_array_equal(g["bigcontig"][across], h["bigcontig"][across])
        assert g["grp/vstr"][()].tolist() == h["grp/vstr"][()].tolist()

    # and a real netCDF file, linked: every value and attribute as h5py reads the file
    path = shared_data / "CMIP6_IPSL-CM6A-LR_tas.nc"
    src = put_s3(path, path.name)
    domain = f"/home/{hsds_s3.username}/{fresh(path.name)}"
    load_file(src, f"s3://{hsds_s3.bucket}{domain}", link=True, storage_options=storage_options,
              progress=False)
    with h5pyd.File(domain, "r", **kwargs) as g, h5py.File(path) as h:
        assert assert_h5pyd_equals_h5py(g, h) > 7


def _write_linkable(path, scale, pad=0):
    with h5py.File(path, "w") as f:
        if pad:  # a dataset first moves every other dataset's bytes along the file
            f.create_dataset("pad", data=np.zeros(pad))
        f.create_dataset("contig", data=np.arange(10.0) * scale)
        f.create_dataset("chunked", data=np.arange(10.0) * scale, chunks=(4,))
        f.create_dataset("many", data=np.arange(40.0) * scale, chunks=(1,))  # INDIRECT


@pytest.mark.parametrize("where", ["file", "s3"])
def test_linked_file_rewritten_after_linking_is_refused(where, tmp_path, put_s3,
                                                        s3_bucket_url, storage_options):
    """The layout's offsets are only true of the file as it was linked: after the file
    was rewritten (another layout, other offsets) its bytes there are other data, so an
    open refuses it instead of reading them as values (the file's size, recorded at
    link time, no longer matches)."""
    root = tmp_path / "bucket"
    (root / "db").mkdir(parents=True)  # the bucket root, which the file is inside
    (root / "files").mkdir()
    local = root / "files" / "f.h5"
    _write_linkable(local, 1.0)
    if where == "file":
        src, url, opts = local, (root / "home" / "d.h5").as_uri(), None
    else:
        src, url, opts = put_s3(local, "f.h5"), f"{s3_bucket_url}/d.h5", storage_options
    load_file(src, url, link=True, inline_chunk_limit=8, storage_options=opts, progress=False)
    with h5dask.File(url, storage_options=opts) as f:
        assert f["contig"][()].tolist() == list(np.arange(10.0))
        assert _layout(f, "many")["class"] == "H5D_CHUNKED_REF_INDIRECT"

    _write_linkable(local, 2.0, pad=3)  # rewritten: the same datasets, moved along
    if where == "s3":
        put_s3(local, "f.h5")
    for path in ("contig", "chunked", "many"):
        with h5dask.File(url, storage_options=opts) as f:
            with pytest.raises(LinkedFileChangedError, match=rf"'/{path}'.*f\.h5.*link"):
                f[path][()]
    with pytest.raises(LinkedFileChangedError, match="variable .*rewritten"):
        xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=opts)

    # values changed in place (h5py "r+"): the same offsets, so the new values are read
    _write_linkable(local, 1.0)
    with h5py.File(local, "r+") as h:
        h["chunked"][:] = np.arange(10.0) * 3
    if where == "s3":
        put_s3(local, "f.h5")
    with h5dask.File(url, storage_options=opts) as f:
        assert f["chunked"][()].tolist() == list(np.arange(10.0) * 3)


def test_linked_chunk_cut_short_by_a_truncated_file_is_an_error(tmp_path):
    """A ranged GET into a truncated file returns fewer bytes than the chunk reference
    says. Here exactly the bytes of the edge chunk's clipped shape: read as a clipped
    chunk they were wrong values. A domain that recorded no file size (HSDS's hsload
    --link, earlier h5dask) relies on this check alone."""
    root = tmp_path / "bucket"
    (root / "db").mkdir(parents=True)
    (root / "files").mkdir()
    path = root / "files" / "t.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("v", data=np.arange(24.0).reshape(4, 6), chunks=(4, 4))
        edge = f["v"].id.get_chunk_info(1)  # the chunk (0, 1): 4x4 stored, 4x2 inside
    url = (root / "home" / "t.h5").as_uri()
    load_file(path, url, link=True, progress=False)
    for meta in root.rglob(".dataset.json"):  # as a domain without the recorded size
        obj = json.loads(meta.read_text())  # (nor version: a version alone is refused)
        for layout in (obj["creationProperties"]["layout"], obj["layout"]):
            for key in ("h5dask_file_size", "h5dask_file_version", "h5dask_file_path"):
                layout.pop(key)
        meta.write_text(json.dumps(obj))
    os.truncate(path, edge.byte_offset + 4 * 2 * 8)  # the clipped (4, 2) chunk's bytes
    with h5dask.File(url) as f, pytest.raises(CorruptChunkError, match=r"t\.h5.*64 of"):
        f["v"][()]


# -- a file written since it was linked: its version, then its layout, is checked -------
def _write_pair(path, first, second, scale=1.0):
    """Two datasets of the same shape, type and chunks, written in the order given: the
    file of ``("a", "b")`` and of ``("b", "a")`` has the same size, each name at the
    other's offsets."""
    with h5py.File(path, "w") as f:
        for name in (first, second):
            value = {"a": 1.0, "b": 2.0}[name] * scale
            f.create_dataset(name, data=np.full(40, value), chunks=(8,))
        f.create_dataset("contig", data=np.arange(10.0) * scale)


def _age(path):
    """Date the file's modification a minute back: a file written just before it is
    linked is recorded as "racy" (it might be written again in the same clock tick) and
    checked on every first open in a process."""
    then = path.stat().st_mtime_ns - 60 * 10**9
    os.utime(path, ns=(then, then))


def _local_pair(tmp_path, link=True, age=True):
    """The file of ``_write_pair`` in a bucket root, and the file:// URL of a domain
    linking it (linked if ``link``)."""
    root = tmp_path / "bucket"
    (root / "db").mkdir(parents=True)
    (root / "files").mkdir()
    local = root / "files" / "pair.h5"
    _write_pair(local, "a", "b")
    if age:
        _age(local)
    url = (root / "home" / "pair.h5").as_uri()
    if link:
        load_file(local, url, link=True, progress=False)
    return local, url


def _linked_pair(where, tmp_path, put_s3, s3_bucket_url, storage_options):
    local, url = _local_pair(tmp_path, link=False)
    if where == "file":
        src, opts = local, None
    else:
        src, url, opts = put_s3(local, "pair.h5"), f"{s3_bucket_url}/pair.h5", storage_options

    def publish():  # the local file's new bytes where the domain links them
        if where == "s3":
            put_s3(local, "pair.h5")

    load_file(src, url, link=True, storage_options=opts, progress=False)
    return local, url, opts, publish


@pytest.mark.parametrize("where", ["file", "s3"])
def test_same_size_rewrite_with_another_layout_is_refused(where, tmp_path, put_s3,
                                                          s3_bucket_url, storage_options):
    """The file regenerated with its variables in another order, to the byte the same
    size: the size check cannot see it, and each offset now holds the other variable's
    values. The version recorded at link time shows the file was written; its metadata
    shows the layout moved: LinkedFileChangedError naming the dataset and the file, from
    h5dask.File and engine="h5cloud" alike, instead of b's values read as a's."""
    local, url, opts, publish = _linked_pair(where, tmp_path, put_s3, s3_bucket_url,
                                             storage_options)
    size = local.stat().st_size
    with h5dask.File(url, storage_options=opts) as f:
        assert f["a"][()].tolist() == [1.0] * 40

    _write_pair(local, "b", "a")
    assert local.stat().st_size == size
    publish()
    for name in ("a", "b"):
        with h5dask.File(url, storage_options=opts) as f:
            with pytest.raises(LinkedFileChangedError,
                               match=rf"'/{name}'.*pair\.h5.*rewritten.*chunk 0.*--link"):
                f[name][()]
    with pytest.raises(LinkedFileChangedError, match=r"variable '[ab]'.*pair\.h5.*rewritten"):
        xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=opts)
    with h5dask.File(url, storage_options=opts) as f:  # what told it
        assert _layout(f, "a")["h5dask_file_version"]
        assert _layout(f, "a")["h5dask_file_path"] == "/a"


@pytest.mark.parametrize("where", ["file", "s3"])
def test_values_edited_in_place_are_read_and_checked_once(where, tmp_path, put_s3,
                                                          s3_bucket_url, storage_options):
    """h5py "r+" edits values where they are and appends a dataset (the file grows): the
    layout still holds, so the new values are read, with no error; the check reads the
    file's metadata once for that file version, not again on the next open. An unchanged
    file costs no request beyond the one HEAD per file and session."""
    local, url, opts, publish = _linked_pair(where, tmp_path, put_s3, s3_bucket_url,
                                             storage_options)

    def read_all() -> tuple[dict, list]:
        h5dask.reset_stats()
        with h5dask.File(url, storage_options=opts) as f:
            values = [f[n][()].tolist() for n in ("a", "b", "contig")]
        ds = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=opts)
        assert ds["b"].values.tolist() == values[1]
        return h5dask.stats()["metadata"], values

    unchanged, values = read_all()
    assert values[0] == [1.0] * 40
    assert read_all()[0] == unchanged  # the same requests every time

    with h5py.File(local, "r+") as h:
        h["a"][:] = np.arange(40.0)
        h["contig"][3] = -1.0
        h.create_dataset("new", data=np.zeros(1000))
    publish()
    checked, values = read_all()
    assert values[0] == list(np.arange(40.0)) and values[2][3] == -1.0
    assert values[1] == [2.0] * 40
    # the metadata of the file read by blocks, on top of what an unchanged file costs
    assert unchanged["read_requests"] < checked["read_requests"] <= \
        unchanged["read_requests"] + 8
    assert read_all()[0] == unchanged  # checked once for this version of the file


def test_a_check_is_bounded_in_requests(tmp_path, monkeypatch):
    """A check that would need more reads of the file's metadata than allowed stops and
    refuses, saying so, rather than reading without knowing."""
    from h5dask import linked_files

    local, url = _local_pair(tmp_path)
    with h5py.File(local, "r+") as h:
        h["a"][0] = 5.0
    monkeypatch.setattr(linked_files, "MAX_CHECK_REQUESTS", 0)
    with h5dask.File(url) as f, pytest.raises(LinkedFileChangedError,
                                              match="more than 0 reads"):
        f["a"][()]
    monkeypatch.undo()
    with h5dask.File(url) as f:  # not remembered as refused: the next check may succeed
        assert f["a"][0] == 5.0


def test_a_dataset_gone_from_the_rewritten_file_is_refused(tmp_path):
    local, url = _local_pair(tmp_path)
    with h5py.File(local, "r+") as h:
        h.move("a", "renamed")
    with h5dask.File(url) as f:
        with pytest.raises(LinkedFileChangedError, match="no dataset '/a' any more"):
            f["a"][()]
        assert f["b"][()].tolist() == [2.0] * 40


def test_linked_files_are_checked_in_the_client_not_per_task(cluster_client, tmp_path,
                                                             put_s3, s3_bucket_url,
                                                             storage_options):
    """On a cluster the client resolves and checks the layout when it opens the dataset;
    the workers' tasks read chunks only: no HEAD, no metadata read, whatever the number
    of tasks."""
    local, url, opts, publish = _linked_pair("s3", tmp_path, put_s3, s3_bucket_url,
                                             storage_options)
    with h5py.File(local, "r+") as h:
        h["a"][:] = np.arange(40.0)
        h.create_dataset("new", data=np.zeros(1000))  # the file grows: still checked
    publish()
    cluster_client.run(h5dask.reset_stats)
    h5dask.reset_stats()
    v = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=opts)["a"]
    assert v.data.npartitions == 5
    assert float(v.sum().compute()) == float(np.arange(40.0).sum())
    assert h5dask.stats()["metadata"]["read_requests"] > 0  # the client's open and check
    workers = cluster_client.run(h5dask.stats)
    assert sum(s["chunk"]["read_requests"] for s in workers.values()) == 5
    assert sum(s["metadata"]["read_requests"] for s in workers.values()) == 0


def test_a_file_linked_just_after_it_was_written_is_always_checked(tmp_path):
    """A local file's times move by clock ticks: a file written again in the tick it was
    linked in would keep its times. One modified just before it is linked is recorded
    with a version no file has ("racy"), so readers check its layout even though its
    times have not moved (once per process: the next open makes only the HEAD)."""
    local, url = _local_pair(tmp_path, age=False)
    requests = []
    for _ in range(2):
        h5dask.reset_stats()
        with h5dask.File(url) as f:
            assert _layout(f, "a")["h5dask_file_version"].endswith(" racy")
            assert f["a"][()].tolist() == [1.0] * 40
        requests.append(h5dask.stats()["metadata"]["read_requests"])
    assert requests[0] == requests[1] + 1  # the file's metadata: one 64 KiB block


def test_a_domain_with_no_recorded_version_keeps_the_size_check(tmp_path):
    """Domains linked by earlier h5dask versions recorded the size only: a file of
    another size is refused, one rewritten to the same size is read as it is now
    (documented as not detected), and nothing of the file's metadata is read."""
    local, url = _local_pair(tmp_path)
    for meta in local.parent.parent.rglob(".dataset.json"):  # as earlier h5dask wrote it
        obj = json.loads(meta.read_text())
        for layout in (obj["creationProperties"]["layout"], obj["layout"]):
            layout.pop("h5dask_file_version")
            layout.pop("h5dask_file_path")
        meta.write_text(json.dumps(obj))
    requests = []
    for want in ([1.0] * 40, [2.0] * 40):
        h5dask.reset_stats()
        with h5dask.File(url) as f:
            assert f["a"][()].tolist() == want  # then b's values: the documented gap
        requests.append(h5dask.stats()["metadata"]["read_requests"])
        _write_pair(local, "b", "a")
    assert requests[0] == requests[1]  # nothing of the file's metadata is read
    with h5py.File(local, "a") as h:
        h.create_dataset("more", data=np.zeros(100))
    with h5dask.File(url) as f, pytest.raises(LinkedFileChangedError, match="bytes now"):
        f["a"][()]


def _write_sparse(path, fill=-1.0, gzip=None):
    """32 values in chunks of 8, only 8:16 written: the rest reads as the fill value."""
    with h5py.File(path, "w") as f:
        d = f.create_dataset("sparse", shape=(32,), dtype="f8", chunks=(8,), fillvalue=fill,
                             compression="gzip" if gzip else None, compression_opts=gzip,
                             shuffle=bool(gzip))
        d[8:16] = 1


def _linked_sparse(tmp_path, **kwargs):
    root = tmp_path / "bucket"
    (root / "db").mkdir(parents=True)
    (root / "files").mkdir()
    local = root / "files" / "sparse.h5"
    _write_sparse(local, **kwargs)
    _age(local)
    url = (root / "home" / "sparse.h5").as_uri()
    load_file(local, url, link=True, progress=False)
    return local, url


def test_same_size_rewrite_with_another_fill_value_is_refused(tmp_path):
    """Regenerated at the same size with fill value -2 instead of -1: every offset holds,
    but the unwritten values h5py reads are -2 and the domain's fill value says -1, so
    the domain would read -1 where the file says -2: refused, naming the fill value."""
    local, url = _linked_sparse(tmp_path, fill=-1.0)
    size = local.stat().st_size
    _write_sparse(local, fill=-2.0)
    assert local.stat().st_size == size
    with h5py.File(local) as g:
        assert g["sparse"][0] == -2.0
    with h5dask.File(url) as f, pytest.raises(LinkedFileChangedError,
                                              match=r"'/sparse'.*fill value"):
        f["sparse"][()]


def test_other_options_of_the_same_filter_are_refused(tmp_path):
    """The same filter id with other options decodes otherwise: bitshuffle (32008) with
    LZ4 or without compression. A domain that recorded one while the file, written
    since, says the other (here the domain's JSON edited to stand for the file of link
    time) is refused, naming the filters, instead of decoding LZ4 bytes as plain
    bitshuffled ones."""
    hdf5plugin = pytest.importorskip("hdf5plugin")
    root = tmp_path / "bucket"
    (root / "db").mkdir(parents=True)
    (root / "files").mkdir()
    local = root / "files" / "bs.h5"
    with h5py.File(local, "w") as f:
        f.create_dataset("v", data=np.arange(64.0), chunks=(16,),
                         **hdf5plugin.Bitshuffle(cname="lz4"))
    _age(local)
    url = (root / "home" / "bs.h5").as_uri()
    load_file(local, url, link=True, progress=False)
    with h5dask.File(url) as f:
        assert f["v"][()].tolist() == list(np.arange(64.0))
    os.utime(local)  # a new version of the same bytes: the layout is checked
    meta = next(m for m in root.rglob(".dataset.json")
                if "32008" in m.read_text() or "bitshuffle" in m.read_text())
    obj = json.loads(meta.read_text())
    for flt in obj["creationProperties"]["filters"]:
        if flt.get("id") == 32008:
            flt["cname"] = "none"
    meta.write_text(json.dumps(obj))
    with h5dask.File(url) as f, pytest.raises(LinkedFileChangedError,
                                              match=r"'/v'.*its filters .*cname"):
        f["v"][()]


def test_a_chunk_written_since_linking_is_refused(tmp_path):
    """A chunk the domain has no entry for reads as the fill value; stored in the file
    now (written since, even where it fits the same size) it is refused, not read as
    fill."""
    local, url = _linked_sparse(tmp_path, fill=-1.0)
    with h5py.File(local, "r+") as g:
        g["sparse"][0:8] = 7
    _age(local)
    with h5dask.File(url) as f, pytest.raises(LinkedFileChangedError,
                                              match=r"chunk 0 is not stored in the domain"):
        f["sparse"][()]


@pytest.mark.parametrize("name", ["synthetic.h5", *FILES])
def test_a_rewrite_of_the_same_bytes_passes_the_check(name, synthetic_h5, shared_data, tmp_path,
                                                      monkeypatch):
    """Every linked dataset of files with filters (gzip, shuffle, fletcher32), big-endian,
    compound, enum and sparse datasets, fill values (netCDF's _FillValue, NaN): a file
    written again with the same bytes (a new version) passes the check, fill value and
    filter options included, and reads as h5py reads it: the check refuses changes,
    never an unchanged file."""
    source = synthetic_h5 if name == "synthetic.h5" else shared_data / name
    root = tmp_path / "bucket"
    (root / "db").mkdir(parents=True)
    (root / "files").mkdir()
    local = root / "files" / name
    local.write_bytes(source.read_bytes())
    _age(local)
    url = (root / "home" / name).as_uri()
    load_file(local, url, link=True, progress=False)
    local.write_bytes(source.read_bytes())  # a new version (mtime, ctime), the same bytes
    checked = []
    check = linked_files._check
    monkeypatch.setattr(linked_files, "_check", lambda *a: checked.append(a[3]) or check(*a))
    with h5dask.File(url) as f, h5py.File(source) as h:
        paths = LINKED if name == "synthetic.h5" else [
            k for k, v in h.items() if isinstance(v, h5py.Dataset) and v.shape]
        for path in paths:
            _same(f[path], h[path], path)
    assert len(checked) == len(paths)  # each was checked, none refused


def test_attributes_are_those_of_link_time(tmp_path):
    """Attributes are copied at link time, not linked: an attribute edited in the file
    since (a CF scale_factor) is not seen until the file is linked again, as
    docs/reliability.md says; the values, edited in place, are read as they are now."""
    local, url = _linked_sparse(tmp_path)
    with h5py.File(local, "r+") as g:
        g["sparse"].attrs["scale_factor"] = 10.0
        g["sparse"][8:16] = 3
    _age(local)
    with h5dask.File(url) as f:
        assert "scale_factor" not in f["sparse"].attrs
        assert f["sparse"][8:16].tolist() == [3.0] * 8
    load_file(local, url, link=True, overwrite=True, progress=False)
    with h5dask.File(url) as f:
        assert f["sparse"].attrs["scale_factor"] == 10.0


def test_a_check_waits_on_its_gets_without_h5pys_lock(tmp_path, monkeypatch):
    """h5py serialises every h5py call of the process on one lock, held while HDF5 reads
    through a Python file object. The check's GETs are made outside h5py: while each is
    in flight, an unrelated h5py read of a local file in another thread completes (with
    the lock held it could not start until the GET ended: the join below times out)."""
    local, url = _local_pair(tmp_path)
    _write_pair(local, "a", "b", scale=3.0)  # a new version, the same layout
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as h:
        h["x"] = np.arange(10)
    events = []
    real_sync = linked_files.sync

    def get_with_a_read_meanwhile(coro, *args):
        def unrelated():
            with h5py.File(other) as h:
                h["x"][()]
            events.append("unrelated read done")

        reader = threading.Thread(target=unrelated)
        reader.start()
        reader.join(30)  # a GET in flight: another thread's h5py read is not held up
        events.append("get")
        return real_sync(coro, *args)

    monkeypatch.setattr(linked_files, "sync", get_with_a_read_meanwhile)
    with h5dask.File(url) as f:
        assert f["a"][()].tolist() == [3.0] * 40
    assert events.count("get") >= 1
    assert events == ["unrelated read done", "get"] * events.count("get")


@pytest.mark.parametrize("reopens", [0, 1])
def test_a_check_past_its_reopens_fetches_as_h5py_reads(reopens, tmp_path, monkeypatch):
    """Past MAX_REOPENS, the blocks still missing are fetched as h5py reads them (its lock
    held): the check gives the same answers, a value edit read, a layout change refused."""
    monkeypatch.setattr(linked_files, "MAX_REOPENS", reopens)
    local, url = _local_pair(tmp_path)
    _write_pair(local, "a", "b", scale=3.0)
    with h5dask.File(url) as f:
        assert f["a"][()].tolist() == [3.0] * 40
    _write_pair(local, "b", "a")
    with h5dask.File(url) as f, pytest.raises(LinkedFileChangedError, match="chunk 0"):
        f["a"][()]
