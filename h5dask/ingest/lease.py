"""The lease of a running load (or gc): one small JSON object per holder under the new domain's
``db/<root>/`` prefix, so that two runs of the same load (which share their object ids,
see :mod:`.load`) never write, clean up or publish the same prefix at once, and so that
``h5dask gc`` leaves a prefix alone while a load is writing it.

A run takes the prefix with a conditional create. It lists the prefix's leases and
judges them by the store's clock (:func:`store_now`): if another live one is there it
refuses (:class:`~h5dask.errors.LoadInProgressError` naming that run) and writes
nothing. Else it creates ``.lease-<generation>.json``, one more than the newest
generation it saw, only if no object has that key (:meth:`ObjectStore.put_if_absent
<h5dask.storage.base.ObjectStore.put_if_absent>`): S3's ``If-None-Match: *``, which
AWS, SeaweedFS (checked by the tests) and MinIO honour; link(2) on a local or NFS
directory; fsspec's ``mode="create"`` elsewhere (atomic on s3fs; others look first,
then write). Of runs that looked at the same moment exactly one creates it; the others
look again, find it live and refuse. It then lists once more: should any other live
lease be there (an earlier version's ``.load-<run>.json``, or one whose generation
restarted after every lease was deleted meanwhile), it deletes its own again and refuses
(both may back off, never both hold). Taking the prefix, it deletes the stale leases
there: a lease a crashed run could not delete is collected by the next run or gc (and
gc collects those left in published domains' prefixes). A lease is renewed every
:data:`RENEW_EVERY` seconds, only while it is still the version this run last wrote
(a conditional overwrite, :meth:`ObjectStore.put_if_version
<h5dask.storage.base.ObjectStore.put_if_version>`: S3's ``If-Match``, so a renewal
delayed past another's taking over never overwrites a new lease of the same key);
once it was found gone or rewritten, or the run paused for half :data:`STALE_AFTER`
(long enough for another to judge it stale), the run has lost it for good: it never
writes it back, never deletes it and never publishes. A lease written in another
process of this machine lives exactly while that process does (the pid and its start
time decide, never the age); any other lease the store has not written for
:data:`STALE_AFTER` seconds is stale: its run died. Ages are told by the store's clock
alone, never a writer's: a lease's LastModified against the LastModified of the judging
run's own lease, or of a probe object (S3: the server's clock; a local directory: the
file system's mtimes, i.e. this machine's clock, or the NFS server's where the directory
is NFS-mounted, which is one clock for all clients); only a store that tells no write
times has a lease's own renewal time judged by this machine's clock instead. A run
checks that it still holds its lease before it removes what it wrote and before it
publishes.

``h5dask gc --delete`` takes part: before it deletes a prefix it takes a lease of its own
the same way (:class:`GcLease`); it keeps the prefix if a live load lease is there, and
a load that finds gc's live lease refuses, so a re-run never publishes over chunks gc
is deleting. gc asks the store whether it still holds its lease before every batch of
deletes and after the last, checks its lease's own finding (renewer, pause) right
before each delete is sent, and stops at once when it does not hold it; it deletes its
lease last.

>>> from h5dask.storage import open_location
>>> from h5dask.storage.sync import sync
>>> store = open_location("memory://lease-doc/home/a.h5").store
>>> lease = LoadLease(store, ids.new_root_id(), "a.h5")
>>> sync(lease.acquire()); [h.run == lease.run for h in sync(live_holders(store, lease.prefix))]
[True]
>>> sync(lease.release()); sync(live_holders(store, lease.prefix))
[]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..errors import LoadInProgressError, StoragePermissionError
from ..format import ids
from ..storage.base import ObjectStore, ObjectVersion
from ..storage.sync import all_ended

#: seconds after which a lease that was not renewed is stale (its run died)
STALE_AFTER = 300.0
#: how often a running load (or gc) renews its lease
RENEW_EVERY = 30.0
#: tries to take a lease when another run starts at the same moment
_ATTEMPTS = 4
#: ``.lease-<generation>.json``; ``.load-<run>.json`` and ``.gc-<run>.json``: leases
#: as earlier versions wrote them (still respected while live, collected when stale)
_LEASE_NAME = re.compile(r"/\.(?:(?:load|gc)-[0-9a-f]{32}|lease-(\d{8}))\.json$")


@cache
def this_machine() -> str:
    """Who can tell by a pid whether a process lives: the host, its boot and the pid
    namespace ("" where unknown: then only staleness ends a lease)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""
    return f"{socket.gethostname()} {boot} {pidns}"


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (field 22 of
    ``/proc/<pid>/stat``), or None where unknown: with the pid it names one process,
    even after the pid was reused."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return int(stat[stat.rindex(")") + 2:].split()[19])  # after "(comm)": field 3 on
    except (OSError, ValueError, IndexError):
        return None


