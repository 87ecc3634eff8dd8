"""h5dask.rm / h5dask.gc / list_domains on file:// and real S3 (SeaweedFS)."""

from __future__ import annotations

import json
import os
import time
import uuid

import numpy as np
import pytest

import h5dask
from h5dask import gc, list_domains, rm
from h5dask.errors import DomainNotFoundError, FolderNotEmptyError
from h5dask.format.ids import object_prefix
from h5dask.storage import open_location, sync


@pytest.fixture(params=["file", "s3"])
def place(request, tmp_path):
    """(URL of a fresh folder, storage_options)."""
    if request.param == "file":
        return f"file://{tmp_path}/bucket", {"bucket_root": str(tmp_path / "bucket")}
    return request.getfixturevalue("s3_bucket_url"), dict(
        request.getfixturevalue("storage_options"))


def _write(url: str, options: dict, n: int = 3) -> str:
    with h5dask.File(url, "w", storage_options=options) as f:
        f.create_dataset("x", data=np.arange(10.0 * n), chunks=(10,))
        return f.id


def _keys(url: str, options: dict, root: str) -> list[str]:
    store = open_location(url, options).store
    return sync(store.list(object_prefix(root) + "/"))


def test_rm_removes_the_domain_and_all_its_objects(place):
    base, options = place
    keep = _write(f"{base}/home/keep.h5", options)
    root = _write(f"{base}/home/gone.h5", options)
    assert len(_keys(f"{base}/home/gone.h5", options, root)) == 5  # group, dataset, 3 chunks
    dry = rm(f"{base}/home/gone.h5", dry_run=True, storage_options=options)
    # 5 objects in db/, .domain.json and the consolidated metadata beside it
    assert dry.objects == 7 and len(_keys(f"{base}/home/gone.h5", options, root)) == 5
    removal = rm(f"{base}/home/gone.h5", storage_options=options)
    assert removal.domains == [f"{base}/home/gone.h5"] and removal.objects == 7
    assert "removed 1 domain(s), 7 object(s)" in str(removal)
    assert _keys(f"{base}/home/gone.h5", options, root) == []
    with pytest.raises(DomainNotFoundError):
        h5dask.File(f"{base}/home/gone.h5", storage_options=options)
    with pytest.raises(DomainNotFoundError):
        rm(f"{base}/home/gone.h5", storage_options=options)
    with h5dask.File(f"{base}/home/keep.h5", storage_options=options) as f:  # untouched
        assert f.id == keep and f["x"][...].sum() == sum(range(30))


def test_rm_refuses_a_folder_unless_recursive(place):
    base, options = place
    for name in ("a.h5", "sub/b.h5"):
        _write(f"{base}/home/{name}", options)
    with pytest.raises(FolderNotEmptyError, match="--recursive"):
        rm(f"{base}/home/", storage_options=options)
    assert len(list_domains(f"{base}/home/", options)) == 2
    removal = rm(f"{base}/home", recursive=True, storage_options=options)
    assert sorted(removal.domains) == [f"{base}/home/a.h5", f"{base}/home/sub/b.h5"]
    assert list_domains(f"{base}/", options) == []


def test_gc_finds_orphans_of_an_interrupted_load_and_spares_young_ones(place):
    base, options = place
    live = _write(f"{base}/live.h5", options)
    orphan = _write(f"{base}/interrupted.h5", options)
    store = open_location(f"{base}/live.h5", options).store
    domain_key = open_location(f"{base}/interrupted.h5", options).domain_key
    sync(store.delete(domain_key))  # as if the load stopped before publishing it
    bucket = store.root_url
    if base.startswith("s3://"):
        # the S3 bucket is shared by the session's tests: look at this test's orphan only
        found = [o for o in gc(bucket, min_age=3600, storage_options=options).orphans
                 if o.prefix == object_prefix(orphan) + "/"]
    else:
        found = gc(bucket, min_age=3600, storage_options=options).orphans
    assert [(o.prefix, o.objects, o.collected) for o in found] == [
        (object_prefix(orphan) + "/", 5, False)]  # too young: a load may be running
    if base.startswith("s3://"):
        return  # deleting every old orphan of the shared bucket is not this test's call
    result = gc(bucket, delete=True, min_age=0, storage_options=options)
    assert [(o.prefix, o.collected) for o in result.orphans] == [
        (object_prefix(orphan) + "/", True)]
    assert "1 orphaned prefix(es), 5 objects deleted" in str(result)
    assert _keys(f"{base}/live.h5", options, orphan) == []
    assert len(_keys(f"{base}/live.h5", options, live)) == 5
    assert gc(bucket, min_age=0, storage_options=options).orphans == []


