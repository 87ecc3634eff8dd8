"""Two runs of the same load at once share their object ids (resumable loads derive
them from the URL, source and options): the lease of :mod:`h5dask.ingest.lease` lets
one write, the other refuses naming it and removes nothing; a run that finds its lease
taken publishes nothing and removes nothing; stale leases of dead runs are taken over.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_resume import assert_reads_as_h5py, chunk_keys, local_domain, write_source

import h5dask
from h5dask.cli import main
from h5dask.errors import LoadInProgressError
from h5dask.format import ids
from h5dask.ingest import lease, load_file
from h5dask.storage import open_location, sync

CONCURRENT_LOAD = Path(__file__).with_name("concurrent_load.py")


def start_load(src: Path, url: str, options: dict, delay: float,
               gate: Path | None = None) -> subprocess.Popen:
    """A load in its own process, each chunk PUT ``delay`` s slower and, given a ``gate``
    file, held until that file exists."""
    gated = [str(gate)] if gate is not None else []
    return subprocess.Popen([sys.executable, str(CONCURRENT_LOAD), str(src), url,
                             json.dumps(options), str(delay), *gated], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)


def outcome(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err[-3000:]
    return out.strip()


def leases(store: Any) -> list[str]:
    return [k for k in sync(store.list("db/")) if lease.is_lease_key(k)]


@pytest.fixture(params=["s3", "file"])
def place(request: Any, tmp_path: Path) -> tuple[str, dict]:
    if request.param == "s3":
        options = request.getfixturevalue("storage_options")
        return f"{request.getfixturevalue('s3_bucket_url')}/concurrent.h5", options
    return local_domain(tmp_path, "concurrent.h5"), {}


def test_a_second_run_while_one_writes_is_refused_naming_it(tmp_path: Path,
                                                            place: tuple[str, dict]) -> None:
    url, options = place
    src = tmp_path / "src.h5"
    write_source(src, seed=5)
    store = open_location(url, options).store
    gate = tmp_path / "go-on"
    first = start_load(src, url, options, delay=0.0, gate=gate)  # holds until the gate
    deadline = time.monotonic() + 60
    while not [k for k in leases(store)] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert first.poll() is None, "the first load ended before the second started"
    second = outcome(start_load(src, url, options, delay=0.0))
    gate.touch()
    assert second.startswith("refused") and f"pid {first.pid}" in second, second
    assert "is running already" in second and "Wait for it to finish" in second
    assert outcome(first) == "published"
    assert_reads_as_h5py(url, options, src)
    assert leases(store) == []


def test_two_runs_started_together_publish_once_with_the_right_data(
        tmp_path: Path, place: tuple[str, dict]) -> None:
    url, options = place
    src = tmp_path / "src.h5"
    write_source(src, seed=6)
    runs = [start_load(src, url, options, delay=0.02) for _ in range(2)]
    results = sorted(outcome(p).split()[0] for p in runs)
    assert results in (["published", "refused"], ["exists", "published"]), results
    assert_reads_as_h5py(url, options, src)
    assert leases(open_location(url, options).store) == []


async def write_lease_async(store: Any, root_prefix: str, pid: int, renewed: float,
                            machine: str | None = None) -> str:
    """A lease as another run would write it."""
    run = os.urandom(16).hex()
    key = f"{root_prefix}/.load-{run}.json"
    body = {"run": run, "host": socket.gethostname(), "pid": pid,
            "machine": lease.this_machine() if machine is None else machine,
            "domain": "x", "started": renewed, "renewed": renewed}
    await store.put(key, json.dumps(body).encode(), kind="metadata")
    return key


def write_lease(store: Any, root_prefix: str, pid: int, renewed: float,
                machine: str | None = None) -> str:
    return sync(write_lease_async(store, root_prefix, pid, renewed, machine))


def backdate(store: Any, key: str, seconds: float) -> None:
    """Make the store (a local directory) show ``key`` written ``seconds`` ago."""
    path = Path(store.root) / key
    then = time.time() - seconds
    os.utime(path, (then, then))


def load_root_prefix(src: Path, url: str, options: dict) -> str:
    """The db/ prefix a load of src into url writes (its ids derive from them)."""
    from h5dask.ingest.load import _load_seed
    from h5dask.ingest.source import open_source

    location = open_location(url, options)
    source = open_source(str(src), None)
    try:
        seed = _load_seed(location.store.identity, location.domain, source, False, None,
                          None, None, 1000)
    finally:
        source.close()
    return ids.object_prefix(ids.new_root_id(seed))


def domain_and_source(tmp_path: Path, name: str, seed: int) -> tuple[str, Path, Any, str]:
    """A file:// domain URL, a source file for it, the domain's store and the db/ prefix
    a load of that source into it writes."""
    url = local_domain(tmp_path, name)
    src = tmp_path / "src.h5"
    write_source(src, seed=seed)
    return url, src, open_location(url).store, load_root_prefix(src, url, {})


def test_a_live_lease_refuses_and_the_refused_run_removes_nothing(tmp_path: Path) -> None:
    url, src, store, prefix = domain_and_source(tmp_path, "held.h5", 7)
    other_chunk = f"{prefix}/d/0000-000000-000000/0_0"  # as the running load wrote it
    sync(store.put(other_chunk, b"written by the other run"))
    held = write_lease(store, prefix, os.getpid(), time.time())  # this process: alive
    with pytest.raises(LoadInProgressError, match=f"pid {os.getpid()}"):
        load_file(src, url, progress=False)
    assert sorted(sync(store.list(prefix + "/"))) == sorted([other_chunk, held])
    with pytest.raises(FileNotFoundError):
        h5dask.File(url)
    run = CliRunner().invoke(main, ["load", "--no-progress", str(src), url])
    assert run.exit_code == 5 and "is running already" in run.output, run.output  # refused


def test_stale_leases_of_dead_runs_are_taken_over(tmp_path: Path) -> None:
    url, src, store, prefix = domain_and_source(tmp_path, "stale.h5", 8)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, timeout=60)
    write_lease(store, prefix, int(dead.stdout), time.time())  # its process is gone
    elsewhere = write_lease(store, prefix, 1, time.time(), machine="elsewhere")
    backdate(store, elsewhere, lease.STALE_AFTER + 1)  # the store last wrote it then
    load_file(src, url, progress=False)
    assert_reads_as_h5py(url, {}, src)
    assert leases(store) == []


def test_a_run_whose_lease_was_taken_publishes_nothing_and_removes_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """E.g. a machine paused past STALE_AFTER: another run took the prefix over."""
    from h5dask.ingest.copy import ChunkCopier

    url, src, store, prefix = domain_and_source(tmp_path, "taken.h5", 9)
    delete_unwritten = ChunkCopier.delete_unwritten

    async def and_another_run_takes_over(self: ChunkCopier) -> None:
        await delete_unwritten(self)
        await write_lease_async(store, prefix, os.getpid(), time.time())

    monkeypatch.setattr(ChunkCopier, "delete_unwritten", and_another_run_takes_over)
    with pytest.raises(LoadInProgressError, match="lost its lease to another run"):
        load_file(src, url, progress=False)
    assert len(chunk_keys(store)) > 0  # the other run's keys too: nothing removed
    with pytest.raises(FileNotFoundError):
        h5dask.File(url)


def test_gc_delete_leaves_the_prefix_of_a_running_load_alone(tmp_path: Path) -> None:
    """gc --delete with min_age 0 while a load writes: the load's lease keeps its prefix
    (else its chunks went, and it published a domain reading fill values there)."""
    from h5dask.admin import gc

    url = local_domain(tmp_path, "busy.h5")
    src = tmp_path / "src.h5"
    write_source(src, seed=10)
    store = open_location(url).store
    running = start_load(src, url, {}, delay=0.05)
    deadline = time.monotonic() + 60
    while len(chunk_keys(store)) < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    result = gc(store.root_url, delete=True, min_age=0)
    assert running.poll() is None, "the load ended before gc ran"
    assert outcome(running) == "published"
    assert_reads_as_h5py(url, {}, src)
    assert [(o.collected, f"pid {running.pid}" in o.loading) for o in result.orphans] == [
        (False, True)]
    assert "kept: a load is writing it" in str(result)
    assert gc(store.root_url, min_age=0).orphans == []


def test_a_load_rerun_while_gc_deletes_its_prefix_waits_for_gc(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gc --delete of an interrupted load's prefix, and a re-run of that load started
    once gc deleted its first chunk: the re-run must not publish over chunks gc is about
    to delete (it refuses naming gc); run after gc, it publishes the right data."""
    from test_resume import kill_a_load

    from h5dask.admin import gc
    from h5dask.storage.local import LocalObjectStore

    url = local_domain(tmp_path, "resumed.h5")
    src = tmp_path / "src.h5"
    write_source(src, seed=3)
    store = open_location(url).store
    kill_a_load(src, url, {}, after_chunks=20)
    assert len(chunk_keys(store)) >= 20
    real_delete = LocalObjectStore.delete
    rerun: dict[str, Any] = {}
    rerun_over = asyncio.Event()

    async def first_chunk_delete_reruns(self: Any, key: str, *, kind: str = "other",
                                        **kw: Any) -> None:
        """The first chunk gc deletes starts the re-run; gc's other chunk deletes wait
        for it to end (a slow store)."""
        if key.endswith(".json") or ".h5dask-clock-" in key:  # (and the clock probes)
            await real_delete(self, key, kind=kind, **kw)
        elif rerun:
            await asyncio.wait_for(rerun_over.wait(), 120)
            await real_delete(self, key, kind=kind, **kw)
        else:
            rerun["started"] = True
            try:
                rerun["published"] = await asyncio.to_thread(load_file, src, url,
                                                             progress=False)
            except LoadInProgressError as exc:
                rerun["refused"] = str(exc)
            finally:
                rerun_over.set()
            await real_delete(self, key, kind=kind, **kw)

    monkeypatch.setattr(LocalObjectStore, "delete", first_chunk_delete_reruns)
    result = gc(store.root_url, delete=True, min_age=0)
    monkeypatch.undo()
    assert rerun.get("started") and [o.collected for o in result.orphans] == [True]
    if "published" in rerun:  # what gc deleted after must not be under a published domain
        assert_reads_as_h5py(url, {}, src)
    assert "h5dask gc" in rerun.get("refused", ""), rerun
    assert chunk_keys(store) == []
    load_file(src, url, progress=False)
    assert_reads_as_h5py(url, {}, src)
    assert leases(store) == []


