"""A fault-injecting HTTP/1.1 proxy for the reliability tests.

It sits between a client (h5dask's S3 store, the active-storage server, ...) and a
real server (SeaweedFS) on loopback, forwards each request whole, and, at a set rate
drawn from a seeded random generator, injects one fault into the exchange:

``drop``
    forward the request, then send only the first bytes of the response (possibly
    none) and reset the connection (RST): a connection dropped mid-response.
``delay``
    forward the request, wait ``delay / 2`` seconds, send the response head, wait
    ``delay / 2`` more, then send the body (a slow server that stalls mid-response;
    longer than the client's timeout it is a timeout).
``slowdown``
    answer ``503 Slow Down`` with an S3 XML error body (``<Code>SlowDown</Code>``)
    without forwarding: S3 throttling.
``error500``
    answer ``500 Internal Server Error`` with an S3 ``InternalError`` XML body
    without forwarding.
``truncate``
    forward the request, send the response head (with its full ``Content-Length``)
    and only half of the body, then close the connection cleanly (FIN): a short
    body. A response without a body is cut in its head instead.
``toomany``
    answer ``429 Too Many Requests`` (a rate-limiting gateway in front of a shared
    store) without forwarding. Not in :data:`KINDS`, the default mix; rates may name it.
``trickle``
    forward the request, send the response head, then the body in ``trickle_pieces``
    pieces ``delay / trickle_pieces`` seconds apart: a slow but steady link (each wait
    short, the whole transfer long). Not in :data:`KINDS`.
``stall``
    forward the request, send the response head and the first half of the body, then
    nothing more until the client hangs up (or the proxy stops): a transfer that stops
    mid-body. Not in :data:`KINDS`.

Requests are forwarded byte for byte (the ``Host`` header too, so SigV4 signatures
stay valid). Only Content-Length and chunked bodies are supported, which is what
S3 clients send. Faults can be limited to some methods (``methods={"GET"}``) or to
paths containing a string (``path_filter``). ``counts`` tells how many faults of
each kind were injected; ``requests`` how many requests were seen, ``peak_in_flight``
the most requests it held at once (received, answer not yet sent) and
``connections_opened`` how many client connections were opened; ``seen`` counts the
requests by (method, path). ``latency`` delays
every forwarded request, as a distant store does, so that concurrency shows.

Example::

    with FaultProxy("127.0.0.1", 8333, rates={"slowdown": 0.05}, seed=1) as proxy:
        options = {..., "endpoint_url": proxy.endpoint}
        ...
        print(proxy.counts)
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

KINDS = ("drop", "delay", "slowdown", "error500", "truncate")
#: kinds rates may name besides the default mix :data:`KINDS`
EXTRA_KINDS = ("toomany", "trickle", "stall")
_MAX_HEAD = 64 * 1024

_XML = (
    '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
    "<Message>{message}</Message><Resource>{resource}</Resource>"
    "<RequestId>faultproxy-{n}</RequestId></Error>"
)
_CANNED = {
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "error500": (
        500,
        "Internal Server Error",
        "InternalError",
        "We encountered an internal error. Please try again.",
    ),
    "toomany": (429, "Too Many Requests", "TooManyRequests",
                "Request rate exceeded: please slow down."),
}


class _Closed(Exception):
    """The peer closed the connection between requests."""


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            raise _Closed from None
        raise
    except asyncio.LimitOverrunError:
        raise ValueError("HTTP head too large") from None


def _headers(head: bytes) -> tuple[str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return lines[0], fields


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """The raw bytes of a chunked body, terminating chunk and trailers included."""
    out = bytearray()
    while True:
        line = await reader.readuntil(b"\r\n")
        out += line
        size = int(line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while True:  # trailers, up to the empty line
                trailer = await reader.readuntil(b"\r\n")
                out += trailer
                if trailer == b"\r\n":
                    return bytes(out)
        out += await reader.readexactly(size + 2)


async def _read_body(
    reader: asyncio.StreamReader, fields: Mapping[str, str], until_eof: bool
) -> bytes:
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return await _read_chunked(reader)
    if "content-length" in fields:
        return await reader.readexactly(int(fields["content-length"]))
    return await reader.read() if until_eof else b""


class FaultProxy:
    """The proxy; runs its own event loop in a daemon thread (see the module doc).

    Args:
        upstream_host, upstream_port: the real server.
        rates: probability of each fault kind (:data:`KINDS`) per request; they are
            exclusive, so their sum must be at most 1 (1.0 for one kind: permanent).
        seed: seeds the generator that decides which request gets which fault.
        delay: seconds of the ``delay`` fault.
        methods: if given, only requests with these methods get faults.
        path_filter: if given, only requests whose target contains it get faults.
        latency: seconds every forwarded request waits before it is forwarded.
    """

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        rates: Mapping[str, float] | None = None,
        seed: int = 0,
        delay: float = 0.2,
        methods: Iterable[str] | None = None,
        path_filter: str | None = None,
        latency: float = 0.0,
        trickle_pieces: int = 8,
    ) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.delay = delay
        self.methods = frozenset(m.upper() for m in methods) if methods else None
        self.path_filter = path_filter
        self.latency = latency
        self.trickle_pieces = trickle_pieces
        self.set_rates(rates or {}, seed)
        self.port: int | None = None
        self.counts: Counter[str] = Counter()
        self.requests = 0
        self.faults_by_method: Counter[tuple[str, str]] = Counter()
        self.in_flight = self.peak_in_flight = 0
        self.connections_opened = 0
        self.seen: Counter[tuple[str, str]] = Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task] = set()

    # -- control ------------------------------------------------------------------------
    def set_rates(self, rates: Mapping[str, float], seed: int | None = None) -> None:
        """Change the fault rates (and reseed the generator when ``seed`` is given)."""
        known = KINDS + EXTRA_KINDS
        unknown = set(rates) - set(known)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {known}")
        if any(r < 0 for r in rates.values()) or sum(rates.values()) > 1 + 1e-9:
            raise ValueError(f"fault rates must be >= 0 and add up to at most 1: {rates}")
        self.rates = {k: float(rates.get(k, 0.0)) for k in known}
        if seed is not None:
            self._rng = random.Random(seed)

    def reset_counts(self) -> None:
        self.counts.clear()
        self.faults_by_method.clear()
        self.requests = 0
        self.peak_in_flight = self.in_flight
        self.connections_opened = 0
        self.seen.clear()

    @property
    def endpoint(self) -> str:
        if self.port is None:
            raise RuntimeError("the proxy is not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", 0, limit=_MAX_HEAD)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:  # pragma: no cover - start failure
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=run, name="faultproxy", daemon=True)
        self._thread.start()
        ready.wait(10)
        if errors:
            raise errors[0]
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            tasks = [t for t in self._tasks if not t.done()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # -- the proxy ----------------------------------------------------------------------
    def _choose(self, method: str, target: str) -> str | None:
        self.requests += 1
        self.seen[(method, target.split("?")[0])] += 1
        u = self._rng.random()  # drawn for every request, so the sequence stays seeded
        if self.methods is not None and method not in self.methods:
            return None
        if self.path_filter is not None and self.path_filter not in target:
            return None
        total = 0.0
        for kind in self.rates:
            total += self.rates[kind]
            if u < total:
                self.counts[kind] += 1
                self.faults_by_method[(kind, method)] += 1
                return kind
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self.connections_opened += 1
        holding = False
        try:
            while True:
                try:
                    head = await _read_head(reader)
                except _Closed:
                    return
                self.in_flight += 1
                holding = True
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                request_line, fields = _headers(head)
                method, _, rest = request_line.partition(" ")
                target = rest.rpartition(" ")[0]
                body = await _read_body(reader, fields, until_eof=False)
                fault = self._choose(method.upper(), target)
                if fault in _CANNED:
                    writer.write(self._canned(fault, target))
                    await writer.drain()
                    self.in_flight -= 1
                    holding = False
                    continue
                if self.latency:
                    await asyncio.sleep(self.latency)
                if up is None:
                    up = await asyncio.open_connection(
                        self.upstream_host, self.upstream_port, limit=_MAX_HEAD
                    )
                up[1].write(head + body)
                await up[1].drain()
                resp_head = await up[0].readuntil(b"\r\n\r\n")
                status_line, resp_fields = _headers(resp_head)
                status = int(status_line.split()[1])
                no_body = method.upper() == "HEAD" or status in (204, 304) or status < 200
                resp_body = b"" if no_body else await _read_body(up[0], resp_fields, True)
                upstream_closes = "close" in resp_fields.get("connection", "").lower() or (
                    not no_body
                    and "content-length" not in resp_fields
                    and "chunked" not in resp_fields.get("transfer-encoding", "").lower()
                )
                if upstream_closes:
                    up[1].close()
                    up = None
                if fault == "drop":
                    raw = resp_head + resp_body
                    writer.write(raw[: self._rng.randrange(len(raw))])
                    await writer.drain()
                    await asyncio.sleep(0.01)
                    _reset(writer)
                    return
                if fault == "truncate":
                    if resp_body:
                        writer.write(resp_head + resp_body[: len(resp_body) // 2])
                    else:
                        writer.write(resp_head[: len(resp_head) // 2])
                    await writer.drain()
                    return  # closed cleanly in finally: a short read for the client
                if fault == "trickle" and resp_body:  # slow but steady
                    writer.write(resp_head)
                    step = -(-len(resp_body) // self.trickle_pieces)
                    for offset in range(0, len(resp_body), step):
                        await asyncio.sleep(self.delay / self.trickle_pieces)
                        writer.write(resp_body[offset:offset + step])
                        await writer.drain()
                    self.in_flight -= 1
                    holding = False
                    if upstream_closes:
                        return
                    continue
                if fault == "stall" and resp_body:  # half the body, then silence
                    writer.write(resp_head + resp_body[: len(resp_body) // 2])
                    await writer.drain()
                    await reader.read()  # until the client hangs up
                    return
                if fault == "delay":  # a slow server: late head, then a stalled body
                    await asyncio.sleep(self.delay / 2)
                    writer.write(resp_head)
                    await writer.drain()
                    await asyncio.sleep(self.delay / 2)
                else:
                    writer.write(resp_head)
                writer.write(resp_body)
                await writer.drain()
                self.in_flight -= 1
                holding = False
                if upstream_closes:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, ValueError, OSError):
            return
        except asyncio.CancelledError:  # stop(): end quietly
            return
        finally:
            if holding:
                self.in_flight -= 1
            self._writers.discard(writer)
            if task is not None:
                self._tasks.discard(task)
            if up is not None:
                up[1].close()
            if not writer.transport.is_closing():
                writer.close()

    def _canned(self, fault: str, target: str) -> bytes:
        status, reason, code, message = _CANNED[fault]
        resource = target.split("?")[0].replace("&", "&amp;").replace("<", "&lt;")
        body = _XML.format(code=code, message=message, resource=resource, n=self.requests)
        data = body.encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(data)}\r\nServer: faultproxy\r\n"
        )
        if fault in ("slowdown", "toomany"):
            head += "Retry-After: 0\r\n"
        return (head + "\r\n").encode() + data


def via_proxy(storage_options: Mapping[str, Any], proxy: FaultProxy,
              **tuning: Any) -> dict[str, Any]:
    """s3fs-style ``storage_options`` whose endpoint is ``proxy`` (plus h5dask tuning such
    as ``max_attempts``; retries start after 5 ms instead of 50)."""
    options = dict(storage_options)
    options["client_kwargs"] = {**options.get("client_kwargs", {}),
                                "endpoint_url": proxy.endpoint}
    options.pop("endpoint_url", None)
    options.update({"retry_base_delay": 0.005, **tuning})
    return options


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST (SO_LINGER 0), as a crashed server or middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()