def _process_alive(pid: int, start: int | None) -> bool:
    """Whether process ``pid`` of this machine lives and, if its ``start`` was recorded,
    is still the same process (not a later one that was given the pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        pass
    now = process_start(pid)
    return start is None or now is None or now == start


def _elapsed() -> float:
    """Seconds on a clock that only goes forwards and counts a suspended machine's sleep
    (what tells a renewer it may have been paused past STALE_AFTER)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    return time.monotonic() if boottime is None else time.clock_gettime(boottime)


@dataclass(frozen=True)
class LeaseHolder:
    """A lease as stored: ``key``, ``run`` id, ``kind`` ("load", or "gc" for `h5dask gc
    --delete` deleting the prefix), ``host``, ``pid``, ``domain``, the times it ``started``
    and was last ``renewed`` by the writer's clock (only their difference is used: the
    writer's clock may be off), and ``written``: when the store last wrote it, by the
    store's clock (its LastModified)."""

    key: str
    run: str
    kind: str = "load"
    host: str = "?"
    pid: int = 0
    pid_started: int | None = None
    machine: str = ""
    domain: str = "?"
    started: float = 0.0
    renewed: float = 0.0
    written: float = 0.0
    store_clock: bool = True
    #: the generation in its key (0: an earlier version's lease, named by its run)
    generation: int = 0

    def live(self, now: float) -> bool:
        """If it ran in another process of this machine: whether that process is still
        there (its age never decides: a clock step or a slow renewal would make a live
        local load look stale). Else written by the store within :data:`STALE_AFTER` of
        ``now`` (the store's clock)."""
        if self.machine and self.machine == this_machine() and self.pid != os.getpid():
            return _process_alive(self.pid, self.pid_started)
        return now - self.written < STALE_AFTER

    def describe(self, now: float) -> str:
        """Who holds it and since when; ``now`` by the store's clock."""
        renewed_ago = max(0.0, now - self.written)
        started_ago = renewed_ago + max(0.0, self.renewed - self.started)  # its clock's span
        who = f"run {self.run[:8]}" if self.kind == "load" else "`h5dask gc --delete`"
        clock = "" if self.store_clock else (
            " by its writer's and this machine's clocks: the store tells no write times")
        return (f"{who} (host {self.host}, pid {self.pid}, started {started_ago:.0f} s ago, "
                f"lease renewed {renewed_ago:.0f} s ago{clock})")

    @classmethod
    def parse(cls, key: str, blob: bytes, written: float | None) -> LeaseHolder:
        """The lease at ``key``, which the store wrote at ``written`` (None where the
        store cannot tell: then its own ``renewed`` stands in, by its writer's clock);
        unreadable JSON gives a stale lease (renewed never)."""
        kind = "gc" if "/.gc-" in key else "load"
        named = _LEASE_NAME.search(key)
        generation = int(named.group(1)) if named and named.group(1) else 0
        try:
            raw: Any = json.loads(blob)
            renewed = float(raw.get("renewed", 0.0))
            pid_started = raw.get("pid_started")
            kind = "gc" if raw.get("kind", kind) == "gc" else "load"
            return cls(key, str(raw["run"]), kind, str(raw.get("host", "?")),
                       int(raw.get("pid", 0)),
                       None if pid_started is None else int(pid_started),
                       str(raw.get("machine", "")), str(raw.get("domain", "?")),
                       float(raw.get("started", 0.0)), renewed,
                       renewed if written is None else written, written is not None,
                       generation)
        except (ValueError, TypeError, KeyError, AttributeError):
            return cls(key, key.rsplit("/", 1)[-1], kind, store_clock=written is not None,
                       generation=generation)


def is_lease_key(key: str) -> bool:
    """Whether ``key`` is a lease object (a load's or gc's)."""
    return _LEASE_NAME.search(key) is not None


async def holders(store: ObjectStore, prefix: str) -> list[LeaseHolder]:
    """Every lease under ``prefix`` (a ``db/<root>/`` prefix): one delimited listing of
    its top level (never its chunks), then each lease object and when the store wrote
    it (a lease deleted meanwhile is left out)."""
    keys, _dirs = await store.list_dir(prefix)
    leases = [k for k in keys if is_lease_key(k)]
    blobs = await asyncio.gather(*(store.get(k, kind="metadata") for k in leases))
    versions = await asyncio.gather(*(store.stat(k) for k in leases))
    return [LeaseHolder.parse(k, b, v.modified) for k, b, v in zip(leases, blobs, versions)
            if b is not None and v is not None]