def test_a_crashed_run_on_a_clock_ahead_is_stale_by_the_stores_clock(tmp_path: Path) -> None:
    """Its lease says renewed an hour from now (its clock), the store wrote it longer
    than STALE_AFTER ago: it is taken over."""
    url, src, store, prefix = domain_and_source(tmp_path, "ahead.h5", 11)
    ahead = write_lease(store, prefix, 4242, time.time() + 3600, machine="node7 ahead")
    backdate(store, ahead, lease.STALE_AFTER + 10)
    load_file(src, url, progress=False)
    assert_reads_as_h5py(url, {}, src)
    assert leases(store) == []


def test_a_live_run_on_a_clock_behind_is_live_by_the_stores_clock(tmp_path: Path) -> None:
    """Its lease says renewed 6 minutes ago (its clock), the store wrote it just now:
    it is live, and the refusal says when the store saw it renewed."""
    url, src, store, prefix = domain_and_source(tmp_path, "behind.h5", 12)
    behind = write_lease(store, prefix, 4242, time.time() - 360, machine="node7 behind")
    with pytest.raises(LoadInProgressError, match=r"lease renewed [0-9] s ago"):
        load_file(src, url, progress=False)
    assert leases(store) == [behind]


def after_write(monkeypatch: pytest.MonkeyPatch, store: Any, key: Any, nth: int,
                then: Any) -> None:
    """Right after the ``nth`` overwrite of ``key()`` (a lease's renewal, a conditional
    overwrite; its creation is not one), await ``then(put)`` (``put``: the store's own
    plain write, unpatched)."""
    put, replace = type(store).put, type(store).put_if_version
    writes = []

    async def replace_then(self: Any, written: str, *args: Any, **kwargs: Any) -> bool:
        replaced = await replace(self, written, *args, **kwargs)
        if written == key():
            writes.append(written)
            if len(writes) == nth:
                await then(put)
        return replaced

    monkeypatch.setattr(type(store), "put_if_version", replace_then)


