"""Writers at the same time: the helper process of test_concurrent_writers.py.

``python concurrent_writers.py PLAN.json`` imports h5dask once, forks one child per
job, releases them all at once (a pipe), waits for them and prints one JSON line per
job (its exit status). Jobs (``job["kind"]``):

* ``domain``: ``to_h5cloud`` of :func:`domain_data` (seeded) to the job's own domain;
* ``rows``: ``h5dask.File(url, "r+")``, write :func:`rows_data` to rows ``start:stop``
  of dataset ``x`` (whole chunks), one chunk-row at a time;
* ``same_chunk``: ``h5dask.File(url, "r+")``, write the whole chunk ``(0, 0)`` of ``x``
  ``repeat`` times, every element set to the job's ``value``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
import xarray as xr
from crash_writer import warm_up

import h5dask

CHUNK = (32, 64)


def domain_data(seed: int) -> xr.Dataset:
    rng = np.random.default_rng(seed)
    ds = xr.Dataset({"v": (("t", "x"), rng.standard_normal((96, 64)))},
                    attrs={"writer": seed})
    return ds.chunk({"t": 32, "x": 32})


def rows_data(start: int, stop: int, ncols: int) -> np.ndarray:
    return (np.arange(start, stop)[:, None] * 1000.0 + np.arange(ncols)[None, :]).astype("f8")


def run(job: dict) -> None:
    kind, url, options = job["kind"], job["url"], job["options"]
    if kind == "domain":
        h5dask.to_h5cloud(domain_data(job["seed"]), url, storage_options=options,
                          encoding={"v": {"compression": "gzip"}})
    elif kind == "rows":
        with h5dask.File(url, "r+", storage_options=options) as f:
            x = f["x"]
            for start in range(job["start"], job["stop"], CHUNK[0]):
                stop = min(start + CHUNK[0], job["stop"])
                x[start:stop, :] = rows_data(start, stop, x.shape[1])
    elif kind == "same_chunk":
        with h5dask.File(url, "r+", storage_options=options) as f:
            x = f["x"]
            for _ in range(job["repeat"]):
                x[0:CHUNK[0], 0:CHUNK[1]] = np.full(CHUNK, float(job["value"]))
    else:
        raise ValueError(f"unknown job kind {kind!r}")


def main(argv: list[str]) -> int:
    with open(argv[1]) as f:
        plan = json.load(f)
    warm_up()
    go_read, go_write = os.pipe()
    pids = []
    for job in plan["jobs"]:
        sys.stdout.flush()
        pid = os.fork()
        if pid == 0:
            os.close(go_write)
            os.read(go_read, 1)  # wait until every writer exists
            code = 0
            try:
                run(job)
            except BaseException as exc:
                sys.stderr.write(f"{job['kind']} {job.get('seed', '')}: "
                                 f"{type(exc).__name__}: {exc}\n")
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        pids.append((pid, job))
    os.write(go_write, b"x" * len(pids))  # go
    for pid, job in pids:
        _, status = os.waitpid(pid, 0)
        result: dict[str, Any] = {k: v for k, v in job.items() if k != "options"}
        result["exit"] = os.waitstatus_to_exitcode(status)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
