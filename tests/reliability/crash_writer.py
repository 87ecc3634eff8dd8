"""Writers that die: the helper process of test_crash_consistency.py (not a test module).

``python crash_writer.py PLAN.json`` imports h5dask once, then for each job of the plan
forks a child that (1) writes the job's previous version, if any, normally, (2) arms a
patched ``ObjectStore.put`` that SIGKILLs the process once ``kill_after`` PUTs have
completed (0: at the first PUT), and (3) runs the write. The parent waits for each
child and prints one JSON line per job: how it ended (``killed`` or ``completed``), how
many PUTs completed and the keys of the last ones. Forking one warm process keeps 20+
kill points cheap; the parent creates no store or I/O thread, so children start clean.

A job with ``"count": true`` runs the write unarmed and reports how many PUTs it made.

Scenarios (``job["scenario"]``):

* ``new``: ``to_h5cloud(version 2, mode="w")`` into an empty place;
* ``overwrite``: version 1 written, then ``to_h5cloud(version 2, mode="w")`` over it;
* ``append``: version 1 written, then ``to_h5cloud(extra variables, mode="a")``;
* ``file_append``: version 1 written, then ``h5dask.File(url, "a")`` adds a dataset
  and a group and sets attributes;
* ``load``: ``load_file(HDF5 file, url, overwrite=True)`` (h5dask load) over a loaded
  version 1; ``load_new``: the same into an empty place.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

import numpy as np
import xarray as xr

import h5dask
from h5dask.storage.base import ObjectStore

SCENARIOS = ("new", "overwrite", "append", "file_append", "load", "load_new")


# -- the data every process agrees on ------------------------------------------------------
def version1() -> xr.Dataset:
    rng = np.random.default_rng(1)
    ds = xr.Dataset(
        {
            "temp": (("y", "x"), rng.standard_normal((40, 30)).astype("f4"),
                     {"units": "K", "long_name": "temperature v1"}),
            "count": (("y", "x"), np.arange(1200, dtype="i4").reshape(40, 30)),
        },
        coords={"y": np.arange(40.0), "x": np.arange(30) * 10},
        attrs={"title": "version 1"},
    )
    return ds.chunk({"y": 10, "x": 10})


def version2() -> xr.Dataset:
    rng = np.random.default_rng(2)
    ds = xr.Dataset(
        {
            "temp": (("y", "x"), rng.standard_normal((40, 30)).astype("f4"),
                     {"units": "K", "long_name": "temperature v2"}),
            "wind": (("y", "x"), rng.standard_normal((40, 30)).astype("f8")),
        },
        coords={"y": np.arange(40.0) + 0.5, "x": np.arange(30) * 10},
        attrs={"title": "version 2"},
    )
    return ds.chunk({"y": 10, "x": 15})


def extra() -> xr.Dataset:
    """Variables added to version 1 by the ``append`` scenario (same dimensions)."""
    rng = np.random.default_rng(3)
    ds = xr.Dataset({"rain": (("y", "x"), rng.random((40, 30)).astype("f4"))})
    return ds.chunk({"y": 10, "x": 10})


ENCODING_V1 = {"temp": {"compression": "gzip"}}
ENCODING_V2 = {"temp": {"compression": "gzip"}, "wind": {"compression": "zstd"}}


def write_version1(url: str, options: dict) -> None:
    h5dask.to_h5cloud(version1(), url, mode="w", storage_options=options, encoding=ENCODING_V1)


def file_append(url: str, options: dict) -> None:
    with h5dask.File(url, "a", storage_options=options) as f:
        f.create_dataset("extra/new", data=np.arange(100.0).reshape(10, 10), chunks=(5, 5),
                         compression="gzip")
        f["extra"].attrs["note"] = "added in mode a"
        f.attrs["appended"] = 1


def load_source(path: str, version: int) -> None:
    """An HDF5 file for the ``load`` scenario (needs h5py)."""
    import h5py

    rng = np.random.default_rng(10 + version)
    with h5py.File(path, "w") as f:
        f.create_dataset("a", data=rng.standard_normal((64, 48)), chunks=(16, 16),
                         compression="gzip")
        f.create_dataset("g/b", data=np.arange(2000, dtype="i4"), chunks=(250,))
        f.attrs["version"] = version


def run_load(job: dict, version: int) -> None:
    from h5dask.ingest.load import load_file

    src = os.path.join(job["workdir"], f"src-v{version}.h5")
    if not os.path.exists(src):
        load_source(src, version)
    load_file(src, job["url"], storage_options=job["options"], progress=False, overwrite=True)


# -- the dying writer -------------------------------------------------------------------
class Killer:
    """Counts completed PUTs (after arming) and SIGKILLs the process at the limit."""

    def __init__(self) -> None:
        self.armed = False
        self.limit: int | None = None
        self.done = 0
        self.keys: list[str] = []
        self.log_path: str | None = None

    def arm(self, limit: int | None, log_path: str | None) -> None:
        self.armed, self.limit, self.done, self.log_path = True, limit, 0, log_path
        if self.limit == 0:
            self.die()

    def completed(self, key: str) -> None:
        self.done += 1
        self.keys.append(key)
        if self.limit is not None and self.done >= self.limit:
            self.die()

    def die(self) -> None:
        if self.log_path:  # what was written before the kill, for the report
            with open(self.log_path, "w") as f:
                json.dump({"done": self.done, "keys": self.keys[-3:]}, f)
                f.flush()
                os.fsync(f.fileno())
        os.kill(os.getpid(), signal.SIGKILL)


KILLER = Killer()
_original_put = ObjectStore.put


async def _counting_put(self: ObjectStore, key: str, data: Any, *, kind: str = "chunk") -> None:
    await _original_put(self, key, data, kind=kind)
    if KILLER.armed:
        KILLER.completed(key)


def install_killer() -> None:
    """Route every PUT through the killer (in the helper process only: importing this
    module changes nothing)."""
    ObjectStore.put = _counting_put  # type: ignore[method-assign]


def prepare(job: dict) -> None:
    scenario = job["scenario"]
    if scenario in ("overwrite", "append", "file_append"):
        write_version1(job["url"], job["options"])
    elif scenario == "load":
        run_load(job, 1)
    elif scenario not in ("new", "load_new"):
        raise ValueError(f"unknown scenario {scenario!r}")


def write(job: dict) -> None:
    scenario, url, options = job["scenario"], job["url"], job["options"]
    if scenario in ("new", "overwrite"):
        h5dask.to_h5cloud(version2(), url, mode="w", storage_options=options,
                          encoding=ENCODING_V2)
    elif scenario == "append":
        h5dask.to_h5cloud(extra(), url, mode="a", storage_options=options)
    elif scenario == "file_append":
        file_append(url, options)
    elif scenario in ("load", "load_new"):
        run_load(job, 2)
    else:
        raise ValueError(f"unknown scenario {scenario!r}")


def child(job: dict) -> None:
    prepare(job)
    log_path = os.path.join(job["workdir"], f"job-{job['id']}.json")
    KILLER.arm(None if job.get("count") else int(job["kill_after"]), log_path)
    write(job)
    with open(log_path, "w") as f:
        json.dump({"done": KILLER.done, "keys": KILLER.keys[-3:]}, f)


def run_job(job: dict) -> dict:
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 0
        try:
            child(job)
        except BaseException as exc:  # a failed write is reported, not hidden
            sys.stderr.write(f"job {job['id']}: {type(exc).__name__}: {exc}\n")
            code = 1
        finally:
            sys.stderr.flush()
            os._exit(code)
    started = time.monotonic()
    _, status = os.waitpid(pid, 0)
    seconds = round(time.monotonic() - started, 3)
    if os.WIFSIGNALED(status):
        outcome = "killed" if os.WTERMSIG(status) == signal.SIGKILL else "signal"
    else:
        outcome = "completed" if os.WEXITSTATUS(status) == 0 else "failed"
    log_path = os.path.join(job["workdir"], f"job-{job['id']}.json")
    report = {"done": None, "keys": []}
    if os.path.exists(log_path):
        with open(log_path) as f:
            report = json.load(f)
    return {**{k: v for k, v in job.items() if k != "options"}, "outcome": outcome,
            "puts_done": report["done"], "last_keys": report["keys"], "seconds": seconds}


def kill_points(total: int, n: int | None) -> list[int]:
    """``n`` kill points spread over ``0 .. total - 1`` (all of them when ``n`` is None),
    always with the first (before any PUT) and the last (before the final PUT)."""
    if n is None or n >= total:
        return list(range(total))
    return sorted({round(i * (total - 1) / (n - 1)) for i in range(n)})


def warm_up() -> None:
    """Import and initialise lazily what every write uses, once, before forking: in
    memory, with dask's synchronous scheduler, so that no thread pool is left behind."""
    import dask

    with dask.config.set(scheduler="synchronous"):
        write_version1("memory://crash-writer-warm-up/home/v1.h5", {})
        xr.open_dataset("memory://crash-writer-warm-up/home/v1.h5", engine="h5cloud").load()


def main(argv: list[str]) -> int:
    """Plan: ``{"base": URL prefix, "options": ..., "workdir": DIR, "scenarios":
    {name: number of kill points or null for every point}}``."""
    with open(argv[1]) as f:
        plan = json.load(f)
    install_killer()
    warm_up()
    if {"load", "load_new"} & set(plan["scenarios"]):  # the HDF5 sources, made once before forking
        for version in (1, 2):
            load_source(os.path.join(plan["workdir"], f"src-v{version}.h5"), version)
    n = 0
    for scenario, points in plan["scenarios"].items():
        common = {"scenario": scenario, "options": plan["options"], "workdir": plan["workdir"]}
        n += 1
        count = run_job({**common, "id": n, "count": True, "url": f"{plan['base']}/count-{n}"})
        print(json.dumps(count), flush=True)
        if count["outcome"] != "completed":
            continue
        for k in kill_points(count["puts_done"], points):
            n += 1
            job = {**common, "id": n, "kill_after": k, "total_puts": count["puts_done"],
                   "url": f"{plan['base']}/{scenario}-{k}.h5"}
            print(json.dumps(run_job(job)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