def test_a_run_stops_renewing_once_its_lease_was_taken_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A paused run that wakes must not write back the lease another run removed as
    stale (then both runs would refuse to publish)."""
    monkeypatch.setattr(lease, "RENEW_EVERY", 0.01)
    store = open_location(local_domain(tmp_path, "paused.h5")).store
    held = lease.LoadLease(store, ids.new_root_id(), "paused.h5")
    after_write(monkeypatch, store, lambda: held.key, 2,  # renewed twice, then taken over
                lambda put: store.delete(held.key, kind="metadata"))

    async def take_over_while_renewing() -> bool:
        # (deleted between renewals: a deletion between the renewer's look and its
        # write is told only by how long the run paused, see the test below)
        await held.acquire()
        renewer = held._renewer
        assert renewer is not None
        done, _ = await asyncio.wait([renewer], timeout=5)
        back = await store.size(held.key) is not None
        await held.release()
        return bool(done) and not back

    assert sync(take_over_while_renewing())
    assert leases(store) == []


def test_gc_leaves_a_prefix_a_load_published_after_gc_listed_the_domains(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A re-run that publishes between gc's listing of the domains and gc's lease: gc
    lists the domains again under its lease and keeps the now referenced prefix."""
    from test_resume import kill_a_load

    from h5dask import admin

    url = local_domain(tmp_path, "published.h5")
    src = tmp_path / "src.h5"
    write_source(src, seed=13)
    store = open_location(url).store
    kill_a_load(src, url, {}, after_chunks=20)
    collect = admin._collect

    async def a_rerun_publishes_first(store: Any, orphans: list) -> list:
        await asyncio.to_thread(load_file, src, url, progress=False)
        return await collect(store, orphans)

    monkeypatch.setattr(admin, "_collect", a_rerun_publishes_first)
    assert admin.gc(store.root_url, delete=True, min_age=0).orphans == []
    assert_reads_as_h5py(url, {}, src)
    assert leases(store) == []


