"""Fixtures for the active-storage server tests.

* ``active_store``: the shared SeaweedFS (``seaweedfs`` in tests/conftest.py) with a
  bucket for these tests and a ``put(key, data) -> url`` helper.
* ``upstream_stub``: a small aiohttp HTTP server in a thread that misbehaves on
  purpose (redirects, slowness, ignored ranges, huge bodies, auth).
* ``active_server``: ``python -m h5dask.active.server`` as a real subprocess on a
  free port, allowing SeaweedFS and the stub, with a 1 MiB object limit and 4
  requests in flight; stopped by its pid whatever happens.
"""

from __future__ import annotations

import asyncio
import collections
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from servers.active import free_port, serve_in_thread, start_active_server, stop_process

ACTIVE_BUCKET = "active-test"
MAX_OBJECT_SIZE = 1 << 20
MAX_IN_FLIGHT = 4
SLOW_SECONDS = 1.5


# -- SeaweedFS --------------------------------------------------------------------------


@dataclass
class ActiveStore:
    """The S3 side of the tests: endpoint, credentials and an upload helper."""

    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    client: Any

    def url(self, key: str) -> str:
        """The path-style URL of ``key`` in the test bucket."""
        return f"{self.endpoint}/{self.bucket}/{key}"

    def put(self, key: str, data: bytes) -> str:
        """Upload ``data`` as ``key``; return its URL."""
        self.client.put_object(Bucket=self.bucket, Key=key, Body=bytes(data))
        return self.url(key)


@pytest.fixture(scope="session")
def active_store(seaweedfs: Any) -> ActiveStore:
    """The shared SeaweedFS with the bucket ``active-test``."""
    seaweedfs.create_bucket(ACTIVE_BUCKET)
    return ActiveStore(
        endpoint=seaweedfs.endpoint,
        access_key=seaweedfs.access_key,
        secret_key=seaweedfs.secret_key,
        bucket=ACTIVE_BUCKET,
        client=seaweedfs.s3_client(),
    )


# -- a misbehaving HTTP upstream ----------------------------------------------------------


@dataclass
class UpstreamStub:
    """An HTTP server with routes that exercise the server's upstream handling."""

    port: int
    objects: dict[str, bytes] = field(default_factory=dict)
    redirect_to: str = ""
    auth: str = ""
    #: GETs of /slow/{name} started, by name
    slow_fetches: collections.Counter[str] = field(default_factory=collections.Counter)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def named_origin(self) -> str:
        """The origin by host name (HTTP clients keep no cookies of IP addresses)."""
        return f"http://localhost:{self.port}"

    def url(self, route: str, name: str = "x") -> str:
        return f"{self.origin}/{route}/{name}"


