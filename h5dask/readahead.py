"""Read-ahead of chunk objects that tasks queued in this process are about to read.

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
* **Bounded memory.** At most ``H5DASK_READ_AHEAD_BYTES`` (default 64 MiB; ``0``
  turns read-ahead off) of stored chunk bytes are reserved at once per process, in
  flight or waiting; a GET is only started when its chunk fits in what is left.
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
import concurrent.futures
import math
import os
import sys
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

DEFAULT_BUDGET = 64 * 2**20
#: ready tasks looked at, at most, each time a task starts
LOOK_AHEAD_TASKS = 64
_GETTERS = ("getter", "getter_nofancy", "getter_inline")
_WRAPPERS = ("ImplicitToExplicitIndexingAdapter", "CopyOnWriteArray", "MemoryCachedArray",
             "NativeEndiannessArray", "BoolTypeArray", "_ElementwiseFunctionArray")


def _budget_from_env() -> int:
    value = os.environ.get("H5DASK_READ_AHEAD_BYTES", "")
    try:
        return max(0, int(value)) if value else DEFAULT_BUDGET
    except ValueError:
        return DEFAULT_BUDGET


@dataclass
class _Entry:
    future: concurrent.futures.Future
    reserved: int
    owner: Any  # a local computation's session, or a distributed worker's TaskState
    task_key: Any  # distributed only: the key of the task the entry is for


class ReadAhead:
    """The chunk GETs started ahead of their tasks in this process (see module doc)."""

    def __init__(self, budget: int | None = None) -> None:
        self.budget = _budget_from_env() if budget is None else budget
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._reserved = 0
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
              task_key: Any = None) -> bool:
        """Start fetching one chunk unless already started; False when the budget is
        spent (the caller stops looking further ahead)."""
        from .storage.sync import io_loop

        return self._start(object_name(source, index), _stored_size_bound(source, index),
                           owner, task_key, lambda: asyncio.run_coroutine_threadsafe(
                               source._fetch(index), io_loop()))

    def _start(self, name: str, size: int, owner: Any, task_key: Any,
               submit: Callable[[], concurrent.futures.Future]) -> bool:
        with self._lock:
            if name in self._entries:
                return True
            if self._reserved + size > self.budget:
                return False
            self._reserved += size
            self.peak_reserved = max(self.peak_reserved, self._reserved)
            self.started += 1
            self._entries[name] = _Entry(submit(), size, owner, task_key)
        return True

    def start_key(self, store: Any, key: str, size_bound: int, owner: Any) -> bool:
        """Start fetching a chunk object known by its key only (a coordinate's chunk
        named by a consolidated metadata object)."""
        from .storage.sync import io_loop

        async def fetch() -> tuple[Any, str]:
            return await store.get_buffer(key, kind="chunk"), key

        return self._start(f"{store.root_url}/{key}", size_bound, owner, None,
                           lambda: asyncio.run_coroutine_threadsafe(fetch(), io_loop()))

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
        if entry.task_key is not None and not _is_current_task(entry):
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
        self._count_used()
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
        self._count_used()
        return True, data

    def _count_used(self) -> None:
        with self._lock:
            self.used += 1

    def forget(self, names: Iterable[str] = (), owner: Any = None) -> None:
        """Drop entries by object name, and every entry of ``owner``."""
        with self._lock:
            drop = [n for n in names if n in self._entries]
            if owner is not None:
                drop += [n for n, e in self._entries.items() if e.owner is owner]
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


def object_name(source: Any, index: tuple[int, ...]) -> str:
    """The object (or byte range) one chunk is read from, unique in this process."""
    ref, key = source._ref_key(index)
    store = ref.store if ref is not None else source.store
    return f"{store.root_url}/{key}"


def _stored_size_bound(source: Any, index: tuple[int, ...]) -> int:
    ref, _ = source._ref_key(index)
    if ref is not None:
        return ref.size
    # HSDS compresses whole chunks; a compressed chunk is no larger than the decoded
    # one, bar a few header bytes
    return math.prod(source.chunks) * source.dtype.itemsize + 64


def _is_current_task(entry: _Entry) -> bool:
    try:
        from distributed import get_worker
        from distributed.worker import thread_state

        if getattr(thread_state, "key", None) != entry.task_key:
            return False
        return get_worker().state.tasks.get(entry.task_key) is entry.owner
    except (ImportError, ValueError, AttributeError):
        return False


# -- what a task reads: its getter calls, down to h5dask chunks ---------------------------
def unwrap_h5cloud(obj: Any) -> tuple[Any, tuple[int, ...]] | None:
    """The h5dask array under xarray's lazy wrappers, and where the wrapper's index 0
    lies in it; None if it is not one, or not a plain slice of one."""
    from .xarray.backend import H5CloudArray

    origin: tuple[int, ...] | None = None
    for _ in range(32):
        if isinstance(obj, H5CloudArray):
            if obj.scalar:
                return None
            return obj, origin or (0,) * len(obj.shape)
        name = type(obj).__name__
        if name == "LazilyIndexedArray":
            if origin is not None:
                return None  # a slice of a slice: leave it to the task
            origin = _slice_origin(obj.key.tuple, obj.array.shape)
            if origin is None:
                return None
        elif name not in _WRAPPERS:
            return None
        obj = obj.array
    return None


def _slice_origin(key: tuple, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    if len(key) != len(shape):
        return None
    origin = []
    for k, n in zip(key, shape):
        if not isinstance(k, slice):
            return None
        start, _stop, step = k.indices(n)
        if step != 1:
            return None
        origin.append(start)
    return tuple(origin)


def task_chunks(task: Any, value_of: Callable[[Any], Any]) -> list[tuple[Any, tuple]]:
    """(ArraySource, chunk index) of every h5dask chunk the task's getters read.

    ``value_of(key)`` gives the value of a dependency of the task (the array object),
    or raises KeyError if it is not known here.
    """
    out: list[tuple[Any, tuple]] = []
    for array_obj, index in _getter_calls(task, value_of):
        found = unwrap_h5cloud(array_obj)
        if found is None or not isinstance(index, tuple):
            continue
        array, origin = found
        region = _shift(index, origin, array.shape)
        if region is None:
            continue
        source = array.source
        out.extend((source, piece.index) for piece in source.grid.plan(region))
    return out


def _shift(index: tuple, origin: tuple[int, ...], shape: tuple[int, ...]
           ) -> tuple[slice, ...] | None:
    if len(index) != len(shape) or not all(isinstance(s, slice) for s in index):
        return None
    out = []
    for s, o in zip(index, origin):
        if s.step not in (None, 1) or s.start is None or s.stop is None:
            return None
        out.append(slice(s.start + o, s.stop + o))
    return tuple(out)


def _getter_calls(task: Any, value_of: Callable[[Any], Any]) -> list[tuple[Any, Any]]:
    from dask._task_spec import DataNode, Task, TaskRef

    func = getattr(task, "func", None)
    if func is None or not isinstance(task, Task):
        return []
    name = getattr(func, "__name__", "")
    if name in _GETTERS:
        env: dict = {}
        inner = [task]
    elif name == "_execute_subgraph" and len(task.args) >= 3:
        subgraph, _outkey, inkeys, *deps = task.args
        if not isinstance(subgraph, dict):
            return []
        env = dict(zip(inkeys, deps))
        inner = [t for t in subgraph.values() if getattr(
            getattr(t, "func", None), "__name__", "") in _GETTERS]
    else:
        return []

    def resolve(arg: Any) -> Any:
        if isinstance(arg, TaskRef) and arg.key in env:  # a placeholder of the subgraph
            arg = env[arg.key]
        if isinstance(arg, TaskRef):  # a dependency of the outer task
            return value_of(arg.key)
        return arg.value if isinstance(arg, DataNode) else arg

    calls = []
    for t in inner:
        if len(t.args) < 2:
            continue
        try:
            calls.append((resolve(t.args[0]), resolve(t.args[1])))
        except KeyError:
            continue
    return calls


# -- triggers: dask's local schedulers and distributed workers ----------------------------
class _Session:
    """One local computation: its graph, and what was looked at already."""

    def __init__(self, dsk: dict, state: dict) -> None:
        self.dsk = dsk
        self.state = state
        self.seen: set = set()

    def value_of(self, key: Any) -> Any:
        from dask._task_spec import DataNode

        cache = self.state.get("cache", {})
        if key in cache:
            return cache[key]
        node = self.dsk[key]
        if isinstance(node, DataNode):
            return node.value
        raise KeyError(key)


def _look_ahead(tasks: Iterable[tuple[Any, Any]], value_of: Callable[[Any], Any],
                owner: Any, seen: set | None, distributed: bool) -> None:
    """Start the GETs of the chunks the given (key, task) pairs will read, in order,
    until the budget is spent."""
    ra = _readahead
    pushdown = None if distributed else sys.modules.get("h5dask.active.pushdown")
    for key, task in tasks:
        if seen is not None:
            if key in seen:
                continue
        try:
            chunks = task_chunks(task, value_of)
            # a reduction pushed down to active storage: its requests, sent ahead
            if pushdown is not None and not chunks and not pushdown.send_ahead(
                    task, value_of, owner):
                return
        except Exception:  # noqa: BLE001 - read-ahead is an optimisation only
            chunks = []
        for source, index in chunks:
            if source.linked is not None and source._linked_ref(index) is None:
                continue  # not stored: nothing to fetch
            if not ra.start(source, index, owner, key if distributed else None):
                return
        if seen is not None:
            seen.add(key)


def _local_callback() -> Any:
    from dask.callbacks import Callback

    class LocalReadAhead(Callback):
        """Reads ahead for the tasks at the top of a local computation's ready stack."""

        def __init__(self) -> None:
            super().__init__()
            self._sessions: dict[int, _Session] = {}

        def _start_state(self, dsk: dict, state: dict) -> None:
            if _readahead.enabled:
                self._sessions[id(state)] = _Session(dsk, state)

        def _pretask(self, key: Any, dsk: dict, state: dict) -> None:
            session = self._sessions.get(id(state))
            if session is None:
                return
            ready = state["ready"]  # a stack: the next task is the last one
            keys = ready[: -LOOK_AHEAD_TASKS - 1: -1]
            _look_ahead(((k, dsk[k]) for k in keys), session.value_of, session,
                        session.seen, distributed=False)

        def _finish(self, dsk: dict, state: dict, errored: bool) -> None:
            session = self._sessions.pop(id(state), None)
            if session is not None:
                _readahead.forget(owner=session)
                pushdown = sys.modules.get("h5dask.active.pushdown")
                if pushdown is not None:
                    pushdown.forget_ahead(session)

    return LocalReadAhead()


