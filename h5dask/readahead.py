"""Read-ahead of chunk objects that tasks queued in this process are about to read.

This module holds the fetched bytes (bounded, used once, dropped on write);
:mod:`h5dask.xarray.lookahead` decides what to fetch from dask's and distributed's queues.

With one dask task per chunk object, a process has only as many GETs in flight as it
has threads, and against a real object store (10-100 ms to the first byte) every
thread waits out the latency. Read-ahead decouples the two while keeping the graph as
it is: when a task starts, the GETs of the chunk objects read by the next tasks
*already queued in this same process* are started on the I/O loop; when such a task
runs, it takes its bytes from there instead of asking the store again.

* **No wasted reads on a cluster.** Only tasks this process will run are looked at:
  with dask's local schedulers the ready queue of the running computation (a dask
  callback), on a ``distributed`` worker the worker's own ready queue. A task that
  moves to another worker (work stealing) leaves at most its prefetched bytes unused.
* **Pushed-down reductions** (:mod:`h5dask.active.pushdown`) of queued tasks send their
  requests ahead the same way (local schedulers; at most 64 waiting replies, small).
* **Bounded memory.** At most ``H5DASK_READ_AHEAD_BYTES`` (bytes or a size such as
  ``128MiB``; default 64 MiB; ``0`` turns read-ahead off) of stored chunk bytes are
  reserved at once per process, in flight or waiting; a GET is only started when its
  chunk fits in what is left.
* **Never stale.** A prefetched chunk is used once, only by a task of the same
  computation: the entries of a local computation are dropped when it finishes, an
  entry made for a distributed task is used only by that very task (the worker's task
  state object, not only its key), and writing a chunk from this process drops its
  entry. A prefetch is therefore never older than the task that asked for it.

>>> ra = ReadAhead(budget=0)
>>> ra.enabled
False
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import functools
import math
import os
import threading
import warnings
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ReadAheadSettingWarning
from .storage.base import add_write_listener
from .storage.sync import Launch, launch

DEFAULT_BUDGET = 64 * 2**20


BUDGET_VARIABLE = "H5DASK_READ_AHEAD_BYTES"


def _budget_from_env() -> int:
    """``H5DASK_READ_AHEAD_BYTES``: bytes, or a size such as ``128MiB``; a value that is
    neither warns, naming the variable, and the default applies (it is read at import,
    where an exception would make h5dask unusable for a typo)."""
    value = os.environ.get(BUDGET_VARIABLE, "").strip()
    if not value:
        return DEFAULT_BUDGET
    try:
        if value.isdigit():
            return int(value)
        from dask.utils import parse_bytes  # (dask only when a unit is given)

        nbytes = parse_bytes(value)
        if nbytes >= 0:
            return nbytes
    except (ValueError, TypeError):
        pass
    warnings.warn(f"{BUDGET_VARIABLE}={value!r} is not a size (bytes, or e.g. '128MiB'): "
                  f"using the default {DEFAULT_BUDGET // 2**20} MiB; set it to a valid size "
                  f"or unset it", ReadAheadSettingWarning, stacklevel=2)
    return DEFAULT_BUDGET


@dataclass
class _Entry:
    future: concurrent.futures.Future
    reserved: int
    owner: Any  # a local computation's session, or a distributed worker's TaskState
    # distributed only: whether the task asking for the entry is the one it was made for
    still_wanted: Callable[[], bool] | None


class ReadAhead:
    """The chunk GETs started ahead of their tasks in this process (see module doc)."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = _budget_from_env() if budget is None else budget
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._reserved = 0
        # GETs reserved but not yet handed to the I/O loop (see launch)
        self._queued: list[Launch] = []
        # per local computation: the chunks of its queued tasks that had no room in the
        # budget, in the order the tasks will run (see start_in_order)
        self._waiting: dict[Any, collections.deque[Planned]] = {}
        self.started = 0  # GETs started ahead (for tests and benchmarks)
        self.used = 0  # of which a task used the bytes
        self.peak_reserved = 0

    @property
    def enabled(self) -> bool:
        return self.budget > 0

    @property
    def reserved(self) -> int:
        return self._reserved

    def start(self, source: Any, index: tuple[int, ...], owner: Any,
              still_wanted: Callable[[], bool] | None = None, launch: bool = True) -> bool:
        """Start fetching one chunk unless already started; False when the budget is
        spent (the caller stops looking further ahead). ``still_wanted()``, if given, is
        asked when a task claims the entry: False drops it (e.g. another task runs).
        ``launch=False`` only queues the GET: :meth:`launch` then starts every queued GET
        with one wake-up of the I/O loop (a thread hand-off per GET costs more than the
        GET's own client work when dozens are started at once)."""
        return self.start_planned(plan(source, index), owner, still_wanted, launch)

    def start_planned(self, planned: Planned, owner: Any,
                      still_wanted: Callable[[], bool] | None = None,
                      launch: bool = True) -> bool:
        """:meth:`start` for a chunk already described by :func:`plan` (a caller that
        looks at the same queued task again and again keeps its plans)."""
        name, size, fetch = planned
        return self._start(name, size, owner, still_wanted, fetch, launch)

    def start_in_order(self, owner: Any, plans: Iterable[Planned]) -> None:
        """Start the GETs of ``plans`` (the chunks of a local computation's queued tasks,
        in the order the tasks will run) while they fit in the budget; the others wait,
        in that order, for the budget a task frees when it claims its chunk, and start
        then, from that task's thread, instead of at the next task start (at 100 ms to
        the first byte that gap left the budget idle). ``plans`` replaces ``owner``'s
        waiting chunks: the queue may have changed, and a task that runs now is not in
        it any more, so its chunk is never fetched twice."""
        with self._lock:
            waiting = collections.deque(p for p in plans if p[0] not in self._entries)
            if waiting:
                self._waiting[owner] = waiting
            else:
                self._waiting.pop(owner, None)
            self._start_waiting()
        self.launch()

    def _start_waiting(self) -> None:
        """Reserve and queue the waiting chunks that fit, in order (lock held)."""
        for owner, waiting in list(self._waiting.items()):
            while waiting:
                name, size, fetch = waiting[0]
                if name not in self._entries:
                    if self._reserved + size > self.budget:
                        return  # full: the sooner a chunk is needed, the sooner it starts
                    self._reserve(name, size, owner, None, fetch)
                waiting.popleft()
            del self._waiting[owner]

    def _reserve(self, name: str, size: int, owner: Any,
                 still_wanted: Callable[[], bool] | None,
                 fetch: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        self._reserved += size
        self.peak_reserved = max(self.peak_reserved, self._reserved)
        self.started += 1
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._entries[name] = _Entry(future, size, owner, still_wanted)
        self._queued.append((future, fetch))

    def _start(self, name: str, size: int, owner: Any,
               still_wanted: Callable[[], bool] | None,
               fetch: Callable[[], Coroutine[Any, Any, Any]], launch: bool) -> bool:
        with self._lock:
            if name in self._entries:
                return True
            if self._reserved + size > self.budget:
                return False
            self._reserve(name, size, owner, still_wanted, fetch)
        if launch:
            self.launch()
        return True

    def arrived(self, plans: Iterable[Planned]) -> bool:
        """Whether the GET of every chunk in ``plans`` was started ahead and is done."""
        with self._lock:
            entries = [self._entries.get(name) for name, _, _ in plans]
        return all(e is not None and e.future.done() for e in entries)

    def launch(self) -> None:
        """Start the GETs queued by ``start(..., launch=False)``, in the order queued."""
        with self._lock:
            batch, self._queued = self._queued, []
        launch(batch)

    def start_key(self, store: Any, key: str, size_bound: int, owner: Any,
                  launch: bool = True) -> bool:
        """Start fetching a chunk object known by its key only (a coordinate's chunk
        named by a consolidated metadata object); ``launch`` as for :meth:`start`."""

        async def fetch() -> tuple[Any, str]:
            return await store.get_buffer(key, kind="chunk"), key

        return self._start(f"{store.identity}/{key}", size_bound, owner, None, fetch, launch)

    def claim(self, source: Any, index: tuple[int, ...]) -> concurrent.futures.Future | None:
        """The GET started ahead of the current task for this chunk (removed from the
        read-ahead: used once), or None if the caller must read the chunk itself."""
        if not self._entries:
            return None
        name = object_name(source, index)
        with self._lock:
            entry = self._entries.pop(name, None)
            if entry is None:
                return None
            self._reserved -= entry.reserved
            refill = bool(self._waiting)
            if refill:
                self._start_waiting()
        if refill:
            self.launch()
        if entry.still_wanted is not None and not entry.still_wanted():
            entry.future.cancel()
            return None
        return entry.future

    def take(self, source: Any, index: tuple[int, ...]) -> tuple[bool, Any]:
        """(True, stored bytes or None) if this chunk was fetched ahead for the current
        task, waiting for its GET to finish; (False, None) if the caller must read it.
        Blocks: never call it on the I/O loop (see :meth:`take_async`)."""
        future = self.claim(source, index)
        if future is None:
            return False, None
        try:
            data, _ = future.result()
        except Exception:  # noqa: BLE001 - the caller's own read reports the error
            return False, None
        self.count_used()
        return True, data

    async def take_async(self, source: Any, index: tuple[int, ...]) -> tuple[bool, Any]:
        """:meth:`take` for a coroutine on the I/O loop."""
        future = self.claim(source, index)
        if future is None:
            return False, None
        try:
            data, _ = await asyncio.wrap_future(future)
        except Exception:  # noqa: BLE001 - the caller's own read reports the error
            return False, None
        self.count_used()
        return True, data

    def count_used(self) -> None:
        """Count one entry taken and used by a task."""
        with self._lock:
            self.used += 1

    def forget(self, names: Iterable[str] = (), owner: Any = None) -> None:
        """Drop entries by object name, and every entry of ``owner``."""
        with self._lock:
            names = set(names)
            drop = [n for n in names if n in self._entries]
            if owner is not None:
                drop += [n for n, e in self._entries.items() if e.owner is owner]
                self._waiting.pop(owner, None)
            for waiting in self._waiting.values():  # written: its task reads it itself
                for planned in [p for p in waiting if p[0] in names]:
                    waiting.remove(planned)
            for name in drop:
                entry = self._entries.pop(name, None)
                if entry is not None:
                    self._reserved -= entry.reserved
                    entry.future.cancel()

    def reset(self) -> None:
        """Drop every entry and zero the counters."""
        with self._lock:
            for entry in self._entries.values():
                entry.future.cancel()
            self._entries.clear()
            self._queued.clear()
            self._waiting.clear()
            self._reserved = 0
            self.started = self.used = self.peak_reserved = 0


_readahead = ReadAhead()


def get_readahead() -> ReadAhead:
    """This process's read-ahead."""
    return _readahead


def set_budget(nbytes: int) -> None:
    """Bytes that read-ahead may hold at once in this process (0: off).

    >>> set_budget(32 * 2**20); get_readahead().budget
    33554432
    """
    _readahead.budget = max(0, int(nbytes))


#: what starting one chunk's GET needs: its object name, its stored size bound and the
#: coroutine factory that fetches it
Planned = tuple[str, int, Callable[[], Coroutine[Any, Any, Any]]]


def plan(source: Any, index: tuple[int, ...]) -> Planned:
    """Name, stored size bound and fetch of one chunk, for :meth:`ReadAhead.start_planned`."""
    return (object_name(source, index), _stored_size_bound(source, index),
            functools.partial(source._fetch, index))


def object_name(source: Any, index: tuple[int, ...]) -> str:
    """The object (or byte range) one chunk is read from, unique in this process (the
    store's :attr:`~h5dask.storage.base.ObjectStore.identity`, not its bucket name alone);
    for a linked chunk also the file's version its session accepted: bytes fetched ahead
    on condition of one version are never handed to a session that accepted another."""
    ref, key = source._ref_key(index)
    if ref is None:
        return f"{source.store.identity}/{key}"
    if ref.version is None:
        return f"{ref.store.identity}/{key}"
    return f"{ref.store.identity}/{key} version={ref.version.tag} size={ref.version.size}"


def _stored_size_bound(source: Any, index: tuple[int, ...]) -> int:
    ref, _ = source._ref_key(index)
    if ref is not None:
        return ref.size
    bound = source._stored_bound()  # what the chunk's GET reads at most
    # variable-length chunks have no bound: reserve their decoded size
    return bound if bound is not None else math.prod(source.chunks) * source.dtype.itemsize


def _forget_written(url: str) -> None:
    _readahead.forget([url])


add_write_listener(_forget_written)  # a chunk fetched ahead is never used after a write
