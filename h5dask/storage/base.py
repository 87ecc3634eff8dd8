"""The object-store interface every back end implements, and its one choke point.

A store gives async access to the objects under one *bucket root* (an S3 bucket, a
directory holding ``db/``, ...). Subclasses implement the raw ``_get``/``_put``/
``_delete``/``_list`` calls; this base class adds, for every call and in one place:
key validation, bounded concurrency, retries with exponential backoff and jitter,
length checks, and the per-process I/O statistics.
"""

from __future__ import annotations

import asyncio
import collections
import os
import threading
import time
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import StorageError
from ..iostats import record as record_io
from .keys import check_key, check_prefix
from .settings import DEFAULT_TUNING, RetryPolicy, StoreTuning
from .sync import on_io_loop, sync

T = TypeVar("T")


class TransientError(Exception):
    """Raised by a back end for a fault worth retrying (5xx, throttling, dropped or
    short responses, timeouts); ``timed_out`` when no answer came in time."""

    def __init__(self, message: str, *, timed_out: bool = False, stalled: bool = False
                 ) -> None:
        super().__init__(message)
        #: no answer, or no more of its body (``stalled``), came in time
        self.timed_out = timed_out or stalled
        self.stalled = stalled


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, TimeoutError) or getattr(exc, "timed_out", False)


def _silence(exc: BaseException, began: float) -> float:
    """The seconds an attempt that began at ``began`` waited for an answer that never
    came: all of it if it timed out, none if it was answered (an error status, a body
    that progressed and then broke), which ``max_attempts`` bounds instead."""
    return time.monotonic() - began if _timed_out(exc) else 0.0


class RequestSlots:
    """At most ``n`` requests of one store at once, whoever makes them: dask tasks
    blocking in their own threads and coroutines on any event loop (the I/O loop
    reading ahead) wait for the same slots, first come first served. Two separate
    limits, one per kind of caller, let twice the limit reach the server.

    >>> slots = RequestSlots(1)
    >>> slots.acquire_sync(); slots.release(); slots.free
    1
    """

    def __init__(self, n: int) -> None:
        self.size = n
        self._reset()
        _all_slots.add(self)

    def _reset(self) -> None:
        """Every slot free, nobody waiting: also in a forked child, where the parent's
        requests in flight and waiters are not its own."""
        self.free = self.size
        self._lock = threading.Lock()
        # a blocked thread's Event, or a waiting coroutine's (loop, future)
        self._waiters: collections.deque[Any] = collections.deque()

    def acquire_sync(self) -> None:
        """Take a slot, blocking the calling thread until one is free."""
        with self._lock:
            if self.free > 0 and not self._waiters:
                self.free -= 1
                return
            handed = threading.Event()
            self._waiters.append(handed)
        try:
            handed.wait()  # release() hands its slot over directly
        except BaseException:  # e.g. Ctrl-C in a notebook: neither keep nor lose a slot
            with self._lock:
                queued = handed in self._waiters
                if queued:
                    self._waiters.remove(handed)
            if not queued:
                self.release()  # it was handed one just before: give it on
            raise

    async def acquire(self) -> None:
        """Take a slot, waiting without blocking the event loop."""
        with self._lock:
            if self.free > 0 and not self._waiters:
                self.free -= 1
                return
            loop = asyncio.get_running_loop()
            waiter = (loop, loop.create_future())
            self._waiters.append(waiter)
        try:
            await waiter[1]
        except asyncio.CancelledError:
            with self._lock:
                if waiter in self._waiters:  # never handed a slot
                    self._waiters.remove(waiter)
                    raise
            if waiter[1].done() and not waiter[1].cancelled():
                self.release()  # handed over just before the cancel: give it on
            raise  # (else _hand_over sees the cancelled future and gives it on)

    def release(self) -> None:
        """Give a slot back: to the longest waiting caller, if any."""
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if isinstance(waiter, threading.Event):
                    waiter.set()
                    return
                loop, future = waiter
                if loop is _running_loop():  # no wake-up through the loop's self-pipe
                    loop.call_soon(self._hand_over, future)
                    return
                try:
                    loop.call_soon_threadsafe(self._hand_over, future)
                    return
                except RuntimeError:  # its loop is closed: nobody waits there
                    continue
            self.free += 1

    def _hand_over(self, future: asyncio.Future) -> None:
        if future.cancelled():
            self.release()
        else:
            future.set_result(None)


