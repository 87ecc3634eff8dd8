"""The measurements beside the full read: opening 50 variables, the graph of 100 000
chunks, write throughput, client memory, and push-down of ``mean()`` (issue 4)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .common import ALLOCATOR_SLACK_MIB, MiB, Series, interleave, timed
from .data import Synthetic, Written
from .services import BUCKET, ROOT, Services

Log = Callable[[str], None]


# -- open time: a domain of 50 variables against Zarr v3 with consolidated metadata --------
def _fifty_variables(nvars: int) -> Any:
    import xarray as xr

    rng = np.random.default_rng(0)
    coords = {"time": np.arange(12, dtype="<f8"), "lat": np.linspace(-90, 90, 64),
              "lon": np.linspace(0, 360, 128, endpoint=False)}
    data_vars = {
        f"var{i:02d}": (("time", "lat", "lon"), rng.random((12, 64, 128), dtype="f4"),
                        {"units": "K", "long_name": f"variable number {i}"})
        for i in range(nvars)
    }
    return xr.Dataset(data_vars, coords=coords, attrs={"title": "open-time benchmark"})


def open_time(services: Services, repeats: int, nvars: int, log: Log) -> list[Series]:
    import warnings

    import xarray as xr
    from zarr.storage import ObjectStore

    import h5dask
    from h5dask.domain import forget_opened_domains

    ds = _fifty_variables(nvars)
    url = f"s3://{BUCKET}/home/admin/open{nvars}.h5"
    h5dask.to_h5cloud(ds, url, storage_options=services.storage_options)
    prefix = f"zarr/open{nvars}.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(ObjectStore(services.obstore(prefix)), mode="w", zarr_format=3,
                   consolidated=True)
    so = services.storage_options

    def h5() -> None:
        got = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=so)
        assert len(got.data_vars) == nvars

    def h5_first() -> None:  # as the first open of the domain in a process: 2 round trips
        forget_opened_domains()
        h5()

    def zf() -> None:
        got = xr.open_zarr(f"s3://{BUCKET}/{prefix}", storage_options=so, consolidated=True,
                           chunks={}, zarr_format=3)
        assert len(got.data_vars) == nvars

    def zo() -> None:
        got = xr.open_zarr(ObjectStore(services.obstore(prefix), read_only=True),
                           consolidated=True, chunks={}, zarr_format=3)
        assert len(got.data_vars) == nvars

    series = [Series("h5dask (h5cloud), re-open", 0),
              Series("h5dask (h5cloud), first open", 0),
              Series("zarr v3 consolidated, fsspec", 0),
              Series("zarr v3 consolidated, obstore", 0)]
    runs = [h5, h5_first, zf, zo]
    for run in runs:  # warm-up: imports, connection pools
        run()
    interleave(series, runs, repeats, log)
    return series


# -- the graph of a variable of 100 000 chunks --------------------------------------------
@dataclass
class GraphResult:
    nchunks: int
    open_s: float
    reduce_s: float
    materialize_s: float
    graph_tasks: int
    tasks: int
    payload_mean: float
    payload_max: int
    shared_bytes: int
    read_ok: bool
    zarr_open_s: float = float("nan")
    zarr_materialize_s: float = float("nan")


def graph(services: Services, nchunks: int, log: Log) -> GraphResult:
    import dask
    import xarray as xr

    import h5dask

    url = f"s3://{BUCKET}/home/admin/graph{nchunks}.h5"
    rows = nchunks // 100
    with h5dask.File(url, "w", storage_options=services.storage_options) as f:
        f.create_dataset("v", shape=(rows, 100 * 64), dtype="<f4", chunks=(1, 64),
                         fillvalue=1.0)
    so = services.storage_options
    xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=so)  # warm-up
    best: tuple[float, float, float] | None = None
    for _ in range(3):
        ds = total = None  # each round starts without the last one's materialised graphs
        gc.collect()
        t0 = time.perf_counter()
        ds = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=so)
        t1 = time.perf_counter()
        var_tasks = len(dict(ds["v"].data.__dask_graph__()))  # the variable's own tasks
        t2 = time.perf_counter()
        total = ds["v"].sum()
        ntasks = len(dict(total.data.__dask_graph__()))  # the whole reduction, materialised
        t3 = time.perf_counter()
        if best is None or (t2 - t0) < best[0] + best[1]:
            best = (t1 - t0, t2 - t1, t3 - t2)
    assert best is not None and var_tasks == nchunks + 1 and ntasks > nchunks
    arr = ds["v"].data
    assert arr.npartitions == nchunks, arr.npartitions
    tasks = dict(arr.__dask_graph__())
    sizes = []
    shared = 0
    for key, task in tasks.items():
        size = len(pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL))
        if isinstance(key, tuple):
            sizes.append(size)
        else:
            shared += size  # the array object, held once and referenced by every task
    # one block, end to end, as a check that the graph reads what it should (the fill)
    with dask.config.set(scheduler="sync"):
        read_ok = bool((arr.blocks[0, 0].compute() == 1.0).all())
    # Zarr's rounds start as h5dask's did: without h5dask's 633,000 materialised tasks
    del tasks, arr, ds, total
    gc.collect()
    zarr_open, zarr_var = _zarr_graph(services, (rows, 100 * 64), (1, 64))
    return GraphResult(nchunks, best[0], best[1], best[2], ntasks, len(sizes),
                       float(np.mean(sizes)), int(max(sizes)), shared, read_ok,
                       zarr_open, zarr_var)


def _zarr_graph(services: Services, shape: tuple[int, ...], chunks: tuple[int, ...]
                ) -> tuple[float, float]:
    """The same two steps for a Zarr v3 array of the same chunks (metadata only)."""
    try:
        import xarray as xr
        import zarr
        from zarr.storage import ObjectStore
    except ImportError:
        return float("nan"), float("nan")
    prefix = f"zarr/graph{np.prod(shape)}.zarr"
    store = ObjectStore(services.obstore(prefix), read_only=False)
    root = zarr.open_group(store, mode="w", zarr_format=3)
    root.create_array("v", shape=shape, chunks=chunks, dtype="float32", fill_value=1.0,
                      dimension_names=("y", "x"))
    zarr.consolidate_metadata(store)
    best: tuple[float, float] | None = None
    for _ in range(3):
        ds = None
        gc.collect()
        t0 = time.perf_counter()
        ds = xr.open_zarr(ObjectStore(services.obstore(prefix), read_only=True),
                          consolidated=True, chunks={}, zarr_format=3)
        t1 = time.perf_counter()
        dict(ds["v"].data.__dask_graph__())
        t2 = time.perf_counter()
        if best is None or t2 - t0 < sum(best):
            best = (t1 - t0, t2 - t1)
    assert best is not None
    return best


# -- write throughput: to_h5cloud against raw concurrent PUTs of the same bytes -------------
def write_throughput(services: Services, data: Synthetic, repeats: int, log: Log
                     ) -> list[Series]:
    import dask.array as da
    import obstore
    import xarray as xr

    import h5dask

    full = data.slab(0, data.nplanes)
    nbytes = full.nbytes
    planes = [full[t].tobytes() for t in range(data.nplanes)]
    store = services.obstore()
    counter = [0]

    async def put_all(prefix: str, limit: int | None) -> None:
        sem = asyncio.Semaphore(limit or len(planes))

        async def one(t: int, plane: bytes) -> None:
            async with sem:
                await obstore.put_async(store, f"{prefix}/{t}.0.0", plane)

        await asyncio.gather(*(one(t, p) for t, p in enumerate(planes)))

    def raw_put() -> None:
        counter[0] += 1
        asyncio.run(put_all(f"rawput/{counter[0]}", None))

    def raw_put_bounded(limit: int) -> Callable[[], None]:
        def run() -> None:
            counter[0] += 1
            asyncio.run(put_all(f"rawput/{counter[0]}", limit))

        return run

    ds = xr.Dataset({"v": (("t", "y", "x"), da.from_array(full, chunks=(1, *full.shape[1:])))})

    def to_h5cloud() -> None:
        counter[0] += 1
        h5dask.to_h5cloud(ds, f"s3://{BUCKET}/home/admin/written-{counter[0]}.h5",
                          storage_options=services.storage_options)

    series = [Series("raw PUT, every object at once (obstore)", nbytes),
              Series("raw PUT, 8 in flight (obstore)", nbytes),
              Series("raw PUT, 2 in flight (obstore)", nbytes),
              Series("h5dask.to_h5cloud", nbytes)]
    interleave(series, [raw_put, raw_put_bounded(8), raw_put_bounded(2), to_h5cloud], repeats,
               log)
    return series


# -- client memory during a streaming reduction, in a fresh process ----------------------------
@dataclass
class MemoryResult:
    nbytes: int
    chunk_bytes: int
    threads: int
    baseline_mib: float
    peak_mib: float
    seconds: float
    extra: dict = field(default_factory=dict)
    readahead_budget: int = 0  # H5DASK_READ_AHEAD_BYTES of the probe
    readahead_peak: int = 0  # most bytes read-ahead reserved at once

    @property
    def increase_mib(self) -> float:
        return self.peak_mib - self.baseline_mib

    @property
    def bound_mib(self) -> float:
        """2 chunks per dask thread (the block and xarray's temporaries), read-ahead's
        budget (chunk bytes fetched for queued tasks) and the allocator's slack."""
        return (2 * self.chunk_bytes * self.threads + self.readahead_budget) / MiB \
            + ALLOCATOR_SLACK_MIB


def memory(services: Services, written: Written, data: Synthetic) -> MemoryResult:
    cmd = [sys.executable, "-m", "benchmarks.memprobe", written.domain_url,
           json.dumps(services.storage_options)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if out.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    if abs(r["sum"] - data.expected_sum()) > 1e-4 * abs(data.expected_sum()):
        raise RuntimeError(f"memory probe summed {r['sum']}, expected {data.expected_sum()}")
    return MemoryResult(data.nbytes, written.variant.chunk_bytes, r["threads"],
                        r["baseline_mib"], r["peak_mib"], r["seconds"],
                        readahead_budget=r.get("readahead_budget", 0),
                        readahead_peak=r.get("readahead_peak", 0))


# -- issue 4: mean() pushed down against computed locally --------------------------------------
@dataclass
class PushdownResult:
    nbytes: int
    local: Series
    pushed: Series
    local_received: int
    pushed_received: int
    local_mean: float
    pushed_mean: float


def _received(stats: dict) -> int:
    return sum(stats[k]["read_bytes"] for k in ("metadata", "chunk", "active", "other"))


def pushdown_mean(services: Services, written: Written, data: Synthetic, repeats: int,
                  log: Log) -> PushdownResult:
    import dask
    import xarray as xr

    import h5dask

    url = services.start_active().url
    so = services.storage_options
    received = {"local": 0, "pushed": 0}
    means = {}

    def local() -> None:
        h5dask.reset_stats()
        ds = xr.open_dataset(written.domain_url, engine="h5cloud", chunks={},
                             storage_options=so)
        means["local"] = float(ds["v"].mean().compute())
        received["local"] = _received(h5dask.stats())

    def pushed() -> None:
        with dask.config.set(array_optimize=None):
            h5dask.reset_stats()
            ds = xr.open_dataset(written.domain_url, engine="h5cloud", chunks={},
                                 storage_options=so, active_storage_url=url,
                                 active_storage="require")
            means["pushed"] = float(ds["v"].mean().compute())
            received["pushed"] = _received(h5dask.stats())

    series = [Series("mean(), computed locally", data.nbytes),
              Series("mean(), pushed down", data.nbytes)]
    interleave(series, [local, pushed], repeats, log)
    return PushdownResult(data.nbytes, series[0], series[1], received["local"],
                          received["pushed"], means.get("local", float("nan")),
                          means.get("pushed", float("nan")))


__all__ = ["GraphResult", "MemoryResult", "PushdownResult", "graph", "memory", "open_time",
           "pushdown_mean", "timed", "write_throughput"]
