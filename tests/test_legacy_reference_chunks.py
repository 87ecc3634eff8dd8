"""A domain earlier h5dask wrote, with sequences of references in its old layout: read
right, and a partial write of an ambiguous chunk refused before anything is lost."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

import h5dask
from h5dask.errors import CorruptChunkError
from h5dask.format import vlen
from h5dask.format.types import OBJ_REF


def _as_old_h5dask_wrote(root: Path, chunk: bytes) -> Path:
    """Turn the one sequence dataset under ``root`` into what h5dask before 12/2026
    wrote: no layout marker in its JSON, ``chunk`` (old layout) as its chunk 0."""
    for cons in root.rglob(".h5dask-consolidated.json"):
        cons.unlink()  # its copy of the dataset's JSON would still carry the marker
    (meta,) = [p for p in root.rglob(".dataset.json") if "H5T_VLEN" in p.read_text()]
    obj = json.loads(meta.read_text())
    obj.pop("h5daskRefLayout", None)
    meta.write_text(json.dumps(obj))
    (meta.parent / "0").write_bytes(chunk)
    return meta.parent / "0"


def test_partial_write_of_ambiguous_legacy_chunk_loses_nothing(tmp_path: Path) -> None:
    url = f"file://{tmp_path}/bucket/home/old.h5"
    seq_dt = h5dask.vlen_dtype(OBJ_REF)
    with h5dask.File(url, "w") as f:
        t = f.create_dataset("t", data=np.arange(3))
        f.create_dataset("slots", shape=(2,), dtype=seq_dt, chunks=(2,))
        t_id = t.id
    # old layout: 12 null references (4 zero bytes each), then an empty sequence
    old = struct.pack("<I", 48) + b"\0" * 48 + struct.pack("<I", 0)
    chunk_path = _as_old_h5dask_wrote(tmp_path, old)
    value = np.empty(1, seq_dt)
    value[0] = np.array([t_id], dtype=object)
    with h5dask.File(url, "r+") as f:
        with pytest.raises(CorruptChunkError, match=vlen.REF_LAYOUT_KEY):
            f["slots"][0]
        with pytest.raises(CorruptChunkError, match=vlen.REF_LAYOUT_KEY):
            f["slots"][1:2] = value  # read-modify-write of that chunk
    assert chunk_path.read_bytes() == old  # not rewritten with 1 null instead of 12
    # the dataset's owner says which layout it is: then it reads, and writes keep it right
    meta = chunk_path.parent / ".dataset.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()),
                                vlen.REF_LAYOUT_KEY: vlen.REF_LAYOUT_LEGACY}))
    with h5dask.File(url, "r+") as f:
        assert len(f["slots"][0]) == 12
        f["slots"][1:2] = value
    with h5dask.File(url) as f:
        assert len(f["slots"][0]) == 12 and f["slots"][1].tolist() == [t_id]
    # written in the layout it says it holds: a chunk of nulls again reads as 12, not 1
    assert chunk_path.read_bytes() == old[:-4] + struct.pack("<I", 42) + struct.pack(
        "<I", 38) + t_id.encode()
    value[0] = np.array([None, None], dtype=object)
    with h5dask.File(url, "r+") as f:
        f["slots"][1:2] = value
    with h5dask.File(url) as f:
        assert [len(s) for s in f["slots"][()]] == [12, 2]