_installed: Any = None
_install_lock = threading.Lock()


def install() -> None:
    """Register read-ahead with dask's local schedulers (process-wide, idempotent).
    Distributed workers need nothing: each task looks at its worker's queue."""
    global _installed
    with _install_lock:
        if _installed is None:
            _installed = _local_callback()
            _installed.register()


def uninstall() -> None:
    """Undo :func:`install`."""
    global _installed
    with _install_lock:
        if _installed is not None:
            _installed.unregister()
            _installed = None


def on_task_start() -> None:
    """Called by h5dask's dask getter: on a distributed worker, read ahead for the tasks
    queued to this worker (looked at on the worker's event loop, which owns them)."""
    if not _readahead.enabled or "distributed" not in sys.modules:
        return
    from distributed.worker import thread_state

    if getattr(thread_state, "key", None) is None:
        return
    try:
        from distributed import get_worker

        worker = get_worker()
    except ValueError:
        return
    worker.loop.add_callback(_worker_look_ahead, worker)


def _worker_look_ahead(worker: Any) -> None:
    state = worker.state
    data = worker.data

    def value_of(key: Any) -> Any:
        if key in data:
            return data[key]
        raise KeyError(key)

    try:
        queued = [(ts.key, ts) for ts in state.ready.peekn(LOOK_AHEAD_TASKS)]
    except Exception:  # noqa: BLE001 - read-ahead is an optimisation only
        return
    for key, ts in queued:
        _look_ahead([(key, ts.run_spec)], value_of, ts, None, distributed=True)