async def store_now(store: ObjectStore, where: str = "") -> float | None:
    """Now by the store's clock: the write time the store gives a tiny probe object
    under the prefix ``where`` (written, read back by one HEAD, deleted; where the caller
    may write: a policy may allow writes under ``db/`` and ``home/me/`` only). None
    where the store refuses the write (read-only credentials) or tells no write times:
    then the caller judges by this machine's clock and says so. Ages judged by this and
    objects' write times never mix two machines' clocks (a laptop's may be hours off
    S3's)."""
    key = f"{where}.h5dask-clock-{uuid.uuid4().hex}"
    try:
        await store.put(key, b"", kind="metadata")
    except (StoragePermissionError, PermissionError):
        return None
    try:
        found = await store.stat(key)
    finally:
        await store.delete(key, kind="metadata")
    return None if found is None else found.modified


async def live_holders(store: ObjectStore, prefix: str,
                       now: float | None = None) -> list[LeaseHolder]:
    """The live leases under ``prefix``; ``now`` by the store's clock, by default this
    machine's (right where it agrees with the store's: a report, never a decision
    to delete; a lease holder judges by its own lease's write time instead)."""
    found = await holders(store, prefix)
    now = time.time() if now is None else now
    return [h for h in found if h.live(now)]


@dataclass(frozen=True)
class Others:
    """What a lease holder found on its prefix: the other ``live`` and ``stale`` leases,
    ``now`` by the store's clock, and whether its own lease is there (``held``)."""

    live: list[LeaseHolder]
    stale: list[LeaseHolder]
    now: float
    held: bool


