"""Read-ahead of chunk objects for queued tasks: exact values, each chunk object read
once, nothing read that no task asked for, never stale after a write, bounded memory."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import xarray as xr

import h5dask
from h5dask.readahead import get_readahead, object_name, plan, set_budget
from h5dask.storage.sync import sync
from h5dask.xarray import lookahead

NCHUNKS = 24
CHUNK_BYTES = 4 * 4 * 50 * 40  # float32 chunks of (4, 50, 40)


@pytest.fixture
def readahead():
    """A fresh read-ahead with room for every chunk; restored afterwards."""
    ra = get_readahead()
    before = ra.budget
    ra.reset()
    set_budget(64 * 2**20)
    yield ra
    ra.reset()
    set_budget(before)


@pytest.fixture
def variable(s3_bucket_url, storage_options):
    url = f"{s3_bucket_url}/ra.h5"
    data = np.random.default_rng(7).random((NCHUNKS * 4, 50, 40), dtype="f4")
    ds = xr.Dataset({"v": (("t", "y", "x"), data)})
    h5dask.to_h5cloud(ds, url, storage_options=storage_options,
                      encoding={"v": {"chunksizes": (4, 50, 40)}})
    return url, data


def _open(url, storage_options, chunks=None):
    return xr.open_dataset(url, engine="h5cloud", chunks={} if chunks is None else chunks,
                           storage_options=storage_options)["v"]


def _chunk_reads() -> int:
    return h5dask.stats()["chunk"]["read_requests"]


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_full_read_is_exact_and_reads_each_chunk_once(readahead, variable, storage_options,
                                                       scheduler):
    url, data = variable
    v = _open(url, storage_options)
    h5dask.reset_stats()
    got = v.sum(dtype="f8").compute(scheduler=scheduler)
    assert float(got) == pytest.approx(float(data.astype("f8").sum()), rel=1e-12)
    np.testing.assert_array_equal(v.compute(scheduler=scheduler).values, data)
    # two computations, each chunk object read exactly once per computation
    assert _chunk_reads() == 2 * NCHUNKS
    assert readahead.used > 0  # the tasks did take chunks fetched ahead
    assert readahead.used == readahead.started  # none fetched ahead and then dropped
    assert readahead.reserved == 0  # nothing left behind after the computations


def test_partial_read_fetches_only_the_selected_chunks(readahead, variable, storage_options):
    url, data = variable
    v = _open(url, storage_options)
    h5dask.reset_stats()
    got = v.isel(t=slice(20, 44)).values  # chunks 5..10
    np.testing.assert_array_equal(got, data[20:44])
    assert _chunk_reads() == 6
    assert readahead.started <= 6


def test_auto_blocks_are_exact(readahead, variable, storage_options):
    url, data = variable
    v = _open(url, storage_options, chunks={"t": 12})
    h5dask.reset_stats()
    np.testing.assert_array_equal(v.values, data)
    assert _chunk_reads() == NCHUNKS


def test_memory_stays_within_the_budget(readahead, variable, storage_options):
    url, data = variable
    set_budget(3 * CHUNK_BYTES + 3 * 64)  # room for three chunks ahead
    v = _open(url, storage_options)
    h5dask.reset_stats()
    np.testing.assert_array_equal(v.values, data)
    assert 0 < readahead.peak_reserved <= readahead.budget
    assert _chunk_reads() == NCHUNKS


def test_off_reads_every_chunk_itself(readahead, variable, storage_options):
    url, data = variable
    set_budget(0)
    v = _open(url, storage_options)
    np.testing.assert_array_equal(v.values, data)
    assert readahead.started == 0


def test_never_stale_after_a_write(readahead, variable, storage_options):
    url, data = variable
    v = _open(url, storage_options)
    np.testing.assert_array_equal(v.values, data)
    # rewrite every chunk through h5dask's API, then read with the dataset opened before
    with h5dask.File(url, "r+", storage_options=storage_options) as f:
        f["v"][...] = data + 1
    h5dask.reset_stats()
    np.testing.assert_array_equal(v.values, data + 1)
    assert _chunk_reads() == NCHUNKS


def test_a_chunk_fetched_ahead_then_written_is_read_again(readahead, variable,
                                                          storage_options):
    url, data = variable
    with h5dask.File(url, "r+", storage_options=storage_options) as f:
        source = f["v"].source()
        assert readahead.start(source, (3, 0, 0), owner=object())
        f["v"][12:16] = np.zeros((4, 50, 40), dtype="f4")  # chunk (3, 0, 0)
        assert readahead.reserved == 0  # the write dropped the entry fetched ahead
        assert readahead.take(source, (3, 0, 0)) == (False, None)
        np.testing.assert_array_equal(source.read((slice(12, 16),)), 0)


def test_entries_of_a_finished_computation_are_dropped(readahead, variable, storage_options):
    url, _ = variable
    v = _open(url, storage_options)
    v.isel(t=slice(0, 8)).values  # noqa: B018 - a computation that ends
    assert readahead.reserved == 0
    assert not readahead._entries


def test_distributed_workers_read_each_chunk_once(cluster_client, variable, storage_options):
    url, data = variable
    v = _open(url, storage_options)
    h5dask.reset_stats()
    cluster_client.run(h5dask.reset_stats)
    got = float(v.sum(dtype="f8").compute())
    assert got == pytest.approx(float(data.astype("f8").sum()), rel=1e-12)
    np.testing.assert_array_equal(v.values, data)
    worker_io = cluster_client.run(h5dask.stats)
    assert _chunk_reads() == 0
    # no chunk read twice: prefetches are only for tasks queued on the same worker
    assert sum(s["chunk"]["read_requests"] for s in worker_io.values()) == 2 * NCHUNKS


def test_queued_gets_start_together_and_are_each_read_once(readahead, variable,
                                                          storage_options):
    url, data = variable
    with h5dask.File(url, "r", storage_options=storage_options) as f:
        source = f["v"].source()
        owner = object()
        h5dask.reset_stats()
        for t in range(4):
            assert readahead.start(source, (t, 0, 0), owner, launch=False)
        assert _chunk_reads() == 0  # queued only: nothing asked of the store yet
        readahead.launch()
        for t in range(4):
            found, stored = readahead.take(source, (t, 0, 0))
            assert found
            np.testing.assert_array_equal(
                np.frombuffer(stored, dtype="f4").reshape(4, 50, 40), data[4 * t:4 * t + 4])
        assert _chunk_reads() == 4
        assert readahead.reserved == 0


def test_a_queued_get_dropped_before_its_launch_is_never_sent(readahead):
    fetched = []

    async def fetch():
        fetched.append(True)
        return b"", "key"

    owner = object()
    assert readahead._start("s3://b/db/x/0", 10, owner, None, fetch, launch=False)
    assert readahead._start("s3://b/db/x/1", 10, owner, None, fetch, launch=False)
    readahead.forget(["s3://b/db/x/0"])
    readahead.launch()
    sync(asyncio.sleep(0.01))  # the launch, queued on the I/O loop before this, has run
    assert fetched == [True]  # only the entry still wanted was fetched
    assert readahead.reserved == 10


def test_a_block_reads_again_a_chunk_whose_read_ahead_failed(readahead, variable,
                                                             storage_options):
    url, data = variable

    async def fails():
        raise OSError("connection reset")

    with h5dask.File(url, "r", storage_options=storage_options) as f:
        source = f["v"].source()
        h5dask.reset_stats()
        assert readahead._start(object_name(source, (1, 0, 0)), 10, object(), None, fails,
                                launch=True)
        np.testing.assert_array_equal(source.read((slice(0, 12),)), data[0:12])
        assert _chunk_reads() == 3  # chunk 1 read by the block itself, once
        assert readahead.reserved == 0


def test_a_task_waiting_for_room_is_planned_once(readahead, variable, storage_options,
                                                 monkeypatch):
    """A queued task the budget has no room for is looked at again at every task start:
    its chunks are worked out once, and it is still read exactly once."""
    url, data = variable
    planned: dict = {}
    plan_task = lookahead.task_chunks

    def counting(task, value_of, unwrapped=None):
        chunks = plan_task(task, value_of, unwrapped)
        for chunk in chunks:
            planned[chunk[1]] = planned.get(chunk[1], 0) + 1
        return chunks

    monkeypatch.setattr(lookahead, "task_chunks", counting)
    set_budget(2 * CHUNK_BYTES + 2 * 64)  # room for two chunks ahead: most tasks wait
    v = _open(url, storage_options)
    h5dask.reset_stats()
    got = v.sum(dtype="f8").compute(scheduler="threads")
    assert float(got) == pytest.approx(float(data.astype("f8").sum()), rel=1e-12)
    assert _chunk_reads() == NCHUNKS
    assert readahead.used == readahead.started > 0
    assert planned and max(planned.values()) == 1


def _recorded_plans(source, indices, fetched):
    """:func:`plan` of each chunk, its fetch noting the chunk's index in ``fetched``."""
    out = []
    for index in indices:
        name, size, fetch = plan(source, index)

        async def noted(index=index, fetch=fetch):
            fetched.append(index)
            return await fetch()

        out.append((name, size, noted))
    return out


