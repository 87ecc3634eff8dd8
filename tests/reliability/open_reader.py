"""Open a domain with ``xr.open_dataset(url, engine="h5cloud", chunks={})`` in a process of
its own and report, as one JSON line, what the open cost: CPU seconds, peak RSS growth,
chunk requests, and the dask blocks of each variable.

Run by ``test_bombs.py``: ``python open_reader.py URL``. Imports and one open of a tiny
domain come first, so that what is measured is the open itself.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
import warnings

import dask.array  # noqa: F401  (imported before measuring, as a session would have)
import numpy as np
import xarray as xr

import h5dask


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def main() -> None:
    url = sys.argv[1]
    with tempfile.TemporaryDirectory() as tmp:
        warm = f"file://{tmp}/warm.h5"
        with h5dask.File(warm, "w") as f:
            f.create_dataset("v", data=np.arange(4.0), chunks=(2,))
        xr.open_dataset(warm, engine="h5cloud", chunks={}).load()
    h5dask.reset_stats()
    before, cpu = peak_bytes(), time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = xr.open_dataset(url, engine="h5cloud", chunks={})
    report = {
        "cpu_seconds": time.process_time() - cpu,
        "added": peak_bytes() - before,
        "chunk_stats": h5dask.stats()["chunk"],
        "numblocks": {name: list(var.data.numblocks) for name, var in ds.data_vars.items()},
        "coords": {name: int(var.size) for name, var in ds.coords.items()},
        "warnings": [str(w.message) for w in caught],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