def test_gc_needs_the_bucket_root(s3_bucket_url, storage_options):
    with pytest.raises(ValueError, match="not its root"):
        gc(f"{s3_bucket_url}/home/", storage_options=storage_options)


def test_folders_written_by_hsds_are_removed_with_recursive(tmp_path):
    bucket = tmp_path / "bucket"
    (bucket / "home").mkdir(parents=True)
    (bucket / "home" / ".domain.json").write_text(json.dumps({"owner": "admin"}))
    _write(f"file://{bucket}/home/a.h5", {})
    removal = rm(f"file://{bucket}/home/", recursive=True)
    assert removal.objects == 8  # 5 in db/, .domain.json, consolidated, the folder's
    assert not (bucket / "home" / ".domain.json").exists()
    assert list((bucket / "db").iterdir()) == []


def test_listed_domain_urls_open_the_domains_listed(place):
    """Names with '%' and spaces: every URL list_domains gives opens the domain it names
    (a file:// URL is percent-encoded, as File.url is: 'a%41' read back as 'aA' before)."""
    base, options = place
    names = ["a%41.h5", "with space.h5", "plain.h5"]
    for i, name in enumerate(names):
        with h5dask.File(f"{base}/odd/{name}", "w", storage_options=options) as f:
            f.attrs["n"] = i
    listed = list_domains(f"{base}/odd/", options)
    assert len(listed) == 3
    seen = set()
    for url in listed:
        with h5dask.File(url, "r", storage_options=options) as f:
            seen.add(int(f.attrs["n"]))
            assert f.url == url
    assert seen == {0, 1, 2}


# -- gc and leases: the store's clock, leases lost mid-run, stale leases left behind -----
@pytest.fixture
def own_bucket(request, tmp_path):
    """(bucket root URL, storage_options) of a bucket of its own, local or SeaweedFS (gc
    --delete with a small min_age must not touch other tests' objects)."""
    if request.param == "file":
        return f"file://{tmp_path}/bucket", {}
    seaweedfs = request.getfixturevalue("seaweedfs")
    bucket = f"gc-{uuid.uuid4().hex[:12]}"
    seaweedfs.create_bucket(bucket)
    return f"s3://{bucket}", dict(seaweedfs.storage_options())


def _orphan(base: str, options: dict, name: str) -> str:
    """A domain's objects without its .domain.json (an interrupted load): its db/ prefix."""
    root = _write(f"{base}/{name}", options)
    location = open_location(f"{base}/{name}", options)
    sync(location.store.delete(location.domain_key))
    return object_prefix(root) + "/"


@pytest.mark.parametrize("own_bucket", ["file", "s3"], indirect=True)
def test_gc_judges_ages_by_the_stores_clock_not_this_machines(own_bucket, monkeypatch):
    """A laptop whose clock runs 2 h ahead of the store's: an orphan the store wrote just
    now (a load may be writing it) is young, in the report and for --delete."""
    base, options = own_bucket
    prefix = _orphan(base, options, "young.h5")
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 7200)
    report = gc(base, min_age=3600, storage_options=options)
    assert [(o.prefix, o.collected) for o in report.orphans] == [(prefix, False)]
    assert report.orphans[0].age_seconds < 600
    deleted = gc(base, delete=True, min_age=3600, storage_options=options)
    assert [(o.prefix, o.collected) for o in deleted.orphans] == [(prefix, False)]
    assert len(sync(open_location(f"{base}/x.h5", options).store.list(prefix))) == 5