def test_a_claim_starts_the_next_waiting_get_at_once(readahead, variable, storage_options):
    """Budget freed by a task taking its chunk starts the next waiting GET right away,
    not at the next task start; each chunk is still fetched once, with exact bytes."""
    url, data = variable
    with h5dask.File(url, "r", storage_options=storage_options) as f:
        source = f["v"].source()
        fetched: list = []
        plans = _recorded_plans(source, [(t, 0, 0) for t in range(4)], fetched)
        set_budget(2 * plans[0][1])  # room for two chunks
        owner = object()
        readahead.start_in_order(owner, plans)
        sync(asyncio.sleep(0.05))
        assert fetched == [(0, 0, 0), (1, 0, 0)]
        for t in range(4):  # no look-ahead call in between: the takes start the rest
            found, stored = readahead.take(source, (t, 0, 0))
            assert found
            np.testing.assert_array_equal(
                np.frombuffer(stored, dtype="f4").reshape(4, 50, 40), data[4 * t:4 * t + 4])
        assert fetched == [(t, 0, 0) for t in range(4)]
        assert readahead.reserved == 0 and not readahead._waiting


def test_a_waiting_chunk_whose_task_runs_is_never_fetched(readahead, variable,
                                                         storage_options):
    """The look-ahead replaces a computation's waiting chunks with those of the tasks
    still queued: a task that started meanwhile reads its chunk itself, only once."""
    url, _ = variable
    with h5dask.File(url, "r", storage_options=storage_options) as f:
        source = f["v"].source()
        fetched: list = []
        a, b, c = _recorded_plans(source, [(0, 0, 0), (1, 0, 0), (2, 0, 0)], fetched)
        set_budget(a[1])  # room for one chunk
        owner = object()
        readahead.start_in_order(owner, [a, b, c])
        readahead.start_in_order(owner, [a, c])  # b's task runs now
        assert readahead.claim(source, (1, 0, 0)) is None  # b reads it itself
        assert readahead.take(source, (0, 0, 0))[0]  # frees room: c starts, never b
        sync(asyncio.sleep(0.05))
        assert fetched == [(0, 0, 0), (2, 0, 0)]
        assert readahead.take(source, (2, 0, 0))[0]
        assert readahead.reserved == 0


