"""A reverse proxy that makes a loopback object store behave like a cloud one.

Real object stores answer the first byte after 10-100 ms and give each stream a limited
bandwidth; loopback SeaweedFS answers in microseconds. This proxy, run in its own
process (so it never competes for the client's GIL), sleeps a first-byte latency before
forwarding each request and paces each response body to a per-stream rate. Requests are
forwarded with their own ``Host`` header (SigV4 signatures stay valid) and responses
untouched (no decompression; a HEAD keeps its ``Content-Length``).

    python -m benchmarks.latencyproxy --upstream http://127.0.0.1:8333 --latency-ms 30 \\
        --stream-mb-s 100

prints ``listening on http://127.0.0.1:PORT`` once it accepts connections.
:class:`LatencyProxy` starts and stops it as a subprocess:

>>> with LatencyProxy("http://127.0.0.1:8333", latency=0.03) as proxy:  # doctest: +SKIP
...     print(proxy.endpoint)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from typing import Any

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
               "trailers", "transfer-encoding", "upgrade"}
#: bytes forwarded per paced write: 2.6 ms of a 100 MB/s stream. The proxy shares this
#: machine's cores with the client it measures, and 64 KiB pieces cost it a third more
#: CPU per byte (0.40-0.44 against 0.29-0.32 s per 256 MiB), which slowed every GET past
#: the stated profile; larger pieces (1 MiB) cost more again (buffering)
_PIECE = 256 * 1024


class LatencyProxy:
    """``python -m benchmarks.latencyproxy`` as a subprocess on a free loopback port."""

    def __init__(self, upstream: str, latency: float, stream_bytes_per_s: float = 100e6
                 ) -> None:
        self.upstream = upstream
        self.latency = latency
        self.stream_bytes_per_s = stream_bytes_per_s
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint = ""

    def start(self) -> LatencyProxy:
        cmd = [sys.executable, "-m", "benchmarks.latencyproxy", "--upstream", self.upstream,
               "--latency-ms", str(self.latency * 1000),
               "--stream-mb-s", str(self.stream_bytes_per_s / 1e6), "--port", "0"]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen(cmd, cwd=root, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 30
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("listening on "):
                self.endpoint = line.split()[-1]
                return self
            if not line and self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"latency proxy did not start (last output: {line!r})")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def make_app(upstream: str, latency: float, stream_bytes_per_s: float) -> Any:
    """The aiohttp application forwarding to ``upstream`` (``http://host:port``)."""
    import aiohttp
    from aiohttp import web

    async def on_startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"))

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(latency)  # the store's time to first byte
        body = await request.read()
        headers = {k: v for k, v in request.headers.items()
                   if k.lower() not in _HOP_BY_HOP}
        session: aiohttp.ClientSession = request.app["session"]
        async with session.request(request.method, upstream + request.path_qs,
                                   headers=headers, data=body if body else None,
                                   allow_redirects=False) as up:
            resp = web.StreamResponse(status=up.status, reason=up.reason)
            for k, v in up.headers.items():
                if k.lower() not in _HOP_BY_HOP:
                    resp.headers.add(k, v)
            if request.method == "HEAD":
                await resp.prepare(request)
                return resp
            if "Content-Length" not in up.headers:
                resp.enable_chunked_encoding()
            await resp.prepare(request)
            started = time.monotonic()
            sent = 0
            async for piece in up.content.iter_chunked(_PIECE):
                await resp.write(piece)
                sent += len(piece)
                ahead = started + sent / stream_bytes_per_s - time.monotonic()
                if ahead > 0:  # hold this stream to its rate
                    await asyncio.sleep(ahead)
            await resp.write_eof()
            return resp

    app = web.Application(client_max_size=2**31)
    app.router.add_route("*", "/{tail:.*}", forward)
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def _serve(upstream: str, latency: float, rate: float, host: str, port: int) -> None:
    from aiohttp import web

    runner = web.AppRunner(make_app(upstream, latency, rate), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latencyproxy",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--upstream", required=True, help="http://host:port of the store")
    parser.add_argument("--latency-ms", type=float, default=30.0,
                        help="first-byte latency added to every request (default 30)")
    parser.add_argument("--stream-mb-s", type=float, default=100.0,
                        help="bandwidth of one response stream, 10^6 B/s (default 100)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port")
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve(args.upstream.rstrip("/"), args.latency_ms / 1000,
                       args.stream_mb_s * 1e6, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
