"""One I/O thread with its own event loop per process; sync calls run coroutines on it.

Dask tasks and the h5py-like API are synchronous; the stores are async so that
many objects are fetched concurrently. Every process (a client, each dask worker)
lazily starts one daemon thread running an event loop; forked children start
their own. At interpreter exit the loop is stopped in order (see :func:`_shut_down`).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import ctypes
import functools
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
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
            atexit.unregister(_shut_down)  # one registration, also in a forked child
            atexit.register(_shut_down)
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


#: a coroutine to start on the I/O loop, and the future that receives its outcome
Launch = tuple[concurrent.futures.Future, Callable[[], Coroutine[Any, Any, Any]]]


def launch(batch: Sequence[Launch]) -> None:
    """Start every ``(future, coroutine factory)`` of ``batch`` on the I/O loop, in order,
    with one wake-up of the loop (a thread hand-off each costs more than a GET's own
    client work when dozens start at once); each outcome goes to its future. A future
    cancelled before its turn never runs its coroutine; one cancelled later cancels it.

    >>> import asyncio, concurrent.futures
    >>> async def two(): return 2
    >>> f = concurrent.futures.Future(); launch([(f, two)]); f.result(5)
    2
    """
    if batch:
        io_loop().call_soon_threadsafe(_launch_on_loop, list(batch))


def _launch_on_loop(batch: list[Launch]) -> None:
    for future, make in batch:
        if future.cancelled():  # left pending until done, so that it can be cancelled
            continue
        task = asyncio.ensure_future(make())
        task.add_done_callback(functools.partial(_settle, future))
        future.add_done_callback(functools.partial(_cancel_task, task))


def _settle(future: concurrent.futures.Future, task: asyncio.Future) -> None:
    if future.done():
        return
    try:
        if task.cancelled():
            future.cancel()
        elif (exc := task.exception()) is not None:
            future.set_exception(exc)
        else:
            future.set_result(task.result())
    except concurrent.futures.InvalidStateError:
        pass  # cancelled by another thread meanwhile: nobody wants the outcome


def _cancel_task(task: asyncio.Future, future: concurrent.futures.Future) -> None:
    if future.cancelled() and not task.done():
        task.get_loop().call_soon_threadsafe(task.cancel)


async def all_ended(aws: Iterable[Awaitable[T]], what: str = "requests") -> list[T]:
    """``asyncio.gather`` that returns or raises only once every awaitable has ended.

    ``gather`` raises the first error while the others still run (an upload in a worker
    thread cannot be cancelled, a request already sent lands anyway): whatever the caller
    did next (a roll-back, a retry of the same keys, a lease's release) raced requests
    still in flight, which landed after it. Here the first error (in ``aws``'s order) is
    raised after all ended, with a note of how many of the ``what`` failed.

    >>> async def boom(): raise KeyError("k")
    >>> async def fine(): return 1
    >>> sync(all_ended([fine(), fine()]))
    [1, 1]
    >>> sync(all_ended([boom(), fine()]))
    Traceback (most recent call last):
    KeyError: 'k'
    """
    results = await asyncio.gather(*aws, return_exceptions=True)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        if len(failed) > 1:
            failed[0].add_note(f"{len(failed)} of {len(results)} {what} of this call "
                               "failed; this is the first")
        raise failed[0]
    return results


#: bounds of the orderly shutdown at exit: joining the I/O thread, and waiting for
#: foreign (Rust) threads to hand their last result over
LOOP_JOIN_SECONDS = 2.0
HANDOFF_WAIT_SECONDS = 2.0


def _shut_down() -> None:
    """At interpreter exit (an ``atexit`` handler, run before finalization begins): stop
    the I/O loop and join its thread, then let any obstore (tokio) thread still handing
    a result over to asyncio finish doing so.

    Why: such a thread holds a Python thread state while it is inside
    ``loop.call_soon_threadsafe``, whose self-pipe ``send`` releases the GIL; the
    coroutine it woke can complete the program's last read before the thread takes the
    GIL back. Were the interpreter finalizing by then, CPython (before 3.14) would end
    the thread with ``pthread_exit``, whose forced unwind through Rust frames aborts the
    process (SIGABRT, exit status 134) after a correct script. Waiting here, with the
    GIL released, until no thread state but those of Python's own threads is left closes
    that window (see ``tests/reliability/test_library_exit.py``).
    """
    global _loop, _thread
    loop, thread = _loop, _thread
    if loop is None or thread is None:
        return
    if thread.is_alive() and not loop.is_closed():
        _run_closers(loop)
        if _cancel_pending(loop):
            time.sleep(CANCEL_SETTLE_SECONDS)  # (GIL released) see _cancel_pending
        loop.call_soon_threadsafe(loop.stop)
        thread.join(LOOP_JOIN_SECONDS)
        if not thread.is_alive():
            with _lock:  # an exit handler that runs after this one starts a fresh loop
                if _loop is loop:
                    _loop, _thread = None, None
    if "obstore" in sys.modules:
        _wait_for_foreign_thread_states(HANDOFF_WAIT_SECONDS)


def _cancel_pending(loop: asyncio.AbstractEventLoop) -> int:
    """Cancel the tasks still running on the I/O loop at exit (GETs started and never
    awaited: a program that ends while reads are in flight) and wait, boundedly, until
    they have ended; the number cancelled.

    Why: an obstore request left running finishes later on a tokio thread, which then
    takes the GIL to hand its result over, perhaps while the interpreter finalizes: the
    process crashed (SIGSEGV, SIGABRT) after a correct program in 3 of 40 runs with 20
    GETs in flight at exit. A cancelled one is dropped on the Rust side at once; its
    thread takes the GIL one last time just after, which the caller waits for
    (:data:`CANCEL_SETTLE_SECONDS`, then :func:`_wait_for_foreign_thread_states`)."""
    async def cancel_all() -> int:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=LOOP_JOIN_SECONDS)
        return len(tasks)

    try:
        return asyncio.run_coroutine_threadsafe(cancel_all(), loop).result(
            LOOP_JOIN_SECONDS + 1)
    except Exception:  # noqa: BLE001 - at exit: a loop that does not answer is stopped
        return 0


#: after cancelling requests in flight at exit, how long their threads get to let go
CANCEL_SETTLE_SECONDS = 0.05

#: coroutine functions run on the I/O loop at exit, just before it stops (e.g. closing
#: HTTP sessions that live on it), see :func:`close_at_exit`
_closers: list[Callable[[], Awaitable[Any]]] = []


def close_at_exit(closer: Callable[[], Awaitable[Any]]) -> None:
    """Run ``closer()`` on the I/O loop at interpreter exit, before the loop stops.

    An ``atexit`` handler of its own would run only after the loop had stopped, when
    its module was imported before the loop started (handlers run last-registered first).
    Registering the same function twice runs it once.

    Example::

        async def close_my_sessions() -> None: ...
        close_at_exit(close_my_sessions)
    """
    if closer not in _closers:
        _closers.append(closer)


def _run_closers(loop: asyncio.AbstractEventLoop) -> None:
    async def run_all() -> None:
        await asyncio.gather(*(closer() for closer in _closers), return_exceptions=True)

    if _closers:
        try:
            asyncio.run_coroutine_threadsafe(run_all(), loop).result(LOOP_JOIN_SECONDS)
        except Exception:  # noqa: BLE001 - at exit: a closer that fails or hangs is skipped
            pass


def _wait_for_foreign_thread_states(timeout: float) -> None:
    """Release the GIL, in short sleeps and for at most ``timeout`` seconds, while some
    thread that is not one of Python's own threads (a Rust thread inside
    ``Python::with_gil``) holds a thread state of this interpreter."""
    deadline = time.monotonic() + timeout
    while _thread_state_count() > _python_thread_count() and time.monotonic() < deadline:
        time.sleep(0.001)


def _python_thread_count() -> int:
    # _DummyThread stands for a foreign thread that once asked for its Python identity
    return sum(1 for t in threading.enumerate() if not isinstance(t, threading._DummyThread))


def _thread_state_count() -> int:
    """The number of thread states of this interpreter (one per Python thread, plus one
    per foreign thread currently between ``PyGILState_Ensure`` and ``_Release``).
    Walked under the GIL, which a thread state's deletion holds too."""
    state = _thread_head(_interpreter())
    count = 0
    while state:
        count += 1
        state = _next_thread(state)
    return count


# CPython's C API for debuggers, as fresh function objects (ctypes.pythonapi's own are
# shared with other code, whose types they must keep)
_interpreter = ctypes.PYFUNCTYPE(ctypes.c_void_p)(("PyInterpreterState_Get", ctypes.pythonapi))
_thread_head = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(
    ("PyInterpreterState_ThreadHead", ctypes.pythonapi))
_next_thread = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(
    ("PyThreadState_Next", ctypes.pythonapi))