def test_forgetting_a_computation_drops_its_waiting_gets(readahead, variable,
                                                        storage_options):
    url, _ = variable
    with h5dask.File(url, "r", storage_options=storage_options) as f:
        source = f["v"].source()
        fetched: list = []
        plans = _recorded_plans(source, [(t, 0, 0) for t in range(4)], fetched)
        set_budget(plans[0][1])
        owner = object()
        readahead.start_in_order(owner, plans)
        readahead.forget(owner=owner)
        assert readahead.reserved == 0 and not readahead._waiting
        assert readahead.claim(source, (1, 0, 0)) is None
        sync(asyncio.sleep(0.05))
        assert readahead.reserved == 0 and len(fetched) <= 1  # only the one started


def test_a_written_chunk_leaves_the_waiting_list(readahead, variable, storage_options):
    url, _ = variable
    with h5dask.File(url, "r+", storage_options=storage_options) as f:
        source = f["v"].source()
        fetched: list = []
        a, b = _recorded_plans(source, [(0, 0, 0), (3, 0, 0)], fetched)
        set_budget(a[1])
        owner = object()
        readahead.start_in_order(owner, [a, b])
        f["v"][12:16] = np.zeros((4, 50, 40), dtype="f4")  # chunk (3, 0, 0)
        assert readahead.take(source, (0, 0, 0))[0]
        sync(asyncio.sleep(0.05))
        assert fetched == [(0, 0, 0)] and readahead.reserved == 0


