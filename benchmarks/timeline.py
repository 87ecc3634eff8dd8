"""Where a full read's wall time goes through the latency proxy: a timeline per round.

For raw obstore GETs (every one at once, and as many in flight as read-ahead allows)
and h5dask ``chunks={}``, interleaved, each round reports: wall and CPU seconds (this
client, the proxy, SeaweedFS), GETs in flight (time-weighted mean and peak), per-GET
times from request to last byte, the ramp (round start to first GET) and the tail (last
GET's end to the round's end); for h5dask also the read-ahead's state sampled every few
ms (reserved MiB, chunks arrived but not yet taken by a task, GETs started ahead and
under way) and how many tasks found their chunk already there.

    python -m benchmarks.timeline [--latency-ms 100] [--rounds 3] [--size-mib 256]

Every GET is timed by wrapping obstore's module functions in this process (a probe, not
a reader: the wrapping costs microseconds per GET, the same for every reader).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import readers
from .cloud import own_cpu, probe_arguments, process_cpu, through, warm_up
from .common import MiB
from .data import VARIANTS, Synthetic, nplanes_for, write_variant
from .latencyproxy import LatencyProxy
from .services import Services

STREAM_BYTES_PER_S = 100e6


@dataclass
class GetTimes:
    """The GETs of one round: key -> (start, end) in perf_counter seconds."""

    spans: dict[str, tuple[float, float]] = field(default_factory=dict)
    _started: dict[str, float] = field(default_factory=dict)

    def start(self, key: str) -> None:
        self._started[key] = time.perf_counter()

    def end(self, key: str) -> None:
        if key in self._started:
            self.spans[key] = (self._started.pop(key), time.perf_counter())


_current = GetTimes()


def _wrap_obstore() -> None:
    """Time every GET of this process: ``get_range``/``get_range_async`` (h5dask's
    bounded chunk reads) and ``get_async`` (raw; its last byte is ``bytes_async``)."""
    import obstore

    get_async, get_range_async, get_range = (obstore.get_async, obstore.get_range_async,
                                             obstore.get_range)

    class TimedResult:
        def __init__(self, result: Any, key: str) -> None:
            self._result, self._key, self.meta = result, key, result.meta
            self.range = result.range  # (h5dask checks the body against it)

        async def bytes_async(self) -> Any:
            data = await self._result.bytes_async()
            _current.end(self._key)
            return data

    async def timed_get_async(store: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        _current.start(key)
        return TimedResult(await get_async(store, key, *args, **kwargs), key)

    async def timed_get_range_async(store: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        _current.start(key)
        data = await get_range_async(store, key, *args, **kwargs)
        _current.end(key)
        return data

    def timed_get_range(store: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        _current.start(key)
        data = get_range(store, key, *args, **kwargs)
        _current.end(key)
        return data

    obstore.get_async = timed_get_async
    obstore.get_range_async = timed_get_range_async
    obstore.get_range = timed_get_range


class ReadAheadSampler:
    """Samples the read-ahead's state every ``interval`` seconds while running."""

    def __init__(self, interval: float = 0.003) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float, int]] = []  # (reserved MiB, arrived, under way)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> ReadAheadSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        from h5dask.readahead import get_readahead

        ra = get_readahead()
        while not self._stop.wait(self.interval):
            futures = [e.future for e in list(ra._entries.values())]
            arrived = sum(1 for f in futures if f.done())
            if ra.reserved or futures:
                self.samples.append((ra.reserved / MiB, arrived, len(futures) - arrived))

    def summary(self) -> str:
        if not self.samples:
            return "read-ahead idle"
        mean = [statistics.mean(column) for column in zip(*self.samples)]
        return (f"read-ahead: reserved {mean[0]:.1f} MiB, arrived not taken {mean[1]:.2f}, "
                f"under way {mean[2]:.2f} (means of {len(self.samples)} samples)")


def in_flight(spans: list[tuple[float, float]]) -> tuple[float, int]:
    """Time-weighted mean and peak of the GETs under way at once.

    >>> in_flight([(0.0, 2.0), (1.0, 2.0)])
    (1.5, 2)
    """
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    if not edges:
        return 0.0, 0
    now, area, peak, last = 0, 0.0, 0, edges[0][0]
    for t, step in edges:
        area += now * (t - last)
        last, now = t, now + step
        peak = max(peak, now)
    span = edges[-1][0] - edges[0][0]
    return (area / span if span else float(peak)), peak


def round_report(name: str, t0: float, t1: float, cpu: tuple[float, ...],
                 gets: GetTimes) -> str:
    spans = list(gets.spans.values())
    if not spans:
        return f"{name}: {t1 - t0:.3f} s, no GETs timed"
    mean, peak = in_flight(spans)
    times = sorted(e - s for s, e in spans)
    ramp = min(s for s, _ in spans) - t0
    tail = t1 - max(e for _, e in spans)
    return (f"{name}: {t1 - t0:.3f} s, CPU client {cpu[0]:.2f} proxy {cpu[1]:.2f} "
            f"SeaweedFS {cpu[2]:.2f} s; {len(spans)} GETs, in flight {mean:.1f} "
            f"(peak {peak}), per GET {statistics.median(times) * 1000:.0f} ms "
            f"[{times[0] * 1000:.0f}-{times[-1] * 1000:.0f}], ramp {ramp * 1000:.0f} ms, "
            f"tail {tail * 1000:.0f} ms")


def h5dask_timed(services: Services, written: Any) -> Callable[[], Any]:
    """h5dask ``chunks={}`` with the read-ahead sampled and its hits counted."""
    from h5dask.readahead import get_readahead

    run = readers.h5dask_read(services, written)

    def timed() -> str:
        ra = get_readahead()
        used = ra.used
        with ReadAheadSampler() as sampler:
            run()
        return f"{sampler.summary()}; tasks that took a chunk fetched ahead: {ra.used - used}"

    return timed


def main(argv: list[str] | None = None) -> int:
    args = probe_arguments("python -m benchmarks.timeline", __doc__, argv, latency_ms=100.0,
                           rounds=3)
    global _current
    from h5dask.readahead import get_readahead

    _wrap_obstore()
    data = Synthetic(nplanes_for(args.size_mib))
    variant = next(v for v in VARIANTS if v.slug == "plain")
    with Services() as services:
        w = write_variant(services, data, variant, set())
        chunk_bound = w.stored_bytes // len(w.chunk_keys)
        ahead = max(1, get_readahead().budget // max(chunk_bound, 1))
        with LatencyProxy(services.s3.endpoint, args.latency_ms / 1000,
                          STREAM_BYTES_PER_S) as proxy, through(services, proxy.endpoint):
            # raw at the concurrency the read-ahead budget allows: h5dask's own ceiling
            runners = {"raw, every GET at once": readers.raw(services, w, None),
                       f"raw, {ahead} in flight": readers.raw(services, w, ahead),
                       "h5dask chunks={}": h5dask_timed(services, w)}
            warm_up(list(runners.values()))
            pids = (proxy.proc.pid if proxy.proc else None, services.s3.pid)
            for i in range(args.rounds):
                for name, run in runners.items():
                    _current = GetTimes()
                    before = (own_cpu(), *(process_cpu(p) for p in pids))
                    t0 = time.perf_counter()
                    extra = run()
                    t1 = time.perf_counter()
                    after = (own_cpu(), *(process_cpu(p) for p in pids))
                    cpu = tuple(b - a for a, b in zip(before, after))
                    print(round_report(f"round {i} {name}", t0, t1, cpu, _current), flush=True)
                    if isinstance(extra, str):
                        print(f"    {extra}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
