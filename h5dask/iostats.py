"""Per-process I/O statistics: requests, bytes and retries by kind.

Users watch their I/O with :func:`stats`; the tests use it to prove what was and
was not read. Counters are per process: on a dask cluster, gather them from each
worker with ``client.run(h5dask.stats)``.

>>> import h5dask
>>> h5dask.reset_stats()
>>> h5dask.stats()["chunk"]["read_requests"]
0
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import Literal

Kind = Literal["metadata", "chunk", "active", "other"]
KINDS: tuple[str, ...] = ("metadata", "chunk", "active", "other")
COUNTERS: tuple[str, ...] = (
    "read_requests",
    "read_bytes",
    "read_missing",
    "write_requests",
    "write_bytes",
    "list_requests",
    "delete_requests",
    "retries",
    "errors",
)

_lock = threading.Lock()
_counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))


def record(kind: str, counter: str, amount: int = 1) -> None:
    """Add ``amount`` to one counter of one kind (thread-safe)."""
    with _lock:
        _counts[kind][counter] += amount


def stats() -> dict[str, dict[str, int]]:
    """A snapshot of this process's I/O counters, by kind, plus a ``total``.

    >>> sorted(stats())
    ['active', 'chunk', 'metadata', 'other', 'total']
    """
    with _lock:
        snapshot = {kind: dict(_counts[kind]) for kind in KINDS}
    snapshot["total"] = {c: sum(snapshot[k][c] for k in KINDS) for c in COUNTERS}
    return snapshot


def reset_stats() -> None:
    """Set every counter of this process back to zero (on a dask cluster, each worker
    keeps its own: ``client.run(h5dask.reset_stats)``).

    >>> reset_stats()
    >>> stats()["total"]["read_requests"]
    0
    """
    with _lock:
        _counts.clear()
