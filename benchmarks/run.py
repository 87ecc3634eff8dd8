"""Run the benchmarks and write the report.

    python -m benchmarks.run [--quick] [--size-mib N] [--repeats N] [--out BENCHMARKS.md]

Starts SeaweedFS (and HSDS and the active-storage server when needed) on loopback,
writes the synthetic data in every format, times every contender interleaved and
repeated, and writes a Markdown report. ``--quick`` is the CI guard: tiny sizes, a few
seconds, prints the ratios, and never fails on timing (only on wrong results).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
import time
import warnings
from typing import Any

from . import extras, readers
from .common import MiB, Series, interleave, machine, versions
from .data import VARIANTS, Synthetic, Written, nplanes_for, write_variant
from .report import Report
from .services import Services

PEERS = ("zarr", "zarr-fsspec", "netcdf", "hsds")


_T0 = time.monotonic()


def _log(msg: str) -> None:
    if msg.startswith("#"):
        msg = f"{msg}  [{time.monotonic() - _T0:.1f} s]"
    print(msg, flush=True)


def read_contenders(services: Services, w: Written, peers: set[str], pushdown: bool,
                    raw_limit: int, data: Any = None) -> list[tuple[Series, Any, str]]:
    """(series, runner, kind) for every contender on one variant."""
    out: list[tuple[Series, Any, str]] = []

    def add(name: str, runner: Any, kind: str, note: str = "") -> None:
        out.append((Series(name, 0, note=note), runner, kind))

    add("raw: every GET at once", readers.raw(services, w, None), "raw",
        "obstore get_async of every chunk object at once")
    add(f"raw: {raw_limit} GETs in flight", readers.raw(services, w, raw_limit), "raw",
        f"obstore get_async, at most {raw_limit} at a time")
    add("h5dask", readers.h5dask_read(services, w), "h5dask",
        'xr.open_dataset(url, engine="h5cloud", chunks={})["v"].sum().compute()')
    if "zarr" in peers and "zarr-fsspec" in peers:
        add("zarr v3, fsspec (s3fs)", readers.zarr_fsspec(services, w), "peer",
            "xr.open_zarr('s3://...', consolidated=True, chunks={})")
    if "zarr" in peers:
        add("zarr v3, obstore", readers.zarr_obstore(services, w), "peer",
            "xr.open_zarr(zarr.storage.ObjectStore(S3Store), consolidated=True, chunks={})")
    if "netcdf" in peers:
        add("h5netcdf via s3fs", readers.h5netcdf_read(services, w), "peer",
            'xr.open_dataset(s3fs file, engine="h5netcdf", chunks={})')
    if "hsds" in peers:
        add("HSDS + h5pyd", readers.hsds_read(services, w), "peer",
            'h5pyd.File(domain)["v"][...] through HSDS 1.0.2 (2 data nodes), then numpy sum')
    if pushdown:
        add("h5dask pushdown (active storage)", readers.pushdown_read(services, w), "pushdown",
            "same as h5dask with active_storage_url=; the server sums each chunk")
    if data is not None:
        add("no storage: xarray sum() of numpy in memory", readers.in_memory(
            data, w.variant.chunks), "reference",
            "the same dask chunks over an in-memory array: the computation alone")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="CI guard: tiny sizes, few contenders, never fails on timing")
    parser.add_argument("--size-mib", type=int, default=None,
                        help="size of the variable (default 1024; 32 with --quick)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per measurement (>= 3)")
    parser.add_argument("--out", default=None,
                        help="Markdown report (default BENCHMARKS.md; /dev/null to skip)")
    parser.add_argument("--variants", default=None,
                        help="comma list of plain,gzip,small (default: all; quick: plain)")
    parser.add_argument("--skip", default="",
                        help="comma list of sections or peers to leave out: read,open,graph,"
                             "write,memory,mean,cloud,zarr,zarr-fsspec,netcdf,hsds,pushdown,"
                             "reference")
    parser.add_argument("--raw-limit", type=int, default=8,
                        help="GETs in flight for the bounded raw reader (default 8)")
    args = parser.parse_args(argv)
    quick = args.quick
    size_mib = args.size_mib or (32 if quick else 1024)
    repeats = max(3, args.repeats)
    out = args.out or ("/dev/null" if quick else "BENCHMARKS.md")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if quick:
        skip |= {"netcdf", "hsds", "memory", "zarr-fsspec"}
    slugs = (args.variants or ("plain" if quick else "plain,gzip,small")).split(",")
    variants = [v for v in VARIANTS if v.slug in slugs]
    peers = {p for p in PEERS if p not in skip}
    for peer, module in (("zarr", "zarr"), ("netcdf", "h5netcdf"), ("hsds", "h5pyd")):
        if peer in peers and importlib.util.find_spec(module) is None:
            print(f"note: {module} is not installed (pip install -e '.[bench]'): "
                  f"leaving out {peer}", flush=True)
            peers.discard(peer)
    command = "python -m benchmarks.run " + " ".join(argv if argv is not None else sys.argv[1:])
    warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")

    started = time.time()
    report = Report(command=command.strip(), machine=machine(), versions=versions(),
                    size_mib=size_mib, repeats=repeats, quick=quick)
    data = Synthetic(nplanes_for(size_mib))
    datas = {v.slug: data if v.fraction == 1 else
             Synthetic(max(2, data.nplanes // v.fraction)) for v in variants}
    _log(f"# {data.nbytes / MiB:.0f} MiB float32 {data.shape}, {repeats} rounds; "
         f"machine: {report.machine}")
    with Services() as services:
        written: dict[str, Written] = {}
        for v in variants:
            t0 = time.perf_counter()
            formats = {"zarr"} if "zarr" in peers else set()
            if "netcdf" in peers:
                formats.add("netcdf")
            written[v.slug] = write_variant(services, datas[v.slug], v, formats)
            _log(f"## wrote {v.title} ({len(written[v.slug].chunk_keys)} chunk objects, "
                 f"{written[v.slug].stored_bytes / MiB:.0f} MiB stored) in "
                 f"{time.perf_counter() - t0:.1f} s")

        if "read" not in skip:
            for v in variants:
                w = written[v.slug]
                _log(f"## full read: {v.title}")
                rows = read_contenders(services, w, peers, "pushdown" not in skip,
                                       args.raw_limit,
                                       None if "reference" in skip else datas[v.slug])
                vdata = datas[v.slug]
                expected = vdata.expected_sum()
                for s, _, _ in rows:
                    s.nbytes = vdata.nbytes
                rows[0][1]()  # warm-up of the store (untimed)
                results: dict[str, float] = {}
                runners = []
                for s, run, kind in rows:
                    runners.append(_checked(run, s.name, kind, expected, w, results))
                interleave([s for s, _, _ in rows], runners, repeats, _log)
                report.add_read(v, [(s, kind) for s, _, kind in rows], w)

        if "open" not in skip and "zarr" in peers:
            nvars = 50
            _log(f"## open time, {nvars} variables")
            report.open_series = extras.open_time(services, repeats if quick else max(
                repeats, 7), nvars, _log)
            report.open_nvars = nvars

        if "graph" not in skip:
            nchunks = 10_000 if quick else 100_000
            _log(f"## dask graph for {nchunks} chunks")
            report.graph = extras.graph(services, nchunks, _log)
            _log(f"    {report.graph}")

        if "write" not in skip:
            _log("## write throughput")
            report.write_series = extras.write_throughput(services, data, repeats, _log)

        if "memory" not in skip and "plain" in written:
            _log("## client memory, streaming sum()")
            report.memory = extras.memory(services, written["plain"], data)
            _log(f"    {report.memory}")

        if "mean" not in skip and "pushdown" not in skip and "plain" in written:
            _log("## mean(): pushed down vs local")
            report.pushdown = extras.pushdown_mean(services, written["plain"], data, repeats,
                                                   _log)
        if "cloud" not in skip:
            reuse = (written["plain"], datas["plain"]) if quick and "plain" in written else None
            report.cloud = _cloud(services, quick, peers, skip, repeats, reuse)
    report.seconds = time.time() - started
    text = report.markdown()
    _log("")
    _log(report.summary())
    if out != "/dev/null":
        with open(out, "w") as f:
            f.write(text)
        _log(f"wrote {out}")
    # timings never fail the run; h5dask giving a wrong answer or an error does
    broken = [s.name for _, rows in report.reads for s, kind in rows
              if s.error and kind in ("h5dask", "pushdown")]
    if broken:
        _log(f"h5dask readers failed: {broken}")
        return 1
    return 0


def _cloud(services: Services, quick: bool, peers: set[str], skip: set[str],
           repeats: int, reuse: tuple[Written, Synthetic] | None = None) -> str:
    """The cloud profile (see benchmarks/cloud.py): its own data, through the proxy; in
    quick mode one latency, the quick data, chunks={} only, no HSDS, open or mean()."""
    from . import cloud, extras

    if reuse is not None:  # quick: the data already written for the loopback reads
        w, data = reuse
    else:
        data = Synthetic(nplanes_for(256))
        plain = next(v for v in VARIANTS if v.slug == "plain")
        variant = dataclasses.replace(plain, slug="plain-cloud")  # its own objects
        formats = {"zarr"} & peers | ({"netcdf"} if "netcdf" in peers else set())
        w = write_variant(services, data, variant, formats)
    _log(f"## cloud profile, {data.nbytes / MiB:.0f} MiB")

    def open_fn(n: int) -> list[Series]:
        return extras.open_time(services, n, 50, _log)

    runs = cloud.run_cloud(services, w, data, [0.03] if quick else [0.01, 0.03, 0.1], repeats,
                           peers, "pushdown" not in skip and not quick, _log,
                           None if quick or "zarr" not in peers else open_fn, auto=not quick)
    _log(cloud.summary(runs))
    return cloud.markdown(runs, data.nbytes / MiB, repeats)


def _checked(run: Any, name: str, kind: str, expected: float, w: Written,
             results: dict[str, float]) -> Any:
    """Wrap a runner so a wrong answer is an error, not a fast result."""

    def checked() -> Any:
        got = run()
        if kind != "raw" and abs(got - expected) > 1e-4 * abs(expected):
            raise AssertionError(f"{name} summed {got}, expected {expected}")
        results[name] = got
        return got

    return checked


if __name__ == "__main__":
    sys.exit(main())