class PausableClock:
    """Stands in for the renewer's elapsed-time clock: ``pause`` jumps it forward."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.now += seconds


def test_a_lease_deleted_while_its_run_paused_is_never_written_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The run pauses between the renewer's look at its lease and its write; meanwhile
    another run takes it over as stale and deletes it (then gc may delete its chunks):
    the lease is not left written back, and the run refuses to publish."""
    monkeypatch.setattr(lease, "RENEW_EVERY", 0.01)
    clock = PausableClock()
    monkeypatch.setattr(lease, "_elapsed", clock, raising=False)
    store = open_location(local_domain(tmp_path, "paused.h5")).store
    held = lease.LoadLease(store, ids.new_root_id(), "paused.h5")
    stat = type(store).stat

    async def paused_after_looking(self: Any, key: str, **kwargs: Any) -> Any:
        found = await stat(self, key, **kwargs)
        if key == held.key and found is not None and held._renewer is not None:
            clock.pause(lease.STALE_AFTER)  # e.g. the machine was suspended here
            await store.delete(held.key, kind="metadata")  # taken over as stale
            monkeypatch.setattr(type(store), "stat", stat)
        return found

    async def pause_then_check() -> None:
        await held.acquire()
        monkeypatch.setattr(type(store), "stat", paused_after_looking)
        renewer = held._renewer
        assert renewer is not None
        done, _ = await asyncio.wait([renewer], timeout=10)
        assert done, "the renewer goes on renewing a lease it may have lost"
        assert await store.stat(held.key) is None, "the renewer wrote the lease back"
        try:
            with pytest.raises(LoadInProgressError, match="lost its lease"):
                await held.check_held()
        finally:
            await held.release()

    sync(pause_then_check())


