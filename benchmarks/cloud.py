"""The cloud profile: every reader through a proxy adding first-byte latency and a
per-stream bandwidth (:mod:`benchmarks.latencyproxy`, its own process), at several
latencies, interleaved and repeated; opening 50 variables; pushed-down ``mean()``.

    python -m benchmarks.cloud [--size-mib 256] [--latencies 10,30,100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import readers
from .common import ALLOCATOR_SLACK_MIB, MiB, Series, interleave
from .data import VARIANTS, Synthetic, Written, nplanes_for, write_variant
from .latencyproxy import LatencyProxy
from .services import ActiveServer, Services

Log = Callable[[str], None]
STREAM_BYTES_PER_S = 100e6


@dataclass(frozen=True)
class Topology:
    """Where the active-storage server sits relative to the latency."""

    slug: str
    label: str  # the row's name in the tables
    what: str  # one sentence for the reader of BENCHMARKS.md


#: as active storage is deployed (Reductionist next to the object store): the primary row
NEAR_STORE = Topology(
    "near-store", "pushed down, server next to the store",
    "the server reads SeaweedFS directly on loopback; the client's requests to the server "
    "go through a second latency proxy (same profile), as across a WAN")
#: the opposite: the server next to the client, reading its store across the latency
NEAR_CLIENT = Topology(
    "near-client", "pushed down, server across the latency from its store",
    "the client talks to the server on plain loopback; the server reads every chunk "
    "object through the storage latency proxy")
TOPOLOGIES = (NEAR_STORE, NEAR_CLIENT)


@dataclass
class ActiveSetup:
    """An active-storage server in one topology: the URL the client uses, and the
    processes whose CPU the pushed-down reductions cost."""

    topology: Topology
    url: str
    server_pid: int | None
    proxy_pid: int | None  # the latency proxy in front of the server, if any


@dataclass
class MeanRow:
    """``mean()`` one way: locally, or pushed down in one topology."""

    name: str
    what: str
    series: Series
    client_bytes: int = 0
    #: median CPU seconds per round: client, storage proxy, SeaweedFS, active server,
    #: active-server proxy
    cpu: tuple[float, ...] = ()


@dataclass
class CloudRun:
    """The results at one latency."""

    latency_ms: float
    #: the client on one core, the proxy and SeaweedFS on the other (--split-cores)
    split_cores: bool = False
    reads: list[tuple[Series, str]] = field(default_factory=list)  # (series, kind)
    opens: list[Series] = field(default_factory=list)
    #: mean() computed locally, then pushed down in each topology (NEAR_STORE first)
    means: list[MeanRow] = field(default_factory=list)
    readahead_peak: int = 0
    readahead_budget: int = 0
    #: reader -> median CPU seconds per round of (this client, the proxy, SeaweedFS)
    cpu: dict[str, tuple[float, ...]] = field(default_factory=dict)
    #: reader -> median minor page faults of this client per round
    faults: dict[str, float] = field(default_factory=dict)
    memory: Any = None  # extras.MemoryResult of a fresh process reading through the proxy


@contextmanager
def through(services: Services, endpoint: str) -> Iterator[None]:
    """Clients of ``services`` talk to ``endpoint`` (the proxy) inside the block."""
    before = services.endpoint_override
    services.endpoint_override = endpoint
    try:
        yield
    finally:
        services.endpoint_override = before


def pin(pid: int | None, cpus: set[int]) -> None:
    """Run every thread of process ``pid`` (threads started later inherit it) on ``cpus``."""
    if pid is None:
        return
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), cpus)
        except (ProcessLookupError, FileNotFoundError):
            pass  # the thread ended meanwhile


@contextmanager
def split_cores(store_pids: list[int | None], enabled: bool) -> Iterator[None]:
    """With ``enabled`` and 2+ cores: this process on core 0, the store side (proxy,
    SeaweedFS, active server) on the others, as when the object store is another
    machine; restored afterwards."""
    every = os.sched_getaffinity(0)
    if not enabled or len(every) < 2:
        yield
        return
    client = {min(every)}
    for pid in store_pids:
        pin(pid, every - client)
    pin(os.getpid(), client)
    try:
        yield
    finally:
        for pid in [*store_pids, os.getpid()]:
            pin(pid, every)


def h5dask_auto(services: Services, written: Written) -> Callable[[], float]:
    import xarray as xr

    def run() -> float:
        ds = xr.open_dataset(written.domain_url, engine="h5cloud", chunks="auto",
                             storage_options=services.storage_options)
        return float(ds["v"].sum().compute())

    return run


def zarr_obstore_auto(services: Services, written: Written) -> Callable[[], float]:
    import xarray as xr
    from zarr.storage import ObjectStore

    def run() -> float:
        store = ObjectStore(services.obstore(written.zarr_prefix), read_only=True)
        ds = xr.open_zarr(store, consolidated=True, chunks="auto", zarr_format=3)
        return float(ds["v"].sum().compute())

    return run


def contenders(services: Services, w: Written, peers: set[str], active_url: str | None,
               auto: bool = True, floor: bool = False, budgets_mib: tuple[int, ...] = ()
               ) -> list[tuple[Series, Callable[[], Any], str]]:
    """(series, runner, kind) of every reader, built while ``services`` points at the proxy."""
    out: list[tuple[Series, Callable[[], Any], str]] = []

    def add(name: str, runner: Callable[[], Any], kind: str, note: str) -> None:
        out.append((Series(name, 0, note=note), runner, kind))

    add("raw: every GET at once", readers.raw(services, w, None), "raw",
        "obstore get_async of every chunk object at once")
    add('h5dask, chunks={}', readers.h5dask_read(services, w), "h5dask",
        "one task per chunk object, read-ahead on")
    for mib in budgets_mib:
        add(f"h5dask, chunks={{}}, read-ahead {mib} MiB",
            with_budget(readers.h5dask_read(services, w), mib * MiB), "h5dask",
            "as above with another read-ahead budget (H5DASK_READ_AHEAD_BYTES)")
    if auto:
        add('h5dask, chunks="auto"', h5dask_auto(services, w), "h5dask-auto",
            "dask's automatic blocks (many chunk objects per task)")
    if "zarr" in peers:
        add('zarr v3, obstore, chunks={}', readers.zarr_obstore(services, w), "peer",
            "same chunks, consolidated")
        if auto:
            add('zarr v3, obstore, chunks="auto"', zarr_obstore_auto(services, w),
                "peer-auto", "dask's automatic blocks")
    if "zarr-fsspec" in peers:
        add("zarr v3, fsspec (s3fs)", readers.zarr_fsspec(services, w), "peer",
            "same chunks, consolidated")
    if "netcdf" in peers:
        add("h5netcdf via s3fs", readers.h5netcdf_read(services, w), "peer",
            "the netCDF-4 file read through s3fs")
    if "hsds" in peers:
        add("HSDS + h5pyd", readers.hsds_read(services, w), "peer",
            "HSDS reading the same objects through the proxy")
    if floor:
        add("raw + sum: every GET at once, each chunk summed", readers.raw_sum(services, w),
            "floor", "the ceiling of a reader that also computes the sum (2 threads)")
        add("compute only, chunks={} (in memory)", compute_only(services, w, {}), "floor",
            "the same sum() on the data already in memory: no I/O")
        if auto:
            add(COMPUTE_ONLY_AUTO, compute_only(services, w, "auto"),
                "floor", "the same sum() on the data already in memory: no I/O")
    if active_url:
        add("h5dask pushdown (active storage)", _pushdown(services, w, active_url),
            "pushdown", f"sum() pushed down, {NEAR_STORE.what}")
    return out


def _pushdown(services: Services, w: Written, url: str) -> Callable[[], float]:
    import dask
    import xarray as xr

    def run() -> float:
        with dask.config.set(array_optimize=None):
            ds = xr.open_dataset(w.domain_url, engine="h5cloud", chunks={},
                                 storage_options=services.storage_options,
                                 active_storage_url=url, active_storage="require")
            return float(ds["v"].sum().compute())

    return run


def with_budget(run: Callable[[], Any], nbytes: int) -> Callable[[], Any]:
    """``run`` with the process's read-ahead budget set to ``nbytes`` (restored after)."""
    from h5dask.readahead import get_readahead, set_budget

    def budgeted() -> Any:
        before = get_readahead().budget
        set_budget(nbytes)
        try:
            return run()
        finally:
            set_budget(before)

    return budgeted


