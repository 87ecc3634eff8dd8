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

import ctypes
import ctypes.util
import functools
from typing import Any

__all__ = ["MMAP_THRESHOLD", "TRIM_AFTER_BYTES", "release_free_memory", "tune_malloc"]

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
