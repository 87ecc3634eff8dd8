"""One I/O thread with its own event loop per process; sync calls run coroutines on it.

Dask tasks and the h5py-like API are synchronous; the stores are async so that
many objects are fetched concurrently. Every process (a client, each dask worker)
lazily starts one daemon thread running an event loop; forked children start
their own.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def _forget_loop_after_fork() -> None:
    # The I/O thread does not survive fork; the child must start its own.
    global _loop, _thread, _lock
    _loop = None
    _thread = None
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_loop_after_fork)


def io_loop() -> asyncio.AbstractEventLoop:
    """The process's I/O event loop, started on first use."""
    global _loop, _thread
    if _loop is not None:
        return _loop
    with _lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="h5dask-io", daemon=True)
            thread.start()
            _loop, _thread = loop, thread
    return _loop


def on_io_loop() -> bool:
    """True when called from the I/O loop's own thread (where blocking would stall it)."""
    if _loop is None:
        return False
    try:
        return asyncio.get_running_loop() is _loop
    except RuntimeError:
        return False


def sync(coro: Coroutine[Any, Any, T] | Awaitable[T], timeout: float | None = None) -> T:
    """Run ``coro`` on the I/O loop and wait for its result (from any other thread)."""
    loop = io_loop()
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        raise RuntimeError("h5dask.sync() called from the I/O loop itself; await instead")
    future = asyncio.run_coroutine_threadsafe(coro, loop)  # type: ignore[arg-type]
    return future.result(timeout)