def test_a_lease_rewritten_by_another_is_lost_for_good(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once the lease object is not the version this run last wrote, the run has lost
    it: check_held refuses and the renewer never writes it again."""
    monkeypatch.setattr(lease, "RENEW_EVERY", 0.01)
    store = open_location(local_domain(tmp_path, "rewritten.h5")).store
    held = lease.LoadLease(store, ids.new_root_id(), "rewritten.h5")
    other = json.dumps({"run": held.run, "host": "elsewhere", "pid": 1}).encode()
    after_write(monkeypatch, store, lambda: held.key, 1,  # renewed, then written by another
                lambda put: put(store, held.key, other + b" ", kind="metadata"))

    async def rewrite_then_check() -> str:
        await held.acquire()
        renewer = held._renewer
        assert renewer is not None
        done, _ = await asyncio.wait([renewer], timeout=10)
        assert done, "the renewer goes on renewing a lease another rewrote"
        try:
            with pytest.raises(LoadInProgressError, match="lost its lease"):
                await held.check_held()
            return (await store.get(held.key, kind="metadata") or b"").decode()
        finally:
            await held.release()

    assert "elsewhere" in sync(rewrite_then_check())


def test_gc_releases_every_lease_it_took_when_taking_a_later_one_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from h5dask.storage.local import LocalObjectStore

    root = tmp_path / "bucket"
    for _ in range(2):
        prefix = root / ids.object_prefix(ids.new_root_id())
        prefix.mkdir(parents=True)
        (prefix / "0_0").write_bytes(b"x")
    create = LocalObjectStore.put_if_absent
    gc_puts = []

    async def second_gc_lease_fails(self: Any, key: str, *args: Any, **kwargs: Any) -> bool:
        if lease.is_lease_key(key):
            gc_puts.append(key)
            if len(gc_puts) == 2:
                raise OSError("store hiccup on the second gc lease")
        return await create(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalObjectStore, "put_if_absent", second_gc_lease_fails)
    with pytest.raises(OSError, match="hiccup"):
        h5dask.gc(f"file://{root}/", delete=True, min_age=0)
    assert len(gc_puts) == 2
    assert sorted(p.name for p in root.rglob(".lease-*")) == []  # the first one released

    async def renewers() -> list:
        return [t for t in asyncio.all_tasks() if "_renew" in repr(t)]

    assert sync(renewers()) == []


def test_a_store_without_write_times_judges_leases_by_their_renewal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead run's lease on a store that tells no modified times is stale by its own
    renewal time (this machine's clock); a live one refuses, saying how it was judged."""
    store = open_location(local_domain(tmp_path, "nomtime.h5")).store
    stat = type(store).stat

    async def no_write_times(self: Any, key: str, **kwargs: Any) -> Any:
        found = await stat(self, key, **kwargs)
        return None if found is None else dataclasses.replace(found, modified=None)

    monkeypatch.setattr(type(store), "stat", no_write_times)
    root = ids.new_root_id()
    prefix = ids.object_prefix(root)
    dead = write_lease(store, prefix, 1, time.time() - 3600, machine="elsewhere")
    first = lease.LoadLease(store, root, "nomtime.h5")
    sync(first.acquire())  # the dead run's lease is taken over
    assert sync(store.stat(dead)) is None
    second = lease.LoadLease(store, root, "nomtime.h5")
    try:
        with pytest.raises(LoadInProgressError, match="the store tells no write times"):
            sync(second.acquire())
    finally:
        sync(first.release())


@pytest.fixture
def live_process() -> Any:
    """Another process of this machine, alive (as a running load's would be)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_a_local_load_whose_lease_looks_old_lives_while_its_process_does(
        tmp_path: Path, live_process: subprocess.Popen) -> None:
    """On this machine its process decides, not its lease's age (a clock step or stalled
    renewals): gc --delete leaves the prefix of a running load alone."""
    store = open_location(local_domain(tmp_path, "stepped.h5")).store
    prefix = ids.object_prefix(ids.new_root_id())
    chunk = f"{prefix}/d/0000-000000-000000/0_0"
    sync(store.put(chunk, b"written by the running load"))
    held = write_lease(store, prefix, live_process.pid, time.time())
    backdate(store, chunk, 4000)
    backdate(store, held, lease.STALE_AFTER + 100)  # the clock stepped
    found = h5dask.gc(store.root_url, delete=True, min_age=0)
    assert [o.collected for o in found.orphans] == [False]
    assert sorted(sync(store.list(prefix + "/"))) == sorted([chunk, held])


def test_a_reused_pid_does_not_keep_a_dead_runs_lease(
        tmp_path: Path, live_process: subprocess.Popen) -> None:
    """The lease records its process's start time: another process that later got the
    same pid does not make it live."""
    stat = Path(f"/proc/{live_process.pid}/stat").read_text()
    start = int(stat[stat.rindex(")") + 2:].split()[19])  # field 22: its start time
    def holder(pid_started: int) -> lease.LeaseHolder:
        body = {"run": "r", "pid": live_process.pid, "pid_started": pid_started,
                "machine": lease.this_machine()}
        return lease.LeaseHolder.parse("k", json.dumps(body).encode(), time.time())

    assert holder(start).live(time.time() + 10 * lease.STALE_AFTER)  # its process decides
    assert not holder(start - 1).live(time.time())
    assert lease.process_start(live_process.pid) == start


def _first_listings_meet(monkeypatch: pytest.MonkeyPatch, store: Any, n: int) -> None:
    """The first ``n`` listings of the store wait for each other: ``n`` takers look at
    the prefix at the very same moment (whatever each wrote before is written)."""
    list_dir = type(store).list_dir
    arrived: list[asyncio.Event] = []
    all_there = asyncio.Event()

    async def meet(self: Any, prefix: str = "") -> Any:
        if len(arrived) < n:
            arrived.append(asyncio.Event())
            if len(arrived) == n:
                all_there.set()
            await asyncio.wait_for(all_there.wait(), 30)
        return await list_dir(self, prefix)

    monkeypatch.setattr(type(store), "list_dir", meet)


@pytest.mark.parametrize("kinds", [("gc", "gc"), ("load", "gc"), ("load", "load")])
def test_takers_at_the_same_moment_exactly_one_holds_the_prefix(
        tmp_path: Path, place: tuple[str, dict], monkeypatch: pytest.MonkeyPatch,
        kinds: tuple[str, str]) -> None:
    """Two runs (loads or gcs) take the lease on one prefix at the same moment: exactly
    one holds it (a conditional create decides), the other is told who does; neither
    both (then gc deletes what a load publishes) nor neither (a load refused naming a gc
    that then kept the prefix too)."""
    url, options = place
    store = open_location(url, options).store
    root = ids.new_root_id()
    prefix = ids.object_prefix(root) + "/"

    def taker(kind: str) -> Any:
        return (lease.LoadLease(store, root, "x.h5") if kind == "load"
                else lease.GcLease(store, prefix))

    async def take(held: Any) -> bool:
        if isinstance(held, lease.GcLease):
            return not (await held.take()).live
        try:
            await held.acquire()
        except LoadInProgressError:
            return False
        return True

    takers = [taker(k) for k in kinds]
    _first_listings_meet(monkeypatch, store, 2)

    async def both() -> list[bool]:
        try:
            return list(await asyncio.gather(*(take(t) for t in takers)))
        finally:
            monkeypatch.undo()
            remaining = [k for k in (await store.list(prefix)) if lease.is_lease_key(k)]
            holding = [t for t in takers if t._renewer is not None]
            assert len(remaining) == len(holding), (remaining, holding)
            await asyncio.gather(*(t.release() for t in takers))

    assert sorted(sync(both())) == [False, True]
    assert [k for k in sync(store.list(prefix)) if lease.is_lease_key(k)] == []


def test_a_conditional_create_lets_exactly_one_writer_win(place: tuple[str, dict]) -> None:
    """What leases rely on: SeaweedFS honours If-None-Match: * (412 for the others), a
    local directory link(2); of 8 writers at once exactly one creates the object, and
    its bytes are the winner's."""
    url, options = place
    store = open_location(url, options).store
    assert store.atomic_create
    key = f"{ids.object_prefix(ids.new_root_id())}/.lease-00000001.json"

    async def race() -> tuple[list[bool], bytes | None]:
        won = await asyncio.gather(*(store.put_if_absent(key, b"%d" % i) for i in range(8)))
        return list(won), await store.get(key, kind="metadata")

    won, body = sync(race())
    assert won.count(True) == 1 and body == b"%d" % won.index(True)
    assert sync(store.put_if_absent(key, b"later")) is False
    assert sync(store.get(key, kind="metadata")) == body
    sync(store.delete(key))


