"""A real dask cluster through the latency proxy: ``dask scheduler`` and 1, 2, 4
``dask worker`` processes (distributed's command-line tools, not ``LocalCluster``), the
workers in an environment without any ``AWS_*`` variable (the credentials travel in the
graph's storage options), reading a variable through :mod:`benchmarks.latencyproxy`.

    python -m benchmarks.cluster [--size-mib 256] [--latency-ms 30] [--workers 1,2,4]
        [--worker-env MALLOC_MMAP_THRESHOLD_=33554432] [--worker-read-ahead on,off]

For each cluster size: the median throughput of ``sum()`` and the chunk bytes each
process read (``h5dask.stats()`` gathered with ``client.run``): the workers read, the
client reads metadata only.

``--worker-env`` adds variables to the workers' environment. distributed's nanny starts
each worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (``distributed.nanny.pre-spawn-environ``),
which fixes glibc's mmap threshold at 128 KiB: every chunk-sized buffer (the GET's
response, the decoded chunk, the temporaries of the computation) is then a fresh
mmap whose pages fault in one at a time and are unmapped when freed. With 4 MiB chunks
that was ~40 % of a worker's CPU on this benchmark (1.8 -> 1.0 CPU s per 256 MiB, one
worker); ``MALLOC_MMAP_THRESHOLD_=33554432`` serves buffers under 32 MiB from malloc's
heap again (distributed's trim threshold kept). Buffers freed at the top of a heap are
still trimmed (returned to the kernel) and fault in again on the next chunk;
``MALLOC_TOP_PAD_=67108864`` keeps 64 MiB of each heap's top mapped, and with both the
worker's chunk-reading thread costs what it costs in a local read.

``--worker-read-ahead off`` starts the workers with ``H5DASK_READ_AHEAD_BYTES=0``: each
worker then has only its threads' GETs in flight, so the table shows how throughput
grows with workers from requests in flight alone (``on,off``: both tables, one run).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from h5dask.readahead import BUDGET_VARIABLE

from .common import MiB, Series, timed
from .data import VARIANTS, Synthetic, nplanes_for, write_variant
from .latencyproxy import LatencyProxy
from .services import ROOT, Services

#: ``--worker-read-ahead``: the workers' environment for each setting
READ_AHEAD_ENV = {"on": {}, "off": {BUDGET_VARIABLE: "0"}}


@dataclass
class ClusterRun:
    workers: int
    threads: int
    series: Series
    client_chunk_bytes: int = 0
    worker_chunk_bytes: dict[str, int] = field(default_factory=dict)
    readahead_used: dict[str, int] = field(default_factory=dict)
    #: each worker's read-ahead budget (bytes; 0: off), as its process read it
    readahead_budget: dict[str, int] = field(default_factory=dict)
    #: CPU seconds per round (median) of each process group: proxy, S3, scheduler,
    #: each worker (nanny included), the client
    cpu: dict[str, float] = field(default_factory=dict)


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int, descendants: bool = True) -> tuple[float, float]:
    """(CPU seconds, seconds spent runnable but waiting for a core) of a process and
    (unless told not to) its descendants, all threads (Linux /proc, schedstat)."""
    cpu = wait = 0.0
    pending = [pid]
    while pending:
        p = pending.pop()
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/schedstat") as f:
                    ran, waited, _ = f.read().split()
                cpu += int(ran) / 1e9
                wait += int(waited) / 1e9
                if descendants:
                    with open(f"/proc/{p}/task/{task}/children") as f:  # every thread's
                        pending += [int(c) for c in f.read().split()]
        except (OSError, ValueError):
            continue
    return cpu, wait


def cpu_of(groups: dict[str, list[int]]) -> dict[str, float]:
    """CPU seconds so far of each named group of process trees, and under
    ``"waiting for a core"`` the run-queue wait of them all."""
    out: dict[str, float] = {}
    waited = 0.0
    for name, pids in groups.items():
        # the client's children are the other groups
        pairs = [cpu_seconds(p, descendants=name != "client") for p in pids]
        out[name] = sum(c for c, _ in pairs)
        waited += sum(w for _, w in pairs)
    out["waiting for a core"] = waited
    return out


def parse_env(assignments: list[str]) -> dict[str, str]:
    """``["KEY=VALUE", ...]`` as a dict (``--worker-env``).

    >>> parse_env(["MALLOC_MMAP_THRESHOLD_=33554432"])
    {'MALLOC_MMAP_THRESHOLD_': '33554432'}
    """
    env = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--worker-env {item!r}: expected KEY=VALUE")
        env[key] = value
    return env


def read_ahead_settings(value: str) -> list[str]:
    """``--worker-read-ahead``: "on", "off" or both, comma-separated, in that order.

    >>> read_ahead_settings("on,off")
    ['on', 'off']
    """
    settings = [v.strip() for v in value.split(",") if v.strip()]
    if not settings or any(v not in READ_AHEAD_ENV for v in settings):
        raise argparse.ArgumentTypeError(f"{value!r}: expected on, off or on,off")
    return settings


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env.update(extra or {})
    return env


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait()


@contextlib.contextmanager
def cli_cluster(nworkers: int, threads: int, scheduler_env: dict[str, str] | None = None,
                worker_env: dict[str, str] | None = None
                ) -> Iterator[tuple[Path, list[subprocess.Popen]]]:
    """``dask scheduler`` and ``nworkers`` ``dask worker`` processes (each with its
    nanny), the workers' environment without ``AWS_*`` and with ``worker_env`` added:
    (scheduler file, [scheduler, workers...]), stopped on exit."""
    bindir = Path(sys.executable).parent
    tmp = Path(tempfile.mkdtemp(prefix="h5dask-bench-cluster-"))
    sched_file = tmp / "scheduler.json"
    with open(tmp / "log.txt", "wb") as logs:
        procs = [subprocess.Popen(
            [str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0",
             "--no-dashboard", "--scheduler-file", str(sched_file)],
            env=_clean_env(scheduler_env), stdout=logs, stderr=subprocess.STDOUT, cwd=tmp)]
        try:
            deadline = time.monotonic() + 60
            while not sched_file.exists():
                if time.monotonic() > deadline:
                    raise RuntimeError("dask scheduler did not start")
                time.sleep(0.2)
            for _ in range(nworkers):
                procs.append(subprocess.Popen(
                    [str(bindir / "dask"), "worker", "--scheduler-file", str(sched_file),
                     "--nthreads", str(threads), "--nworkers", "1", "--no-dashboard",
                     "--memory-limit", "2GiB"],
                    env=_clean_env(worker_env), stdout=logs, stderr=subprocess.STDOUT, cwd=tmp))
            yield sched_file, procs
        finally:
            _stop(procs[1:])
            _stop(procs[:1])


def _readahead_used() -> int:
    from h5dask.readahead import get_readahead

    return get_readahead().used


def _readahead_budget() -> int:
    from h5dask.readahead import get_readahead

    return get_readahead().budget


def run_cluster(url: str, storage_options: dict[str, Any], nworkers: int, threads: int,
                data: Synthetic, repeats: int, log: Any, scheduler_env: dict[str, str],
                other_pids: dict[str, int] | None = None,
                worker_env: dict[str, str] | None = None) -> ClusterRun:
    import xarray as xr
    from distributed import Client

    import h5dask

    with cli_cluster(nworkers, threads, scheduler_env, worker_env) as (sched_file, procs), \
            Client(scheduler_file=str(sched_file), timeout=60) as client:
        client.wait_for_workers(nworkers, timeout=120)
        series = Series(f"{nworkers} worker(s) x {threads} threads", data.nbytes)
        expected = data.expected_sum()

        def run() -> float:
            ds = xr.open_dataset(url, engine="h5cloud", chunks={},
                                 storage_options=storage_options)
            return float(ds["v"].sum().compute())

        run()  # warm-up: imports and connections in the workers
        h5dask.reset_stats()
        client.run(h5dask.reset_stats)
        groups = {name: [pid] for name, pid in (other_pids or {}).items()}
        groups["scheduler"] = [procs[0].pid]
        for i, p in enumerate(procs[1:]):
            groups[f"worker {i + 1}"] = [p.pid]
        rounds: list[dict[str, float]] = []
        for r in range(repeats):
            before = cpu_of(groups | {"client": [os.getpid()]})
            dt, got = timed(run)
            after = cpu_of(groups | {"client": [os.getpid()]})
            rounds.append({k: after[k] - before[k] for k in after})
            if abs(got - expected) > 1e-4 * abs(expected):
                raise AssertionError(f"cluster summed {got}, expected {expected}")
            series.seconds.append(dt)
            log(f"    round {r + 1}: {series.name:<28} {dt:7.2f} s "
                f"{data.nbytes / dt / 1e6:8.1f} MB/s  CPU s: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in rounds[-1].items()))
        result = ClusterRun(nworkers, threads, series,
                            h5dask.stats()["chunk"]["read_bytes"] // repeats,
                            cpu={k: statistics.median(r[k] for r in rounds)
                                 for k in rounds[0]})
        for addr, st in client.run(h5dask.stats).items():
            result.worker_chunk_bytes[addr] = st["chunk"]["read_bytes"] // repeats
        result.readahead_used = client.run(_readahead_used)
        result.readahead_budget = client.run(_readahead_budget)
        client.retire_workers()
    return result


def markdown(runs: list[ClusterRun], latency_ms: float, size_mib: float,
             saturation: str, worker_env: dict[str, str] | None = None,
             read_ahead: str = "on") -> str:
    """The table of one cluster setting; ``read_ahead`` ("on"/"off") names the workers'
    read-ahead in the title (its variable is then in ``worker_env`` too)."""
    env = " ".join(f"`{k}={v}`" for k, v in (worker_env or {}).items()) or \
        "distributed's defaults"
    title = f"### A dask cluster through the proxy ({latency_ms:.0f} ms, 100 MB/s per stream)"
    if read_ahead == "off":
        title += (f", workers' read-ahead OFF (`{BUDGET_VARIABLE}=0`: each worker has only "
                  "its threads' GETs in flight)")
    out = [title, "",
           f"`dask scheduler` + `dask worker` processes (the CLIs), workers without any "
           f"`AWS_*` variable; {size_mib:.0f} MiB, `chunks={{}}`, `sum()`, median of the "
           f"rounds; scheduler `worker-saturation` {saturation}; worker environment: {env}. "
           "Bytes: chunk bytes read per round by each process, from `h5dask.stats()`.", "",
           "| workers x threads | MB/s | range (MB/s) | client chunk bytes | chunk bytes per "
           "worker | chunks taken from read-ahead per worker (all rounds) | CPU s per round: "
           "proxy, S3, scheduler, workers, client | CPU busy / waiting for a core |",
           "| --- | ---: | ---: | ---: | --- | --- | --- | ---: |"]
    for r in runs:
        per = ", ".join(f"{b / MiB:.0f} MiB" for b in r.worker_chunk_bytes.values())
        used = ", ".join(str(u) for u in r.readahead_used.values())
        lo, hi = r.series.mb_s_range
        workers = " + ".join(f"{v:.2f}" for k, v in r.cpu.items() if k.startswith("worker "))
        cpu = ", ".join(f"{r.cpu.get(k, 0):.2f}" for k in ("proxy", "s3", "scheduler")) + \
            f", {workers}, {r.cpu.get('client', 0):.2f}"
        busy = sum(v for k, v in r.cpu.items() if k != "waiting for a core") / \
            r.series.median / (os.cpu_count() or 1)
        busy_and_wait = f"{busy:.0%} / {r.cpu.get('waiting for a core', 0):.2f} s"
        out.append(f"| {r.workers} x {r.threads} | {r.series.mb_s:.0f} | {lo:.0f}-{hi:.0f} | "
                   f"{r.client_chunk_bytes:,} | {per} | {used} | {cpu} | {busy_and_wait} |")
    out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cluster", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--latency-ms", type=float, default=30.0)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker-saturation", default="1.1",
                        help="distributed.scheduler.worker-saturation (inf: no queuing)")
    parser.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                        help="a variable added to the workers' environment (repeatable), "
                        "e.g. MALLOC_MMAP_THRESHOLD_=33554432")
    parser.add_argument("--worker-read-ahead", default="on", type=read_ahead_settings,
                        help="on, off (workers started with H5DASK_READ_AHEAD_BYTES=0) or "
                        "on,off (a table for each)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    worker_env = parse_env(args.worker_env)
    data = Synthetic(nplanes_for(args.size_mib))
    variant = next(v for v in VARIANTS if v.slug == "plain")
    env = {"DASK_DISTRIBUTED__SCHEDULER__WORKER_SATURATION": args.worker_saturation}
    tables = []
    with Services() as services:
        w = write_variant(services, data, variant, set())
        with LatencyProxy(services.s3.endpoint, args.latency_ms / 1000) as proxy:
            services.endpoint_override = proxy.endpoint
            for setting in args.worker_read_ahead:
                env_here = {**worker_env, **READ_AHEAD_ENV[setting]}
                runs = []
                for n in (int(x) for x in args.workers.split(",")):
                    print(f"## {n} worker(s), read-ahead {setting}", flush=True)
                    pids = {"proxy": proxy.proc.pid, "s3": services.s3.pid}
                    runs.append(run_cluster(w.domain_url, services.storage_options, n,
                                            args.threads, data, args.repeats, print, env,
                                            pids, env_here))
                tables.append(markdown(runs, args.latency_ms, data.nbytes / MiB,
                                       args.worker_saturation, env_here, setting))
    text = "\n".join(tables)
    text += (f"CPU busy: all these processes' CPU seconds per second of the run, over the "
             f"{os.cpu_count()} cores; waiting for a core: the seconds their threads were "
             "runnable but not running, per round (/proc schedstat), summed over threads.\n")
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