def test_an_errored_computation_returns_its_budget(readahead, variable, storage_options):
    """A task that fails while others wait for room: the computation's entries and
    waiting chunks are dropped, the budget is back to 0."""
    url, _ = variable
    set_budget(2 * CHUNK_BYTES)  # most chunks wait for room

    def fail_on_block_5(block, block_info=None):
        if block_info[0]["chunk-location"][0] == 5:
            raise ValueError("boom")
        return block

    v = _open(url, storage_options)
    with pytest.raises(ValueError, match="boom"):
        v.data.map_blocks(fail_on_block_5, dtype="f4").sum().compute(scheduler="threads")
    assert readahead.reserved == 0
    assert not readahead._entries and not readahead._waiting


def test_a_task_whose_chunk_arrived_runs_before_one_still_waiting(readahead):
    """Local computations: the next task waiting on a GET still under way lets a task
    just below it, whose chunk arrived, run first; a task that reads nothing ahead
    keeps dask's order past it."""
    never = asyncio.Event()

    async def slow():
        await never.wait()

    async def fast():
        return b"", "key"

    slow_plan, fast_plan = ("s3://b/db/x/slow", 10, slow), ("s3://b/db/x/fast", 10, fast)
    session = lookahead._Session({}, {})
    readahead.start_in_order(session, [slow_plan, fast_plan])
    sync(asyncio.sleep(0.05))
    session.plans = {"slow": [slow_plan], "fast": [fast_plan]}
    ready = ["other", "fast", "slow"]  # a stack: "slow" is next
    lookahead._run_arrived_first(session, ready)
    assert ready == ["other", "slow", "fast"]
    lookahead._run_arrived_first(session, ready)  # the next task's chunk is here
    assert ready == ["other", "slow", "fast"]
    ready = ["fast", "other", "slow"]
    lookahead._run_arrived_first(session, ready)
    assert ready == ["fast", "other", "slow"]
    readahead.forget(owner=session)
    assert readahead.reserved == 0


@pytest.mark.parametrize(("value", "nbytes"), [
    ("", 64 * 2**20), ("0", 0), ("1048576", 2**20), ("128MiB", 128 * 2**20),
    (" 2 MB ", 2_000_000)])
def test_the_budget_from_the_environment(monkeypatch, value, nbytes):
    import warnings

    from h5dask.readahead import _budget_from_env

    monkeypatch.setenv("H5DASK_READ_AHEAD_BYTES", value)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid value warns about nothing
        assert _budget_from_env() == nbytes


@pytest.mark.parametrize("value", ["lots", "-5", "12 parsecs"])
def test_a_bad_budget_in_the_environment_warns_naming_the_variable(monkeypatch, value):
    from h5dask.errors import ReadAheadSettingWarning
    from h5dask.readahead import DEFAULT_BUDGET, _budget_from_env

    monkeypatch.setenv("H5DASK_READ_AHEAD_BYTES", value)
    with pytest.warns(ReadAheadSettingWarning, match=f"H5DASK_READ_AHEAD_BYTES='{value}'"):
        assert _budget_from_env() == DEFAULT_BUDGET


