"""Read one variable of a domain in a process of its own and report, as one JSON line,
how the read ended and how much the process's peak memory grew during it.

Run by ``test_bombs.py``: ``python bomb_reader.py URL OPTIONS_JSON NAME file|xarray BUDGET``.
The variable ``ok_NAME`` (same codec, healthy chunk) is read first, so that imports,
the store, threads and the decoder are in place before the peak is taken. Two measures:
the growth of the peak RSS (``ru_maxrss``), and, because the kernel may count RSS
lazily, an address-space limit of the current size + BUDGET bytes during the read, so
that any allocation beyond the budget fails (run with ``MALLOC_ARENA_MAX=1``, so that
malloc does not reserve a new arena per thread).
"""

from __future__ import annotations

import json
import os
import resource
import sys
from typing import Any

import xarray as xr

import h5dask


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def address_space_bytes() -> int:
    with open("/proc/self/status") as status:
        line = next(x for x in status if x.startswith("VmSize:"))
    return int(line.split()[1]) * 1024


def read(url: str, options: dict, name: str, how: str) -> Any:
    if how == "file":
        with h5dask.File(url, storage_options=options) as f:
            return f[name][...]
    ds = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=options)
    return ds[name].values


def causes(exc: BaseException) -> list[str]:
    """The types of the exceptions ``exc`` was raised from or while handling."""
    out = []
    while (exc := exc.__cause__ or exc.__context__) is not None:
        out.append(type(exc).__name__)
    return out


def main() -> None:
    url, options, name, how = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
    budget = int(sys.argv[5])
    read(url, options, f"ok_{name}", how)
    before = peak_bytes()
    resource.setrlimit(resource.RLIMIT_AS, (address_space_bytes() + budget,
                                            resource.RLIM_INFINITY))
    try:
        read(url, options, name, how)
        outcome: dict[str, Any] = {"error": None}
    except Exception as exc:  # reported to the test, which says what was expected
        outcome = {"error": type(exc).__name__, "h5dask": isinstance(exc, h5dask.H5DaskError),
                   "message": str(exc), "chain": causes(exc)}
    print(json.dumps({**outcome, "added": peak_bytes() - before}), flush=True)
    # measured: leave without the libraries' exit handlers (python-blosc2's sometimes
    # aborts at interpreter exit), which are not what this process is for
    os._exit(0)


if __name__ == "__main__":
    main()