def test_many_gcs_at_once_one_holds(place: tuple[str, dict]) -> None:
    url, options = place
    store = open_location(url, options).store
    prefix = ids.object_prefix(ids.new_root_id()) + "/"
    gcs = [lease.GcLease(store, prefix) for _ in range(5)]

    async def all_at_once() -> list[bool]:
        try:
            return [not found.live for found in
                    await asyncio.gather(*(g.take() for g in gcs))]
        finally:
            await asyncio.gather(*(g.release() for g in gcs))

    assert sync(all_at_once()).count(True) == 1
    assert leases(store) == [] or not any(k.startswith(prefix) for k in leases(store))


def test_a_check_during_a_renewal_does_not_mistake_it_for_a_loss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gc asks whether it still holds its lease before every batch of deletes: a check
    landing between the renewer's write and its note of the new version must not see
    the renewal as another's write (gc would stop, and the lease counted lost for good)."""
    monkeypatch.setattr(lease, "RENEW_EVERY", 0.01)
    store = open_location(local_domain(tmp_path, "renewing.h5")).store
    held = lease.GcLease(store, ids.object_prefix(ids.new_root_id()) + "/")
    checks: list[asyncio.Task] = []

    async def check_right_after_the_write(put: Any) -> None:
        checks.append(asyncio.ensure_future(held.still_held()))
        await asyncio.sleep(0.05)  # the check runs now, if nothing holds it back

    after_write(monkeypatch, store, lambda: held.key, 1, check_right_after_the_write)

    async def renew_and_check() -> bool:
        assert not (await held.take()).live
        try:
            while not checks:
                await asyncio.sleep(0.01)
            return await checks[0] and not held.lost
        finally:
            await held.release()

    assert sync(renew_and_check())


