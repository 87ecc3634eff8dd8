"""Peak client memory during a streaming reduction, measured in a fresh process.

``python -m benchmarks.memprobe URL STORAGE_OPTIONS_JSON`` prints one JSON line:
the RSS high-water mark after a warm-up (imports, open, one block read: the constant)
and after ``sum()`` over the whole variable, with dask's default threaded scheduler.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def _peak_mib() -> float:
    # VmHWM is this process image's own high-water mark; ru_maxrss would also count the
    # parent's memory at fork time (Linux keeps it across exec)
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    url, options = sys.argv[1], json.loads(sys.argv[2])
    import dask
    import xarray as xr

    ds = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=options)
    v = ds["v"]
    v.isel({v.dims[0]: 0}).sum().compute()  # warm-up: threads, connections, allocator
    baseline = _peak_mib()
    t0 = time.perf_counter()
    total = float(v.sum().compute())
    seconds = time.perf_counter() - t0
    threads = dask.config.get("num_workers", None) or os.cpu_count()
    from h5dask.readahead import get_readahead

    ra = get_readahead()
    print(json.dumps({"baseline_mib": baseline, "peak_mib": _peak_mib(), "seconds": seconds,
                      "sum": total, "threads": threads, "readahead_budget": ra.budget,
                      "readahead_peak": ra.peak_reserved}))


if __name__ == "__main__":
    main()
