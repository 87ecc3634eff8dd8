"""What users of h5pyd/HSDS and zarr hit on shared object stores, measured at a real HTTP
hop (the fault proxy in front of SeaweedFS) instead of assumed:

* dask with many threads floods the server ("Connection pool is full") and threaded
  reads cost more requests than serial ones (h5pyd#31): here the requests in flight and
  the connections open stay within ``max_concurrency`` whatever dask's thread count,
  and a threaded read makes exactly the requests a serial one makes;
* shared stores throttle with 503 SlowDown and 429 Too Many Requests (hsds#94): both are
  retried with backoff until they pass, and past the retry budget the error is an
  :class:`h5dask.StorageError` naming the object.

See tests/test_user_asks.py for the index of every such complaint and its proof.
"""

from __future__ import annotations

import uuid
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr
from faultproxy import via_proxy

import h5dask

SHAPE, CHUNKS = (64, 64), (4, 8)  # 16 x 8 = 128 chunk objects
N_CHUNKS = 128


@pytest.fixture(scope="module")
def many_chunks(seaweedfs: Any) -> tuple[str, np.ndarray]:
    """A variable of 128 gzip chunk objects in SeaweedFS (written directly, not proxied)."""
    url = f"s3://h5dask-test/request-bounds/{uuid.uuid4().hex[:8]}.h5"
    data = np.random.default_rng(4).standard_normal(SHAPE)
    ds = xr.Dataset({"v": (("y", "x"), data)})
    h5dask.to_h5cloud(ds, url, storage_options=seaweedfs.storage_options(),
                      encoding={"v": {"chunks": CHUNKS, "compression": "gzip"}})
    return url, data


def _read_chunks(url: str, options: dict, scheduler: str, num_workers: int) -> np.ndarray:
    v = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=options)["v"]
    assert v.data.npartitions == N_CHUNKS  # one task per chunk object
    with dask.config.set(scheduler=scheduler, num_workers=num_workers):
        return v.data.compute()


@pytest.mark.parametrize("limit", [4, 16])
def test_many_dask_threads_keep_requests_in_flight_within_max_concurrency(
        many_chunks: tuple[str, np.ndarray], seaweedfs: Any, proxied: Any, limit: int) -> None:
    """Row 1: 32 dask threads over 128 one-chunk tasks, against a store 20 ms away; the
    proxy counts what reaches the server."""
    url, data = many_chunks
    options = via_proxy(seaweedfs.storage_options(), proxied, max_concurrency=limit,
                        max_attempts=1)  # any refused or failed request fails the read
    proxied.latency = 0.02
    h5dask.reset_stats()
    got = _read_chunks(url, options, "threads", num_workers=32)
    np.testing.assert_array_equal(got, data)
    assert h5dask.stats()["total"]["errors"] == 0
    # bounded: never more requests at the server than the limit, and no connection
    # churn (no "pool is full, discarding connection"): the 128 GETs and the open's
    # requests reuse a few connections (the HTTP pool may open another when a finished
    # one is back in the pool a moment after the next request started: 5 seen for 4)...
    assert proxied.peak_in_flight <= limit, (proxied.peak_in_flight, limit)
    assert proxied.connections_opened <= 2 * limit, (proxied.connections_opened, limit)
    # ...and used: the threads do overlap their GETs up to it
    assert proxied.peak_in_flight == limit, (proxied.peak_in_flight, limit)


def test_threaded_read_makes_the_requests_a_serial_read_makes(
        many_chunks: tuple[str, np.ndarray], seaweedfs: Any, proxied: Any) -> None:
    """Rows 1 and 7: threads add no requests (no repeated GETs, no per-thread metadata):
    one GET per chunk object either way, the same count at the server."""
    url, data = many_chunks
    options = via_proxy(seaweedfs.storage_options(), proxied, max_concurrency=8)
    with h5dask.File(url, storage_options=options) as f:
        source = f["v"].source()
        chunk_paths = {f"/h5dask-test/{source.chunk_key((i, j))}"
                       for i in range(SHAPE[0] // CHUNKS[0]) for j in range(SHAPE[1] // CHUNKS[1])}
    counted = {}
    for scheduler, workers in (("synchronous", 1), ("threads", 32)):
        proxied.reset_counts()
        h5dask.reset_stats()
        np.testing.assert_array_equal(_read_chunks(url, options, scheduler, workers), data)
        chunk = h5dask.stats()["chunk"]
        counted[scheduler] = (proxied.requests, chunk["read_requests"])
        # user ask 7: at the server, one GET per chunk object, none ranged twice
        # or repeated, and no other request for a chunk (no HEAD)
        at_server = {p: n for (m, p), n in proxied.seen.items() if p in chunk_paths}
        assert at_server == dict.fromkeys(chunk_paths, 1), scheduler
        assert all(m == "GET" for (m, p) in proxied.seen if p in chunk_paths)
    assert counted["threads"] == counted["synchronous"], counted
    # every chunk object once; the rest is the open's metadata (the same both times)
    assert counted["threads"][1] == N_CHUNKS, counted


@pytest.mark.parametrize("kind", ["slowdown", "toomany"])
def test_throttling_is_retried_with_backoff_until_it_passes(
        many_chunks: tuple[str, np.ndarray], seaweedfs: Any, proxied: Any, kind: str) -> None:
    """Row 4: a third of all requests answered 503 SlowDown (or 429): the read completes
    with the right values, each refusal retried once and counted."""
    url, data = many_chunks
    options = via_proxy(seaweedfs.storage_options(), proxied, max_attempts=12)
    proxied.set_rates({kind: 1 / 3}, seed=3)
    h5dask.reset_stats()
    got = _read_chunks(url, options, "threads", num_workers=8)
    np.testing.assert_array_equal(got, data)
    stats = h5dask.stats()["total"]
    assert proxied.counts[kind] > 10, dict(proxied.counts)
    assert stats["retries"] == proxied.counts[kind] and stats["errors"] == 0, stats


@pytest.mark.parametrize("kind", ["slowdown", "toomany"])
def test_throttling_past_the_retry_budget_names_the_chunk_object(
        many_chunks: tuple[str, np.ndarray], seaweedfs: Any, proxied: Any, kind: str) -> None:
    """Row 4: a store that keeps refusing one chunk object: after ``max_attempts`` tries
    (with backoff between them) an h5dask error naming that object and the tries."""
    url, _ = many_chunks
    options = via_proxy(seaweedfs.storage_options(), proxied, max_attempts=4)
    with h5dask.File(url, storage_options=options) as f:
        v = f["v"]
        key = v.source().chunk_key((1, 2))
        proxied.path_filter = key
        proxied.set_rates({kind: 1.0})
        h5dask.reset_stats()
        with pytest.raises(h5dask.StorageError) as info:
            v[4:8, 16:24]
    err = info.value
    assert err.key == key and err.attempts == 4 and key in str(err), str(err)
    assert "max_attempts" in str(err)  # says how to allow more
    assert proxied.counts[kind] == 4
    assert h5dask.stats()["chunk"]["retries"] == 3
