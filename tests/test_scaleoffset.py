"""HDF5's scale-offset filter (``scaleoffset=``, lossy for floats) in a source: ``h5dask
load`` copies the values HDF5 decodes (exact: what h5py reads), with or without
``--link``; chunks of it linked inside an HDF5 file (as ``hsload --link`` leaves them)
are refused, naming the dataset and the filter, never read raw."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask.errors import UnsupportedFilterError

h5py = pytest.importorskip("h5py")


def _source(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "w") as f:
        f.create_dataset("f", data=np.linspace(0, 1, 50), chunks=(10,), scaleoffset=2)
        f.create_dataset("i", data=np.arange(50, dtype="<i4") * 7, chunks=(10,),
                         scaleoffset=0)
        f.create_dataset("g", data=np.linspace(0, 1, 50), chunks=(10,), scaleoffset=3,
                         compression="gzip")
        return {name: f[name][...] for name in f}  # what h5py reads (rounded floats)


@pytest.mark.parametrize("link", [False, True], ids=["copy", "link"])
def test_load_copies_the_values_hdf5_decodes(tmp_path, link):
    (tmp_path / "bucket").mkdir()
    source = tmp_path / "bucket" / "so.h5"  # inside the bucket: linkable
    want = _source(source)
    url = (tmp_path / "bucket" / "domain.h5").as_uri()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h5dask.load(str(source), url, progress=False, link=link)
    assert any("scaleoffset" in str(w.message) for w in caught)
    with h5dask.File(url) as f:
        for name, values in want.items():
            np.testing.assert_array_equal(f[name][...], values, err_msg=name)
            assert "scaleoffset" not in json.dumps(f[name].filters)


def test_linked_scaleoffset_chunks_are_refused_naming_dataset_and_filter(tmp_path):
    # a linked dataset whose metadata keeps HDF5's scale-offset filter (hsload --link
    # copies the filter pipeline): its chunks are scale-offset output, wrong read raw
    path = tmp_path / "bucket" / "plain.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        f.create_dataset("f", data=np.linspace(0, 1, 50), chunks=(10,))
    url = (tmp_path / "bucket" / "linked.h5").as_uri()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the local link's own warning
        h5dask.load(str(path), url, progress=False, link=True)
    [meta_path] = (tmp_path / "bucket" / "db").glob("*/d/*/.dataset.json")
    meta = json.loads(meta_path.read_text())
    assert meta["layout"]["class"] == "H5D_CHUNKED_REF"
    meta["creationProperties"]["filters"] = [
        {"class": "H5Z_FILTER_SCALEOFFSET", "id": 6, "name": "scaleoffset",
         "scaleType": "H5Z_SO_FLOAT_DSCALE", "scaleOffset": 2}]
    meta_path.write_text(json.dumps(meta))
    refusal = r"'/f'.*'scaleoffset'.*linked inside an HDF5 file.*without --link"
    with h5dask.File(url) as f, pytest.raises(UnsupportedFilterError, match=refusal):
        _ = f["f"][...]
    with pytest.raises(UnsupportedFilterError, match=refusal):
        _ = xr.open_dataset(url, engine="h5cloud")["f"].values
