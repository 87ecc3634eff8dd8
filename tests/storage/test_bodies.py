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

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(BODY)))
                self.end_headers()
                if self.path.endswith("/short") and server.short_failures > 0:
                    server.short_failures -= 1
                    self.wfile.write(BODY[:100])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    self.close_connection = True
                    return
                self.wfile.write(BODY)

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
        server.server.shutdown()
        server.server.server_close()


def _http_store(url: str, attempts: int = 3) -> FsspecObjectStore:
    tuning = StoreTuning(retry=RetryPolicy(max_attempts=attempts, base_delay=0.0))
    return FsspecObjectStore("http", url, tuning=tuning)


@pytest.mark.parametrize("byte_range", [None, (0, 10)])
def test_a_body_cut_short_is_retried_then_named(bad_bodies, byte_range) -> None:
    """aiohttp sees the body end before its Content-Length: before, a StorageError after
    one attempt; now retried, and after the last attempt an error naming the object."""
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
