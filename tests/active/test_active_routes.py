"""The server next to its store: upstream routes (the store as clients name it, fetched at
the address the server reaches it by) and object reads limited to a few reused buffers."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pytest
import xarray as xr
from servers.active import start_active_server, stop_process
from test_active_safety import error_text, post

import h5dask
from h5dask.active.memory import BufferPool
from h5dask.active.upstream import AllowList, Routes

STORE = "http://127.0.0.1:9000"
NAMED = "https://s3.example.org"  # how clients name the store in these tests


def test_routes_map_only_the_named_origin_onto_an_allowed_one() -> None:
    routes = Routes([f"{NAMED}={STORE}"], AllowList([STORE]))
    assert routes.apply(f"{NAMED}/bucket/a/b%20c") == f"{STORE}/bucket/a/b%20c"
    assert routes.apply(f"{NAMED}:443/bucket/k") == f"{STORE}/bucket/k"  # same origin
    assert routes.apply("https://s3.example.org:8443/bucket/k") == \
        "https://s3.example.org:8443/bucket/k"  # another port: another origin
    # user info is never rewritten away: the allow-list refuses the URL as sent
    with_user = "https://user:pw@s3.example.org/b/k"
    assert routes.apply(with_user) == with_user
    assert routes.apply("not a url") == "not a url"


@pytest.mark.parametrize("entry, message", [
    (f"{NAMED}=http://10.1.1.1:9000", "not on the allow-list"),  # a route widens nothing
    (NAMED, "NAMED=FETCHED"),
    (f"{NAMED}/bucket={STORE}", "scheme://host:port only"),
    (f"ftp://x={STORE}", r"bad --upstream-route entry 'ftp://x': not an http\(s\) URL"),
])
def test_bad_routes_are_refused(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Routes([entry], AllowList([STORE]))


def test_server_will_not_start_with_a_route_to_an_origin_it_may_not_read() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "h5dask.active.server", "--allow-upstream", STORE,
         "--upstream-route", f"{NAMED}=http://10.1.1.1:9000"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "not on the allow-list" in done.stderr


def test_pool_hands_out_at_most_max_in_use_buffers_and_wakes_waiters() -> None:
    async def scenario() -> list[str]:
        pool = BufferPool(budget=1 << 20, max_in_use=2)
        events: list[str] = []
        a, b = await pool.take_when_free(8), await pool.take_when_free(8)

        async def third() -> None:
            c = await pool.take_when_free(8)
            events.append(f"third got {'a' if c is a else 'another'}")
            pool.give(c)

        waiting = asyncio.create_task(third())
        cancelled = asyncio.create_task(pool.take_when_free(8))
        await asyncio.sleep(0.01)
        assert not waiting.done() and pool.in_use == 2
        cancelled.cancel()
        events.append("a given back")
        pool.give(a)
        await asyncio.wait_for(waiting, 5)
        pool.give(b)
        assert pool.in_use == 0
        return events

    assert asyncio.run(scenario()) == ["a given back", "third got a"]  # reused, warm


def start_routed_server(log_path: Path, store: str, named: str, *extra: str
                        ) -> tuple[subprocess.Popen[bytes], str]:
    """A server allowed only ``store``, fetching there what clients name ``named``."""
    return start_active_server(log_path, ["--allow-upstream", store,
                                          "--upstream-route", f"{named}={store}", *extra])


@pytest.fixture(scope="module")
def routed_server(seaweedfs: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A server allowed only SeaweedFS, which clients name ``NAMED``, reading one
    object at a time."""
    log_path = tmp_path_factory.mktemp("routed-server") / "server.log"
    proc, url = start_routed_server(log_path, seaweedfs.endpoint, NAMED,
                                    "--max-in-flight", "8", "--max-object-reads", "1")
    try:
        yield type("Server", (), {"url": url, "log": log_path})
    finally:
        stop_process(proc)


def test_a_routed_request_is_fetched_from_the_allowed_store(
        routed_server: Any, active_store: Any) -> None:
    values = np.arange(1000, dtype="<i8")
    real = active_store.put("routed/v.bin", values.tobytes())
    named = real.replace(active_store.endpoint, NAMED)
    auth = (active_store.access_key, active_store.secret_key)
    body = {"interface_type": "s3", "url": named, "dtype": "int64"}

    # one object read at a time: 8 concurrent requests wait for the buffer, all answered
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda _: post(routed_server, "sum", body, auth=auth),
                                range(8)))
    for status, reply in replies:
        assert status == 200, reply
        assert np.frombuffer(reply["bytes"], reply["dtype"])[0] == values.sum()

    # errors name the URL the client sent, not the address the server fetched from
    status, reply = post(routed_server, "sum", {**body, "url": named + ".missing"}, auth=auth)
    assert status == 400 and named + ".missing" in error_text(reply), reply
    assert active_store.endpoint not in error_text(reply), reply

    # the store's own address is allowed too; anything else is still refused
    assert post(routed_server, "sum", {**body, "url": real}, auth=auth)[0] == 200
    status, reply = post(routed_server, "sum",
                         {**body, "url": "http://127.0.0.1:1/b/k"}, auth=auth)
    assert status == 403 and "allow-list" in error_text(reply), reply


def test_pushdown_through_latency_proxies_with_the_server_next_to_the_store(
        seaweedfs: Any, s3_bucket_url: str, storage_options: dict,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """The benchmark's deployed topology: the client reads the store through one proxy
    and reaches the server through another; the server, allowed only SeaweedFS, fetches
    the chunks the client names by the proxy's address from SeaweedFS itself."""
    from benchmarks.latencyproxy import LatencyProxy

    data = np.random.default_rng(3).random((16, 64, 64), dtype="f4")
    url = f"{s3_bucket_url}/near.h5"
    h5dask.to_h5cloud(xr.Dataset({"v": (("t", "y", "x"), data)}), url,
                      encoding={"v": {"chunks": (4, 32, 32)}}, storage_options=storage_options)
    with LatencyProxy(seaweedfs.endpoint, 0.001) as storage_proxy:
        log_path = tmp_path_factory.mktemp("near-store") / "server.log"
        proc, server_url = start_routed_server(log_path, seaweedfs.endpoint,
                                               storage_proxy.endpoint, "--max-in-flight", "16")
        try:
            with LatencyProxy(server_url, 0.001) as server_proxy:
                options = {**storage_options, "client_kwargs": {
                    **storage_options["client_kwargs"], "endpoint_url": storage_proxy.endpoint}}
                ds = xr.open_dataset(url, engine="h5cloud", chunks={}, storage_options=options,
                                     active_storage_url=server_proxy.endpoint,
                                     active_storage="require")
                h5dask.reset_stats()
                with dask.config.set(scheduler="threads"):
                    got = float(ds["v"].mean().compute())
                stats = h5dask.stats()
        finally:
            stop_process(proc)
    assert got == pytest.approx(float(data.astype("f8").mean()), rel=1e-6)
    # every chunk reduced by the server (16 chunk objects), none read by the client
    assert stats["chunk"]["read_requests"] == 0 and stats["active"]["read_requests"] == 16
