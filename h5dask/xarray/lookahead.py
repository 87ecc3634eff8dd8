"""Which chunk objects the tasks queued in this process will read: the triggers of
read-ahead (:mod:`h5dask.readahead` holds the fetched bytes).

With dask's local schedulers a callback looks at the running computation's ready stack
when each task starts; on a ``distributed`` worker the getter of each h5dask task looks
at that worker's own ready queue (on its event loop). Only tasks this process will run
are looked at, so nothing is fetched for tasks of other workers. Locally, the chunks
that have no room in the budget yet wait in the order their tasks will run and start
the moment a running task takes its chunk, and a task whose chunks arrived may run
before one of the next few still waiting for its own. Every private dask,
xarray and distributed name used here comes from :mod:`h5dask.private_api`.
"""

from __future__ import annotations

import functools
import itertools
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from .. import private_api
from ..chunkio import ArraySource
from ..format.chunks import region_chunks, slice_origin
from ..readahead import Planned, get_readahead, plan

#: ready tasks looked at, at most, each time a task starts
LOOK_AHEAD_TASKS = 64
#: a distributed worker's next ready tasks, in order, sorted out of its ready heap at
#: once and walked through by the next task starts (see _next_ready), and how many tasks
#: added to the queue since make it sort them out again
SNAPSHOT_TASKS = 4 * LOOK_AHEAD_TASKS
RESNAPSHOT_AFTER_ADDED = LOOK_AHEAD_TASKS // 4
#: how far down a local computation's ready stack a task whose chunks arrived may be
#: moved up from, past tasks still waiting for theirs (see _run_arrived_first)
REORDER_TASKS = 16
_GETTERS = ("getter", "getter_nofancy", "getter_inline")


def _is_current_task(task_key: Any, task_state: Any) -> bool:
    """On a distributed worker: is the running task the one an entry was made for?"""
    names = private_api.load_distributed()
    if names is None or getattr(names["thread_state"], "key", None) != task_key:
        return False
    try:
        return names["get_worker"]().state.tasks.get(task_key) is task_state
    except (ValueError, AttributeError):
        return False


# -- what a task reads: its getter calls, down to h5dask chunks ---------------------------
def unwrap_h5cloud(obj: Any) -> tuple[Any, tuple[int, ...]] | None:
    """The h5dask array under xarray's lazy wrappers, and where the wrapper's index 0
    lies in it; None if it is not one, or not a plain slice of one."""
    adapter = private_api.load()
    origin: tuple[int, ...] | None = None
    for _ in range(32):
        if isinstance(getattr(obj, "source", None), ArraySource):  # an H5CloudArray
            if obj.scalar:
                return None
            return obj, origin or (0,) * len(obj.shape)
        if isinstance(obj, adapter.LazilyIndexedArray):
            if origin is not None:
                return None  # a slice of a slice: leave it to the task
            origin = slice_origin(obj.key.tuple, obj.array.shape)
            if origin is None:
                return None
        elif not isinstance(obj, adapter.elementwise_wrappers):
            return None
        obj = obj.array
    return None


def task_chunks(task: Any, value_of: Callable[[Any], Any],
                unwrapped: dict[int, Any] | None = None) -> list[tuple[Any, tuple]]:
    """(ArraySource, chunk index) of every h5dask chunk the task's getters read.

    ``value_of(key)`` gives the value of a dependency of the task (the array object),
    or raises KeyError if it is not known here. ``unwrapped``, if given, keeps what
    :func:`unwrap_h5cloud` found for each array object (every task of a variable reads
    the same one), for callers that look at many tasks of one graph.
    """
    out: list[tuple[Any, tuple]] = []
    for array_obj, index in _getter_calls(task, value_of):
        if not isinstance(index, tuple):
            continue
        if unwrapped is None:
            found = unwrap_h5cloud(array_obj)
        else:
            known = unwrapped.get(id(array_obj))
            if known is None or known[0] is not array_obj:
                # the object is kept with its result, so that its id is not reused
                known = unwrapped[id(array_obj)] = (array_obj, unwrap_h5cloud(array_obj))
            found = known[1]
        if found is None:
            continue
        array, origin = found
        region = _shift(index, origin, array.shape)
        if region is None:
            continue
        source = array.source
        out.extend((source, chunk) for chunk in region_chunks(region, source.chunks))
    return out


def _shift(index: tuple, origin: tuple[int, ...], shape: tuple[int, ...]
           ) -> tuple[slice, ...] | None:
    if len(index) != len(shape) or not all(isinstance(s, slice) for s in index):
        return None
    out = []
    for s, o, n in zip(index, origin, shape):
        if s.step not in (None, 1) or s.start is None or s.stop is None:
            return None
        start, stop = s.start + o, s.stop + o
        if not (0 <= start and stop <= n):  # not a plain region of the array
            return None
        out.append(slice(start, stop))
    return tuple(out)