def test_same_bucket_and_keys_on_two_endpoints_are_never_confused(readahead, variable,
                                                                    storage_options, seaweedfs):
    """A domain copied key for key to another S3 endpoint (a mirror, a staging copy) and
    changed there: reading both in one computation gives each its own values, never the
    bytes fetched ahead from the other endpoint."""
    import json

    import dask

    from h5dask.format.ids import object_prefix
    from h5dask.services.seaweedfs import SeaweedFS

    url, data = variable
    bucket, key = url[len("s3://"):].split("/", 1)
    with SeaweedFS() as other:
        other.create_bucket(bucket)
        source, mirror = seaweedfs.s3_client(), other.s3_client()
        domain = json.loads(source.get_object(Bucket=bucket, Key=f"{key}/.domain.json")
                            ["Body"].read())
        for prefix in (key + "/", object_prefix(domain["root"]) + "/"):
            listed = source.list_objects_v2(Bucket=bucket, Prefix=prefix)
            for obj in listed["Contents"]:  # the domain's objects, key for key
                body = source.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
                mirror.put_object(Bucket=bucket, Key=obj["Key"], Body=body)
        other_options = other.storage_options()
        changed = data + 1
        with h5dask.File(url, "r+", storage_options=other_options) as f:
            f["v"][...] = changed
        here, there = _open(url, storage_options), _open(url, other_options)
        got_here, got_there = dask.compute(here, there)
    np.testing.assert_array_equal(got_here.values, data)
    np.testing.assert_array_equal(got_there.values, changed)


class _QueuedTask:
    """A stand-in for a worker's TaskState in its ready heap (ordered by priority)."""

    __slots__ = ("priority", "__weakref__")

    def __init__(self, priority: int) -> None:
        self.priority = priority


class _Worker:
    """A worker whose ready queue is distributed's HeapSet, counting its full sorts."""

    def __init__(self, tasks: list) -> None:
        from distributed.collections import HeapSet

        worker = self

        class CountingHeapSet(HeapSet):
            def sorted(self):  # noqa: ANN202 - HeapSet's own
                worker.sorts += 1
                return super().sorted()

        self.sorts = 0
        self.state = type("State", (), {})()
        self.state.ready = CountingHeapSet(key=lambda ts: ts.priority)
        for ts in tasks:
            self.state.ready.add(ts)


def test_a_worker_sorts_its_ready_queue_once_per_snapshot_not_at_every_task_start():
    """With 10^4 tasks queued on a worker, the look-ahead at each task start lists the
    next LOOK_AHEAD_TASKS in order without sorting the whole queue again each time
    (O(n log n) per task start made a big graph quadratic on the event loop); a task
    that leaves the queue (stolen) is never listed, one added is listed after the next
    snapshot."""
    pytest.importorskip("distributed")
    tasks = [_QueuedTask(p) for p in range(10_000)]
    worker = _Worker(tasks)
    ready = worker.state.ready
    queue = list(tasks)  # in the order they run
    starts = 1000
    for step in range(starts):
        if step == 500:
            ready.discard(tasks[600])  # stolen by another worker
            queue.remove(tasks[600])
        assert lookahead._next_ready(worker) == queue[: lookahead.LOOK_AHEAD_TASKS]
        assert ready.pop() is queue.pop(0)  # the task starts
    per_snapshot = lookahead.SNAPSHOT_TASKS - lookahead.LOOK_AHEAD_TASKS
    assert worker.sorts <= starts // per_snapshot + 2  # (was one per task start)
    added = _QueuedTask(queue[100].priority - 0.5)  # runs after 100 more tasks
    ready.add(added)
    for p in range(lookahead.RESNAPSHOT_AFTER_ADDED - 1):  # and more, at the end
        ready.add(_QueuedTask(20_000 + p))
    for _ in range(100):
        if added in lookahead._next_ready(worker):
            break
        assert ready.pop() is not added
    else:
        pytest.fail("a task added to the queue was never looked at")
    small = _Worker(tasks[:3])  # a short queue is listed exactly, additions included
    assert lookahead._next_ready(small) == tasks[:3]
    small.state.ready.add(added)
    assert lookahead._next_ready(small) == tasks[:3] + [added]
