"""Where a full read's client CPU goes, by thread, through the latency proxy.

On 2 shared cores the cloud profile's reads are CPU-bound, so the CPU seconds a reader
costs are its speed. This probe reads the same 256 MiB as :mod:`benchmarks.cloud`
(h5dask ``chunks={}``, raw + sum, and the same ``sum()`` on data already in memory),
interleaved, and splits the client's CPU seconds per round by thread: the main thread
(graph, dask's scheduler, read-ahead look-ahead), dask's worker threads (getters, copies,
the sum), h5dask's I/O loop, obstore's tokio threads (receiving the bodies) and threads
that ended within the round (raw + sum's own pool); with the proxy's and SeaweedFS's CPU
seconds and the client's minor page faults.

    python -m benchmarks.cpu_breakdown [--latency-ms 30] [--rounds 5] [--size-mib 256]
"""

from __future__ import annotations

import collections
import os
import re
import statistics
import sys
import threading
from collections.abc import Callable
from typing import Any

from . import readers
from .cloud import (
    compute_only,
    own_cpu,
    own_minor_faults,
    probe_arguments,
    process_cpu,
    through,
    warm_up,
)
from .data import VARIANTS, Synthetic, nplanes_for, write_variant
from .latencyproxy import LatencyProxy
from .services import Services

STREAM_BYTES_PER_S = 100e6
#: the client's thread groups, in the order the table shows them
GROUPS = ("main", "dask threads", "h5dask I/O loop", "obstore (tokio)", "ended threads",
          "other")


def group_of(name: str) -> str:
    """The group a thread belongs to, by its Python name or, for a foreign thread, its
    kernel name.

    >>> group_of("ThreadPoolExecutor-3_1"), group_of("tokio-rt-worker")
    ('dask threads', 'obstore (tokio)')
    """
    if name == "MainThread":
        return "main"
    if name.startswith("ThreadPoolExecutor"):
        return "dask threads"
    if name == "h5dask-io":
        return "h5dask I/O loop"
    if name.startswith("tokio"):
        return "obstore (tokio)"
    return "other"


def thread_cpu() -> dict[int, tuple[str, float]]:
    """Thread id -> (group, CPU seconds so far) of every thread of this process."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    ticks = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        if int(tid) == os.getpid():  # the main thread, whatever threading calls it
            name = "MainThread"
        else:
            name = names.get(int(tid), re.sub(r"[-_]?\d+$", "", comm))
        out[int(tid)] = (group_of(name), (int(fields[11]) + int(fields[12])) / ticks)
    return out


def split_round(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
                client_seconds: float) -> dict[str, float]:
    """CPU seconds of one round per group; what the process used beyond the threads
    alive at the end (``client_seconds``: the process's own CPU in the round) went to
    threads that ended within it."""
    used: dict[str, float] = collections.defaultdict(float)
    for tid, (group, seconds) in after.items():
        used[group] += seconds - before.get(tid, (group, 0.0))[1]
    used["ended threads"] = max(0.0, client_seconds - sum(used.values()))
    return dict(used)


def measure(runners: dict[str, Callable[[], Any]], rounds: int, pids: tuple[int | None, ...]
            ) -> dict[str, dict[str, float]]:
    """Interleaved rounds of every runner: the median per group, proxy, SeaweedFS and
    minor faults per runner."""
    got: dict[str, list[dict[str, float]]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            threads, cpu, faults = thread_cpu(), own_cpu(), own_minor_faults()
            stores = [process_cpu(p) for p in pids]
            run()
            row = split_round(threads, thread_cpu(), own_cpu() - cpu)
            row["client"] = own_cpu() - cpu
            row["proxy"], row["SeaweedFS"] = (process_cpu(p) - s for p, s in zip(pids, stores))
            row["minor faults"] = own_minor_faults() - faults
            got[name].append(row)
    return {name: {k: statistics.median(r.get(k, 0.0) for r in rows)
                   for k in {k for r in rows for k in r}} for name, rows in got.items()}


def table(medians: dict[str, dict[str, float]]) -> str:
    """The Markdown table of :func:`measure`'s medians."""
    columns = ["client", *GROUPS, "proxy", "SeaweedFS"]
    lines = ["| reader | " + " | ".join(f"CPU s, {c}" for c in columns)
             + " | minor faults |", "| --- |" + " ---: |" * (len(columns) + 1)]
    for name, m in medians.items():
        cells = " | ".join(f"{m.get(c, 0.0):.3f}" for c in columns)
        lines.append(f"| {name} | {cells} | {m.get('minor faults', 0):,.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = probe_arguments("python -m benchmarks.cpu_breakdown", __doc__, argv, latency_ms=30.0,
                           rounds=5)
    data = Synthetic(nplanes_for(args.size_mib))
    variant = next(v for v in VARIANTS if v.slug == "plain")
    with Services() as services:
        w = write_variant(services, data, variant, set())
        with LatencyProxy(services.s3.endpoint, args.latency_ms / 1000,
                          STREAM_BYTES_PER_S) as proxy, through(services, proxy.endpoint):
            runners = {"h5dask, chunks={}": readers.h5dask_read(services, w),
                       "raw + sum": readers.raw_sum(services, w),
                       "compute only (in memory)": compute_only(services, w, {})}
            warm_up(list(runners.values()))
            pids = (proxy.proc.pid if proxy.proc else None, services.s3.pid)
            medians = measure(runners, args.rounds, pids)
    print(f"{args.latency_ms:.0f} ms, {data.nbytes / 2**20:.0f} MiB, medians of "
          f"{args.rounds} interleaved rounds, CPU seconds per round:\n")
    print(table(medians))
    return 0


if __name__ == "__main__":
    sys.exit(main())
