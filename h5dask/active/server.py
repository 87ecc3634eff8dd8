"""h5dask's active-storage server: the Reductionist v2 API over aiohttp.

Routes:

* ``POST /v2/{count,min,max,sum,select}`` (extra leading or trailing slashes are
  ignored, as Reductionist ignores them):
  JSON request (see :mod:`h5dask.active.request`), 200 CBOR reply
  ``{bytes, dtype, shape, shape_as_bytes, count, count_as_bytes, byte_order}``
  with the result in the server's native byte order, as Reductionist answers.
* ``GET /healthz``: 200 ``{"status": "ok"}``.
* Errors: ``{"error": {"message": ..., "caused_by": [...]}}`` with Reductionist's
  status for each failure (its ``src/error.rs``): 400 for a bad request (also a body
  that is not declared JSON, too large, or an object or decompressed chunk over the
  size limit: Reductionist's InsufficientMemory), for a missing S3 object or bucket,
  and for any failure of an ``http`` upstream; 401 when S3 refuses the credentials or
  denies access; 404 for an unknown operation; 500 for other S3 failures. Our own
  refusals, which Reductionist has no counterpart for: 403 (the allow-list), 503
  (server busy). Messages start with Reductionist's and add our detail.

Safety: upstream allow-list (403), JSON bodies only (400 for any other Content-Type,
so a web page cannot post without a CORS preflight), JSON body limit (400), body
deadline (400 ``RequestTimeout``; the body is read before an in-flight slot is taken,
so slow clients cannot hold slots), object and decompressed size limit (400), in-flight
request limit (requests beyond it wait in a bounded queue, as Reductionist's clients
expect; 503 when it is full or the wait too long; a client that hangs up leaves it at
once, logged as gone, not as a failure), reductions run in worker threads (a hung-up
request keeps its slot until its thread ends), memory about
in-flight x object size (one buffer per request, ``select`` answered from it, freed
memory given back to the system), one log line per request without headers or
credentials and with control characters escaped.

Run it::

    python -m h5dask.active.server --port 8081 --allow-upstream http://127.0.0.1:9000

or from Python: ``serve("127.0.0.1", 8081, ["http://127.0.0.1:9000"])``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import logging
import re
import struct
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2
import numpy as np
from aiohttp import web

from h5dask.active import codecs, memory, operations
from h5dask.active.config import ServerConfigError
from h5dask.active.errors import ActiveStorageError, printable
from h5dask.active.request import NATIVE_BYTE_ORDER, OPERATIONS, ReductionRequest
from h5dask.active.upstream import AllowList, Credentials, Routes, Upstream

__all__ = [
    "RequestTimeout",
    "ServerConfig",
    "compute",
    "create_app",
    "compute_parts",
    "encode_response",
    "encode_response_parts",
    "main",
    "parse_size",
    "run",
    "serve",
]

log = logging.getLogger("h5dask.active")

DEFAULT_MAX_OBJECT_SIZE = 64 << 20
DEFAULT_MAX_IN_FLIGHT = 8
DEFAULT_MAX_OBJECT_READS = 8
DEFAULT_MAX_BODY_SIZE = 1 << 20
DEFAULT_BODY_TIMEOUT = 10.0
#: requests that wait for an in-flight slot (Reductionist queues them all: its clients,
#: PyActiveStorage's 30 threads per variable among them, never retry a 503)
DEFAULT_MAX_QUEUED = 128
DEFAULT_QUEUE_TIMEOUT = 60.0
#: the reply's data is written in slices of this size, so the transport never buffers a
#: second copy of a large result
_WRITE_SLICE = 1 << 20


@dataclass(frozen=True)
class ServerConfig:
    """Server settings.

    ``allow_upstream``: ``scheme://host:port`` origins that may be fetched from;
    ``max_object_size``: bytes fetched or decompressed per request;
    ``max_in_flight``: operation requests handled at once; ``max_queued``: requests
    beyond them that wait (in arrival order) for a slot, at most ``queue_timeout``
    seconds (503 "server busy" when the queue is full or the wait too long);
    ``max_body_size``: bytes of JSON request body; ``body_timeout``: seconds a client
    has to send the whole body (400 ``RequestTimeout`` after that, before any request
    slot is taken); ``upstream_timeout``: seconds; ``upstream_routes``:
    ``NAMED=FETCHED`` origin pairs, the store that clients name ``NAMED`` is fetched at
    ``FETCHED`` (which must be allowed; see :class:`~h5dask.active.upstream.Routes`);
    ``max_object_reads``: objects read and reduced at once, each into a reused buffer;
    the other requests in flight wait for one with their upstream answer started (see
    :class:`~h5dask.active.memory.BufferPool`).

    Example::

        >>> ServerConfig(allow_upstream=("http://127.0.0.1:9000",), max_in_flight=4).max_in_flight
        4
    """

    allow_upstream: tuple[str, ...] = ()
    max_object_size: int = DEFAULT_MAX_OBJECT_SIZE
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    upstream_timeout: float = 60.0
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    upstream_routes: tuple[str, ...] = ()
    max_object_reads: int = DEFAULT_MAX_OBJECT_READS
    max_queued: int = DEFAULT_MAX_QUEUED
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT

    def __post_init__(self) -> None:
        object.__setattr__(self, "allow_upstream", tuple(self.allow_upstream))
        object.__setattr__(self, "upstream_routes", tuple(self.upstream_routes))
        for name in ("max_object_size", "max_in_flight", "max_body_size", "max_object_reads"):
            if getattr(self, name) < 1:
                raise ServerConfigError(name, "must be at least 1", getattr(self, name))
        if self.max_queued < 0:
            raise ServerConfigError("max_queued", "must be at least 0", self.max_queued)
        for name in ("body_timeout", "queue_timeout"):
            if not getattr(self, name) > 0:
                raise ServerConfigError(name, "must be positive", getattr(self, name))


#: seconds without a request after a burst of large ones before their memory is given back
RELEASE_AFTER_IDLE = 0.2


@dataclass
class _State:
    config: ServerConfig
    allow: AllowList
    routes: Routes
    upstream: Upstream
    pool: memory.BufferPool
    in_flight: int = 0
    _release: asyncio.TimerHandle | None = None
    #: requests waiting for a slot, in arrival order (each a future set when it gets one)
    _waiting: collections.deque[asyncio.Future[None]] = dataclasses.field(
        default_factory=collections.deque)

    @property
    def queued(self) -> int:
        """Requests waiting for a slot."""
        return len(self._waiting)

    async def take_slot(self) -> None:
        """Take one of the ``max_in_flight`` slots, waiting behind the requests already
        waiting when all are taken; 503 "server busy" when ``max_queued`` requests are
        waiting already or no slot comes within ``queue_timeout`` seconds."""
        config = self.config
        if self.in_flight < config.max_in_flight and not self._waiting:
            self.in_flight += 1
            return
        if len(self._waiting) >= config.max_queued:
            raise self._busy(f"{len(self._waiting)} requests are waiting, the limit is "
                             f"{config.max_queued}")
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(turn)
        try:
            async with asyncio.timeout(config.queue_timeout):
                await turn
        except TimeoutError:
            if turn.done() and not turn.cancelled():
                return  # the slot came as the time ran out: it is ours
            raise self._busy(f"no slot came free within {config.queue_timeout:g} "
                             "seconds") from None
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.give_slot()  # handed a slot while being cancelled: pass it on
            raise
        finally:
            if turn in self._waiting:
                self._waiting.remove(turn)

    def give_slot(self) -> None:
        """Give a slot back: straight to the first request still waiting, if any."""
        while self._waiting:
            turn = self._waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes on; in_flight is unchanged
                return
        self.in_flight -= 1

    def _busy(self, why: str) -> ActiveStorageError:
        return ActiveStorageError(503, "server busy", [
            f"{self.in_flight} requests in flight, the limit is "
            f"{self.config.max_in_flight}; {why}"])

    def release_soon(self) -> None:
        """After a burst of large requests, give their memory back unless another
        request starts within :data:`RELEASE_AFTER_IDLE` (a client between two waves
        of requests then keeps reusing the pooled buffers)."""
        self.cancel_release()
        loop = asyncio.get_running_loop()
        self._release = loop.call_later(RELEASE_AFTER_IDLE, self._start_release)

    def cancel_release(self) -> None:
        if self._release is not None:
            self._release.cancel()
            self._release = None

    def _start_release(self) -> None:
        self._release = None
        if self.in_flight == 0:
            self.pool.clear()
            asyncio.get_running_loop().run_in_executor(None, memory.release_free_memory)


_STATE = web.AppKey("h5dask_active_state", _State)


# -- the work ---------------------------------------------------------------------------


def _cbor_bytes_head(n: int) -> bytes:
    """The CBOR head of a byte string of ``n`` bytes (major type 2)."""
    if n < 24:
        return bytes([0x40 | n])
    for code, fmt in ((0x58, ">B"), (0x59, ">H"), (0x5A, ">I"), (0x5B, ">Q")):
        if n < 1 << (8 * struct.calcsize(fmt)):
            return bytes([code]) + struct.pack(fmt, n)
    raise ValueError(f"byte string of {n} bytes is too long for CBOR")


def encode_response_parts(
    result: operations.Result, req: ReductionRequest
) -> tuple[bytes, memoryview, bytes]:
    """The CBOR reply as (head, data, tail): ``data`` is the result's own memory, uncopied.

    Their concatenation is :func:`encode_response`; the server writes them one after the
    other, so a large ``select`` result is never copied into a reply buffer.

    Example::

        >>> r = operations.reduce_array("select", np.array([1, 2], dtype="int32"))
        >>> head, data, tail = encode_response_parts(r, ReductionRequest("s3", "http://h:1/b/k",
        ...                                                              "int32"))
        >>> bytes(data) == np.array([1, 2], dtype="int32").tobytes()
        True
    """
    counts = result.counts.astype(np.int64)
    shape = [int(n) for n in result.shape]
    values = result.values.reshape(-1)
    if not values.flags.c_contiguous:
        values = np.ascontiguousarray(values)
    data = memoryview(values).cast("B")
    rest = {
        "dtype": result.dtype,
        "shape": [] if req.option_shape_as_bytes else shape,
        "shape_as_bytes": np.array(shape, dtype=np.uint64).tobytes()
        if req.option_shape_as_bytes
        else b"",
        "count": [] if req.option_count_as_bytes else counts.tolist(),
        "count_as_bytes": counts.tobytes() if req.option_count_as_bytes else b"",
        "byte_order": NATIVE_BYTE_ORDER,
    }
    # a definite-length map of 7 pairs, "bytes" first (Reductionist's field order)
    head = bytes([0xA0 | (len(rest) + 1)]) + cbor2.dumps("bytes") + _cbor_bytes_head(len(data))
    tail = b"".join(cbor2.dumps(key) + cbor2.dumps(value) for key, value in rest.items())
    return head, data, tail


def encode_response(result: operations.Result, req: ReductionRequest) -> bytes:
    """The CBOR reply body for ``result`` (Reductionist's field names and layout).

    Example::

        >>> import cbor2
        >>> r = operations.reduce_array("sum", np.array([1, 2], dtype="int32"))
        >>> req = ReductionRequest("s3", "http://h:1/b/k", "int32")
        >>> reply = cbor2.loads(encode_response(r, req))
        >>> reply["dtype"], reply["shape"], reply["count"]
        ('int32', [], [2])
    """
    return b"".join(encode_response_parts(result, req))


def compute_parts(
    operation: str, req: ReductionRequest, data: bytes | bytearray | memoryview, max_size: int
) -> tuple[bytes, memoryview, bytes]:
    """Decode ``data``, run ``operation``; the reply as :func:`encode_response_parts`.

    Blocking (run it in a thread). ``data`` is consumed: it may be overwritten, and the
    reply may be a view of it (a ``select`` answers with the decoded data itself,
    byte-swapped in place when the stored byte order is not native).

    Example::

        >>> req = ReductionRequest("s3", "http://h:1/b/k", "int64")
        >>> b"".join(compute_parts("select", req, np.arange(3).tobytes(), 1 << 20))[-6:]
        b'little'
    """
    decoded = codecs.decode(data, req.compression, req.filters, max_size)
    req.check_data_size(len(decoded), what="decoded data" if req.compression else "data")
    result = operations.run(operation, decoded, req, consume=True)
    return encode_response_parts(result, req)


def compute(
    operation: str, req: ReductionRequest, data: bytes | bytearray | memoryview, max_size: int
) -> bytes:
    """Decode ``data``, run ``operation`` and encode the CBOR reply (blocking; use a thread).

    Example::

        >>> req = ReductionRequest("s3", "http://h:1/b/k", "int64")
        >>> len(compute("max", req, np.arange(3).tobytes(), 1 << 20)) > 0
        True
    """
    return b"".join(compute_parts(operation, req, bytes(data), max_size))


# -- HTTP -------------------------------------------------------------------------------


class RequestTimeout(ActiveStorageError):
    """The client did not send its whole request body in time (S3's ``RequestTimeout``)."""

    def __init__(self, timeout: float) -> None:
        super().__init__(
            400,
            "RequestTimeout: the request body was not received in time",
            [f"RequestTimeout: send the whole JSON body within {timeout:g} seconds"],
        )


class BodyTooLarge(ActiveStorageError):
    """A JSON body over the limit: 400, as Reductionist's (axum's) JsonRejection."""

    def __init__(self, limit: int) -> None:
        super().__init__(400, "request data is not valid: request body too large",
                         [f"the JSON body must be at most {limit} bytes"])


async def _read_body(request: web.Request, limit: int, timeout: float) -> bytes:
    """The whole JSON body (at most ``limit`` bytes), received within ``timeout`` seconds."""
    too_large = BodyTooLarge(limit)
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    buf = bytearray()
    try:
        async with asyncio.timeout(timeout):
            while chunk := await request.content.read(65536):
                buf += chunk
                if len(buf) > limit:
                    raise too_large
    except TimeoutError:
        raise RequestTimeout(timeout) from None
    return bytes(buf)


def _is_json(content_type: str) -> bool:
    """axum's test of a JSON body (Reductionist's): ``application/json`` or
    ``application/*+json``, parameters ignored.

    Example::

        >>> _is_json("application/json"), _is_json("application/problem+json")
        (True, True)
        >>> _is_json("text/plain"), _is_json("application/jsonx")
        (False, False)
    """
    kind, _, subtype = content_type.lower().partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


def _check_json_content_type(request: web.Request) -> None:
    """400 unless the body is declared JSON (Reductionist's JsonRejection): a web page
    can then not post to the server without a CORS preflight (text/plain and form posts
    need none; any JSON type needs one)."""
    if not _is_json(request.content_type):
        shown = printable(request.headers.get("Content-Type", "(none)"))[:100]
        raise ActiveStorageError(
            400,
            "request data is not valid: the request body must be JSON",
            ["Expected request with `Content-Type: application/json`",
             f"Content-Type is {shown}; send Content-Type: application/json"],
        )


async def _write_reply(
    request: web.Request, parts: tuple[bytes, memoryview, bytes]
) -> web.StreamResponse:
    """Send the CBOR reply piece by piece, waiting for the socket between slices (a
    client that went away meanwhile raises ConnectionResetError, logged as such)."""
    resp = web.StreamResponse(headers={"Content-Type": "application/cbor"})
    resp.content_length = sum(len(p) for p in parts)
    await resp.prepare(request)
    for part in parts:
        view = memoryview(part)
        for start in range(0, len(view), _WRITE_SLICE):
            await resp.write(view[start : start + _WRITE_SLICE])
    await resp.write_eof()
    return resp


async def _in_thread_to_the_end(func: Any, *args: Any) -> Any:
    """``func(*args)`` in a worker thread, awaited to its end even when the handler is
    cancelled (its client went away): a thread cannot be stopped, and the request's slot
    and buffer must stay taken while it uses them, or ``max_in_flight`` x object size
    would no longer bound the memory. The cancellation is passed on once it has ended."""
    work = asyncio.ensure_future(asyncio.to_thread(func, *args))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        while not work.done():
            try:
                await asyncio.wait([work])
            except asyncio.CancelledError:
                continue  # cancelled again (the server stopping): the thread still runs
        if not work.cancelled():
            work.exception()  # its answer or error has nobody to go to
        raise


async def _operation(request: web.Request) -> web.StreamResponse:
    operation = request.match_info["operation"]
    if operation not in OPERATIONS:
        raise ActiveStorageError(
            404, f"unsupported operation {operation}", [f"expected one of {', '.join(OPERATIONS)}"]
        )
    _check_json_content_type(request)
    state = request.app[_STATE]
    config = state.config
    # The body is read before a slot is taken: a client trickling its body holds a
    # connection, never one of the max_in_flight slots (nor a place in their queue).
    body = await _read_body(request, config.max_body_size, config.body_timeout)
    await state.take_slot()
    state.cancel_release()
    size = 0
    buffer: object = None
    reusable = False
    try:
        req = named = ReductionRequest.from_json(body)
        routed = state.routes.apply(req.url)
        if routed != req.url:
            req = dataclasses.replace(req, url=routed)
        state.allow.check(req.url)  # the URL fetched: a route never widens the list
        credentials = Credentials.from_authorization(request.headers.get("Authorization"))
        try:
            data = await state.upstream.fetch(req, credentials)
        except ActiveStorageError as err:
            # the client is told about the URL it sent, not the store's other address
            raise state.routes.named_back(err, fetched=req.url, named=named.url) from None
        buffer = data.obj if isinstance(data, memoryview) else data
        size = len(data)
        parts = await _in_thread_to_the_end(
            compute_parts, operation, req, data, config.max_object_size
        )
        del data
        # the computation is over, and only a select's reply may be a view of the
        # buffer, which the transport may still hold after the reply is written
        reusable = operation != "select"
        size = max(size, len(parts[1]))
        return await _write_reply(request, parts)
    finally:
        if reusable:
            state.pool.give(buffer)
        else:
            state.pool.forget(buffer)
        state.give_slot()
        if size >= memory.TRIM_AFTER_BYTES and state.in_flight == 0:
            state.release_soon()


async def _healthz(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    return web.json_response({"status": "ok", "in_flight": state.in_flight,
                              "queued": state.queued})


def _error_response(err: ActiveStorageError) -> web.Response:
    resp = web.json_response(err.body(), status=err.status)
    if err.status == 503:
        resp.headers["Retry-After"] = "1"
    if isinstance(err, RequestTimeout | BodyTooLarge):
        resp.force_close()  # the rest of the body is not worth waiting for
    return resp


def _client_gone(request: web.Request) -> bool:
    """Whether the request's client has closed its connection."""
    transport = request.transport
    return transport is None or transport.is_closing()


def _log_client_gone(request: web.Request, start: float) -> None:
    log.info(
        "%s %s client went away after %.1fms",
        printable(request.method),
        printable(request.path),
        (time.perf_counter() - start) * 1000.0,
    )


@web.middleware
async def _errors_and_log(request: web.Request, handler: Any) -> web.StreamResponse:
    """Turn every failure into a JSON error and log one line per request; a client that
    hung up is logged as such (its handler cancelled, or its connection found closed)."""
    start = time.perf_counter()
    try:
        resp = await handler(request)
    except asyncio.CancelledError:
        if _client_gone(request):
            _log_client_gone(request, start)
        raise
    except ActiveStorageError as err:
        resp = _error_response(err)
    except web.HTTPException as exc:
        resp = _error_response(ActiveStorageError(exc.status, exc.reason))
        for name in ("Allow",):
            if name in exc.headers:
                resp.headers[name] = exc.headers[name]
    except MemoryError:
        resp = _error_response(ActiveStorageError(503, "server out of memory for this request"))
    except Exception as exc:
        if isinstance(exc, ConnectionError) and _client_gone(request):
            _log_client_gone(request, start)
            # never delivered; answered so that aiohttp does not log a failure of its own
            return web.Response(status=499, reason="Client Closed Request")
        log.error(
            "internal error on %s %s: %s",
            printable(request.method),
            printable(request.path),
            type(exc).__name__,
        )
        log.debug("traceback", exc_info=True)
        resp = _error_response(ActiveStorageError(500, "internal server error"))
    nbytes = resp.content_length or 0
    log.info(
        "%s %s %d %.1fms %dB",
        printable(request.method),
        printable(request.path),
        resp.status,
        (time.perf_counter() - start) * 1000.0,
        nbytes,
    )
    return resp


#: ``/v2/{operation}`` with any number of extra leading and trailing slashes, which
#: Reductionist trims (tower-http's NormalizePath): PyActiveStorage joins a server URL
#: given with a trailing slash (``https://reductionist.example/``) into ``//v2/min/``
OPERATION_ROUTE = r"/{leading_slashes:/*}v2/{operation:[^{}/]+}{trailing_slashes:/*}"


def create_app(config: ServerConfig | Mapping[str, Any] | None = None) -> web.Application:
    """The aiohttp application for ``config`` (a :class:`ServerConfig` or its fields).

    Example::

        app = create_app({"allow_upstream": ["http://127.0.0.1:9000"], "max_in_flight": 4})
        web.run_app(app, host="127.0.0.1", port=8081)
    """
    if config is None:
        config = ServerConfig()
    elif isinstance(config, Mapping):
        config = ServerConfig(**config)
    # the fetched objects' buffers: at most max_in_flight x max_object_size, the bound
    pool = memory.BufferPool(config.max_in_flight * config.max_object_size,
                             max_in_use=config.max_object_reads)
    allow = AllowList(config.allow_upstream)
    state = _State(
        config=config,
        allow=allow,
        routes=Routes(config.upstream_routes, allow),
        upstream=Upstream(config.max_object_size, timeout=config.upstream_timeout, pool=pool),
        pool=pool,
    )
    app = web.Application(middlewares=[_errors_and_log], client_max_size=config.max_body_size)
    app[_STATE] = state

    async def _start(app: web.Application) -> None:
        await state.upstream.start()

    async def _stop(app: web.Application) -> None:
        state.cancel_release()
        await state.upstream.close()

    app.on_startup.append(_start)
    app.on_cleanup.append(_stop)
    app.router.add_get("/healthz", _healthz)
    app.router.add_route("*", OPERATION_ROUTE, _operation_any_method)
    return app


async def _operation_any_method(request: web.Request) -> web.StreamResponse:
    if request.method != "POST":
        raise web.HTTPMethodNotAllowed(request.method, ["POST"])
    return await _operation(request)


# -- running ----------------------------------------------------------------------------

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str | int) -> int:
    """Parse a byte count such as ``1048576``, ``64M``, ``64MiB`` or ``1G``.

    Example::

        >>> parse_size("64MiB"), parse_size("10k"), parse_size(5)
        (67108864, 10240, 5)
    """
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    return int(m.group(1)) << (10 * " kmgt".index((m.group(2) or " ").lower()))


def serve(
    host: str = "127.0.0.1",
    port: int = 8081,
    allow_upstream: Sequence[str] = (),
    max_object_size: int = DEFAULT_MAX_OBJECT_SIZE,
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    log_level: str | int = "INFO",
    *,
    max_body_size: int = DEFAULT_MAX_BODY_SIZE,
    upstream_timeout: float = 60.0,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    upstream_routes: Sequence[str] = (),
    max_object_reads: int = DEFAULT_MAX_OBJECT_READS,
    max_queued: int = DEFAULT_MAX_QUEUED,
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT,
) -> None:
    """Run the server until interrupted (SIGINT/SIGTERM). Blocks.

    Example::

        serve("127.0.0.1", 8081, ["http://127.0.0.1:9000"], max_object_size=64 << 20)
    """
    if isinstance(log_level, str):
        log_level = log_level.upper()
    logging.basicConfig(
        level=log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    config = ServerConfig(
        allow_upstream=tuple(allow_upstream),
        max_object_size=max_object_size,
        max_in_flight=max_in_flight,
        max_body_size=max_body_size,
        upstream_timeout=upstream_timeout,
        body_timeout=body_timeout,
        upstream_routes=tuple(upstream_routes),
        max_object_reads=max_object_reads,
        max_queued=max_queued,
        queue_timeout=queue_timeout,
    )
    memory.tune_malloc()  # before the worker threads exist
    app = create_app(config)
    allowed = app[_STATE].allow
    if not allowed.origins:
        log.warning("no --allow-upstream given: every request will be refused (403)")
    log.info(
        "active storage on http://%s:%d, upstreams %s, max object %d B, max in flight %d "
        "(%d more queued for up to %gs), body timeout %gs",
        host,
        port,
        ", ".join(sorted(str(o) for o in allowed.origins)) or "(none)",
        config.max_object_size,
        config.max_in_flight,
        config.max_queued,
        config.queue_timeout,
        config.body_timeout,
    )
    # a client that hangs up cancels its handler: a request waiting for a slot leaves
    # the queue instead of fetching and reducing for nobody
    web.run_app(app, host=host, port=port, access_log=None, print=None, loop=_event_loop(),
                handler_cancellation=True)


def _event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when installed (``h5dask[server]``): its transports move the
    fetched bytes with about a fifth less CPU than asyncio's; else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


run = serve


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m h5dask.active.server --port 8081 --allow-upstream URL``.

    Example::

        main(["--port", "8081", "--allow-upstream", "http://127.0.0.1:9000"])
    """
    parser = argparse.ArgumentParser(
        prog="python -m h5dask.active.server",
        description="h5dask active-storage server (Reductionist v2 API)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument(
        "--allow-upstream",
        action="append",
        default=[],
        metavar="SCHEME://HOST:PORT",
        help="an object store origin that may be read (repeat for more)",
    )
    parser.add_argument(
        "--max-object-size",
        type=parse_size,
        default=DEFAULT_MAX_OBJECT_SIZE,
        help="largest object range or decompressed chunk, e.g. 64MiB",
    )
    parser.add_argument("--max-in-flight", type=int, default=DEFAULT_MAX_IN_FLIGHT)
    parser.add_argument(
        "--max-queued",
        type=int,
        default=DEFAULT_MAX_QUEUED,
        help="requests that wait for one of the --max-in-flight slots (503 beyond)",
    )
    parser.add_argument(
        "--queue-timeout",
        type=float,
        default=DEFAULT_QUEUE_TIMEOUT,
        metavar="SECONDS",
        help="longest wait for a slot (503 after it)",
    )
    parser.add_argument(
        "--max-object-reads",
        type=int,
        default=DEFAULT_MAX_OBJECT_READS,
        help="objects read and reduced at once, each into a reused buffer (the other "
        "requests in flight wait for one)",
    )
    parser.add_argument(
        "--body-timeout",
        type=float,
        default=DEFAULT_BODY_TIMEOUT,
        metavar="SECONDS",
        help="time a client has to send its whole request body (400 RequestTimeout after)",
    )
    parser.add_argument(
        "--upstream-route",
        action="append",
        default=[],
        metavar="NAMED=FETCHED",
        help="fetch objects whose URL names origin NAMED from origin FETCHED instead, e.g. "
        "the store's internal address (FETCHED must be allowed; repeat for more)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    try:
        Routes(args.upstream_route, AllowList(args.allow_upstream))
    except ValueError as exc:
        parser.error(str(exc))
    try:
        serve(
            host=args.host,
            port=args.port,
            allow_upstream=args.allow_upstream,
            max_object_size=args.max_object_size,
            max_in_flight=args.max_in_flight,
            log_level=args.log_level,
            body_timeout=args.body_timeout,
            upstream_routes=args.upstream_route,
            max_object_reads=args.max_object_reads,
            max_queued=args.max_queued,
            queue_timeout=args.queue_timeout,
        )
    except ServerConfigError as exc:  # a bad option: one line, as argparse's own
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
