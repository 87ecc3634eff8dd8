"""Response bodies of the wrong length: never decoded as if whole, never padded.

A real HTTP server (the fsspec http file system a linked file is read through) answers
with a body cut short of its Content-Length, or with the whole object to a ranged GET
(a server that ignores Range); a memory:// chunk object is truncated. Each read path
(async, blocking, ranged, read-ahead through xarray) must raise an h5dask error naming
the object, or retry where another attempt can help.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import fsspec
import numpy as np
import pytest

import h5dask
from h5dask.errors import CorruptChunkError, StorageError
from h5dask.storage import RetryPolicy, StoreTuning, sync
from h5dask.storage.fsspec_store import FsspecObjectStore

BODY = bytes(range(256)) * 4


class BadBodies:
    """/short sends 100 bytes of a declared 1024 and drops the connection (the first
    ``short_failures`` times, then the whole body); any other path answers every GET,
    ranged or not, with the whole BODY (it ignores Range)."""

    def __init__(self) -> None:
        server = self
        self.short_failures = 10**9
        self.requests = 0
        self.stopped = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                if self.path.endswith(("/slow", "/stall")):
                    self._trickle(stall=self.path.endswith("/stall"))
                    return
                if self.path.endswith("/short") and server.short_failures > 0:
                    server.short_failures -= 1
                    self.wfile.write(BODY[:100])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(BODY)

            def _trickle(self, stall: bool) -> None:
                """/slow: BODY in 8 pieces 0.15 s apart; /stall: 100 bytes, then none
                until the server stops."""
                for offset in range(0, len(BODY), 128):
                    self.wfile.write(BODY[offset:offset + 128])
                    self.wfile.flush()
                    if stall:
                        server.stopped.wait(10)
                        self.close_connection = True
                        return
                    time.sleep(0.15)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def bad_bodies() -> Iterator[BadBodies]:
    server = BadBodies()
    try:
        yield server
    finally:
        server.stopped.set()
        server.server.shutdown()
        server.server.server_close()


def _http_store(url: str, attempts: int = 3) -> FsspecObjectStore:
    tuning = StoreTuning(retry=RetryPolicy(max_attempts=attempts, base_delay=0.0))
    return FsspecObjectStore("http", url, tuning=tuning)


@pytest.mark.parametrize("byte_range", [None, (0, len(BODY))])
def test_a_body_cut_short_is_retried_then_named(bad_bodies, byte_range) -> None:
    """aiohttp sees the body end before its Content-Length: before, a StorageError after
    one attempt; now retried, and after the last attempt an error naming the object.
    (The range is the whole object: a 200 answer to it is its bytes; a 200 to a shorter
    range is refused before its body is read.)"""
    store = _http_store(bad_bodies.url)
    h5dask.reset_stats()
    with pytest.raises(StorageError, match=r"GET of http://127\.0\.0\.1:\d+/short failed after "
                                           r"3 attempts.*payload is not completed") as err:
        sync(store.get("short", byte_range=byte_range))
    assert err.value.key == "short" and err.value.attempts == 3
    assert h5dask.stats()["chunk"]["retries"] == 2


def test_a_body_cut_short_once_is_read_whole_on_the_next_attempt(bad_bodies) -> None:
    bad_bodies.short_failures = 1
    store = _http_store(bad_bodies.url)
    assert sync(store.get("short")) == BODY
    assert bad_bodies.requests == 2


@pytest.mark.parametrize("blocking", [False, True])
def test_a_ranged_get_answered_with_the_whole_object_is_refused(bad_bodies, blocking) -> None:
    """A server that ignores Range answers [10:20) with all 1024 bytes: before, those
    were returned as the range (a linked chunk's bytes were the file's first ones)."""
    store = _http_store(bad_bodies.url)
    read = (lambda: store.get_buffer_sync("file.h5", byte_range=(10, 20))) if blocking else (
        lambda: sync(store.get("file.h5", byte_range=(10, 20))))
    with pytest.raises(StorageError, match=r"file\.h5 bytes \[10:20\) returned 1024 bytes, "
                                           r"not 10: the server ignored the Range") as err:
        read()
    assert err.value.key == "file.h5"


@pytest.mark.parametrize("blocking", [False, True])
def test_a_range_past_the_end_answered_with_the_whole_object_is_refused(bad_bodies,
                                                                        blocking) -> None:
    """A 200 answer to a ranged GET is the whole object (1024 bytes): before, a range
    wholly past its end, or one that starts inside it and asks for more than the rest,
    was returned as if it were the range's bytes."""
    store = _http_store(bad_bodies.url)

    def read(byte_range: tuple[int, int]) -> bytes | memoryview | None:
        if blocking:
            return store.get_buffer_sync("file.h5", byte_range=byte_range)
        return sync(store.get("file.h5", byte_range=byte_range))

    with pytest.raises(StorageError, match=r"file\.h5 bytes \[1100:3000\): the range starts "
                                           r"beyond the object's end \(1024 bytes\)") as err:
        read((1100, 3000))
    assert err.value.key == "file.h5"
    with pytest.raises(StorageError, match=r"bytes \[10:2000\) returned 1024 bytes, not 1990: "
                                           "the server ignored the Range"):
        read((10, 2000))
    assert bytes(read((0, 2000))) == BODY  # from 0: the whole object is the range's bytes