def _getter_calls(task: Any, value_of: Callable[[Any], Any]) -> list[tuple[Any, Any]]:
    adapter = private_api.load()
    DataNode, Task, TaskRef = adapter.DataNode, adapter.Task, adapter.TaskRef  # noqa: N806
    func = getattr(task, "func", None)
    if func is None or not isinstance(task, Task):
        return []
    name = getattr(func, "__name__", "")
    if name in _GETTERS:
        env: dict = {}
        inner = [task]
    elif func is adapter.execute_subgraph and len(task.args) >= 3:
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
        self.done: set = set()  # queued tasks with nothing to fetch (or sent ahead)
        # the chunks of each queued task looked at: a task waits on the ready stack
        # while others start, and is looked at again at each of their starts
        self.plans: dict[Any, list[Planned]] = {}
        self.unwrapped: dict[int, Any] = {}  # see task_chunks

    def value_of(self, key: Any) -> Any:
        DataNode = private_api.load().DataNode  # noqa: N806
        cache = self.state.get("cache", {})
        if key in cache:
            return cache[key]
        node = self.dsk[key]
        if isinstance(node, DataNode):
            return node.value
        raise KeyError(key)


def _look_ahead(tasks: Iterable[tuple[Any, Any]], value_of: Callable[[Any], Any],
                owner: Any) -> bool:
    """On a distributed worker: start the GETs of the chunks the given (key, task state)
    pairs will read, in order, until the budget is spent (then False)."""
    ra = get_readahead()
    try:
        for key, task in tasks:
            check = functools.partial(_is_current_task, key, owner)
            for planned in _task_plans(task, value_of, None, None, owner) or ():
                if not ra.start_planned(planned, owner, check, launch=False):
                    return False
        return True
    finally:
        ra.launch()  # one hand-off to the I/O loop for all the GETs queued


def _task_plans(task: Any, value_of: Callable[[Any], Any], unwrapped: dict | None,
                pushdown: Any, owner: Any) -> list[Planned] | None:
    """The chunks ``task`` will read, each as :func:`plan` describes it; for a reduction
    pushed down to active storage (``pushdown``: that module, local computations only)
    its request is sent ahead instead, and None says enough replies wait already."""
    try:
        chunks = task_chunks(task, value_of, unwrapped)
        if pushdown is not None and not chunks and not pushdown.send_ahead(
                task, value_of, owner):
            return None
    except Exception:  # noqa: BLE001 - read-ahead is an optimisation only
        chunks = []
    return [plan(source, index) for source, index in chunks
            # a linked chunk that is not stored: nothing to fetch
            if source.linked is None or source._linked_ref(index) is not None]


def _local_look_ahead(session: _Session, keys: Iterable[Any]) -> None:
    """Hand the read-ahead the chunks of a local computation's queued tasks ``keys``,
    in the order they will run: it starts what fits in its budget now, the rest as
    running tasks free budget (:meth:`ReadAhead.start_in_order`)."""
    pushdown = sys.modules.get("h5dask.active.pushdown")
    ordered: list[Planned] = []
    for key in keys:
        if key in session.done:
            continue
        plans = session.plans.get(key)
        if plans is None:
            plans = _task_plans(session.dsk[key], session.value_of, session.unwrapped,
                                pushdown, session)
            if plans is None:
                break  # enough pushed-down replies wait: look no further
            if not plans:
                session.done.add(key)
                continue
            session.plans[key] = plans
        ordered.extend(plans)
    get_readahead().start_in_order(session, ordered)


def _run_arrived_first(session: _Session, ready: list) -> None:
    """If the next task of a local computation would wait for a chunk still on its way
    while one of the next few read-ahead tasks has all its chunks here, run that one
    first: GETs finish in any order, and waiting on the slowest one in dask's order
    left the threads idle and the arrived chunks holding the budget. Only read-ahead
    tasks among the top :data:`REORDER_TASKS` of the ready stack swap places, so
    dask's order (and the memory it keeps low) moves by at most that many tasks."""
    if not isinstance(ready, list) or len(ready) < 2:
        return  # (dask's local scheduler keeps a list; anything else is left in its order)
    ra = get_readahead()
    top = session.plans.get(ready[-1])
    if top is None or ra.arrived(top):
        return
    for i in range(len(ready) - 2, max(-1, len(ready) - 1 - REORDER_TASKS), -1):
        plans = session.plans.get(ready[i])
        if plans is None:
            return  # not a read-ahead task: dask's order stands beyond it
        if ra.arrived(plans):
            ready.append(ready.pop(i))
            return