def _stub_app(stub: UpstreamStub) -> web.Application:
    def ranged(request: web.Request, data: bytes) -> web.Response:
        rng = request.headers.get("Range")
        if not rng:
            return web.Response(body=data)
        start_s, _, end_s = rng.removeprefix("bytes=").partition("-")
        start = int(start_s)
        end = int(end_s) if end_s else len(data) - 1
        if start >= len(data):
            return web.Response(status=416)
        part = data[start : end + 1]
        headers = {"Content-Range": f"bytes {start}-{start + len(part) - 1}/{len(data)}"}
        return web.Response(status=206, body=part, headers=headers)

    async def obj(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in stub.objects:
            return web.Response(status=404)
        return ranged(request, stub.objects[name])

    async def norange(request: web.Request) -> web.Response:
        return web.Response(body=stub.objects[request.match_info["name"]])

    async def slow(request: web.Request) -> web.Response:
        stub.slow_fetches[request.match_info["name"]] += 1
        await asyncio.sleep(SLOW_SECONDS)
        return ranged(request, stub.objects[request.match_info["name"]])

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(stub.redirect_to)

    async def auth(request: web.Request) -> web.Response:
        stub.auth = request.headers.get("Authorization", "")
        if not stub.auth:
            return web.Response(status=401)
        return ranged(request, stub.objects[request.match_info["name"]])

    async def session(request: web.Request) -> web.Response:
        # Basic credentials log in and set a session cookie; the cookie alone then reads
        # (as many web servers do): the server must never send one user's cookie for
        # another
        data = stub.objects[request.match_info["name"]]
        if request.headers.get("Authorization"):
            resp = ranged(request, data)
            resp.set_cookie("sid", "logged-in")
            return resp
        if request.cookies.get("sid") == "logged-in":
            return ranged(request, data)
        return web.Response(status=401)

    async def huge(request: web.Request) -> web.StreamResponse:
        # No Content-Length: the server must stop reading at its own limit.
        resp = web.StreamResponse()
        await resp.prepare(request)
        block = bytes(1 << 16)
        for _ in range((MAX_OBJECT_SIZE >> 16) * 4):
            await resp.write(block)
        await resp.write_eof()
        return resp

    async def error(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def badrange(request: web.Request) -> web.Response:
        data = stub.objects[request.match_info["name"]]
        headers = {"Content-Range": f"bytes 0-{len(data) - 1}/{len(data)}"}
        return web.Response(status=206, body=data, headers=headers)

    app = web.Application()
    app.router.add_get("/obj/{name}", obj)
    app.router.add_get("/norange/{name}", norange)
    app.router.add_get("/slow/{name}", slow)
    app.router.add_get("/redirect/{name}", redirect)
    app.router.add_get("/auth/{name}", auth)
    app.router.add_get("/session/{name}", session)
    app.router.add_get("/huge/{name}", huge)
    app.router.add_get("/error/{name}", error)
    app.router.add_get("/badrange/{name}", badrange)
    return app


@pytest.fixture(scope="session")
def upstream_stub() -> Iterator[UpstreamStub]:
    """The misbehaving upstream, served from a background thread's event loop."""
    stub = UpstreamStub(port=free_port())
    with serve_in_thread(_stub_app(stub), stub.port, "upstream-stub"):
        yield stub


# -- the server under test ----------------------------------------------------------------


@dataclass
class ActiveServer:
    """A running ``python -m h5dask.active.server`` subprocess."""

    url: str
    pid: int
    log_path: Path
    allowed: list[str]
    max_object_size: int = MAX_OBJECT_SIZE
    max_in_flight: int = MAX_IN_FLIGHT

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_server(
    log_path: Path, allowed: list[str], extra: list[str] | None = None
) -> tuple[subprocess.Popen[bytes], ActiveServer]:
    """Start the server subprocess on a free port and wait for /healthz."""
    args = ["--log-level", "INFO"]
    for origin in allowed:
        args += ["--allow-upstream", origin]
    proc, url = start_active_server(log_path, args + (extra or []))
    return proc, ActiveServer(url, proc.pid, log_path, allowed)


@pytest.fixture(scope="session")
def active_server(
    active_store: ActiveStore,
    upstream_stub: UpstreamStub,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ActiveServer]:
    """The server under test, allowing SeaweedFS and the stub upstream."""
    log_path = tmp_path_factory.mktemp("active-server") / "server.log"
    allowed = [active_store.endpoint, upstream_stub.origin, upstream_stub.named_origin]
    extra = ["--max-object-size", str(MAX_OBJECT_SIZE), "--max-in-flight", str(MAX_IN_FLIGHT)]
    proc, server = start_server(log_path, allowed, extra)
    try:
        yield server
    finally:
        stop_process(proc)


@pytest.fixture(scope="session")
def put_object(active_store: ActiveStore) -> Callable[[str, bytes], str]:
    """Upload helper: ``put_object(key, data) -> url``."""
    return active_store.put


@pytest.fixture(scope="session")
def pushdown_server(
    seaweedfs: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ActiveServer]:
    """A server sized for push-down tests (many chunks in flight), reading SeaweedFS."""
    log_path = tmp_path_factory.mktemp("pushdown-server") / "server.log"
    extra = ["--max-object-size", str(64 * 2**20), "--max-in-flight", "64"]
    proc, server = start_server(log_path, [seaweedfs.endpoint], extra)
    try:
        yield server
    finally:
        stop_process(proc)