@pytest.mark.parametrize("own_bucket", ["file", "s3"], indirect=True)
def test_gc_stops_deleting_at_once_when_it_loses_its_lease(own_bucket, monkeypatch):
    """gc --delete's lease on a prefix is taken over after its first delete (e.g. gc
    paused past the lease's TTL and a load took the prefix): not one more delete, and a
    clear error saying what happened and what to do."""
    from h5dask import admin
    from h5dask.errors import LeaseLostError
    from h5dask.ingest.lease import is_lease_key

    base, options = own_bucket
    prefix = _orphan(base, options, "taken.h5")
    store = open_location(f"{base}/x.h5", options).store
    monkeypatch.setattr(admin, "DELETE_BATCH", 1)
    delete = type(store).delete
    deleted = []

    async def lease_taken_after_the_first_delete(self, key, **kwargs):
        await delete(self, key, **kwargs)
        if not is_lease_key(key) and key.startswith(prefix) and "-clock-" not in key:
            deleted.append(key)
            if len(deleted) == 1:  # another takes the prefix over: gc's lease is gone
                for k in await self.list(prefix):
                    if is_lease_key(k):
                        await delete(self, k)

    monkeypatch.setattr(type(store), "delete", lease_taken_after_the_first_delete)
    with pytest.raises(LeaseLostError, match=f"lost its lease on {prefix}.*run it again"):
        gc(base, delete=True, min_age=0, storage_options=options)
    assert len(deleted) == 1
    assert len(sync(store.list(prefix))) == 4  # the other 4 objects are still there


@pytest.mark.parametrize("own_bucket", ["file", "s3"], indirect=True)
def test_gc_sends_no_delete_once_paused_past_its_lease_and_reports_a_late_loss(
        own_bucket, monkeypatch):
    """With the default DELETE_BATCH: gc pauses (laptop asleep) past its lease's TTL right
    after its first delete: the deletes still waiting for a request slot are never sent.
    And a loss found only after the last delete (its lease deleted by another while the
    batch ran) is reported, not taken for a finished collection."""
    from h5dask.errors import LeaseLostError
    from h5dask.ingest import lease

    base, options = own_bucket
    options = {**options, "max_concurrency": 1}  # the others wait for the slot
    prefix = _orphan(base, options, "paused.h5")
    store = open_location(f"{base}/x.h5", options).store
    real_delete, real_elapsed = type(store)._delete, lease._elapsed
    paused, deleted = [0.0], []
    monkeypatch.setattr(lease, "_elapsed", lambda: real_elapsed() + paused[0])

    async def pause_after_the_first_delete(self, key):
        await real_delete(self, key)
        if not lease.is_lease_key(key) and key.startswith(prefix) and "-clock-" not in key:
            deleted.append(key)
            paused[0] = lease.STALE_AFTER  # as long as a lease lives unrenewed

    monkeypatch.setattr(type(store), "_delete", pause_after_the_first_delete)
    with pytest.raises(LeaseLostError, match=f"lost its lease on {prefix}.*after 1 deletes"):
        gc(base, delete=True, min_age=0, storage_options=options)
    assert len(deleted) == 1 and len(sync(store.list(prefix))) == 5  # 4 + gc's lease

    async def lease_deleted_by_another_meanwhile(self, key):
        await real_delete(self, key)
        if not lease.is_lease_key(key) and "-clock-" not in key and not deleted:
            deleted.append(key)
            for k in await self._list(prefix):  # (raw: gc holds the only request slot)
                if lease.is_lease_key(k):
                    await real_delete(self, k)

    deleted.clear()
    paused[0] = 0.0
    for k in sync(store.list(prefix)):  # the lost lease (stale in 300 s: collected then)
        if lease.is_lease_key(k):
            sync(store.delete(k))
    monkeypatch.setattr(type(store), "_delete", lease_deleted_by_another_meanwhile)
    with pytest.raises(LeaseLostError, match=f"lost its lease on {prefix}"):
        gc(base, delete=True, min_age=0, storage_options=options)


@pytest.mark.parametrize("own_bucket", ["file", "s3"], indirect=True)
def test_gc_collects_stale_leases_a_published_load_left_behind(own_bucket, monkeypatch):
    """A load published its domain but could not delete its lease (crash, network): gc
    removes such stale leases (dead owner) from the domain's prefix, and leaves a live
    one and every object of the domain alone."""
    import os
    import socket
    import subprocess
    import sys

    from h5dask.ingest import lease

    base, options = own_bucket
    root = _write(f"{base}/done.h5", options)
    prefix = object_prefix(root) + "/"
    store = open_location(f"{base}/done.h5", options).store
    objects = sync(store.list(prefix))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, timeout=60, check=True)

    def lease_of(pid: int) -> str:
        run = uuid.uuid4().hex
        body = {"run": run, "host": socket.gethostname(), "pid": pid, "domain": "done.h5",
                "machine": lease.this_machine(), "started": 0.0, "renewed": 0.0}
        sync(store.put(f"{prefix}.load-{run}.json", json.dumps(body).encode()))
        return f"{prefix}.load-{run}.json"

    stale, live = lease_of(int(dead.stdout)), lease_of(os.getpid())
    report = gc(base, min_age=0, storage_options=options)
    assert report.stale_leases == [stale] and "1 stale lease(s)" in str(report)
    assert sorted(sync(store.list(prefix))) == sorted([*objects, stale, live])  # dry run
    gc(base, delete=True, min_age=0, storage_options=options)
    assert sorted(sync(store.list(prefix))) == sorted([*objects, live])
    with h5dask.File(f"{base}/done.h5", storage_options=options) as f:
        assert f["x"][...].sum() == sum(range(30))


