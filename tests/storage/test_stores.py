"""The object-store contract on memory://, file:// and real S3 (SeaweedFS), plus retries,
bounded concurrency, parallel ranged GETs and the errors of the S3 path."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pickle
import threading
import time
import uuid

import numpy as np
import obstore
import pytest
from storage_backends import BACKENDS, Backend, make_backend

import h5dask
from h5dask.errors import BucketNotFoundError, StorageError, StoragePermissionError
from h5dask.storage import RetryPolicy, StoreTuning, TransientError, open_location, sync
from h5dask.storage.fsspec_store import FsspecObjectStore
from h5dask.storage.local import LocalObjectStore


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Backend:
    return make_backend(request, tmp_path)


def test_store_contract(backend: Backend) -> None:
    store = backend.store()
    p = backend.domain("scratch")  # a prefix of this test's own (the S3 bucket is shared)
    blob = bytes(range(256)) * 3
    sync(store.put(f"{p}/db/a/b/obj", blob))
    sync(store.put(f"{p}/db/a/c", b""))
    sync(store.put(f"{p}/other/x", memoryview(b"mv")))
    assert sync(store.get(f"{p}/db/a/b/obj")) == blob
    assert sync(store.get(f"{p}/db/a/c")) == b""
    assert sync(store.get(f"{p}/other/x")) == b"mv"
    assert sync(store.get(f"{p}/db/a/missing")) is None
    assert sync(store.get(f"{p}/db/a")) is None  # a "directory" is not an object
    # sizes without reading (linked files are checked by their size)
    assert [sync(store.size(f"{p}/{k}")) for k in ("db/a/b/obj", "db/a/c", "db/a/missing",
                                                    "db/a")] == [len(blob), 0, None, None]
    assert sync(store.get(f"{p}/db/a/b/obj", byte_range=(10, 20))) == blob[10:20]
    assert sync(store.get(f"{p}/db/a/b/obj", byte_range=(700, 800))) == blob[700:]  # the end
    assert sync(store.get(f"{p}/db/a/b/obj", byte_range=(900, 910))) == b""  # past the end
    assert sync(store.get(f"{p}/db/a/b/obj", byte_range=(5, 5))) == b""
    with pytest.raises(ValueError, match="byte range"):
        sync(store.get(f"{p}/db/a/b/obj", byte_range=(5, 2)))
    assert sync(store.list(f"{p}/db/")) == [f"{p}/db/a/b/obj", f"{p}/db/a/c"]
    assert sync(store.list(f"{p}/db/a/b")) == [f"{p}/db/a/b/obj"]
    assert sync(store.list(f"{p}/")) == [f"{p}/db/a/b/obj", f"{p}/db/a/c", f"{p}/other/x"]
    assert sync(store.list(f"{p}/nothing/")) == []
    assert sync(store.get_many([f"{p}/db/a/c", f"{p}/nope", f"{p}/other/x"])) == [
        b"", None, b"mv"]
    sync(store.put(f"{p}/db/a/c", b"replaced"))
    assert sync(store.get(f"{p}/db/a/c")) == b"replaced"
    sync(store.delete(f"{p}/db/a/c"))
    sync(store.delete(f"{p}/db/a/c"))  # deleting a missing object is fine
    assert sync(store.get(f"{p}/db/a/c")) is None
    assert sync(store.list(f"{p}/")) == [f"{p}/db/a/b/obj", f"{p}/other/x"]
    if backend.kind != "s3":  # a fresh bucket root of its own: listing everything
        assert sync(store.list("")) == [f"{p}/db/a/b/obj", f"{p}/other/x"]


def test_stat_tells_the_stores_own_write_time(backend: Backend) -> None:
    """What lease ages are judged by (h5dask.ingest.lease): the time the store gave the
    object, the same as its listing shows (HTTP dates: whole seconds)."""
    store = backend.store()
    p = backend.domain("modified")
    sync(store.put(f"{p}/db/r/.load-x.json", b"{}"))
    found = sync(store.stat(f"{p}/db/r/.load-x.json"))
    listed = sync(store.list_modified(f"{p}/db/"))[f"{p}/db/r/.load-x.json"]
    assert found is not None and found.modified is not None
    assert abs(found.modified - listed) < 1.01


def test_stats_count_requests_and_bytes(backend: Backend) -> None:
    store = backend.store()
    h5dask.reset_stats()
    sync(store.put("k1", b"12345", kind="chunk"))
    sync(store.put("k2", b"abc", kind="metadata"))
    sync(store.get("k1", kind="chunk"))
    sync(store.get("k1", kind="chunk", byte_range=(1, 3)))
    sync(store.get("gone", kind="chunk"))
    sync(store.list(""))
    sync(store.delete("k2"))
    s = h5dask.stats()
    assert s["chunk"]["write_requests"] == 1 and s["chunk"]["write_bytes"] == 5
    assert s["metadata"]["write_requests"] == 1 and s["metadata"]["write_bytes"] == 3
    assert s["chunk"]["read_requests"] == 3 and s["chunk"]["read_bytes"] == 7
    assert s["chunk"]["read_missing"] == 1
    assert s["other"]["list_requests"] == 1 and s["other"]["delete_requests"] == 1
    assert s["total"]["retries"] == 0 and s["total"]["errors"] == 0
    assert s["total"]["read_requests"] == 3 and s["total"]["write_bytes"] == 8
    h5dask.reset_stats()
    assert h5dask.stats()["total"]["read_requests"] == 0


def test_store_pickles_to_the_same_instance(backend: Backend) -> None:
    store = backend.store()
    assert pickle.loads(pickle.dumps(store)) is store
    assert backend.store() is store  # one instance per settings per process


def test_file_store_writes_atomically(tmp_path) -> None:
    store = LocalObjectStore(str(tmp_path))
    sync(store.put("d/k", b"x" * 10))
    (tmp_path / "d" / ".tmp-inflight").write_bytes(b"half")  # a write in progress
    assert sync(store.list("")) == ["d/k"]
    assert sorted(os.listdir(tmp_path / "d")) == [".tmp-inflight", "k"]
    sync(store.put("d/k", b"y" * 5))
    assert (tmp_path / "d" / "k").read_bytes() == b"yyyyy"
    assert not [n for n in os.listdir(tmp_path / "d") if n.startswith(".tmp-") and
                n != ".tmp-inflight"]


# -- retries ----------------------------------------------------------------------------
class FlakyStore(FsspecObjectStore):
    """A memory store whose GETs and PUTs fail ``failures`` times before they work."""

    def __init__(self, failures: int, exc: Exception, attempts: int = 4) -> None:
        super().__init__("memory", f"/flaky-{uuid.uuid4().hex}",
                         tuning=StoreTuning(retry=RetryPolicy(max_attempts=attempts,
                                                              base_delay=0.0)))
        self.failures = failures
        self.exc = exc
        self.calls = 0

    def _init_args(self) -> tuple:
        return ()

    async def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc

    async def _get(self, key: str, byte_range: tuple[int, int] | None) -> bytes | None:
        await self._maybe_fail()
        return await super()._get(key, byte_range)

    async def _put(self, key: str, data: bytes) -> None:
        await self._maybe_fail()
        await super()._put(key, data)


@pytest.mark.parametrize("exc", [TransientError("503 SlowDown"), TimeoutError("slow"),
                                 ConnectionResetError("reset by peer")], ids=type)
def test_retries_then_success(exc: Exception) -> None:
    store = FlakyStore(0, exc)
    sync(store.put("db/k", b"payload", kind="chunk"))
    store.failures, store.calls = 3, 0
    h5dask.reset_stats()
    assert sync(store.get("db/k", kind="chunk")) == b"payload"
    s = h5dask.stats()["chunk"]
    assert (s["retries"], s["errors"], s["read_requests"]) == (3, 0, 1)
    assert store.calls == 4


def test_retries_exhausted() -> None:
    store = FlakyStore(100, TransientError("503 Service Unavailable"), attempts=3)
    h5dask.reset_stats()
    with pytest.raises(StorageError) as err:
        sync(store.get("db/some/key", kind="metadata"))
    assert err.value.key == "db/some/key" and err.value.attempts == 3
    assert "db/some/key" in str(err.value) and "3 attempts" in str(err.value)
    assert "503" in str(err.value)
    assert isinstance(err.value, OSError)
    s = h5dask.stats()["metadata"]
    assert (s["retries"], s["errors"], s["read_requests"]) == (2, 1, 0)
    with pytest.raises(StorageError, match="PUT of .*db/w failed after 3 attempts"):
        sync(store.put("db/w", b"x"))


def test_permanent_errors_are_not_retried() -> None:
    store = FlakyStore(100, PermissionError("denied"))
    h5dask.reset_stats()
    with pytest.raises(PermissionError):
        sync(store.get("db/k"))
    assert store.calls == 1 and h5dask.stats()["chunk"]["retries"] == 0


def test_backoff_is_bounded() -> None:
    policy = RetryPolicy(max_attempts=5, base_delay=0.1, max_delay=0.3)
    assert all(0 <= policy.delay(n) <= min(0.3, 0.1 * 2 ** (n - 1)) for n in range(1, 20)
               for _ in range(20))
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)


# -- bounded concurrency ----------------------------------------------------------------
class SlowStore(FsspecObjectStore):
    def __init__(self, limit: int) -> None:
        super().__init__("memory", f"/slow-{uuid.uuid4().hex}",
                         tuning=StoreTuning(max_concurrency=limit))
        self.active = self.peak = 0

    def _init_args(self) -> tuple:
        return ()

    async def _get(self, key: str, byte_range: tuple[int, int] | None) -> bytes | None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        await asyncio.sleep(0.01)
        self.active -= 1
        return key.encode()


def test_get_many_is_concurrent_and_bounded() -> None:
    store = SlowStore(limit=8)
    keys = [f"k{i}" for i in range(40)]
    assert sync(store.get_many(keys)) == [k.encode() for k in keys]
    assert store.peak == 8  # concurrent, up to the bound and no further


class SlowBlockingStore(SlowStore):
    """SlowStore with a blocking twin of its GET, as S3's (obstore) has."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.lock = threading.Lock()

    def _count(self, step: int) -> None:
        with self.lock:  # the loop's and the tasks' threads count together
            self.active += step
            self.peak = max(self.peak, self.active)

    async def _get(self, key: str, byte_range: tuple[int, int] | None) -> bytes | None:
        self._count(1)
        await asyncio.sleep(0.01)
        self._count(-1)
        return key.encode()

    def _blocking_get(self):
        def get(key: str, byte_range: tuple[int, int] | None) -> bytes:
            self._count(1)
            time.sleep(0.01)
            self._count(-1)
            return key.encode()
        return get


