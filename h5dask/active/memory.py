"""Giving the memory of large requests back to the system (glibc malloc tuning).

Each request's buffers (the fetched object, the decoded chunk) are freed when it is
answered, but glibc keeps freed memory: its mmap threshold grows to the size of the
largest block freed so far (up to 32 MiB on 64-bit), after which blocks that size come
from the heap and per-thread arenas, which are rarely shrunk. The server measured
444 MB resident after a burst of 8 requests for 64 MiB objects, against 117 MB before.
:func:`tune_malloc` fixes the mmap threshold (so large blocks are mapped and unmapped
on their own) and bounds the number of arenas; :func:`release_free_memory` (glibc's
``malloc_trim``) returns what is left free after a burst of large requests. Both do
nothing where the C library is not glibc.

Example::

    tune_malloc()            # once, when the server starts
    release_free_memory()    # after large requests, when none is in flight
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import functools
from typing import Any

import numpy as np

__all__ = ["MMAP_THRESHOLD", "TRIM_AFTER_BYTES", "BufferPool", "release_free_memory",
           "tune_malloc"]

#: blocks from this size up get their own mapping, unmapped as soon as they are freed
MMAP_THRESHOLD = 256 << 10
#: at most this many malloc arenas (glibc's default is 8 per core)
ARENA_MAX = 4
#: a request that handled this many bytes trims the heap when it is the last in flight
TRIM_AFTER_BYTES = 4 << 20

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


@functools.cache
def _libc() -> Any:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - glibc only
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def tune_malloc() -> bool:
    """Fix glibc's mmap threshold and arena count for this process; False when not glibc.

    Call it before the threads that allocate are started.
    """
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    ok &= libc.mallopt(_M_TRIM_THRESHOLD, 2 * MMAP_THRESHOLD)
    ok &= libc.mallopt(_M_ARENA_MAX, ARENA_MAX)
    return bool(ok)


def release_free_memory() -> bool:
    """Return the free memory of every malloc arena to the system (``malloc_trim(0)``).

    True when some was released; False when none was, or the C library is not glibc.
    """
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


class BufferPool:
    """Reuses the buffers fetched objects are read into, within a byte budget.

    A fresh object-sized buffer costs a page fault per page (large blocks are mapped on
    their own, see :data:`MMAP_THRESHOLD`); measured on the cloud benchmark, that was a
    third of the server's fetch CPU. Buffers given back wait here for a request of the
    same size. New buffers are uninitialised NumPy arrays (NumPy asks for huge pages for
    large ones, and does not clear them: half the cost of a ``bytearray``). The bytes
    held, in use and idle together, never exceed ``budget`` (the server's
    ``max_in_flight x max_object_size``, its memory bound):
    idle buffers are dropped first when a new one is needed. A reused buffer is not
    cleared: callers must only use the part they filled.

    With ``max_in_use``, :meth:`take_when_free` waits until fewer buffers than that are
    handed out: a burst of requests then cycles through a few warm buffers instead of
    faulting in a fresh one per request (on the cloud benchmark's 64 requests for 4 MiB
    objects, a third of the server's CPU), and their objects are read and reduced a few
    at a time, each at full speed, rather than all at once, each slowly.

    Not thread-safe: use it from the server's event loop only.

    Example::

        >>> pool = BufferPool(budget=1 << 20)
        >>> a = pool.take(1024); pool.give(a)
        >>> pool.take(1024) is a, a.nbytes
        (True, 1024)
    """

    def __init__(self, budget: int, max_in_use: int | None = None) -> None:
        self.budget = budget
        self.max_in_use = max_in_use
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._idle: dict[int, list[np.ndarray]] = {}
        self._idle_bytes = 0
        self._in_use: dict[int, int] = {}  # id(buffer) -> its size
        self._in_use_bytes = 0

    @property
    def held(self) -> int:
        """Bytes of the buffers handed out and not given back, plus the idle ones."""
        return self._in_use_bytes + self._idle_bytes

    def take(self, size: int) -> np.ndarray:
        """A writable uint8 buffer of exactly ``size`` bytes (an idle one when there is
        one; its bytes are whatever was there)."""
        idle = self._idle.get(size)
        if idle:
            buf = idle.pop()
            self._idle_bytes -= size
        else:
            while self._idle_bytes and self.held + size > self.budget:
                self._drop_one()
            buf = np.empty(size, dtype=np.uint8)
        self._in_use[id(buf)] = size
        self._in_use_bytes += size
        return buf

    @property
    def in_use(self) -> int:
        """How many buffers are handed out and not given back (or forgotten)."""
        return len(self._in_use)

    async def take_when_free(self, size: int) -> np.ndarray:
        """:meth:`take`, once fewer than ``max_in_use`` buffers are handed out."""
        while self.max_in_use is not None and len(self._in_use) >= self.max_in_use:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then cancelled: pass the turn on
                raise
        return self.take(size)

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def give(self, buf: object) -> None:
        """Give back a buffer from :meth:`take` (anything else is ignored); it is kept
        for reuse while the budget allows."""
        size = self._in_use.pop(id(buf), None)
        if size is None:
            return
        self._in_use_bytes -= size
        self._wake_one()
        if self.held + size <= self.budget:
            self._idle.setdefault(size, []).append(buf)
            self._idle_bytes += size

    def forget(self, buf: object) -> None:
        """Stop counting a buffer from :meth:`take` that must not be reused (something
        may still use it); the garbage collector frees it."""
        size = self._in_use.pop(id(buf), None)
        if size is not None:
            self._in_use_bytes -= size
            self._wake_one()

    def clear(self) -> None:
        """Drop every idle buffer (call :func:`release_free_memory` after)."""
        self._idle.clear()
        self._idle_bytes = 0

    def _drop_one(self) -> None:
        size = next(s for s, bufs in self._idle.items() if bufs)
        self._idle[size].pop()
        if not self._idle[size]:
            del self._idle[size]
        self._idle_bytes -= size