def test_a_crashed_runs_lease_is_collected_by_the_next_load(tmp_path: Path) -> None:
    """A run that died without deleting its lease (crash, network) leaves it: the next
    run of the load judges it stale (its process is gone), takes the prefix with the
    next generation and removes it."""
    url, src, store, prefix = domain_and_source(tmp_path, "crashed.h5", 14)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, timeout=60, check=True)
    body = {"run": os.urandom(16).hex(), "kind": "load", "pid": int(dead.stdout),
            "machine": lease.this_machine(), "renewed": time.time()}
    left = f"{prefix}/.lease-00000007.json"
    sync(store.put(left, json.dumps(body).encode(), kind="metadata"))
    created = []
    put_if_absent = type(store).put_if_absent

    async def noted(self: Any, key: str, *args: Any, **kwargs: Any) -> bool:
        created.append(key)
        return await put_if_absent(self, key, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(store), "put_if_absent", noted)
        load_file(src, url, progress=False)
    assert created == [f"{prefix}/.lease-00000008.json"]
    assert_reads_as_h5py(url, {}, src)
    assert leases(store) == []


def test_the_loser_of_a_conditional_create_never_deletes_the_winners_lease(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both create the same generation's lease at once; the one that lost releases
    (gc's clean-up does so for every lease it tried): the winner's lease stays."""
    monkeypatch.setattr(lease, "_elapsed", lambda: 10.0)  # e.g. a machine booted 10 s ago
    store = open_location(local_domain(tmp_path, "loser.h5")).store
    prefix = ids.object_prefix(ids.new_root_id()) + "/"
    gcs = [lease.GcLease(store, prefix) for _ in range(2)]
    _first_listings_meet(monkeypatch, store, 2)

    async def race_then_release_the_loser() -> list[str]:
        found = await asyncio.gather(*(g.take() for g in gcs))
        winner, loser = (gcs[0], gcs[1]) if not found[0].live else (gcs[1], gcs[0])
        await loser.release()
        try:
            return [k for k in await store.list(prefix) if lease.is_lease_key(k)]
        finally:
            await winner.release()

    assert sync(race_then_release_the_loser()) == [f"{prefix}.lease-00000001.json"]


def test_a_conditional_overwrite_writes_only_the_version_read(place: tuple[str, dict]
                                                              ) -> None:
    """What lease renewals rely on: SeaweedFS honours If-Match (412 for another version,
    and for a deleted object), a local directory compares the file's version; a missing
    object or another version is never overwritten."""
    url, options = place
    store = open_location(url, options).store
    assert store.atomic_replace
    key = f"{ids.object_prefix(ids.new_root_id())}/.lease-00000001.json"
    sync(store.put(key, b"a", kind="metadata"))
    first = sync(store.stat(key))
    assert sync(store.put_if_version(key, b"b", first)) is True
    assert sync(store.put_if_version(key, b"c", first)) is False  # b's version now
    assert sync(store.get(key, kind="metadata")) == b"b"
    second = sync(store.stat(key))
    sync(store.delete(key))
    assert sync(store.put_if_version(key, b"d", second)) is False  # gone
    assert sync(store.stat(key)) is None
    # another writer's object (S3's ETag is the bytes' MD5: a lease's hold its run id)
    assert sync(store.put_if_absent(key, b"x")) is True
    assert sync(store.put_if_version(key, b"e", second)) is False
    assert sync(store.get(key, kind="metadata")) == b"x"
    sync(store.delete(key))


def test_a_renewal_delayed_past_a_takeover_never_overwrites_a_new_lease_of_its_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run A's renewal is on its way when A pauses past the TTL; gc takes the prefix over
    (A stale), finishes and releases; a re-run C takes it with the same generation's key
    A had. A's late renewal then lands: C still holds its lease (and A neither rewrote
    nor deleted it)."""
    store = open_location(f"file://{tmp_path}/bucket/a.h5").store
    root = ids.new_root_id()
    skew = [0.0]
    real_elapsed = lease._elapsed
    monkeypatch.setattr(lease, "_elapsed", lambda: real_elapsed() + skew[0])
    monkeypatch.setattr(lease, "RENEW_EVERY", 0.02)
    cls = type(store)

    async def scenario() -> None:
        started, go = asyncio.Event(), asyncio.Event()
        a = lease.LoadLease(store, root, "a.h5")

        def delayed(real: Any) -> Any:
            async def write(self: Any, key: str, data: bytes, *args: Any, **kw: Any) -> Any:
                if key == a.key and a.run.encode() in data and not go.is_set():
                    started.set()
                    await go.wait()  # A's renewal is on its way ... for 400 s
                return await real(self, key, data, *args, **kw)
            return write

        for name in ("put", "put_if_version"):  # whichever a renewal writes with
            if hasattr(cls, name):
                monkeypatch.setattr(cls, name, delayed(getattr(cls, name)))
        await a.acquire()
        await asyncio.wait_for(started.wait(), 30)
        monkeypatch.setattr(lease, "RENEW_EVERY", 1000.0)  # no more renewals but A's
        skew[0] += 400
        path = tmp_path / "bucket" / a.key
        st = path.stat()
        os.utime(path, (st.st_atime - 400, st.st_mtime - 400))
        gc = lease.GcLease(store, a.prefix)
        assert not (await gc.take()).live  # A judged stale: its lease deleted
        await gc.release()
        c = lease.LoadLease(store, root, "a.h5")
        await c.acquire()
        assert c.key == a.key  # the generations restarted: the same key
        go.set()
        assert a._renewer is not None
        await asyncio.wait_for(a._renewer, 30)
        assert a.lost
        await c.check_held()  # C holds its lease still
        assert [h.run for h in await lease.live_holders(store, a.prefix)] == [c.run]
        await a.release()
        await c.release()

    sync(scenario())