def _local_callback() -> Any:
    from dask.callbacks import Callback

    class LocalReadAhead(Callback):
        """Reads ahead for the tasks at the top of a local computation's ready stack."""

        def __init__(self) -> None:
            super().__init__()
            self._sessions: dict[int, _Session] = {}

        def _start_state(self, dsk: dict, state: dict) -> None:
            if get_readahead().enabled:
                self._sessions[id(state)] = _Session(dsk, state)

        def _pretask(self, key: Any, dsk: dict, state: dict) -> None:
            session = self._sessions.get(id(state))
            if session is None:
                return
            session.plans.pop(key, None)  # it runs now: it reads what was not fetched
            ready = state["ready"]  # a stack: the next task is the last one
            _local_look_ahead(session, ready[: -LOOK_AHEAD_TASKS - 1: -1])

        def _posttask(self, key: Any, result: Any, dsk: dict, state: dict,
                      worker_id: Any) -> None:
            session = self._sessions.get(id(state))
            if session is not None:
                _run_arrived_first(session, state["ready"])

        def _finish(self, dsk: dict, state: dict, errored: bool) -> None:
            session = self._sessions.pop(id(state), None)
            if session is not None:
                get_readahead().forget(owner=session)
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
    if not get_readahead().enabled or "distributed" not in sys.modules:
        return
    names = private_api.load_distributed()
    if names is None or getattr(names["thread_state"], "key", None) is None:
        return
    try:
        worker = names["get_worker"]()
    except ValueError:
        return
    worker.loop.add_callback(_worker_look_ahead, worker)


def _worker_look_ahead(worker: Any) -> None:
    data = worker.data

    def value_of(key: Any) -> Any:
        if key in data:
            return data[key]
        raise KeyError(key)

    try:
        queued = [(ts.key, ts) for ts in _next_ready(worker)]
    except Exception:  # noqa: BLE001 - read-ahead is an optimisation only
        return
    for key, ts in queued:
        if ts in _looked_at:
            continue
        if not _look_ahead([(key, ts.run_spec)], value_of, ts):
            return  # the budget is spent: the tasks behind this one wait for the next look
        _looked_at.add(ts)


def _next_ready(worker: Any) -> list[Any]:
    """The first :data:`LOOK_AHEAD_TASKS` tasks of a worker's ready queue, in the order
    they will run.

    The queue is a heap (distributed's ``HeapSet``): listing its first tasks in order
    sorts the whole of it, and a task start between two looks has unsorted it again, so
    peeking at every task start cost O(n log n) each (3.7 ms of the event loop a task
    start with 10^5 tasks queued on a worker, 0.09 ms this way). Instead the first
    :data:`SNAPSHOT_TASKS` are sorted out once and the next task starts walk through
    them, skipping those that left the queue (ran, or stolen); the snapshot is taken
    again when fewer than :data:`LOOK_AHEAD_TASKS` of it remain while the queue holds
    more, or once :data:`RESNAPSHOT_AFTER_ADDED` tasks were added to the queue (a small
    queue, as with distributed's default worker-saturation, is therefore always listed
    exactly; a task added to a long one is looked at from the next snapshot on).
    """
    ready = worker.state.ready
    live, behind = _snapshots.get(worker, ((), 0))  # behind: queued tasks not in it
    live = [ts for ts in live if ts in ready]
    added = len(ready) - len(live) - behind
    if (len(live) < LOOK_AHEAD_TASKS and len(ready) > len(live)) or \
            added >= RESNAPSHOT_AFTER_ADDED:
        live = list(itertools.islice(ready.sorted(), SNAPSHOT_TASKS))
        behind = len(ready) - len(live)
    else:  # (tasks that left from behind the snapshot, e.g. stolen, count down)
        behind = min(behind, len(ready) - len(live))
    _snapshots[worker] = (live, behind)
    return live[:LOOK_AHEAD_TASKS]


#: each worker's snapshot of its next ready tasks (weak: forgotten with its worker;
#: several workers may share a process)
_snapshots: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

#: the queued tasks of this worker whose chunks were all started already: each task
#: start looks at up to LOOK_AHEAD_TASKS queued tasks, and looking again at the same
#: ones cost a worker a sixth of its CPU (profiled on the cluster benchmark). Weak: a
#: task state is forgotten with the task; a recomputation has new task states.
_looked_at: weakref.WeakSet = weakref.WeakSet()
