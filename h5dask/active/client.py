"""An async client of the Reductionist v2 API: one request per chunk object.

>>> req = ChunkRequest("sum", {"interface_type": "s3", "url": "http://h:9000/b/k",
...                            "dtype": "float32"})
>>> req.operation
'sum'
"""

from __future__ import annotations

import asyncio
import base64
import os
from dataclasses import dataclass
from typing import Any

import cbor2
import numpy as np

from ..errors import H5DaskError
from ..iostats import record
from ..storage.sync import close_at_exit

#: how long a server may take for one chunk before the chunk is reduced locally
DEFAULT_TIMEOUT = 60.0


class ActiveStorageUnavailable(H5DaskError):
    """The server could not reduce a chunk (unreachable, refused, unsupported)."""

    def __init__(self, message: str, status: int | None = None,
                 caused_by: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        #: the server's ``caused_by`` (Reductionist's error chain), as sent
        self.caused_by = caused_by

    def refuses_field(self, name: str) -> bool:
        """Whether the server refused the request for a field it does not know: a strict
        Reductionist (serde's deny_unknown_fields) answers 400 with "unknown field
        `name`" in its error chain.

        Example::

            >>> ActiveStorageUnavailable("HTTP 400: request data is not valid", 400,
            ...     ("unknown field `sum_int64`, expected one of `url`",)
            ...     ).refuses_field("sum_int64")
            True
        """
        return self.status == 400 and any(
            f"unknown field `{name}`" in c for c in (str(self), *self.caused_by))


@dataclass(frozen=True)
class ChunkRequest:
    """One Reductionist request: the operation and its JSON body."""

    operation: str
    body: dict[str, Any]


@dataclass(frozen=True)
class ChunkReply:
    """A decoded reply: ``values`` and ``counts`` shaped like the result."""

    values: np.ndarray
    counts: np.ndarray


_sessions: dict[int, Any] = {}
#: requests in flight to one server, at most (the server may lower it: see _Slots)
DEFAULT_CONNECTIONS = 64
#: the longest wait before asking a busy server again
MAX_BUSY_WAIT = 1.0


def _max_connections() -> int:
    try:
        return max(1, int(os.environ.get("H5DASK_ACTIVE_CONNECTIONS", DEFAULT_CONNECTIONS)))
    except ValueError:
        return DEFAULT_CONNECTIONS


class _Slots:
    """How many requests this process keeps in flight to one server.

    A server refuses requests beyond its own in-flight limit and its short queue with
    503 "server busy" (a strict Reductionist queues them all). Sending as many as
    read-ahead queues would then turn many of them into 503s, or leave them waiting
    behind other clients' requests; instead, a 503 lowers this client's limit to the number it had
    in flight minus one, and each answered request raises it again by 1/limit (so a
    server shared by several clients is probed again, slowly). The refused request
    waits and is sent again.
    """

    def __init__(self, limit: int) -> None:
        self.ceiling = limit
        self.limit = float(limit)
        self.in_flight = 0
        self._freed = asyncio.Condition()

    async def acquire(self) -> None:
        async with self._freed:
            await self._freed.wait_for(lambda: self.in_flight < int(self.limit))
            self.in_flight += 1

    async def release(self, busy: bool) -> None:
        async with self._freed:
            if busy:
                self.limit = max(1.0, min(self.limit, self.in_flight - 1.0))
            else:
                self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
            self.in_flight -= 1
            self._freed.notify_all()


_slots: dict[tuple[int, str], _Slots] = {}


def _server_slots(server_url: str) -> _Slots:
    key = (id(asyncio.get_running_loop()), server_url)
    slots = _slots.get(key)
    if slots is None:
        slots = _slots[key] = _Slots(_max_connections())
    return slots


async def _close_sessions() -> None:
    # at exit, on the I/O loop before it stops: close the HTTP sessions living on it,
    # so that aiohttp does not complain about unclosed sessions
    session = _sessions.pop(id(asyncio.get_running_loop()), None)
    if session is not None:
        await session.close()


close_at_exit(_close_sessions)


def _session() -> Any:
    import aiohttp

    loop = asyncio.get_running_loop()
    session = _sessions.get(id(loop))
    if session is None or session.closed:
        connector = aiohttp.TCPConnector(limit=_max_connections())
        session = aiohttp.ClientSession(connector=connector)
        _sessions[id(loop)] = session
    return session


def decode_reply(payload: bytes) -> ChunkReply:
    """Decode a CBOR reply ``{bytes, dtype, shape, count, byte_order}``."""
    reply = cbor2.loads(payload)
    order = "<" if reply.get("byte_order", "little") == "little" else ">"
    dtype = np.dtype(reply["dtype"]).newbyteorder(order)
    shape = tuple(reply.get("shape") or ())
    values = np.frombuffer(reply["bytes"], dtype=dtype).reshape(shape).astype(
        dtype.newbyteorder("="))
    counts = np.asarray(reply.get("count", []), dtype=np.int64).reshape(shape)
    return ChunkReply(values, counts)


async def reduce_remote(server_url: str, request: ChunkRequest,
                        credentials: tuple[str, str] | None,
                        timeout: float = DEFAULT_TIMEOUT) -> ChunkReply | None:
    """Send one request; None if the object does not exist, else the reply.

    A missing object is Reductionist's 400 whose error names S3's ``NoSuchKey`` (older
    h5dask servers answered 404 "object not found"); a missing bucket is an error.

    Raises :class:`ActiveStorageUnavailable` with the server's message otherwise.
    """

    headers = {"Content-Type": "application/json"}
    if credentials is not None:
        token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    url = f"{server_url.rstrip('/')}/v2/{request.operation}/"
    slots = _server_slots(server_url)
    deadline = asyncio.get_running_loop().time() + timeout
    wait = 0.01
    while True:
        await slots.acquire()
        busy = False
        try:
            left = deadline - asyncio.get_running_loop().time()
            status, payload = await _post(url, request.body, headers, max(left, 0.001),
                                          server_url)
            busy = status == 503 and b"busy" in payload
        finally:
            await slots.release(busy)
        if not busy or asyncio.get_running_loop().time() + wait > deadline:
            break
        await asyncio.sleep(wait)  # a slot of the server frees up soon: ask again
        wait = min(2 * wait, MAX_BUSY_WAIT)
    if status == 200:
        return decode_reply(payload)
    if object_missing(status, payload):
        return None
    raise ActiveStorageUnavailable(_error_message(status, payload), status,
                                   _caused_by(payload))


def object_missing(status: int, payload: bytes) -> bool:
    """Whether an error reply says that the chunk object does not exist (then it is
    reduced locally, from its fill value).

    Example::

        >>> object_missing(400, b'{"error": {"message": "error retrieving object from S3 '
        ...                b'storage", "caused_by": ["service error", "NoSuchKey"]}}')
        True
        >>> object_missing(400, b'{"error": {"message": "...", "caused_by": ["NoSuchBucket"]}}')
        False
    """
    if status == 404:  # h5dask servers before they answered as Reductionist does
        return b"object not found" in payload.lower()
    if status != 400:
        return False
    try:
        import json

        err = json.loads(payload)["error"]
        causes = [str(c) for c in err.get("caused_by") or []]
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    return any(c == "NoSuchKey" or c.startswith("NoSuchKey:") for c in causes)


async def _post(url: str, body: dict, headers: dict, timeout: float, server_url: str
                ) -> tuple[int, bytes]:
    """(status, body) of one request to the server."""
    import aiohttp

    try:
        async with _session().post(url, json=body, headers=headers,
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            payload = await resp.read()
            record("active", "read_requests")
            record("active", "read_bytes", len(payload))
            return resp.status, payload
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        record("active", "errors")
        raise ActiveStorageUnavailable(f"cannot reach {server_url}: {exc}") from exc


def _caused_by(payload: bytes) -> tuple[str, ...]:
    """The ``caused_by`` list of an error reply (empty if it has none)."""
    try:
        import json

        causes = json.loads(payload)["error"].get("caused_by") or []
        return tuple(str(c) for c in causes) if isinstance(causes, list) else ()
    except Exception:
        return ()


def _error_message(status: int, payload: bytes) -> str:
    """The server's message and its causes (which say what it refused: a field, ...).

    Example::

        >>> _error_message(400, b'{"error": {"message": "request data is not valid", '
        ...                b'"caused_by": ["Failed to deserialize", "unknown field `x`"]}}')
        'HTTP 400: request data is not valid (Failed to deserialize; unknown field `x`)'
    """
    try:
        import json

        err = json.loads(payload)["error"]
        message = f"HTTP {status}: {err.get('message')}"
    except Exception:
        return f"HTTP {status}: {payload[:200]!r}"
    causes = "; ".join(_caused_by(payload))
    return f"{message} ({causes[:500]})" if causes else message


async def check_server(server_url: str, timeout: float = 3.0) -> str | None:
    """None if ``GET /healthz`` answers 200, else why not."""
    import aiohttp

    try:
        async with _session().get(f"{server_url.rstrip('/')}/healthz",
                                  timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return None if resp.status == 200 else f"/healthz answered {resp.status}"
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return f"cannot reach {server_url}: {exc}"