def _checked(run: Callable[[], Any], kind: str, expected: float, name: str
             ) -> Callable[[], Any]:
    def checked() -> Any:
        got = run()
        if kind != "raw" and abs(got - expected) > 1e-4 * abs(expected):
            raise AssertionError(f"{name} summed {got}, expected {expected}")
        return got

    return checked


def process_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` (0 if unknown/gone)."""
    if pid is None:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU seconds of this process, every thread (obstore's runtime included)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def own_minor_faults() -> int:
    """Minor page faults of this process so far: each is a fresh page the kernel zeroed
    (in a VM with free page reporting, often one the host must back again)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def cpu_counted(run: Callable[[], Any], pids: tuple[int | None, ...],
                rounds: list[tuple[float, ...]], faults: list[int] | None = None
                ) -> Callable[[], Any]:
    """``run``, appending each call's CPU seconds (this client, proxy, store) to ``rounds``
    (and this client's minor page faults to ``faults``): on 2 shared cores the CPU a
    reader costs, not only its time, says what is possible."""

    def counted() -> Any:
        faulted = own_minor_faults()
        before = (own_cpu(), *(process_cpu(p) for p in pids))
        result = run()
        after = (own_cpu(), *(process_cpu(p) for p in pids))
        rounds.append(tuple(b - a for a, b in zip(before, after)))
        if faults is not None:
            faults.append(own_minor_faults() - faulted)
        return result

    return counted


def compute_only(services: Services, written: Written, chunks: Any) -> Callable[[], float]:
    """The same ``sum()`` on the variable already in memory (persisted once): the time
    and CPU of xarray's and dask's own work, which no reader can hide behind its I/O for
    the block read last."""
    import xarray as xr

    ds = xr.open_dataset(written.domain_url, engine="h5cloud", chunks=chunks,
                         storage_options=services.storage_options)
    in_memory = ds["v"].persist()

    def run() -> float:
        return float(in_memory.sum().compute())

    return run


def probe_arguments(prog: str, doc: str, argv: list[str] | None, *, latency_ms: float,
                    rounds: int) -> argparse.Namespace:
    """The options of a probe through the proxy (``--latency-ms``, ``--rounds``,
    ``--size-mib``), its description the first paragraph of ``doc``."""
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=latency_ms)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--size-mib", type=int, default=256)
    return parser.parse_args(argv)


def warm_up(runners: list[Callable[[], Any]]) -> None:
    """Run every contender once, untimed: each then starts its timed rounds with its
    imports done and its connections through the proxy open, as raw always did (a
    contender's first round otherwise pays its imports and connection set-up, and with
    few repeats that cold round moves its median). A failure shows in the timed rounds."""
    for run in runners:
        try:
            run()
        except Exception:  # noqa: BLE001, S112 - recorded by interleave() when timed
            continue


def mean_pushdown(services: Services, w: Written, setups: list[ActiveSetup], repeats: int,
                  log: Log, pids: tuple[int | None, int | None]) -> list[MeanRow]:
    """``mean()`` locally and pushed down in each topology, interleaved; the client's
    bytes and the CPU seconds of every process involved. ``pids``: the storage proxy's
    and SeaweedFS's."""
    import dask
    import xarray as xr

    import h5dask

    so = services.storage_options

    def local() -> float:
        ds = xr.open_dataset(w.domain_url, engine="h5cloud", chunks={}, storage_options=so)
        return float(ds["v"].mean().compute())

    def pushed(url: str) -> Callable[[], float]:
        def run() -> float:
            with dask.config.set(array_optimize=None):
                ds = xr.open_dataset(w.domain_url, engine="h5cloud", chunks={},
                                     storage_options=so, active_storage_url=url,
                                     active_storage="require")
                return float(ds["v"].mean().compute())

        return run

    rows = [MeanRow("computed locally", "the client reads every chunk object through the "
                    "storage proxy", Series("mean(), computed locally", 0))]
    runners: list[Callable[[], float]] = [local]
    for setup in setups:
        rows.append(MeanRow(setup.topology.label, setup.topology.what,
                            Series(f"mean(), {setup.topology.label}", 0)))
        runners.append(pushed(setup.url))
    every_pid = (*pids, *(p for st in setups for p in (st.server_pid, st.proxy_pid)))
    for row, run in zip(rows, runners):
        h5dask.reset_stats()
        run()  # also the warm-up: imports, connections
        row.client_bytes = h5dask.stats()["total"]["read_bytes"]
    rounds: list[list[tuple[float, ...]]] = [[] for _ in rows]
    interleave([r.series for r in rows],
               [cpu_counted(run, every_pid, got) for run, got in zip(runners, rounds)],
               repeats, log)
    for i, (row, got) in enumerate(zip(rows, rounds)):
        if not got:
            continue
        cpu = _median_each(got)
        # client, storage proxy, SeaweedFS, then this row's own server and its proxy
        own = cpu[3 + 2 * (i - 1): 5 + 2 * (i - 1)] if i else (0.0, 0.0)
        row.cpu = (*cpu[:3], *own)
    return rows


def start_active_servers(stack: ExitStack, services: Services, storage_proxy: LatencyProxy,
                         latency: float) -> list[ActiveSetup]:
    """An active-storage server in each of :data:`TOPOLOGIES`, stopped by ``stack``.

    Next to the store, the server is allowed only SeaweedFS itself; the client names
    the chunk objects by the URL it reads them at (the storage proxy), so a server
    route maps that origin to SeaweedFS (``--upstream-route``)."""
    near_store = ActiveServer(services.s3.endpoint,
                              routes={storage_proxy.endpoint: services.s3.endpoint}).start()
    stack.callback(near_store.stop)
    active_proxy = stack.enter_context(
        LatencyProxy(near_store.url, latency, STREAM_BYTES_PER_S))
    near_client = ActiveServer(storage_proxy.endpoint).start()
    stack.callback(near_client.stop)
    return [ActiveSetup(NEAR_STORE, active_proxy.endpoint, near_store.pid,
                        active_proxy.proc.pid if active_proxy.proc else None),
            ActiveSetup(NEAR_CLIENT, near_client.url, near_client.pid, None)]


def run_cloud(services: Services, w: Written, data: Synthetic, latencies: list[float],
              repeats: int, peers: set[str], pushdown: bool, log: Log,
              open_fn: Callable[[int], list[Series]] | None = None, auto: bool = True,
              floor: bool = False, budgets_mib: tuple[int, ...] = (),
              split: bool = False) -> list[CloudRun]:
    """Every contender through a fresh proxy at each latency (seconds)."""
    from h5dask.readahead import get_readahead

    runs = []
    expected = data.expected_sum()
    for latency in latencies:
        log(f"## cloud: {latency * 1000:.0f} ms first byte, "
            f"{STREAM_BYTES_PER_S / 1e6:.0f} MB/s per stream")
        result = CloudRun(latency * 1000, split_cores=split)
        with LatencyProxy(services.s3.endpoint, latency, STREAM_BYTES_PER_S) as proxy, \
                through(services, proxy.endpoint), ExitStack() as servers:
            setups = start_active_servers(servers, services, proxy, latency) if pushdown \
                else []
            hsds = None
            try:
                if "hsds" in peers:
                    hsds = services.restart_hsds(proxy.endpoint)
                rows = contenders(services, w, peers, setups[0].url if setups else None, auto,
                                  floor, budgets_mib)
                for s, _, _ in rows:
                    s.nbytes = data.nbytes
                warm_up([r for _, r, _ in rows])
                get_readahead().peak_reserved = 0
                pids = (proxy.proc.pid if proxy.proc else None, services.s3.pid)
                cpu_rounds: dict[str, list[tuple[float, ...]]] = {
                    s.name: [] for s, _, _ in rows}
                fault_rounds: dict[str, list[int]] = {s.name: [] for s, _, _ in rows}
                store_side = [*pids, *(p for a in setups for p in (a.server_pid, a.proxy_pid))]
                with split_cores(store_side, split):
                    interleave([s for s, _, _ in rows],
                               [cpu_counted(_checked(r, k, expected, s.name), pids,
                                            cpu_rounds[s.name], fault_rounds[s.name])
                                for s, r, k in rows],
                               repeats, log)
                result.cpu = {name: _median_each(got) for name, got in cpu_rounds.items() if got}
                result.faults = {name: statistics.median(got)
                                 for name, got in fault_rounds.items() if got}
                result.readahead_peak = get_readahead().peak_reserved
                result.readahead_budget = get_readahead().budget
                result.reads = [(s, k) for s, _, k in rows]
                if open_fn is not None:
                    result.opens = open_fn(repeats)
                    from .extras import memory  # a fresh process, through the proxy

                    result.memory = memory(services, w, data)
                if setups:
                    result.means = mean_pushdown(services, w, setups, repeats, log, pids)
            finally:
                if hsds is not None:
                    services.restart_hsds(None)
        runs.append(result)
    return runs


def _median_each(rounds: list[tuple[float, ...]]) -> tuple[float, ...]:
    return tuple(statistics.median(column) for column in zip(*rounds))


COMPUTE_ONLY_AUTO = 'compute only, chunks="auto" (in memory)'


def auto_bound(r: CloudRun) -> float | None:
    """The most ``chunks="auto"`` can reach, as a ratio to raw, for ANY reader: a task's
    block is summed only after its last chunk arrived, so the sum of the block read last
    follows the whole read; at best the read takes raw's time and that sum the in-memory
    sum's time (both blocks summed at once on the two threads)."""
    raw = next((s for s, k in r.reads if k == "raw" and s.seconds), None)
    compute = next((s for s, _ in r.reads if s.name == COMPUTE_ONLY_AUTO and s.seconds), None)
    if raw is None or compute is None:
        return None
    return raw.median / (raw.median + compute.median)


def _auto_bound_line(r: CloudRun) -> str:
    bound = auto_bound(r)
    if bound is None:
        return ""
    return (f'Upper bound of `chunks="auto"` for any reader: raw / (raw + compute only "auto")'
            f" = {bound:.2f} x raw (the sum of the block read last cannot overlap the read).")


def _fresh(faults: float | None) -> str:
    """Minor faults and the memory they stand for, if each was one 4 KiB page."""
    if faults is None:
        return ""
    return f"{faults:,.0f} ({faults * 4096 / MiB:.0f})"


def _mean_cpu(row: MeanRow) -> str:
    c = row.cpu
    if not c:
        return ""
    return (f"CPU s: client {c[0]:.2f}, storage proxy {c[1]:.2f}, SeaweedFS {c[2]:.2f}, "
            f"active server {c[3]:.2f}, its proxy {c[4]:.2f}")


def summary(runs: list[CloudRun]) -> str:
    lines = []
    for r in runs:
        raw = next((s for s, k in r.reads if k == "raw"), None)
        split = " (full reads: client on core 0, store side on the rest)" if r.split_cores else ""
        lines.append(f"{r.latency_ms:.0f} ms{split}:")
        for s, _ in r.reads:
            ratio = f"{raw.median / s.median:5.2f} x raw" if raw and s.seconds else ""
            cpu = r.cpu.get(s.name)
            used = (f"  CPU s: client {cpu[0]:.2f}, proxy {cpu[1]:.2f}, SeaweedFS {cpu[2]:.2f}"
                    f", client page faults {_fresh(r.faults.get(s.name))}" if cpu else "")
            lines.append(f"  {s.name:<36} {s.mb_s:8.0f} MB/s  {ratio} {s.error}{used}")
        for s in r.opens:
            lines.append(f"  open: {s.name:<30} {s.median * 1000:7.0f} ms")
        local_bytes = r.means[0].client_bytes if r.means else 0
        for m in r.means:
            share = f" ({100 * m.client_bytes / max(local_bytes, 1):.4f} %)" if m is not \
                r.means[0] else ""
            lines.append(f"  mean() {m.name:<52} {m.series.median:6.2f} s  client bytes "
                         f"{m.client_bytes:,}{share} {m.series.error}  {_mean_cpu(m)}")
        if auto_bound(r) is not None:
            lines.append(f"  {_auto_bound_line(r)}")
        lines.append(f"  read-ahead peak reserved {r.readahead_peak / MiB:.0f} MiB")
    return "\n".join(lines)


def markdown(runs: list[CloudRun], size_mib: float, repeats: int) -> str:
    """The "cloud" section of BENCHMARKS.md."""
    out = ["## Cloud profile: through a proxy adding latency and per-stream bandwidth", "",
           f"`benchmarks/latencyproxy.py` in its own process sleeps the first-byte latency "
           f"before forwarding each request and paces each response to "
           f"{STREAM_BYTES_PER_S / 1e6:.0f} MB/s per stream. {size_mib:.0f} MiB of float32 in "
           "4 MiB chunk objects, `sum()` on dask's threaded scheduler (2 threads), median of "
           f"{repeats} interleaved rounds; every reader, raw included, goes through the same "
           "proxy (HSDS reads storage through it too; the pushdown rows say where the "
           "active-storage server sits). The proxy shares the 2 cores with everything else: "
           "ratios to raw are the figures to read.",
           ""]
    for r in runs:
        raw = next((s for s, k in r.reads if k == "raw" and s.seconds), None)
        split = (", client on one core, proxy + SeaweedFS on the other" if r.split_cores
                 else "")
        out += [f"### {r.latency_ms:.0f} ms to first byte{split}", "",
                "| reader | MB/s | range (MB/s) | ratio to raw | what |",
                "| --- | ---: | ---: | ---: | --- |"]
        for s, _ in r.reads:
            if s.error or not s.seconds:
                out.append(f"| {s.name} | failed | | | {s.error} |")
                continue
            lo, hi = s.mb_s_range
            ratio = f"{raw.median / s.median:.2f}" if raw else ""
            out.append(f"| {s.name} | {s.mb_s:.0f} | {lo:.0f}-{hi:.0f} | {ratio} | {s.note} |")
        out.append("")
        if auto_bound(r) is not None:
            out += [_auto_bound_line(r), ""]
        if r.cpu:
            out += ["| reader | CPU s, this client | CPU s, proxy | CPU s, SeaweedFS "
                    "| minor page faults, this client (MiB of fresh pages) |",
                    "| --- | ---: | ---: | ---: | ---: |"]
            out += [f"| {name} | {c:.2f} | {p:.2f} | {st:.2f} | {_fresh(r.faults.get(name))} |"
                    for name, (c, p, st) in r.cpu.items()]
            out.append("")
        if r.opens:
            out += ["| open 50 variables | median ms | range ms |", "| --- | ---: | ---: |"]
            for s in r.opens:
                lo, hi = s.spread
                out.append(f"| {s.name} | {s.median * 1e3:.0f} | {lo * 1e3:.0f}-{hi * 1e3:.0f} |")
            out.append("")
        if r.means:
            local_bytes = r.means[0].client_bytes
            out += ["| mean() | median s | range s | client bytes | CPU s: client, storage "
                    "proxy, SeaweedFS, active server, its proxy | topology |",
                    "| --- | ---: | ---: | ---: | ---: | --- |"]
            for m in r.means:
                if m.series.error or not m.series.seconds:
                    out.append(f"| {m.name} | failed | | | | {m.series.error} |")
                    continue
                lo, hi = m.series.spread
                share = "" if m is r.means[0] else \
                    f" ({100 * m.client_bytes / max(local_bytes, 1):.4f} %)"
                cpu = ", ".join(f"{c:.2f}" for c in m.cpu)
                out.append(f"| {m.name} | {m.series.median:.2f} | {lo:.2f}-{hi:.2f} | "
                           f"{m.client_bytes:,}{share} | {cpu} | {m.what} |")
            out.append("")
        out += [f"Read-ahead held at most {r.readahead_peak / MiB:.0f} MiB "
                f"(bound: `H5DASK_READ_AHEAD_BYTES`, {r.readahead_budget / MiB:.0f} MiB).", ""]
        if r.memory is not None:
            m = r.memory
            out += [f"Client memory of a streaming `sum()` through the proxy (fresh process): "
                    f"+{m.increase_mib:.0f} MiB over the {m.baseline_mib:.0f} MiB constant; "
                    f"bound {m.bound_mib:.0f} MiB = 2 x {m.chunk_bytes / MiB:.0f} MiB x "
                    f"{m.threads} threads + {m.readahead_budget / MiB:.0f} MiB read-ahead "
                    f"(which held at most {m.readahead_peak / MiB:.0f} MiB) + "
                    f"{ALLOCATOR_SLACK_MIB} MiB allocator slack.", ""]
    return "\n".join(out)


def open_only(latencies: list[float], repeats: int) -> int:
    """The open of 50 variables (h5dask and zarr v3) through the proxy at each latency."""
    from . import extras

    with Services() as services:
        for latency in latencies:
            with LatencyProxy(services.s3.endpoint, latency, STREAM_BYTES_PER_S) as proxy, \
                    through(services, proxy.endpoint):
                for s in extras.open_time(services, repeats, 50, print):
                    lo, hi = s.spread
                    print(f"{latency * 1000:.0f} ms  open: {s.name:<30} {s.median * 1e3:6.0f} ms"
                          f"  ({lo * 1e3:.0f}-{hi * 1e3:.0f})")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.cloud", description=__doc__)
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--latencies", default="10,30,100", help="ms, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--peers", default="zarr",
                        help="comma list of zarr,zarr-fsspec,netcdf,hsds")
    parser.add_argument("--no-pushdown", action="store_true")
    parser.add_argument("--no-open", action="store_true")
    parser.add_argument("--no-auto", action="store_true", help='leave out chunks="auto"')
    parser.add_argument("--split-cores", action="store_true",
                        help="full reads with the client on core 0 and the proxy, SeaweedFS "
                        "and active server on the other cores (the store as another machine)")
    parser.add_argument("--readahead-mib", default="",
                        help="comma list: extra chunks={} rows with these read-ahead budgets")
    parser.add_argument("--floor", action="store_true",
                        help="add raw + sum and the same sum() on data already in memory (no I/O)")
    parser.add_argument("--out", default=None, help="write the Markdown section here")
    parser.add_argument("--open-only", action="store_true",
                        help="only the open of 50 variables, at each latency (quick A/B)")
    args = parser.parse_args(argv)
    if args.open_only:
        return open_only([float(x) / 1000 for x in args.latencies.split(",")], args.repeats)
    peers = {p for p in args.peers.split(",") if p}
    data = Synthetic(nplanes_for(args.size_mib))
    variant = next(v for v in VARIANTS if v.slug == "plain")
    t0 = time.monotonic()
    with Services() as services:
        formats = {"zarr"} | ({"netcdf"} if "netcdf" in peers else set())
        w = write_variant(services, data, variant, formats)
        print(f"wrote {data.nbytes / MiB:.0f} MiB in {time.monotonic() - t0:.0f} s", flush=True)
        open_fn = None
        if not args.no_open:
            from . import extras

            def open_fn(repeats: int) -> list[Series]:
                return extras.open_time(services, repeats, 50, print)

        runs = run_cloud(services, w, data, [float(x) / 1000 for x in args.latencies.split(",")],
                         args.repeats, peers, not args.no_pushdown, print, open_fn,
                         auto=not args.no_auto, floor=args.floor,
                         budgets_mib=tuple(int(x) for x in args.readahead_mib.split(",") if x),
                         split=args.split_cores)
    print(summary(runs))
    if args.out:
        with open(args.out, "w") as f:
            f.write(markdown(runs, data.nbytes / MiB, args.repeats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
