"""The load planner (``h5dask.ingest.plan``) on its own: from a described source dataset
and the load's options to an immutable plan, without any file or store."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from h5dask.errors import LoadOptionError
from h5dask.ingest.plan import (
    ChunkSpec,
    Compression,
    PlanOptions,
    SourceDataset,
    StoredChunk,
    chunk_logical_bytes,
    copy_jobs,
    plan_dataset,
    resolve_chunks,
)

F8 = {"class": "H5T_FLOAT", "base": "H5T_IEEE_F64LE"}
SHUFFLE_GZIP = ((2, (8,)), (1, (6,)))
URI = "s3://bucket/files/x.h5"


def chunked(shape: tuple[int, ...] = (100,), chunks: tuple[int, ...] = (10,),
            stored: Any = "all", filters: tuple = SHUFFLE_GZIP, **kw: Any) -> SourceDataset:
    """A float64 chunked dataset at /g/t; ``stored``: "all" or the chunk indices stored
    (at byte offset 1000 * (1 + n), 80 bytes each)."""
    if stored == "all":
        stored = list(np.ndindex(*(-(-s // c) for s, c in zip(shape, chunks))))
    infos = tuple(StoredChunk(tuple(i * c for i, c in zip(index, chunks)), 1000 * (1 + n), 80)
                  for n, index in enumerate(stored))
    kw.setdefault("allocated", bool(infos))
    return SourceDataset("/g/t", F8, np.dtype("<f8"), 8, shape, shape, "chunked", chunks,
                         filters, stored=infos, **kw)


def contiguous(shape: tuple[int, ...] = (100,), offset: int | None = 4096,
               **kw: Any) -> SourceDataset:
    size = 8 * int(np.prod(shape)) if offset is not None else 0
    return SourceDataset("/c", F8, np.dtype("<f8"), 8, shape, shape, "contiguous", None, (),
                         allocated=offset is not None, data_offset=offset, storage_size=size,
                         **kw)


LINK = PlanOptions(link=True, file_uri=URI)


# -- copy ---------------------------------------------------------------------------------
def test_native_chunks_are_copied_as_they_are() -> None:
    plan = plan_dataset(chunked(), PlanOptions())
    assert (plan.mode, plan.chunks, plan.direct) == ("copy", (10,), True)
    assert plan.layout == {"class": "H5D_CHUNKED", "dims": [10]}
    assert [f["name"] for f in plan.filters] == ["shuffle", "gzip"]
    assert plan.filters[1]["level"] == 6
    jobs = list(copy_jobs(plan))
    assert [index for index, _ in jobs] == [(i,) for i in range(10)]
    assert all(info is not None and info.index((10,)) == index for index, info in jobs)
    body = plan.dataset_json()
    assert body["shape"]["dims"] == [100] and body["type"] == F8


def test_rechunked_copy_writes_only_chunks_over_stored_ones() -> None:
    src = chunked(stored=[(0,), (5,)])  # elements 0-9 and 50-59
    plan = plan_dataset(src, PlanOptions(chunks=ChunkSpec.parse((25,))))
    assert (plan.mode, plan.chunks, plan.direct) == ("copy", (25,), False)
    assert list(copy_jobs(plan)) == [((0,), None), ((2,), None)]
    assert chunk_logical_bytes(plan, (3,)) == 25 * 8


def test_edge_chunk_logical_bytes_count_only_the_extent() -> None:
    plan = plan_dataset(chunked(shape=(95,)), PlanOptions())
    assert chunk_logical_bytes(plan, (9,)) == 5 * 8
    assert sum(chunk_logical_bytes(plan, i) for i, _ in copy_jobs(plan)) == 95 * 8


def test_contiguous_source_gets_chosen_chunks_and_every_chunk_copied() -> None:
    plan = plan_dataset(contiguous((4, 5)), PlanOptions())
    assert plan.mode == "copy" and not plan.direct
    assert len(list(copy_jobs(plan))) == int(np.prod(
        [-(-s // c) for s, c in zip((4, 5), plan.chunks)]))


def test_unknown_filter_becomes_gzip_with_a_note_and_no_direct_copy() -> None:
    plan = plan_dataset(chunked(filters=((99999, ()),)), PlanOptions())
    assert plan.notes == ("filter 99999 -> gzip",)
    assert [(f["name"], f.get("level")) for f in plan.filters] == [("gzip", 4)]
    assert not plan.direct


@pytest.mark.parametrize(("compression", "opts", "names"), [
    ("zstd", 3, ["shuffle", "zstd"]), ("none", None, ["shuffle"]), (7, None, ["shuffle", "gzip"]),
])
def test_compression_replaces_the_compressor_only(compression: Any, opts: Any,
                                                  names: list[str]) -> None:
    options = PlanOptions(compression=Compression.parse(compression, opts))
    plan = plan_dataset(chunked(), options)
    assert [f["name"] for f in plan.filters] == names


def test_bad_compression_requests_are_refused() -> None:
    with pytest.raises(ValueError, match="compression_opts needs compression="):
        Compression.parse(None, 4)
    with pytest.raises(ValueError, match="or 'none'"):
        Compression.parse("nosuchcodec", None)


@pytest.mark.parametrize(("compression", "opts", "message"), [
    ("gzip", 12, "compression: compression level must be 0-9, not 12"),
    (12, None, "compression: compression level must be 0-9, not 12"),
    ("lzf", 3, "compression: compression 'lzf' takes no level (compression_opts), got 3"),
])
def test_level_errors_do_not_suggest_none(compression: Any, opts: Any, message: str) -> None:
    """'none' is the alternative to an unknown codec, not to a bad level of a known one."""
    with pytest.raises(LoadOptionError) as info:
        Compression.parse(compression, opts)
    assert str(info.value) == message


def test_nothing_to_copy_is_metadata_only() -> None:
    assert plan_dataset(chunked(stored=[]), PlanOptions()).mode == "meta"
    null = dataclasses.replace(chunked(), shape=None, maxshape=None, stored=())
    plan = plan_dataset(null, PlanOptions())
    assert (plan.mode, plan.layout) == ("meta", None)
    assert plan.dataset_json()["shape"] == {"class": "H5S_NULL"}
    empty = plan_dataset(chunked(shape=(0,), stored=[]), PlanOptions())
    assert empty.mode == "meta"
    for meta in (plan_dataset(chunked(stored=[]), PlanOptions()), plan, empty):
        assert list(copy_jobs(meta)) == []


def test_scalar_is_one_contiguous_chunk() -> None:
    src = SourceDataset("/s", F8, np.dtype("<f8"), 8, (), (), "compact", None, ())
    plan = plan_dataset(src, PlanOptions())
    assert plan.layout == {"class": "H5D_CONTIGUOUS"}
    assert list(copy_jobs(plan)) == [((0,), None)]
    assert chunk_logical_bytes(plan, (0,)) == 8


def test_plans_are_immutable() -> None:
    plan = plan_dataset(chunked(), PlanOptions())
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.mode = "link"  # type: ignore[misc]


# -- chunks= ------------------------------------------------------------------------------
def test_chunk_spec_by_path_or_name_and_unused_keys() -> None:
    spec = ChunkSpec.parse({"t": [5], "/g/u": "auto", "missing": [2]})
    assert spec.request("/g/t") == ("t", (5,))
    assert spec.request("/g/u") == ("/g/u", "auto")
    assert spec.request("/other") == (None, None)
    plan = plan_dataset(chunked(), PlanOptions(chunks=spec))
    assert (plan.chunks, plan.chunks_key) == ((5,), "t")
    assert spec.unused({"t", "/g/u"}) == ["missing"]


def test_chunk_spec_rank_mismatch_names_the_dataset() -> None:
    with pytest.raises(ValueError, match="/g/t the chunk shape"):
        plan_dataset(chunked(), PlanOptions(chunks=ChunkSpec.parse({"t": [5, 5]})))


@pytest.mark.parametrize("bad", [[0], "big", 1.5])
def test_chunk_spec_refuses_bad_shapes(bad: Any) -> None:
    with pytest.raises(ValueError):
        ChunkSpec.parse(bad)


def test_resolve_chunks_whole_extent_and_clamp() -> None:
    assert resolve_chunks((None, 7), (3, 5), np.dtype("f8"), (3, 5), None) == (3, 5)
    assert resolve_chunks((4, 7), (3, 5), np.dtype("f8"), (None, 5), None) == (4, 5)
    assert resolve_chunks(None, (100,), np.dtype("f8"), (100,), (10,)) == (10,)


# -- link ---------------------------------------------------------------------------------
def test_link_inline_chunk_table() -> None:
    plan = plan_dataset(chunked(stored=[(0,), (3,)]), LINK)
    assert plan.mode == "link" and plan.chunk_table is None
    assert plan.layout == {"class": "H5D_CHUNKED_REF", "dims": [10], "file_uri": URI,
                           "chunks": {"0": [1000, 80], "3": [2000, 80]}}
    assert (plan.linked_chunks, plan.linked_bytes) == (2, 160)
    assert [f["name"] for f in plan.filters] == ["shuffle", "gzip"]
    assert list(copy_jobs(plan)) == []


def test_link_indirect_chunk_table_beyond_the_inline_limit() -> None:
    options = dataclasses.replace(LINK, inline_limit=1)
    plan = plan_dataset(chunked(stored=[(0,), (3,)]), options)
    assert plan.layout is None and plan.chunk_table is not None
    assert plan.chunk_table.shape == (10,) and not plan.chunk_table.flags.writeable
    assert plan.chunk_table[3].tolist() == (2000, 80)
    assert plan.layout_json("d-table")["chunk_table"] == "d-table"
    assert plan.chunk_table_json()["shape"]["dims"] == [10]


def test_link_refuses_chunks_too_big_for_the_table() -> None:
    src = chunked(stored=[(0,)])
    big = dataclasses.replace(src, stored=(dataclasses.replace(src.stored[0], size=2**31),))
    with pytest.raises(ValueError, match="int32 size field"):
        plan_dataset(big, dataclasses.replace(LINK, inline_limit=0))


@pytest.mark.parametrize("src", [
    chunked(filters=((32017, (0,)),)),  # SZ: h5dask does not decode it as HDF5 wrote it
    dataclasses.replace(chunked(stored=[(0,)]), stored=(StoredChunk((0,), 1000, 80, 1),)),
    chunked(raw_ok=False),
    contiguous(external=True),
], ids=["filter", "filter_mask", "not_raw", "external"])
def test_what_cannot_be_linked_is_copied(src: SourceDataset) -> None:
    plan = plan_dataset(src, LINK)
    assert plan.mode == "copy" and plan.copied_instead


def test_link_needs_a_file_uri() -> None:
    plan = plan_dataset(chunked(), PlanOptions(link=True, file_uri=None))
    assert plan.mode == "copy" and plan.copied_instead


def test_link_contiguous_and_scalar() -> None:
    plan = plan_dataset(contiguous(), LINK)
    assert plan.layout == {"class": "H5D_CONTIGUOUS_REF", "file_uri": URI, "offset": 4096,
                           "size": 800}
    assert plan.linked_bytes == 800
    scalar = SourceDataset("/s", F8, np.dtype("<f8"), 8, (), (), "contiguous", None, (),
                           data_offset=512, storage_size=8)
    plan = plan_dataset(scalar, LINK)
    assert plan.layout == {"class": "H5D_CHUNKED_REF", "dims": [1], "file_uri": URI,
                           "chunks": {"0": [512, 8]}}
    unallocated = plan_dataset(contiguous(offset=None), LINK)
    assert (unallocated.mode, unallocated.layout["size"]) == ("link", 0)
