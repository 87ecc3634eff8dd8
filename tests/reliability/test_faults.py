"""Fault injection: h5dask against SeaweedFS through a proxy that drops connections,
delays, throttles (503 SlowDown), fails (500) and truncates bodies.

Under a few percent of each fault, full writes and reads (h5dask.File, and dask on a
2-process LocalCluster) give data identical to the source, and the retries are counted
in ``h5dask.stats()`` and bounded (one retry per failed attempt, at most
``max_attempts`` attempts per request). Under permanent faults the error is a
:class:`h5dask.StorageError` naming the object and the number of tries.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
from faultproxy import KINDS, via_proxy

import h5dask
from h5dask.storage import open_location, sync
from h5dask.storage.s3 import is_transient

RATE = 0.045  # of each kind: 22.5% of all requests get a fault
RATES = dict.fromkeys(KINDS, RATE)
MAX_ATTEMPTS = 8
FIGURES = Path(os.environ.get("H5DASK_RELIABILITY_FIGURES",
                             Path(tempfile.gettempdir()) / "h5dask-reliability-figures"))


def record_figures(name: str, figures: dict[str, Any]) -> None:
    """Keep the figures of a run (faults injected, kill points, mutated inputs, load-test
    latencies) as JSON files in $H5DASK_RELIABILITY_FIGURES (default: a folder in the
    system's temporary directory)."""
    try:
        FIGURES.mkdir(parents=True, exist_ok=True)
        (FIGURES / f"{name}.json").write_text(json.dumps(figures, indent=1, default=str))
    except OSError:
        pass


def source_arrays(scale: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "gz": rng.standard_normal((256 * scale, 192)).astype("<f8"),  # 48 * scale chunks
        "raw": np.arange(160 * scale * 160, dtype="<i4").reshape(160 * scale, 160),  # 25 * s
    }


CHUNKS = {"gz": (32, 32), "raw": (32, 32)}


def url_for(name: str) -> str:
    return f"s3://h5dask-test/reliability/{name}-{uuid.uuid4().hex[:8]}.h5"


def write_with_file(url: str, options: dict, arrays: dict[str, np.ndarray]) -> None:
    with h5dask.File(url, "w", storage_options=options) as f:
        f.create_dataset("grp/gz", data=arrays["gz"], chunks=CHUNKS["gz"], compression="gzip")
        f.create_dataset("raw", data=arrays["raw"], chunks=CHUNKS["raw"])
        f["grp"].attrs["title"] = "fault injection"


def read_with_file(url: str, options: dict) -> dict[str, np.ndarray]:
    with h5dask.File(url, storage_options=options) as f:
        assert f["grp"].attrs["title"] == "fault injection"
        return {"gz": f["grp/gz"][...], "raw": f["raw"][...]}


def proxied_options(seaweedfs: Any, proxy: Any, **tuning: Any) -> dict[str, Any]:
    return via_proxy(seaweedfs.storage_options(), proxy, **tuning)


def check_retries(retries: int, proxy: Any) -> None:
    failing = sum(proxy.counts[k] for k in KINDS if k != "delay")
    # every failed attempt is retried once and counted once; nothing else fails
    assert 0 < retries <= failing, (retries, dict(proxy.counts))


def test_file_write_and_read_survive_faults(seaweedfs: Any, proxied: Any) -> None:
    options = proxied_options(seaweedfs, proxied, max_attempts=MAX_ATTEMPTS)
    arrays = source_arrays()
    url = url_for("file")
    proxied.set_rates(RATES, seed=11)
    h5dask.reset_stats()
    write_with_file(url, options, arrays)
    got = read_with_file(url, options)
    stats = h5dask.stats()
    for name, arr in arrays.items():
        assert got[name].dtype == arr.dtype and np.array_equal(got[name], arr), name
    assert all(proxied.counts[k] > 0 for k in KINDS), dict(proxied.counts)
    check_retries(stats["total"]["retries"], proxied)
    assert stats["total"]["errors"] == 0
    record_figures("faults_file", {"requests": proxied.requests, "faults": dict(proxied.counts),
                                   "retries": stats["total"]["retries"]})


def dask_roundtrip(seaweedfs: Any, proxy: Any, client: Any, scale: int, seed: int) -> dict:
    options = proxied_options(seaweedfs, proxy, max_attempts=MAX_ATTEMPTS)
    arrays = source_arrays(scale)
    ds = xr.Dataset({"gz": (("y", "x"), arrays["gz"]), "raw": (("v", "w"), arrays["raw"])})
    ds = ds.chunk({"y": 32, "x": 32, "v": 32, "w": 32})
    url = url_for("dask")
    client.run(h5dask.reset_stats)
    proxy.set_rates(RATES, seed=seed)
    h5dask.to_h5cloud(ds, url, storage_options=options,
                      encoding={"gz": {"compression": "gzip"}})
    back = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=options)
    loaded = {name: back[name].data.compute() for name in arrays}
    for name, arr in arrays.items():
        assert loaded[name].dtype == arr.dtype and np.array_equal(loaded[name], arr), name
    worker_stats = client.run(h5dask.stats)
    worker_chunks = sum(s["chunk"]["write_requests"] + s["chunk"]["read_requests"]
                        for s in worker_stats.values())
    n_chunks = sum(np.prod([-(-n // 32) for n in a.shape]) for a in arrays.values())
    assert worker_chunks >= 2 * n_chunks  # the chunk I/O happened on the workers
    retries = sum(s["total"]["retries"] for s in worker_stats.values())
    errors = sum(s["total"]["errors"] for s in worker_stats.values())
    assert errors == 0
    return {"requests": proxy.requests, "faults": dict(proxy.counts), "worker_retries": retries,
            "chunks": int(n_chunks)}


def test_dask_cluster_write_and_read_survive_faults(seaweedfs: Any, proxied: Any,
                                                    cluster_client: Any) -> None:
    figures = dask_roundtrip(seaweedfs, proxied, cluster_client, scale=1, seed=12)
    assert figures["worker_retries"] > 0
    assert figures["worker_retries"] <= sum(v for k, v in figures["faults"].items()
                                            if k != "delay")
    record_figures("faults_dask", figures)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_dask_cluster_many_faults_slow(seaweedfs: Any, proxied: Any, cluster_client: Any,
                                       seed: int) -> None:
    figures = dask_roundtrip(seaweedfs, proxied, cluster_client, scale=4, seed=100 + seed)
    assert all(figures["faults"].get(k, 0) > 0 for k in KINDS), figures
    record_figures(f"faults_dask_slow_{seed}", figures)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(10))
def test_file_many_faults_slow(seaweedfs: Any, proxied: Any, seed: int) -> None:
    options = proxied_options(seaweedfs, proxied, max_attempts=MAX_ATTEMPTS)
    arrays = source_arrays(scale=3)
    url = url_for("file-slow")
    proxied.set_rates(RATES, seed=200 + seed)
    h5dask.reset_stats()
    write_with_file(url, options, arrays)
    got = read_with_file(url, options)
    for name, arr in arrays.items():
        assert np.array_equal(got[name], arr), name
    check_retries(h5dask.stats()["total"]["retries"], proxied)
    record_figures(f"faults_file_slow_{seed}", {"requests": proxied.requests,
                                                "faults": dict(proxied.counts)})


# -- permanent faults -------------------------------------------------------------------

PERMANENT = ["drop", "truncate", "slowdown", "error500", "delay"]


@pytest.mark.parametrize("kind", PERMANENT)
def test_permanent_fault_names_object_and_tries(seaweedfs: Any, proxied: Any,
                                                kind: str) -> None:
    # delay becomes a timeout: the client gives up on each try after 0.3 s
    options = proxied_options(seaweedfs, proxied, max_attempts=3, timeout=0.3)
    proxied.delay = 1.0
    url = url_for(f"perm-{kind}")
    data = np.arange(64.0).reshape(8, 8)
    with h5dask.File(url, "w", storage_options=options) as f:
        f.create_dataset("x", data=data, chunks=(4, 4))
    with h5dask.File(url, storage_options=options) as f:
        ds = f["x"]
        chunk_key = ds.source().chunk_key((0, 0))
        h5dask.reset_stats()
        proxied.set_rates({kind: 1.0})
        # reading: the first chunk fails after 3 tries, and the error says so
        with pytest.raises(h5dask.StorageError) as info:
            ds[0:4, 0:4]
        err = info.value
        assert err.key == chunk_key and err.attempts == 3
        assert chunk_key in str(err) and "after 3 attempts" in str(err)
        assert h5dask.stats()["chunk"]["retries"] == 2
        assert h5dask.stats()["chunk"]["errors"] == 1
    # writing: a new domain's chunk, the same way (only PUTs fail, so it can be opened)
    proxied.methods = frozenset({"PUT"})
    with pytest.raises(h5dask.StorageError) as info:
        with h5dask.File(url_for(f"perm-w-{kind}"), "w", storage_options=options) as f:
            f.create_dataset("y", data=data, chunks=(8, 8))
    assert info.value.attempts == 3 and "/0_0" in info.value.key
    assert info.value.key in str(info.value)


def test_permanent_fault_on_metadata_names_domain_key(seaweedfs: Any, proxied: Any) -> None:
    options = proxied_options(seaweedfs, proxied, max_attempts=2)
    url = url_for("perm-meta")
    proxied.set_rates({"slowdown": 1.0})
    with pytest.raises(h5dask.StorageError) as info:
        h5dask.File(url, storage_options=options)
    loc = open_location(url, options)
    assert info.value.key == loc.domain_key and info.value.attempts == 2
    assert "SlowDown" in str(info.value) or "503" in str(info.value)


def test_faults_only_on_some_requests_are_retried_not_misreported(seaweedfs: Any,
                                                                  proxied: Any) -> None:
    """A missing object stays a miss (None), not an error, while GETs are throttled."""
    options = proxied_options(seaweedfs, proxied, max_attempts=12)
    store = open_location(url_for("miss"), options).store
    proxied.set_rates({"slowdown": 0.2, "truncate": 0.1}, seed=5)
    h5dask.reset_stats()
    for n in range(20):
        assert sync(store.get(f"reliability/missing-{n}", kind="other")) is None
    assert h5dask.stats()["other"]["read_missing"] == 20


@pytest.mark.parametrize(("text", "transient"), [
    # what obstore says for each injected fault (abridged from real messages)
    ("Generic S3 error: HTTP error: request or response body error\n\nDebug source:\n"
     "Generic {\n store: \"S3\",\n source: HttpError {\n kind: Interrupted,", True),
    ("Generic S3 error: Error performing PUT http://h/b/k in 3ms - HTTP error: error sending "
     "request\n\nDebug source: ... inner: Http(\n HttpError {\n kind: Request,", True),
    ("Generic S3 error: ... status code: 503 Service Unavailable: <Code>SlowDown</Code>", True),
    ("Generic S3 error: ... inner: Status {\n status: 500,", True),
    ("Generic S3 error: HTTP error\n\nDebug source: HttpError {\n kind: Timeout,", True),
    ("Generic S3 error: ... Client error with status 404 Not Found ... status: 404", False),
    # an object key that happens to contain marker words or numbers is not a fault
    ("Generic S3 error: unexpected reply for http://h/b/db/connection-body-eof/0_503", False),
])
def test_transient_classification(text: str, transient: bool) -> None:
    assert is_transient(text) is transient