class PrefixLease:
    """A lease on a ``db/<root>/`` prefix: its object ``.<kind>-<run>.json``."""

    kind = "load"

    def __init__(self, store: ObjectStore, prefix: str, domain: str) -> None:
        self.store = store
        self.domain = domain
        self.prefix = prefix
        self.run = uuid.uuid4().hex
        #: the lease object, ``.lease-<generation>.json``, once this run created it
        self.key = ""
        self.started = time.time()
        self._renewer: asyncio.Task | None = None
        #: the lease object as this run last wrote it (its store version), and when
        #: that write began by :func:`_elapsed`
        self._version: ObjectVersion | None = None
        self._wrote_at = 0.0
        #: held by a renewal from its look through its write to its note of the new
        #: version, and by every check: a check in between would take the renewal for
        #: another's write
        self._renewing = asyncio.Lock()
        #: the lease was once found gone or rewritten by another, or this run may have
        #: been judged stale: it is lost for good (never written back, never published)
        self.lost = False

    async def others(self) -> Others:
        """The other leases on the prefix, judged by the store's clock: "now" is when the
        store last wrote this run's lease (at most :data:`RENEW_EVERY` ago: others then
        look younger, never wrongly stale); no clock of any machine is compared with
        another's or with the store's."""
        found = await holders(self.store, self.prefix)
        mine = [h for h in found if h.run == self.run]
        if not all(h.store_clock for h in found):  # a store that tells no write times
            now = time.time()
        else:
            now = mine[0].written if mine else max((h.written for h in found), default=0.0)
        others = [h for h in found if h.run != self.run]
        return Others([h for h in others if h.live(now)],
                      [h for h in others if not h.live(now)], now, bool(mine))

    async def _take(self) -> Others:
        """Hold the prefix, or tell who does (``.live``). Look first (by the store's
        clock): a live lease there means refusal, and nothing is written. Else create
        the next generation's lease object, ``.lease-<newest seen + 1>.json``, with a
        conditional create: of runs that looked at the same moment exactly one creates
        it, the others look again and find it live. Then list once more (a lease the
        create did not exclude: an earlier version's, or one of a generation restarted
        meanwhile): any other live lease, and this one is deleted again (both may back
        off, never both hold). Holding, stale leases are removed and renewal starts."""
        for _attempt in range(_ATTEMPTS):
            listed = await holders(self.store, self.prefix)
            now = await store_now(self.store, self.prefix)
            if now is None or not all(h.store_clock for h in listed):
                now = time.time()  # (said in the refusal: "the store tells no write times")
            live = [h for h in listed if h.live(now)]
            if live:
                return Others(live, [h for h in listed if not h.live(now)], now, False)
            generation = max((h.generation for h in listed), default=0) + 1
            self.key = f"{self.prefix}.lease-{generation:08d}.json"
            if not await self._create():
                self.key = ""  # another run created it at this moment: it is live now
                continue
            found = await self.others()
            if found.live:
                await self.store.delete(self.key, kind="metadata")
                self.key = ""
                return found
            # all ended before a failure is raised: the caller's release comes next
            await all_ended((self.store.delete(h.key, kind="metadata")
                             for h in found.stale), "deletes of stale leases")
            self._renewer = asyncio.ensure_future(self._renew())
            return found
        raise LoadInProgressError(
            f"could not take the lease on {self.store.root_url}/{self.prefix}: other runs "
            f"created and removed leases there {_ATTEMPTS} times while this one looked; "
            "run it again")

    def _body(self) -> bytes:
        return json.dumps({
            "run": self.run, "kind": self.kind, "host": socket.gethostname(),
            "pid": os.getpid(), "pid_started": process_start(os.getpid()),
            "machine": this_machine(), "domain": self.domain, "started": self.started,
            "renewed": time.time()}).encode()

    async def _create(self) -> bool:
        """Create the lease object if no object has its key (:meth:`ObjectStore.put_if_absent`:
        atomic on S3 and local file systems), and remember its version. False: another
        run's is there."""
        blob, began = self._body(), _elapsed()
        if not await self.store.put_if_absent(self.key, blob, kind="metadata"):
            # a retried create whose first try was written reads "exists": ours if the
            # bytes are (they hold this run's id and renewal time)
            if await self.store.get(self.key, kind="metadata") != blob:
                return False
        self.lost = False
        self._version, self._wrote_at = await self.store.stat(self.key), began
        if self._version is None or await self.store.get(self.key, kind="metadata") != blob:
            self.lost = True
        return True

    async def release(self) -> None:
        """Stop renewing and delete this run's lease (best effort; never once it was
        lost: the object may be another's now)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(BaseException):
                await self._renewer
            self._renewer = None
        if self.lost or not self.key or self._maybe_judged_stale():
            return
        with contextlib.suppress(Exception):
            if await self._still_mine():
                await self.store.delete(self.key, kind="metadata")

    def lost_by_now(self) -> bool:
        """Whether this run's lease is lost as far as it can tell without asking the
        store: found lost by its renewer or a check, or this run paused so long that
        another may have judged it stale (then lost for good)."""
        if self._maybe_judged_stale():
            self.lost = True
        return self.lost

    async def still_held(self) -> bool:
        """Whether this run still holds its lease, asked of the store (one HEAD): False
        once it was found gone or rewritten, or this run paused so long that another
        may have judged it stale (lost for good)."""
        if self._maybe_judged_stale():
            self.lost = True
        async with self._renewing:
            return await self._still_mine()

    async def _write(self) -> None:
        """Rewrite the lease only if it is still the version this run last wrote (a
        conditional overwrite: S3 If-Match; a renewal delayed past another run's taking
        over, even of a lease object of the same key, never overwrites that run's), and
        remember the version the store gave it (then whatever else changes or deletes it
        is told by :meth:`_still_mine`)."""
        blob, began = self._body(), _elapsed()
        if self._version is None or not await self.store.put_if_version(
                self.key, blob, self._version, kind="metadata"):
            # gone or another's (or a retried write whose first try landed: then the
            # next check finds this run's bytes under a version it did not note, and
            # the lease is lost all the same, never another's overwritten)
            self.lost = True
            return
        self._version, self._wrote_at = await self.store.stat(self.key), began
        # read back after the stat: the version is this write's only if the body is
        if self._version is None or await self.store.get(self.key, kind="metadata") != blob:
            self.lost = True  # deleted or written by another right after the write

    async def _still_mine(self) -> bool:
        """Whether the lease is there as this run last wrote it; once not, never again
        (another run took it over as stale, or gc deleted it: writing it back would let
        this run publish over chunks gc deleted meanwhile)."""
        if not self.lost:
            now = await self.store.stat(self.key)
            self.lost = now is None or (self._version is not None and now != self._version)
        return not self.lost

    def _maybe_judged_stale(self, since: float | None = None) -> bool:
        """Whether enough time passed since this run's last write began (or ``since``,
        by :func:`_elapsed`) for another
        run (or gc) to have judged its lease stale and deleted it: then it must count
        as lost (renewals are conditional overwrites, but a store without an atomic one,
        :attr:`~h5dask.storage.base.ObjectStore.atomic_replace`, looks, then writes).
        Half STALE_AFTER leaves room for clocks that run at different rates."""
        since = self._wrote_at if since is None else since
        return _elapsed() - since >= STALE_AFTER / 2

    async def _renew(self) -> None:
        """Rewrite the lease every RENEW_EVERY seconds while it is this run's; once it was
        found gone or rewritten by another, or this run was paused so long that another
        may have judged it stale, stop for good (:meth:`check_held` then refuses)."""
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                if self._maybe_judged_stale():
                    self.lost = True
                async with self._renewing:
                    if not await self._still_mine():
                        return
                    previous = self._wrote_at
                    await self._write()
                    if self.lost:
                        return
                if self._maybe_judged_stale(previous):  # paused around the write: another
                    # may have judged it stale meanwhile; the write was conditional, so
                    # the object is this run's (where the store's overwrite is atomic)
                    self.lost = True
                    if self.store.atomic_replace:
                        await self.store.delete(self.key, kind="metadata")
                    return
            except Exception:  # noqa: BLE001, S112 - the checks before publishing tell
                continue


class LoadLease(PrefixLease):
    """The lease of one run of a load into the domain whose root is ``root_id``."""

    def __init__(self, store: ObjectStore, root_id: str, domain: str) -> None:
        super().__init__(store, ids.object_prefix(root_id) + "/", domain)

    async def acquire(self) -> None:
        """Take the lease, or raise LoadInProgressError naming the run (or the gc) that
        holds the prefix. Stale leases of dead runs are removed."""
        found = await self._take()
        if found.live:
            self._refuse(found)

    async def check_held(self) -> None:
        """LoadInProgressError unless this run still holds the lease and no other live
        run has one (its lease went stale, e.g. a machine paused past STALE_AFTER)."""
        found = await self.others()
        if self._maybe_judged_stale():
            self.lost = True
        async with self._renewing:
            mine = await self._still_mine()
        if found.live or not found.held or not mine:
            self._refuse(found, lost=True)

    async def others_live(self) -> bool:
        """Whether another run (or gc) holds a live lease on the prefix (best effort:
        True if it cannot be told, so that nothing of another run is removed)."""
        try:
            return bool((await self.others()).live)
        except Exception:  # noqa: BLE001 - the caller only decides whether to clean up
            return True

    def _refuse(self, found: Others, lost: bool = False) -> None:
        others, now = found.live, found.now
        if lost and not others:
            raise LoadInProgressError(
                f"the load into {self.domain!r} lost its lease: its lease object was "
                "deleted or rewritten while it ran (e.g. by `h5dask gc --delete`), or the "
                "run paused so long that another may have taken it over, so its objects "
                "may be gone too; nothing was published: run the same load again")
        gc = [h for h in others if h.kind == "gc"]
        if gc:
            raise LoadInProgressError(
                f"{gc[0].describe(now)} is deleting the objects an interrupted load into "
                f"{self.domain!r} left: run the load again once it has finished")
        what = "lost its lease to another run" if lost else "is running already"
        raise LoadInProgressError(
            f"a load into {self.domain!r} {what}: {others[0].describe(now)}. Wait "
            "for it to finish (then this domain exists), or, if that run died, run again "
            f"once its lease is stale ({STALE_AFTER:.0f} s after its last renewal; at once "
            "on its own machine)")


class GcLease(PrefixLease):
    """`h5dask gc --delete`'s lease on the prefix it deletes: a load that starts meanwhile
    sees it and refuses (else it kept chunks gc then deletes under its published domain).

    >>> from h5dask.storage import open_location
    >>> from h5dask.storage.sync import sync
    >>> store = open_location("memory://gc-lease-doc/home/a.h5").store
    >>> gc = GcLease(store, "db/0123abcd-4567ef01/")
    >>> sync(gc.take()).live, sync(gc.release())
    ([], None)
    """

    kind = "gc"

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        super().__init__(store, prefix, "?")

    async def take(self) -> Others:
        """Try to hold the prefix: with no other live lease (``.live`` empty) gc deletes
        it, then :meth:`release`; else the live leases of a load (or another gc) to report,
        and gc keeps the prefix."""
        return await self._take()


__all__ = ["RENEW_EVERY", "STALE_AFTER", "GcLease", "LeaseHolder", "LoadLease", "Others",
           "PrefixLease",
           "holders", "is_lease_key", "live_holders", "store_now"]