def test_gc_removes_clock_probes_a_crash_left(tmp_path):
    """gc and lease-takers read the store's clock from a probe object they delete at
    once; one a crash left is removed by gc --delete once older than a lease's TTL."""
    import os

    from h5dask.ingest import lease

    base = f"file://{tmp_path}/bucket"
    root = _write(f"{base}/a.h5", {})
    old = [f"db/.h5dask-clock-{uuid.uuid4().hex}",
           f"{object_prefix(root)}/.h5dask-clock-{uuid.uuid4().hex}"]
    young = f"db/.h5dask-clock-{uuid.uuid4().hex}"
    store = open_location(f"{base}/a.h5").store
    for key in [*old, young]:
        sync(store.put(key, b""))
    then = time.time() - lease.STALE_AFTER - 10
    for key in old:
        os.utime(tmp_path / "bucket" / key, (then, then))
    assert sorted(gc(base, min_age=0).stale_leases) == sorted(old)
    gc(base, delete=True, min_age=0)
    assert [sync(store.stat(k)) is None for k in [*old, young]] == [True, True, False]


@pytest.mark.parametrize("refusal", ["EROFS", "EACCES"])
def test_gc_reports_on_a_read_only_bucket_directory_by_this_machines_clock(
        tmp_path, monkeypatch, refusal):
    """A bucket directory on a read-only mount (or not writable by this user): gc
    without --delete cannot write its clock probe, so it judges ages by this machine's
    clock and says so instead of failing; a write there names the key."""
    import errno
    import os

    from h5dask.errors import StoragePermissionError
    from h5dask.storage import local

    base = f"file://{tmp_path}/bucket"
    prefix = _orphan(base, {}, "orphan.h5")

    def refused(directory, name):
        code = getattr(errno, refusal)
        raise OSError(code, os.strerror(code), name)

    monkeypatch.setattr(local, "_create_temporary", refused)  # every write, as on EROFS
    report = gc(base, min_age=0)
    assert report.local_clock and [o.prefix for o in report.orphans] == [prefix]
    store = open_location(f"{base}/orphan.h5").store
    with pytest.raises(StoragePermissionError, match=r"db/x cannot be written.*read-only"):
        sync(store.put("db/x", b"x"))


def test_rm_raises_a_failed_delete_only_after_the_other_deletes_ended(tmp_path, monkeypatch):
    """One delete of rm fails at once while the others are slower: rm used to raise
    while they still ran (so they could remove what was written after rm returned).
    Now it raises once they all ended."""
    import asyncio

    from h5dask.errors import StoragePermissionError

    base, options = f"file://{tmp_path}/bucket", {"bucket_root": str(tmp_path / "bucket")}
    root = _write(f"{base}/home/gone.h5", options)
    store = open_location(f"{base}/home/gone.h5", options).store
    chunk_prefix = object_prefix(root)
    real_delete = type(store)._delete

    async def first_chunk_refused(self, key):
        if key.startswith(chunk_prefix) and key.endswith("/0"):
            raise StoragePermissionError(f"denied: {key}")
        await asyncio.sleep(0.05)  # the others end after the refusal
        await real_delete(self, key)

    monkeypatch.setattr(type(store), "_delete", first_chunk_refused)
    with pytest.raises(StoragePermissionError, match="denied"):
        rm(f"{base}/home/gone.h5", storage_options=options)
    # every other object of db/ was deleted before the error reached the caller (listed
    # straight from the file system: the store's request slots would queue a listing
    # behind deletes still running)
    left = [name for _, _, names in os.walk(tmp_path / "bucket" / chunk_prefix)
            for name in names]
    assert left == ["0"]