def test_blocking_and_async_gets_share_one_bound() -> None:
    """Dask tasks reading in their own threads while the I/O loop reads ahead: together
    never more than max_concurrency requests (before: the limit once for each path)."""
    store = SlowBlockingStore(limit=4)
    keys = [f"k{i}" for i in range(24)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        in_threads = [pool.submit(store.get_buffer_sync, k) for k in keys]
        on_loop = sync(store.get_many(keys))
        assert [bytes(f.result()) for f in in_threads] == [k.encode() for k in keys]
    assert on_loop == [k.encode() for k in keys]
    assert store.peak == 4


def test_a_cancelled_wait_for_a_slot_gives_back_nothing_it_did_not_take() -> None:
    store = SlowStore(limit=1)

    async def run() -> None:
        waiting = [asyncio.ensure_future(store.get(f"k{i}")) for i in range(6)]
        await asyncio.sleep(0.005)
        for task in waiting[1::2]:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert await store.get("after") == b"after"  # the slot is free again

    sync(run())
    assert store.peak == 1


# -- S3 specifics: parallel ranged GETs, credentials, unreachable endpoints --------------
def test_large_object_parallel_ranged_gets(monkeypatch, storage_options, s3_bucket_url) -> None:
    opts = {**storage_options, "multipart_threshold": 64 * 1024, "part_size": 16 * 1024}
    store = open_location(f"{s3_bucket_url}/big.h5", opts).store
    payload = np.random.default_rng(3).integers(0, 256, 5 * 16 * 1024 + 77, dtype=np.uint8)
    payload = payload.tobytes()
    small = b"s" * (64 * 1024)
    sync(store.put("db/big", payload))
    sync(store.put("db/small", small))
    ranges: list[tuple[str, int, int]] = []
    real = obstore.get_async

    async def spy(st, path, *, options=None):  # records ranged GETs, then passes through
        if options and "range" in options:
            ranges.append((path, *options["range"]))
            assert options.get("if_match")  # the parts are of the first answer's ETag
        return await real(st, path, options=options)

    monkeypatch.setattr(obstore, "get_async", spy)
    h5dask.reset_stats()
    assert sync(store.get("db/big")) == payload
    assert sorted(r[1:] for r in ranges) == [(s, min(s + 16384, len(payload)))
                                            for s in range(0, len(payload), 16384)]
    assert len(ranges) == 6
    assert h5dask.stats()["chunk"]["read_bytes"] == len(payload)
    ranges.clear()
    assert sync(store.get("db/small")) == small  # at the threshold: one plain GET
    assert ranges == []


class _Overwriting:
    """Overwrites ``key`` with new bytes of the same size once the first part of a
    multipart read of it was answered, before the other parts are asked for (``times``
    reads in a row): the parts would mix the two versions."""

    def __init__(self, store, key: str, size: int, times: int) -> None:
        self.store, self.key, self.size, self.times = store, key, size, times
        self.bodies: list[bytes] = []

    def install(self, monkeypatch) -> None:
        store, real_parts, real_range = self.store, self.store._get_parts, self.store._get_range
        first_done: list[asyncio.Event] = []

        async def parts(key, size, *rest):
            first_done.append(asyncio.Event())
            return await real_parts(key, size, *rest)

        async def ranged(key, start, stop, *rest):
            if start == 0:
                try:
                    return await real_range(key, start, stop, *rest)
                finally:
                    first_done[-1].set()
            await first_done[-1].wait()
            if self.times and len(self.bodies) < len(first_done):
                self.times -= 1
                body = np.random.default_rng(len(self.bodies)).bytes(self.size)
                self.bodies.append(body)
                await store._put(key, body)
            return await real_range(key, start, stop, *rest)

        monkeypatch.setattr(store, "_get_parts", parts)
        monkeypatch.setattr(store, "_get_range", ranged)


@pytest.mark.parametrize("overwrites", [1, 2])
def test_a_multipart_read_never_mixes_two_versions(monkeypatch, storage_options, s3_bucket_url,
                                                   overwrites) -> None:
    """The parts of a whole-object read are asked for with If-Match the first answer's
    ETag: an object overwritten during the read (SeaweedFS answers 412) is read again,
    whole; overwritten again, the read fails saying so. Before, the parts were of both
    versions: bytes no writer ever wrote."""
    opts = {**storage_options, "multipart_threshold": 64 * 1024, "part_size": 16 * 1024,
            "max_attempts": 1}
    store = open_location(f"{s3_bucket_url}/big.h5", opts).store
    first = np.random.default_rng(9).bytes(5 * 16 * 1024 + 77)
    sync(store.put("db/big", first))
    overwriting = _Overwriting(store, "db/big", len(first), overwrites)
    overwriting.install(monkeypatch)
    if overwrites == 1:
        got = bytes(sync(store.get("db/big")))
        assert overwriting.bodies and got == overwriting.bodies[0]  # the new one, whole
    else:
        with pytest.raises(StorageError, match=r"s3://h5dask-test/.*db/big failed: the object "
                                               r"was overwritten while it was read in parts"):
            sync(store.get("db/big"))
    assert len(overwriting.bodies) == overwrites


def test_s3_wrong_credentials(storage_options, s3_bucket_url) -> None:
    good = open_location(f"{s3_bucket_url}/x.h5", storage_options).store
    sync(good.put("db/k", b"v"))
    bad = open_location(f"{s3_bucket_url}/x.h5",
                        {**storage_options, "secret": "not-the-secret"}).store
    h5dask.reset_stats()
    for call in (lambda: bad.get("db/k"), lambda: bad.put("db/k2", b"x"),
                 lambda: bad.list("db/")):
        with pytest.raises(StoragePermissionError) as err:
            sync(call())
        assert isinstance(err.value, PermissionError)
        assert "s3://h5dask-test/db/k" in str(err.value) or "LIST" in str(err.value)
        assert "not-the-secret" not in str(err.value)
    assert h5dask.stats()["total"]["retries"] == 0  # refusals are not retried
    unknown = open_location(f"{s3_bucket_url}/x.h5", {**storage_options, "key": "nobody"}).store
    with pytest.raises(PermissionError):
        sync(unknown.get("db/k"))


def test_s3_unreachable_endpoint(storage_options) -> None:
    opts = {**storage_options, "endpoint_url": "http://127.0.0.1:9", "max_attempts": 3,
            "retry_base_delay": 0.0, "connect_timeout": 2}
    store = open_location("s3://h5dask-test/x.h5", opts).store
    h5dask.reset_stats()
    with pytest.raises(StorageError) as err:
        sync(store.get("db/k"))
    assert err.value.key == "db/k" and err.value.attempts == 3
    assert "s3://h5dask-test/db/k" in str(err.value)
    assert h5dask.stats()["chunk"]["retries"] == 2


@pytest.mark.parametrize("change, match", [
    ({"secret": "not-the-secret"},
     r"SignatureDoesNotMatch.*Check the access key and secret \(credentials from storage_options"),
    ({"key": "nobody"}, r"InvalidAccessKeyId.*Check the access key and secret"),
    ({"anon": True}, r"AccessDenied.*anonymous access \(anon=True\).*give credentials"),
    ({"key": None, "secret": None}, r"No credentials were found.*AWS_PROFILE"),
])
def test_s3_refusals_say_why_and_what_to_do(monkeypatch, storage_options, s3_bucket_url,
                                            change, match) -> None:
    """The S3 error code of a refusal and the fix for its cause; never the secret."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    opts = {k: v for k, v in {**storage_options, **change}.items() if v is not None}
    with pytest.raises(StoragePermissionError, match=match) as err:
        h5dask.File(f"{s3_bucket_url}/refused.h5", storage_options=opts)
    assert f"{s3_bucket_url}/refused.h5/.domain.json" in str(err.value)
    assert "not-the-secret" not in str(err.value)


@pytest.mark.parametrize("endpoint, cause", [
    ("http://127.0.0.1:9", r"connection refused by 127\.0\.0\.1:9"),
    ("http://no-such-host.invalid:9000", r"host name no-such-host\.invalid not found \(DNS\)"),
    ("https://SEAWEEDFS", r"does not speak https; give it as http://"),
])
def test_s3_unreachable_endpoint_says_why(seaweedfs, storage_options, endpoint, cause) -> None:
    """Quick, and naming the cause, the endpoint and the attempts made."""
    endpoint = endpoint.replace("https://SEAWEEDFS", seaweedfs.endpoint.replace("http:", "https:"))
    opts = {**storage_options, "endpoint_url": endpoint, "max_attempts": 2,
            "retry_base_delay": 0.0, "connect_timeout": 2}
    with pytest.raises(StorageError, match=cause + r".*failed after 2 attempts|"
                       r"failed after 2 attempts.*" + cause) as err:
        h5dask.File("s3://h5dask-test/unreachable.h5", storage_options=opts)
    assert "s3://h5dask-test/unreachable.h5/.domain.json" in str(err.value)
    assert "max_attempts" in str(err.value)


def test_s3_endpoint_that_never_answers_says_so(storage_options) -> None:
    """A server that accepts connections and never answers: each attempt ends at the
    timeout, and the error says that was the cause and which options set the waits."""
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        opts = {**storage_options, "timeout": 1, "max_attempts": 2, "retry_base_delay": 0.0,
                "endpoint_url": f"http://127.0.0.1:{silent.getsockname()[1]}"}
        with pytest.raises(StorageError, match=r"after 2 attempts: no answer from http://127.*"
                                               r"no answer in time.*'connect_timeout': 5, "
                                               r"'timeout': 1, 'deadline': 120"):
            h5dask.File("s3://h5dask-test/silent.h5", storage_options=opts)


def test_s3_missing_bucket(storage_options) -> None:
    """A missing bucket is said to be missing (never read as absent chunks: fill values)."""
    store = open_location("s3://no-such-bucket-here/x.h5", storage_options).store
    for call in (store.get("db/k"), store.list("db/"), store.list_dir("")):
        with pytest.raises(BucketNotFoundError, match="bucket 'no-such-bucket-here' does not"):
            sync(call)
    with pytest.raises(FileNotFoundError, match="no-such-bucket-here"):
        h5dask.File("s3://no-such-bucket-here/x.h5", storage_options=storage_options)


def test_s3_virtual_hosted_style_never_reads_another_bucket(seaweedfs, storage_options,
                                                           s3_bucket_url) -> None:
    """Virtual-hosted addressing sends the bucket in the host name: before, the key's
    first segment became the bucket, so s3://h5dask-test/hsds-test/p.h5 read the domain
    of s3://hsds-test/p.h5."""
    name = f"{uuid.uuid4().hex}.h5"
    with h5dask.File(f"s3://hsds-test/{name}", "w", storage_options=storage_options) as f:
        f.attrs["bucket"] = "hsds-test"
    with h5dask.File(f"s3://h5dask-test/hsds-test/{name}", "w",
                     storage_options=storage_options) as f:
        f.attrs["bucket"] = "h5dask-test"
    local = seaweedfs.endpoint.replace("127.0.0.1", "localhost")
    virtual = {**storage_options, "endpoint_url": local, "max_attempts": 1,
               "config_kwargs": {"s3": {"addressing_style": "virtual"}}}
    with pytest.raises(StorageError, match="h5dask-test.localhost"):
        h5dask.File(f"s3://h5dask-test/hsds-test/{name}", storage_options=virtual)


def test_list_dir_modified_and_prune(backend: Backend) -> None:
    """One-level listing (never descends), modification times, and pruning of emptied
    directories (file://) behave alike on every back end."""
    import time

    store = backend.store()
    p = backend.domain("scratch")
    before = time.time() - 60
    for key in ("db/r1/.group.json", "db/r1/d/x/0_0", "db/r2/.group.json", "top.json"):
        sync(store.put(f"{p}/{key}", b"x"))
    assert sync(store.list_dir(f"{p}/")) == ([f"{p}/top.json"], [f"{p}/db/"])
    assert sync(store.list_dir(f"{p}/db/")) == ([], [f"{p}/db/r1/", f"{p}/db/r2/"])
    assert sync(store.list_dir(f"{p}/nothing/")) == ([], [])
    times = sync(store.list_modified(f"{p}/db/r1/"))
    assert sorted(times) == [f"{p}/db/r1/.group.json", f"{p}/db/r1/d/x/0_0"]
    assert all(t > before for t in times.values())
    for key in times:
        sync(store.delete(key))
    sync(store.prune(f"{p}/db/r1/"))
    assert sync(store.list(f"{p}/db/")) == [f"{p}/db/r2/.group.json"]
    if backend.kind != "s3":  # SeaweedFS may still list an emptied "directory"
        assert sync(store.list_dir(f"{p}/db/")) == ([], [f"{p}/db/r2/"])


def test_bounded_reads_are_whole_objects(backend: Backend) -> None:
    """get_bounded gives the whole object, even one larger than its bound (read again
    whole) or empty; on S3 one ranged GET when the object is within the bound."""
    store = backend.store()
    p = backend.domain("bounded")
    blob = bytes(range(256)) * 40  # 10240 bytes
    sync(store.put(f"{p}/obj", blob))
    sync(store.put(f"{p}/empty", b""))
    for bound, requests in ((20000, 1), (10240, 1), (10239, 2), (100, 2)):
        h5dask.reset_stats()
        assert bytes(sync(store.get_bounded(f"{p}/obj", bound))) == blob
        assert bytes(store.get_bounded_sync(f"{p}/obj", bound)) == blob
        reads = h5dask.stats()["chunk"]["read_requests"]
        assert reads == 2 * (requests if store.bounded_reads_by_range else 1)
    assert bytes(sync(store.get_bounded(f"{p}/empty", 100))) == b""
    assert bytes(store.get_bounded_sync(f"{p}/empty", 100)) == b""
    assert sync(store.get_bounded(f"{p}/missing", 100)) is None
    assert store.get_bounded_sync(f"{p}/missing", 100) is None
    assert (backend.kind == "s3") == store.bounded_reads_by_range


def test_identity_tells_apart_one_bucket_name_on_two_servers():
    """Bytes fetched ahead and write notifications are keyed by a store's identity: the
    same bucket name on two S3 endpoints (obstore or fsspec) is two stores."""
    from h5dask.storage.fsspec_store import FsspecObjectStore
    from h5dask.storage.s3 import S3ObjectStore
    from h5dask.storage.s3_options import S3Settings

    a = S3ObjectStore("b", S3Settings(endpoint="http://127.0.0.1:9000"))
    b = S3ObjectStore("b", S3Settings(endpoint="http://127.0.0.1:9001"))
    assert a.root_url == b.root_url and a.identity != b.identity
    assert S3ObjectStore("b", S3Settings()).identity == "s3://b"  # AWS: names are global
    pytest.importorskip("s3fs")
    fa, fb = (FsspecObjectStore("s3", "b", (("client_kwargs", (("endpoint_url", url),)),))
              for url in ("http://127.0.0.1:9000", "http://127.0.0.1:9001"))
    assert fa.root_url == fb.root_url and fa.identity != fb.identity