_all_slots: weakref.WeakSet[RequestSlots] = weakref.WeakSet()


def _reset_slots_after_fork() -> None:
    for slots in list(_all_slots):
        slots._reset()


os.register_at_fork(after_in_child=_reset_slots_after_fork)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


_store_cache: dict[tuple, ObjectStore] = {}
_store_cache_lock = threading.Lock()


def cached_store(cls: type[ObjectStore], args: tuple) -> ObjectStore:
    """One store instance per (class, arguments) per process: unpickling reuses it."""
    key = (cls, args)
    with _store_cache_lock:
        store = _store_cache.get(key)
        if store is None:
            store = cls(*args)
            _store_cache[key] = store
        return store


def freeze(value: Any) -> Any:
    """A hashable, order-independent copy of nested dicts/lists (for cache keys)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(v) for v in value)
    return value


def _check_get(key: str, byte_range: tuple[int, int] | None) -> None:
    check_key(key)
    if byte_range is not None:
        start, stop = byte_range
        if not 0 <= start <= stop:
            raise ValueError(f"invalid byte range {byte_range} for {key!r}")


def _check_versioned(key: str, byte_range: tuple[int, int] | None) -> None:
    if byte_range is None:  # (the only reads of a given version are linked chunks)
        raise ValueError(f"a read of a given version of {key!r} needs a byte range")


def _checked_range(store: ObjectStore, key: str, byte_range: tuple[int, int] | None,
                   data: bytes | memoryview | None) -> bytes | memoryview | None:
    """A ranged GET's bytes, never more than asked: a server that ignores the Range
    request answers with the whole object, whose first bytes are not the range's (a
    linked chunk would be decoded from the wrong bytes). Fewer is the object's end,
    which callers judge (a linked chunk's range must be whole). Back ends that see the
    answer's status refuse a whole object even when it is not longer than the range
    (:func:`whole_object_for_range`)."""
    if byte_range is None or data is None:
        return data
    start, stop = byte_range
    if len(data) > stop - start:
        raise whole_object_for_range(store, key, byte_range, len(data))
    return data


def whole_object_for_range(store: ObjectStore, key: str, byte_range: tuple[int, int],
                           size: int | None) -> StorageError:
    """The error for a ranged GET answered with the whole object (``size`` bytes, None
    if untold) where that is not the range's bytes."""
    start, stop = byte_range
    if size is not None and start >= size:
        return range_past_the_end(store, key, byte_range, size)
    got = "the whole object" if size is None else f"{size} bytes"
    return StorageError(
        f"GET of {store.root_url}/{key} bytes [{start}:{stop}) returned {got}, not "
        f"{stop - start}: the server ignored the Range request; read the file through a "
        "server (or proxy) that answers ranged GETs", key=key, attempts=1)


def range_past_the_end(store: ObjectStore, key: str, byte_range: tuple[int, int],
                       size: int | str | None) -> StorageError:
    """The error for a ranged GET that starts at or beyond the object's end."""
    start, stop = byte_range
    return StorageError(
        f"GET of {store.root_url}/{key} bytes [{start}:{stop}): the range starts beyond the "
        f"object's end ({size or 'unknown'} bytes); the object is shorter than the metadata "
        "that points into it expects: it was truncated or rewritten (reload it)",
        key=key, attempts=1)


def _recorded_get(kind: str, data: T) -> T:
    record_io(kind, "read_requests")
    if data is None:
        record_io(kind, "read_missing")
    else:
        record_io(kind, "read_bytes", len(data))  # type: ignore[arg-type]
    return data


#: called with an object's URL-like name after this process writes or deletes it
_write_listeners: list[Callable[[str], None]] = []


def add_write_listener(listener: Callable[[str], None]) -> None:
    """Call ``listener(f"{identity}/{key}")`` (see :attr:`ObjectStore.identity`) after each
    write or delete in this process (read-ahead uses it: bytes fetched ahead are never
    used after their object changed)."""
    _write_listeners.append(listener)


def _written(store: ObjectStore, key: str) -> None:
    for listener in _write_listeners:
        listener(f"{store.identity}/{key}")


@dataclass(frozen=True)
class ObjectVersion:
    """What a HEAD tells of an object: its size and a ``tag`` that changes whenever it
    is written (an S3 ETag, a file's modification and change times and inode number);
    ``tag`` is None where the store cannot tell. ``modified``: when the store last wrote
    it, by the store's own clock (seconds since the epoch; None where unknown): two such
    times compare without trusting the clocks of the machines that wrote the objects
    (what lease ages are judged by, :mod:`h5dask.ingest.lease`). Not compared.

    >>> ObjectVersion(10, "etag=abc") == ObjectVersion(10, "etag=abc")
    True
    """

    size: int
    tag: str | None = None
    modified: float | None = field(default=None, compare=False)


def etag_of(version: ObjectVersion) -> str | None:
    """The ETag ``version``'s tag holds (S3's ``etag=...``, fsspec's ``ETag=...``),
    quoted as an If-Match header takes it; None if it holds none.

    >>> etag_of(ObjectVersion(1, "etag=abc")), etag_of(ObjectVersion(1, 'ETag="x" mtime=3'))
    ('"abc"', '"x"')
    """
    for part in (version.tag or "").split(" "):
        name, sep, value = part.partition("=")
        if sep and name.lower() == "etag" and value:
            return value if value.startswith(('"', 'W/"')) else f'"{value}"'
    return None


def changed_since(store: ObjectStore, key: str, version: ObjectVersion, now: str
                  ) -> Exception:
    """The error of a read of ``version`` of an object that is ``now`` another."""
    from ..errors import ObjectChangedError

    return ObjectChangedError(
        f"{store.root_url}/{key} was written since it was read as version {version.tag} "
        f"({version.size} bytes): {now}", key=key, attempts=1)


class ObjectStore(ABC):
    """Async access to the objects under one bucket root.

    ``get`` returns ``None`` for an object that does not exist (for chunks: the
    fill value), never raises for it.
    """

    #: a URL-like name of the bucket root, for messages (never holds secrets)
    root_url: str

    def url_of(self, path: str) -> str:
        """The URL of ``path`` (a domain, folder or key) under the bucket root, as
        :func:`h5dask.storage.open_location` reads it back."""
        return f"{self.root_url}/{path}"

    @property
    def identity(self) -> str:
        """The bucket root's name, unique in this process: what bytes fetched ahead and
        write notifications are keyed by. ``root_url`` where that already says which
        objects these are (a local directory); stores that can reach the same bucket name
        on several servers add the server (two S3 endpoints may hold other bytes under
        the same ``s3://bucket/key``)."""
        return self.root_url
    #: whether :meth:`list_md5` lists content MD5s (an instance turns it off for itself
    #: when the ETags it listed were not the MD5s expected)
    content_md5_listing = False
    #: whether a ranged GET is cheaper than a whole one: obstore answers a whole GET
    #: twice (the response, then its body; each a thread hand-off), a ranged one once
    #: (see :meth:`get_bounded`)
    bounded_reads_by_range = False
    #: whether a read of a given version (:meth:`get_buffer` ``version=``) is refused
    #: when the object was written since; False: such reads are not checked
    verifies_versions = False

    def __init__(self, tuning: StoreTuning = DEFAULT_TUNING["fsspec"]) -> None:
        self.tuning = tuning
        self.max_concurrency = tuning.max_concurrency
        self.retry: RetryPolicy = tuning.retry
        self._slots = RequestSlots(self.max_concurrency)

    # -- what subclasses implement -------------------------------------------------
    @abstractmethod
    async def _get(self, key: str, byte_range: tuple[int, int] | None) -> bytes | None: ...

    @abstractmethod
    async def _put(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    async def _delete(self, key: str) -> None: ...

    @abstractmethod
    async def _list(self, prefix: str) -> list[str]: ...

    async def _list_dir(self, prefix: str) -> tuple[list[str], list[str]]:
        """One level under ``prefix``: back ends with a delimiter listing override this."""
        keys, dirs = [], set()
        for key in await self._list(prefix):
            head, sep, _ = key[len(prefix):].partition("/")
            if sep:
                dirs.add(f"{prefix}{head}/")
            else:
                keys.append(key)
        return keys, sorted(dirs)

    async def _list_modified(self, prefix: str) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} cannot tell modification times")

    async def _stat(self, key: str) -> ObjectVersion | None:
        """Back ends that can tell an object's size and version override this (one HEAD)."""
        raise NotImplementedError(f"{type(self).__name__} cannot tell object sizes")

    async def _size(self, key: str) -> int | None:
        """The object's size from :meth:`_stat`; back ends with a cheaper way override it."""
        found = await self._stat(key)
        return None if found is None else found.size

    @abstractmethod
    def _init_args(self) -> tuple:
        """Arguments that rebuild an equivalent store in another process."""

    def __reduce__(self) -> tuple:
        return (cached_store, (type(self), self._init_args()))

    # -- what others ask of a store ------------------------------------------------
    def locate(self, url: str) -> tuple[ObjectStore, str] | None:
        """The store and key of the object ``url`` names, if it lies within this store's
        reach (its bucket root; back ends with buckets: any bucket of the same endpoint,
        with the same settings), else None. No I/O: this decides what a linked dataset
        of a domain in this store may read (see :mod:`h5dask.storage.links`).

        >>> from h5dask.storage.local import LocalObjectStore
        >>> LocalObjectStore("/tmp/root").locate("s3://bucket/x.h5") is None
        True
        """
        return None

    def tuning_options(self) -> dict[str, Any]:
        """This store's tuning as ``storage_options``, to open another store the same way.

        >>> from h5dask.storage.local import LocalObjectStore
        >>> LocalObjectStore("/tmp/root", StoreTuning(max_concurrency=4)).tuning_options()[
        ...     "max_concurrency"]
        4
        """
        return self.tuning.as_options()

    def object_url(self, key: str) -> str | None:
        """An http(s) URL a server on the same network (the active-storage server) can
        GET the object ``key`` from, or None if this store has none (file systems).

        >>> from h5dask.storage.local import LocalObjectStore
        >>> LocalObjectStore("/tmp/root").object_url("db/x") is None
        True
        """
        return None

    def server_credentials(self) -> tuple[str, str] | None:
        """The (access key, secret) this store signs with, which may be forwarded to the
        active-storage server to read the same objects; None when anonymous or when the
        store has no such credentials.

        >>> from h5dask.storage.local import LocalObjectStore
        >>> LocalObjectStore("/tmp/root").server_credentials() is None
        True
        """
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.root_url!r})"

    # -- the choke point -----------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """Where this store's requests go, for messages (never holds secrets)."""
        return self.root_url

    def _after_failure(self, what: str, key: str, kind: str, attempt: int,
                       exc: BaseException, started: float, unanswered: float) -> float:
        """The wait before the next attempt; or, after the last attempt or once the
        operation has waited ``deadline`` seconds in all for answers that never came
        (``unanswered``: attempts that timed out), a StorageError naming the object, the
        tries and the time. Slot waits, back-offs and attempts that were answered (a
        503, a transfer that progressed and then broke) never count against the deadline:
        they are bounded by ``max_attempts``."""
        elapsed = time.monotonic() - started
        past_deadline = unanswered >= self.tuning.deadline
        if attempt < self.retry.max_attempts and not past_deadline:
            record_io(kind, "retries")
            return self.retry.delay(attempt)
        record_io(kind, "errors")
        if _timed_out(exc):
            t = self.tuning
            waited = "a body stalled mid-transfer" if getattr(exc, "stalled", False) else \
                "no answer"
            raise StorageError(
                f"{what} of {self.root_url}/{key} failed after {attempt} attempts: {waited}"
                f" from {self.endpoint} in {unanswered:.1f} s ({exc}). Check that the endpoint "
                "is reachable and healthy; the waits are storage_options={"
                f"'connect_timeout': {t.connect_timeout:g}, 'timeout': {t.timeout:g}, "
                f"'deadline': {t.deadline:g}, 'max_attempts': {t.retry.max_attempts}}} "
                "(seconds per connection, per wait for an answer or for more of a body, per "
                "operation without an answer).",
                key=key, attempts=attempt) from exc
        stopped = (f" (stopped at the operation's deadline: {unanswered:.1f} s without an "
                   f"answer, storage_options {{'deadline': {self.tuning.deadline:g}}} seconds)"
                   if past_deadline and attempt < self.retry.max_attempts else "")
        raise StorageError(
            f"{what} of {self.root_url}/{key} failed after {attempt} attempts in "
            f"{elapsed:.1f} s{stopped}: {exc}. Check that the object store is reachable and "
            "healthy; retries can be raised with storage_options={'max_attempts': N}.",
            key=key, attempts=attempt) from exc

    async def _call(self, what: str, key: str, kind: str, fn: Callable[[], Awaitable[T]]) -> T:
        attempt, started, unanswered = 0, time.monotonic(), 0.0
        while True:
            attempt += 1
            try:
                await self._slots.acquire()
                began = time.monotonic()  # after the slot wait: never the server's silence
                try:
                    return await fn()
                finally:
                    self._slots.release()
            except (TransientError, TimeoutError, ConnectionError) as exc:
                unanswered += _silence(exc, began)
                await asyncio.sleep(self._after_failure(what, key, kind, attempt, exc, started,
                                                        unanswered))

    def _call_sync(self, what: str, key: str, kind: str, fn: Callable[[], T]) -> T:
        """:meth:`_call` for blocking calls made in the caller's thread: the same retries,
        errors and statistics, within the same ``max_concurrency`` slots."""
        attempt, started, unanswered = 0, time.monotonic(), 0.0
        while True:
            attempt += 1
            try:
                self._slots.acquire_sync()
                began = time.monotonic()  # after the slot wait: never the server's silence
                try:
                    return fn()
                finally:
                    self._slots.release()
            except (TransientError, TimeoutError, ConnectionError) as exc:
                unanswered += _silence(exc, began)
                time.sleep(self._after_failure(what, key, kind, attempt, exc, started,
                                               unanswered))

    def _blocking_get(self) -> Callable[[str, tuple[int, int] | None],
                                        bytes | memoryview | None] | None:
        """A back end with a blocking client returns its blocking twin of ``_get`` here
        (used by :meth:`get_buffer_sync`); None: go through the I/O loop."""
        return None

    async def _get_version(self, key: str, byte_range: tuple[int, int],
                           version: ObjectVersion) -> bytes | memoryview | None:
        """``_get`` of ``version`` of the object only (see :meth:`get_buffer`): back ends
        that can tell set :attr:`verifies_versions` and override this; others read the
        range as it is."""
        return await self._get(key, byte_range)

    def _blocking_get_version(self) -> Callable[[str, tuple[int, int], ObjectVersion],
                                                bytes | memoryview | None] | None:
        """The blocking twin of :meth:`_get_version`, as :meth:`_blocking_get`."""
        return None

    # -- the public async API ------------------------------------------------------
    async def get(
        self, key: str, *, kind: str = "chunk", byte_range: tuple[int, int] | None = None
    ) -> bytes | None:
        """The object's bytes (or ``byte_range=(start, stop)`` of them), None if missing."""
        data = await self.get_buffer(key, kind=kind, byte_range=byte_range)
        return data if data is None or isinstance(data, bytes) else bytes(data)

    async def get_buffer(
        self, key: str, *, kind: str = "chunk", byte_range: tuple[int, int] | None = None,
        version: ObjectVersion | None = None,
    ) -> bytes | memoryview | None:
        """Like :meth:`get`, but a back end may answer with a read-only ``memoryview`` of
        the bytes it received instead of copying them into ``bytes`` (the chunk read
        path decodes straight from it).

        ``version`` (with a ``byte_range``): read only that version of the object, the
        one :meth:`stat` told; where the back end can tell (:attr:`verifies_versions`,
        in the same request: a header, an fstat), another version raises
        :class:`~h5dask.errors.ObjectChangedError` instead of answering its bytes.
        Elsewhere the range is read as it is."""
        _check_get(key, byte_range)
        if version is None:
            data = await self._call("GET", key, kind, lambda: self._get(key, byte_range))
        else:
            _check_versioned(key, byte_range)
            data = await self._call("GET", key, kind,
                                    lambda: self._get_version(key, byte_range, version))
        return _recorded_get(kind, _checked_range(self, key, byte_range, data))

    def get_buffer_sync(
        self, key: str, *, kind: str = "chunk", byte_range: tuple[int, int] | None = None,
        version: ObjectVersion | None = None,
    ) -> bytes | memoryview | None:
        """:meth:`get_buffer` for a caller that may block (a dask task reading one chunk):
        a back end with a blocking client answers in the calling thread, without the two
        thread hand-offs of a trip through the I/O loop; others go through the loop."""
        if version is not None:
            blocking_version = self._blocking_get_version()
            if blocking_version is None or on_io_loop():
                return sync(self.get_buffer(key, kind=kind, byte_range=byte_range,
                                            version=version))
            _check_get(key, byte_range)
            _check_versioned(key, byte_range)
            data = self._call_sync("GET", key, kind,
                                   lambda: blocking_version(key, byte_range, version))
            return _recorded_get(kind, _checked_range(self, key, byte_range, data))
        blocking = self._blocking_get()
        if blocking is None or on_io_loop():
            return sync(self.get_buffer(key, kind=kind, byte_range=byte_range))
        _check_get(key, byte_range)
        data = self._call_sync("GET", key, kind, lambda: blocking(key, byte_range))
        return _recorded_get(kind, _checked_range(self, key, byte_range, data))

    async def get_bounded(self, key: str, size_bound: int, *, kind: str = "chunk"
                          ) -> bytes | memoryview | None:
        """:meth:`get_buffer` of a whole object that should hold at most ``size_bound``
        bytes (a chunk, whose encoded size its shape bounds). Where ranged GETs are
        cheaper it is read as the range ``[0, size_bound + 1)``: one more byte than the
        bound shows an object larger than expected, which is then read whole again.

        >>> from h5dask.storage.local import LocalObjectStore
        >>> from h5dask.storage.sync import sync
        >>> sync(LocalObjectStore("/tmp/h5dask-doc-bounded").get_bounded("none", 10)) is None
        True
        """
        if not self.bounded_reads_by_range or size_bound >= self.tuning.multipart_threshold:
            return await self.get_buffer(key, kind=kind)
        data = await self.get_buffer(key, kind=kind, byte_range=(0, size_bound + 1))
        if data is not None and len(data) > size_bound:
            data = await self.get_buffer(key, kind=kind)
        return data

    def get_bounded_sync(self, key: str, size_bound: int, *, kind: str = "chunk"
                         ) -> bytes | memoryview | None:
        """:meth:`get_bounded` for a caller that may block (see :meth:`get_buffer_sync`)."""
        if not self.bounded_reads_by_range or size_bound >= self.tuning.multipart_threshold:
            return self.get_buffer_sync(key, kind=kind)
        data = self.get_buffer_sync(key, kind=kind, byte_range=(0, size_bound + 1))
        if data is not None and len(data) > size_bound:
            data = self.get_buffer_sync(key, kind=kind)
        return data

    async def get_many(
        self, keys: Iterable[str], *, kind: str = "chunk"
    ) -> list[bytes | None]:
        """Fetch many objects concurrently (bounded by ``max_concurrency``)."""
        return list(await asyncio.gather(*(self.get(k, kind=kind) for k in keys)))

    async def put(self, key: str, data: bytes | memoryview, *, kind: str = "chunk") -> None:
        """Write an object whole (atomically: readers see the old or the new bytes)."""
        check_key(key)
        payload = bytes(data) if not isinstance(data, bytes) else data
        _written(self, key)
        await self._call("PUT", key, kind, lambda: self._put(key, payload))
        _written(self, key)  # and any fetch started while it was written
        record_io(kind, "write_requests")
        record_io(kind, "write_bytes", len(payload))

    #: whether :meth:`put_if_absent` is atomic (a conditional create the store itself
    #: decides: S3 ``If-None-Match: *``, a local file system's link(2)); else it looks
    #: first, then writes, and two writers at the same moment may both succeed
    atomic_create = False

    async def _put_if_absent(self, key: str, data: bytes) -> bool:
        """Back ends with a conditional create override this; the fallback looks first."""
        if await self._stat(key) is not None:
            return False
        await self._put(key, data)
        return True

    async def put_if_absent(self, key: str, data: bytes, *, kind: str = "metadata") -> bool:
        """Write the object only if no object ``key`` exists: True if written, False if
        one was there (then nothing was written). Atomic where :attr:`atomic_create`: of
        writers at the same moment exactly one gets True (what leases are taken with,
        :mod:`h5dask.ingest.lease`). A retried attempt whose first try was written but
        not answered reads False: callers read the object back to tell."""
        check_key(key)
        _written(self, key)
        created = await self._call("PUT", key, kind, lambda: self._put_if_absent(key, data))
        _written(self, key)
        record_io(kind, "write_requests")
        if created:
            record_io(kind, "write_bytes", len(data))
        return created

    #: whether :meth:`put_if_version` is atomic (S3 ``If-Match``; a local file system
    #: compares and renames in one call of the worker); else it looks first, then writes
    atomic_replace = False

    async def _put_if_version(self, key: str, data: bytes, version: ObjectVersion) -> bool:
        """Back ends with a conditional overwrite override this; the fallback looks first."""
        if await self._stat(key) != version:
            return False
        await self._put(key, data)
        return True

    async def put_if_version(self, key: str, data: bytes, version: ObjectVersion, *,
                             kind: str = "metadata") -> bool:
        """Overwrite the object only if it is still ``version`` (as :meth:`stat` gave
        it): True if written; False if it is missing or another version (then nothing
        was written). What a lease is renewed with (:mod:`h5dask.ingest.lease`): a
        renewal delayed past another run's taking over never overwrites that run's lease.
        A retried attempt whose first try was written reads False: callers read back."""
        check_key(key)
        _written(self, key)
        replaced = await self._call("PUT", key, kind,
                                    lambda: self._put_if_version(key, data, version))
        _written(self, key)
        record_io(kind, "write_requests")
        if replaced:
            record_io(kind, "write_bytes", len(data))
        return replaced

    async def delete(self, key: str, *, kind: str = "other",
                     before_sending: Callable[[], None] | None = None) -> None:
        """Delete an object; deleting a missing object is not an error.
        ``before_sending`` is called once a request slot is had, right before each try is
        sent: what it raises stops the delete unsent (gc checks its lease there)."""
        check_key(key)
        _written(self, key)

        async def send() -> None:
            if before_sending is not None:
                before_sending()
            await self._delete(key)

        await self._call("DELETE", key, kind, send)
        _written(self, key)
        record_io(kind, "delete_requests")

    async def size(self, key: str, *, kind: str = "metadata") -> int | None:
        """The object's size in bytes (a HEAD, not a GET), None if it does not exist."""
        check_key(key)
        found = await self._call("HEAD", key, kind, lambda: self._size(key))
        record_io(kind, "read_requests")
        return found

    async def stat(self, key: str, *, kind: str = "metadata") -> ObjectVersion | None:
        """The object's size and version tag (one HEAD, as :meth:`size`), None if it
        does not exist."""
        check_key(key)
        found = await self._call("HEAD", key, kind, lambda: self._stat(key))
        record_io(kind, "read_requests")
        return found

    async def list(self, prefix: str = "") -> list[str]:
        """All keys under ``prefix`` (recursively), sorted."""
        check_prefix(prefix)
        keys = await self._call("LIST", prefix, "other", lambda: self._list(prefix))
        record_io("other", "list_requests")
        return sorted(keys)

    async def iter_list(self, prefix: str = "", *, page_size: int = 1000
                        ) -> AsyncIterator[list[str]]:
        """The keys under ``prefix`` (recursively), in key order, in pages of at most
        ``page_size``: for callers that handle keys as they come (deleting a domain's
        objects), so that memory stays bounded by a page however large the prefix is
        where the store lists page by page (S3); others list once, then hand out pages.
        Keys written or deleted while the pages are read may or may not be seen."""
        keys = await self.list(prefix)
        for start in range(0, len(keys), page_size):
            yield keys[start:start + page_size]

    async def list_dir(self, prefix: str = "") -> tuple[list[str], list[str]]:
        """One level under ``prefix`` ("" or ending in "/"): the object keys there and the
        sub-prefixes (ending in "/"), both sorted; never descends (a bucket's ``db/`` may
        hold millions of objects)."""
        check_prefix(prefix)
        keys, dirs = await self._call("LIST", prefix, "other", lambda: self._list_dir(prefix))
        record_io("other", "list_requests")
        return sorted(keys), sorted(dirs)

    async def list_md5(self, prefix: str, limit: int, *, kind: str = "metadata"
                       ) -> dict[str, str] | None:
        """Key -> MD5 hex of the object's bytes, for the first ``limit`` keys under
        ``prefix`` in key order (one LIST request), from ETags shaped like a content MD5;
        None where listings cannot show content MD5s (:attr:`content_md5_listing`).

        An ETag is the MD5 of the bytes for an S3 object written by one PUT, unencrypted
        or SSE-S3, not under SSE-KMS/SSE-C: callers compare it with the MD5 they expect,
        and a mismatch only means "fetch the object"."""
        if not self.content_md5_listing:
            return None
        check_prefix(prefix)
        found = await self._call("LIST", prefix, kind, lambda: self._list_md5(prefix, limit))
        record_io(kind, "list_requests")
        return found

    async def _list_md5(self, prefix: str, limit: int) -> dict[str, str]:
        raise NotImplementedError

    async def list_with_md5(self, prefix: str, *, kind: str = "chunk"
                            ) -> dict[str, str | None]:
        """Every key under ``prefix`` (recursively, as :meth:`list`), with the content MD5
        its listing shows (see :meth:`list_md5`), else None: one listing, where keys and
        then their MD5s would take two.

        >>> from h5dask.storage.local import LocalObjectStore
        >>> from h5dask.storage.sync import sync
        >>> sync(LocalObjectStore("/tmp/h5dask-doc-md5").list_with_md5("db/"))
        {}
        """
        check_prefix(prefix)
        found = await self._call("LIST", prefix, kind, lambda: self._list_with_md5(prefix))
        record_io(kind, "list_requests")
        return dict(sorted(found.items()))

    async def _list_with_md5(self, prefix: str) -> dict[str, str | None]:
        return dict.fromkeys(await self._list(prefix))

    async def list_modified(self, prefix: str = "") -> dict[str, float]:
        """All keys under ``prefix`` with their last-modified times (seconds since the
        epoch)."""
        check_prefix(prefix)
        found = await self._call("LIST", prefix, "other", lambda: self._list_modified(prefix))
        record_io("other", "list_requests")
        return found

    async def prune(self, prefix: str) -> None:
        """Tidy up after deleting everything under ``prefix`` (a file system removes the
        directories left empty); object stores have nothing to do."""
        return None
