"""``h5dask.ingest.describe``: what planning is told about the datasets of a real file."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from h5dask.errors import UnsupportedTypeError
from h5dask.ingest.describe import describe_dataset
from h5dask.ingest.hdf5 import H5Types, H5Values, walk
from h5dask.ingest.plan import SourceDataset


def describe_all(path: Path) -> dict[str, SourceDataset]:
    with h5py.File(path, "r") as f:
        out = {}
        for obj in walk(f, []):
            if obj.kind == "d":
                try:
                    out[obj.path] = describe_dataset(obj, H5Types({}), H5Values(f, {}))
                except UnsupportedTypeError as exc:
                    out[obj.path] = exc  # type: ignore[assignment]
        return out


@pytest.fixture
def described(tmp_path: Path) -> dict[str, SourceDataset]:
    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        d = f.create_dataset("chunked", shape=(40,), dtype="<i4", chunks=(10,),
                             compression="gzip", compression_opts=3, shuffle=True,
                             fillvalue=-1)
        d[0:10] = 1
        d[30:35] = 2
        f.create_dataset("contiguous", data=np.arange(6.0).reshape(2, 3))
        f.create_dataset("unallocated", shape=(5,), dtype="f8")
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_layout(h5py.h5d.COMPACT)
        h5py.h5d.create(f.id, b"compact", h5py.h5t.STD_I32LE, h5py.h5s.create_simple((3,)),
                        dcpl=dcpl)
        f.create_dataset("null", data=h5py.Empty("f4"))
        f.create_dataset("scalar", data=7.5)
        f.create_dataset("array_type", shape=(2,), dtype=np.dtype(("<i4", (3,))))
    return describe_all(path)


def test_chunked_dataset(described: dict[str, SourceDataset]) -> None:
    src = described["/chunked"]
    assert (src.layout, src.shape, src.maxshape, src.chunks) == ("chunked", (40,), (40,),
                                                                 (10,))
    assert [code for code, _ in src.filters] == [2, 1] and src.filters[1][1] == (3,)
    assert src.native and src.raw_ok and src.allocated
    assert src.fill_json == -1
    assert [c.offset for c in src.stored] == [(0,), (30,)]
    assert all(c.size > 0 and c.byte_offset > 0 and c.filter_mask == 0 for c in src.stored)


def test_contiguous_and_unallocated(described: dict[str, SourceDataset]) -> None:
    src = described["/contiguous"]
    assert (src.layout, src.chunks, src.storage_size) == ("contiguous", None, 48)
    assert src.data_offset is not None and src.allocated and not src.external
    unallocated = described["/unallocated"]
    assert (unallocated.allocated, unallocated.data_offset) == (False, None)


def test_compact_null_scalar_and_array_types(described: dict[str, SourceDataset]) -> None:
    assert described["/compact"].layout == "compact"
    assert described["/null"].shape is None and described["/null"].empty
    scalar = described["/scalar"]
    assert (scalar.shape, scalar.scalar, scalar.file_itemsize) == ((), True, 8)
    assert isinstance(described["/array_type"], UnsupportedTypeError)
