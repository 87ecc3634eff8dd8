"""An endpoint that never answers: the user hears so within the operation's deadline
(storage_options ``deadline``), not after ``timeout`` x ``max_attempts`` (60 s x 8), and
the error names the endpoint, the attempts made and the options that set the waits.

Loopback sockets stand in for the endpoint: one accepts connections and never answers,
one never accepts (its backlog is full). Settings are small so that the tests are quick;
the proof the deadline worked is that fewer attempts than ``max_attempts`` were made.
"""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from collections.abc import Iterator

import pytest

import h5dask
from h5dask.errors import StorageError
from h5dask.storage import RetryPolicy, StoreTuning, open_location, sync
from h5dask.storage.base import TransientError
from h5dask.storage.fsspec_store import FsspecObjectStore

WAITS = {"timeout": 0.5, "connect_timeout": 0.5, "deadline": 1.2, "max_attempts": 8,
         "retry_base_delay": 0.0}


@pytest.fixture
def silent() -> Iterator[str]:
    """http://127.0.0.1:PORT of a socket that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        accepted: list[socket.socket] = []
        stop = threading.Event()

        def accept() -> None:
            listener.settimeout(0.1)
            while not stop.is_set():
                try:
                    accepted.append(listener.accept()[0])
                except (TimeoutError, OSError):
                    continue

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{listener.getsockname()[1]}"
        finally:
            stop.set()
            thread.join(5)
            for conn in accepted:
                conn.close()


@pytest.fixture
def never_accepts() -> Iterator[str]:
    """http://127.0.0.1:PORT of a listening socket whose backlog is full: a connection
    attempt's SYN is dropped, so connecting waits until the connect timeout."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        fillers = []
        for _ in range(4):  # the backlog (0 -> 1 on Linux) and then some
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(address)
            fillers.append(filler)
        try:
            yield f"http://127.0.0.1:{address[1]}"
        finally:
            for filler in fillers:
                filler.close()


def _s3_options(endpoint: str) -> dict:
    return {"endpoint_url": endpoint, "key": "AKIDEADLINE", "secret": "s", **WAITS}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("endpoint", ["silent", "never_accepts"])
def test_s3_endpoint_that_never_answers_is_reported_within_the_deadline(request,
                                                                        endpoint) -> None:
    url = request.getfixturevalue(endpoint)
    store = open_location("s3://bucket/x.h5", _s3_options(url)).store
    h5dask.reset_stats()
    with pytest.raises(StorageError) as err:
        store.get_buffer_sync("db/k")  # the blocking (dask task) path
    message = str(err.value)
    assert f"no answer from {url} in " in message
    assert "'connect_timeout': 0.5, 'timeout': 0.5, 'deadline': 1.2, 'max_attempts': 8" \
        in message
    assert 1 <= err.value.attempts < 8  # stopped by the deadline, not by max_attempts
    assert err.value.key == "db/k"
    with pytest.raises(StorageError, match=r"failed after [1-7] attempts: no answer from "
                       + re.escape(url)):
        sync(store.get("db/k"))  # the async path


@pytest.mark.timeout(60)
def test_h5dask_file_on_a_silent_s3_endpoint_says_which_options_set_the_waits(silent) -> None:
    with pytest.raises(StorageError, match=r"silent\.h5/\.domain\.json failed after [1-7] "
                                           r"attempts: no answer from http://127"):
        h5dask.File("s3://bucket/silent.h5", storage_options=_s3_options(silent))


@pytest.mark.timeout(60)
def test_fsspec_http_endpoint_that_never_answers_is_bounded_too(silent) -> None:
    """fsspec's http file system waits 5 minutes per request (aiohttp's default) before
    this: timeout now bounds each attempt there too, and deadline the operation."""
    tuning = StoreTuning(retry=RetryPolicy(max_attempts=8, base_delay=0.0), timeout=0.5,
                         deadline=1.2)
    store = FsspecObjectStore("http", silent, tuning=tuning)
    with pytest.raises(StorageError, match=f"no answer from {silent} in ") as err:
        sync(store.get("file.h5", byte_range=(0, 8)))
    assert 1 <= err.value.attempts < 8


def test_deadline_is_a_storage_option_and_the_defaults_are_a_short_connect() -> None:
    default = open_location("s3://bucket/x.h5", {"anon": True}).store.tuning
    assert (default.connect_timeout, default.timeout, default.deadline) == (5.0, 60.0, 120.0)
    tuned = open_location("s3://bucket/x.h5", {"anon": True, "deadline": "30"}).store
    assert tuned.tuning.deadline == 30.0
    assert tuned.tuning_options()["deadline"] == 30.0


def _memory_store(name: str, **tuning: object) -> FsspecObjectStore:
    store = FsspecObjectStore("memory", f"/deadline-{name}", tuning=StoreTuning(
        retry=RetryPolicy(max_attempts=8, base_delay=0.0), timeout=10, **tuning))
    sync(store.put("k", b"payload"))
    return store


@pytest.mark.timeout(60)
def test_an_answered_but_slow_attempt_does_not_use_up_the_deadline() -> None:
    """A transfer that progressed for longer than the deadline and then broke was
    answered: the retry reads the object instead of stopping at the deadline."""
    store = _memory_store("slow", deadline=0.2)
    read, attempts = store._get, []

    async def progresses_then_breaks(key: str, byte_range: object) -> bytes | None:
        attempts.append(key)
        if len(attempts) == 1:
            await asyncio.sleep(0.5)
            raise TransientError("connection reset after 0.5 s of progress")
        return await read(key, byte_range)

    store._get = progresses_then_breaks  # type: ignore[method-assign]
    assert sync(store.get("k")) == b"payload"
    assert len(attempts) == 2
    attempts.clear()
    assert store.get_buffer_sync("k") == b"payload"  # the blocking path too
    assert len(attempts) == 2


@pytest.mark.timeout(60)
def test_waiting_for_a_request_slot_does_not_use_up_the_deadline() -> None:
    """Throttled answers (503s, answered at once) under max_concurrency=1: the retries
    queue behind other requests for longer than the deadline and still get their turn."""
    store = _memory_store("slots", deadline=0.2, max_concurrency=1)
    read, throttled = store._get, []

    async def busy(key: str, byte_range: object) -> bytes | None:
        if key == "throttled" and len(throttled) < 2:
            throttled.append(key)
            raise TransientError("503 SlowDown (answered at once)")
        await asyncio.sleep(0.1)  # others' requests hold the only slot
        return await read(key, byte_range)

    store._get = busy  # type: ignore[method-assign]
    sync(store.put("throttled", b"t"))

    async def throttled_among_others() -> list:
        others = [store.get("k") for _ in range(8)]  # 0.8 s of queued work
        return await asyncio.gather(store.get("throttled"), *others)

    assert sync(throttled_among_others())[0] == b"t"
    assert len(throttled) == 2


@pytest.mark.timeout(60)
def test_attempts_that_timed_out_still_stop_at_the_deadline() -> None:
    store = _memory_store("silent", deadline=0.3)
    attempts = []

    async def never_answers(key: str, byte_range: object) -> bytes | None:
        attempts.append(key)
        await asyncio.sleep(0.2)
        raise TransientError("no answer in 0.2 s", timed_out=True)

    store._get = never_answers  # type: ignore[method-assign]
    with pytest.raises(StorageError, match=r"failed after 2 attempts: no answer from "):
        sync(store.get("k"))
    assert len(attempts) == 2
