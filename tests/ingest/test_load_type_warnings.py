"""``h5dask load`` warns, as File.create_dataset does, of types HSDS cannot serve."""

from __future__ import annotations

import warnings
from pathlib import Path

import h5py
import numpy as np

import h5dask
from h5dask.errors import HSDSUnreadableWarning
from h5dask.ingest import load_file


def test_load_warns_of_sequences_of_sequences(tmp_path: Path) -> None:
    src = tmp_path / "vv.h5"
    with h5py.File(src, "w") as f:
        d = f.create_dataset("ragged2", shape=(2,), dtype=h5py.vlen_dtype(h5py.vlen_dtype("<i4")))
        x = np.empty(1, object)
        x[0] = np.array([1, 2], "<i4")
        d[0] = x
        f.create_dataset("plain", data=np.arange(3))
    url = f"file://{tmp_path}/store/bucket/home/vv.h5"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_file(src, url, progress=False)
    unreadable = [str(w.message) for w in caught if issubclass(w.category, HSDSUnreadableWarning)]
    assert len(unreadable) == 1 and "'/ragged2'" in unreadable[0], unreadable
    with h5dask.File(url) as f:  # h5dask itself reads it
        assert f["ragged2"][0][0].tolist() == [1, 2]