@pytest.mark.timeout(60)
def test_a_slow_but_progressing_http_body_is_read_whole(bad_bodies) -> None:
    """1024 bytes in 8 pieces over about 1 s with timeout=0.5: before, the whole body had
    to arrive within timeout, so every attempt failed as 'no answer'."""
    tuning = StoreTuning(retry=RetryPolicy(max_attempts=1), timeout=0.5)
    store = FsspecObjectStore("http", bad_bodies.url, tuning=tuning)
    assert sync(store.get("slow")) == BODY
    assert bytes(store.get_buffer_sync("slow", byte_range=(0, len(BODY)))) == BODY


@pytest.mark.timeout(60)
def test_a_body_that_stalls_is_named_as_stalled_not_unanswered(bad_bodies) -> None:
    tuning = StoreTuning(retry=RetryPolicy(max_attempts=2, base_delay=0.0), timeout=0.3)
    store = FsspecObjectStore("http", bad_bodies.url, tuning=tuning)
    with pytest.raises(StorageError, match=r"failed after 2 attempts: a body stalled "
                                           r"mid-transfer from .*the body stalled: no byte "
                                           r"in 0\.3 s after 128 of 1024 bytes") as err:
        sync(store.get("stall"))
    assert err.value.key == "stall"


class RangeIgnoringStore(FsspecObjectStore):
    """A memory store whose ranged GETs, async and blocking (as S3's), return the whole
    object."""

    def __init__(self) -> None:
        super().__init__("memory", f"/ignores-range-{uuid.uuid4().hex}")

    def _init_args(self) -> tuple:
        return ()

    async def _get(self, key: str, byte_range: tuple[int, int] | None) -> bytes | None:
        return await super()._get(key, None)

    def _blocking_get(self) -> Any:
        whole = super()._get
        return lambda key, byte_range: sync(whole(key, None))


@pytest.mark.parametrize("blocking", [False, True])
def test_every_read_path_refuses_more_bytes_than_the_range(blocking) -> None:
    store = RangeIgnoringStore()
    sync(store.put("db/x", BODY))
    with pytest.raises(StorageError, match="returned 1024 bytes, not 4"):
        if blocking:
            store.get_buffer_sync("db/x", byte_range=(4, 8))
        else:
            sync(store.get_buffer("db/x", byte_range=(4, 8)))
    assert sync(store.get("db/x")) == BODY  # whole GETs are as they were


def test_a_truncated_chunk_object_on_memory_is_an_error_naming_it() -> None:
    """A stored chunk object shorter than its chunk (a copy cut short) is never read as
    the chunk, nor padded with the fill value, on the blocking and the async path."""
    root = f"memory://bodies-{uuid.uuid4().hex}"
    url = f"{root}/t.h5"
    with h5dask.File(url, "w") as f:
        f.create_dataset("x", data=np.arange(64, dtype="f8"), chunks=(16,))
    fs = fsspec.filesystem("memory")
    chunk = next(p for p in fs.find(root) if p.endswith("/1"))  # the chunk [16:32]
    fs.pipe_file(chunk, fs.cat_file(chunk)[:-8])
    with h5dask.File(url) as f:
        with pytest.raises(CorruptChunkError, match=chunk.split("/db/")[1]):
            f["x"][:]
        np.testing.assert_array_equal(f["x"][:16], np.arange(16))
