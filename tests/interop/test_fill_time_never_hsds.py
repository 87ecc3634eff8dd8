"""Interop, H5D_FILL_TIME_NEVER -> HSDS: a dataset whose fill time is "never" (h5py
reads zeros where nothing was written, not the declared fill value) loaded by
``h5dask load`` is served by the real HSDS 1.0.2 server with h5py's values: HSDS has no
fill time, it fills unwritten chunks with the dataset's fill value, and the load gives
it none."""

from __future__ import annotations

import warnings

import h5py
import numpy as np
import pytest
from interop_compare import fresh_name

from h5dask.ingest import load_file

h5pyd = pytest.importorskip("h5pyd")

pytestmark = [pytest.mark.hsds, pytest.mark.timeout(600)]


def test_hsds_reads_unwritten_values_of_fill_time_never_as_h5py(hsds_s3, storage_options,
                                                                  tmp_path) -> None:
    path = tmp_path / "never.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("never", shape=(12,), dtype="<i4", chunks=(4,), fillvalue=5,
                         fill_time="never")[1:3] = 7
        f.create_dataset("ifset", shape=(12,), dtype="<i4", chunks=(4,), fillvalue=5)[0] = 1
    domain = f"/home/{hsds_s3.username}/{fresh_name('never')}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_file(path, f"s3://{hsds_s3.bucket}{domain}", progress=False,
                  storage_options=storage_options)
    with h5pyd.File(domain, "r", retries=1, **hsds_s3.h5pyd_kwargs()) as g, \
            h5py.File(path) as h:
        assert h["never"][8] == 0 and h["ifset"][8] == 5
        for name in ("never", "ifset"):
            np.testing.assert_array_equal(g[name][()], h[name][()], err_msg=name)
