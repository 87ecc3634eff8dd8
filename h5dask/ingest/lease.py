"""The lease of a running load (or gc): one small JSON object per run under the new domain's
``db/<root>/`` prefix, so that two runs of the same load (which share their object ids,
see :mod:`.load`) never write, clean up or publish the same prefix at once, and so that
``h5dask gc`` leaves a prefix alone while a load is writing it.

A run writes its own lease object (``.load-<run>.json``: the run, host, process, when it
started and when it last renewed), then lists the prefix's leases: if it finds another
live one it deletes its own and refuses (:class:`~h5dask.errors.LoadInProgressError`
naming the other run), after a short random back-off and another try when both
started at once. Object stores have no compare-and-swap that every back end offers,
but a listing after one's own write shows every lease written before it, so of two
runs at least the later one sees the other. A lease is renewed every
:data:`RENEW_EVERY` seconds, only while it is still there (a run whose lease another
run took over never writes it back); one the store has not written for
:data:`STALE_AFTER` seconds, or whose process is gone from this machine, is stale: its
run died. Ages are told by the store's clock alone, never a writer's: a lease's
LastModified against the LastModified of the judging run's own lease (S3: the server's
clock; a local directory: the file system's mtimes, i.e. this machine's clock, or the
NFS server's where the directory is NFS-mounted, which is one clock for all clients).
A run checks that it still holds its lease before it removes what it wrote and before
it publishes.

``h5dask gc --delete`` takes part: before it deletes a prefix it writes a lease of its own
(``.gc-<run>.json``, :class:`GcLease`) and lists again; it keeps the prefix if a live
load lease is there, and a load that finds gc's live lease refuses, so a re-run never
publishes over chunks gc is deleting. gc deletes its lease last.

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
import random
import re
import socket
import time
import uuid
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..errors import LoadInProgressError
from ..format import ids
from ..storage.base import ObjectStore, ObjectVersion

#: seconds after which a lease that was not renewed is stale (its run died)
STALE_AFTER = 300.0
#: how often a running load (or gc) renews its lease
RENEW_EVERY = 30.0
#: tries to take a lease when another run starts at the same moment
_ATTEMPTS = 4
_LEASE_NAME = re.compile(r"/\.(load|gc)-[0-9a-f]{32}\.json$")


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


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


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
    machine: str = ""
    domain: str = "?"
    started: float = 0.0
    renewed: float = 0.0
    written: float = 0.0

    def live(self, now: float) -> bool:
        """Written by the store within :data:`STALE_AFTER` of ``now`` (the store's clock),
        and, if it ran on this machine, its process still there."""
        if now - self.written >= STALE_AFTER:
            return False
        if self.machine and self.machine == this_machine() and self.pid != os.getpid():
            return _process_alive(self.pid)
        return True

    def describe(self, now: float) -> str:
        """Who holds it and since when; ``now`` by the store's clock."""
        renewed_ago = max(0.0, now - self.written)
        started_ago = renewed_ago + max(0.0, self.renewed - self.started)  # its clock's span
        who = f"run {self.run[:8]}" if self.kind == "load" else "`h5dask gc --delete`"
        return (f"{who} (host {self.host}, pid {self.pid}, started {started_ago:.0f} s ago, "
                f"lease renewed {renewed_ago:.0f} s ago)")

    @classmethod
    def parse(cls, key: str, blob: bytes, written: float) -> LeaseHolder:
        """The lease at ``key``; unreadable JSON gives a stale lease (renewed never)."""
        kind = "gc" if "/.gc-" in key else "load"
        try:
            raw: Any = json.loads(blob)
            return cls(key, str(raw["run"]), kind, str(raw.get("host", "?")),
                       int(raw.get("pid", 0)), str(raw.get("machine", "")),
                       str(raw.get("domain", "?")), float(raw.get("started", 0.0)),
                       float(raw.get("renewed", 0.0)), written)
        except (ValueError, TypeError, KeyError):
            return cls(key, key.rsplit("/", 1)[-1], kind)


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
    return [LeaseHolder.parse(k, b, _written(v)) for k, b, v in zip(leases, blobs, versions)
            if b is not None and v is not None]


def _written(version: ObjectVersion) -> float:
    """When the store wrote a lease; a store that cannot tell gets this machine's clock
    (the file systems and object stores h5dask has all tell)."""
    return time.time() if version.modified is None else version.modified


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
        self.key = f"{self.prefix}.{self.kind}-{self.run}.json"
        self.started = time.time()
        self._renewer: asyncio.Task | None = None

    async def others(self) -> Others:
        """The other leases on the prefix, judged by the store's clock: "now" is when the
        store last wrote this run's lease (at most :data:`RENEW_EVERY` ago: others then
        look younger, never wrongly stale); no clock of any machine is compared with
        another's or with the store's."""
        found = await holders(self.store, self.prefix)
        mine = [h.written for h in found if h.run == self.run]
        now = mine[0] if mine else max((h.written for h in found), default=0.0)
        others = [h for h in found if h.run != self.run]
        return Others([h for h in others if h.live(now)],
                      [h for h in others if not h.live(now)], now, bool(mine))

    async def _take(self) -> Others:
        """Write this lease, then list: if another live lease is there this one is
        deleted again; else it holds the prefix (stale leases of dead runs are removed
        and renewal starts)."""
        await self._write()
        found = await self.others()
        if found.live:
            await self.store.delete(self.key, kind="metadata")
            return found
        await asyncio.gather(*(self.store.delete(h.key, kind="metadata") for h in found.stale))
        self._renewer = asyncio.ensure_future(self._renew())
        return found

    async def release(self) -> None:
        """Stop renewing and delete this run's lease (best effort)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(BaseException):
                await self._renewer
            self._renewer = None
        with contextlib.suppress(Exception):
            await self.store.delete(self.key, kind="metadata")

    async def _write(self) -> None:
        body = {"run": self.run, "host": socket.gethostname(), "pid": os.getpid(),
                "machine": this_machine(), "domain": self.domain, "started": self.started,
                "renewed": time.time()}
        await self.store.put(self.key, json.dumps(body).encode(), kind="metadata")

    async def _renew(self) -> None:
        """Rewrite the lease every RENEW_EVERY seconds while it is there; once it is gone
        (another run took it over as stale, or gc deleted it) never write it back: that
        would make the other run lose its lease too."""
        while True:
            await asyncio.sleep(RENEW_EVERY)
            try:
                if await self.store.stat(self.key) is None:
                    return  # the checks before publishing refuse
                await self._write()
            except Exception:  # noqa: BLE001, S112 - the checks before publishing tell
                continue


class LoadLease(PrefixLease):
    """The lease of one run of a load into the domain whose root is ``root_id``."""

    def __init__(self, store: ObjectStore, root_id: str, domain: str) -> None:
        super().__init__(store, ids.object_prefix(root_id) + "/", domain)

    async def acquire(self) -> None:
        """Take the lease, or raise LoadInProgressError naming the run (or the gc) that
        holds the prefix. Stale leases of dead runs are removed."""
        for attempt in range(_ATTEMPTS):
            there_before = {h.key for h in await holders(self.store, self.prefix)}
            found = await self._take()
            if not found.live:
                return
            if any(h.kind == "gc" or h.key in there_before for h in found.live):
                break  # gc deletes the prefix, or a run that was there before goes on
            if attempt + 1 < _ATTEMPTS:  # both started at once: one of us goes first
                await asyncio.sleep(random.uniform(0.05, 0.5))
        self._refuse(found)

    async def check_held(self) -> None:
        """LoadInProgressError unless this run still holds the lease and no other live
        run has one (its lease went stale, e.g. a machine paused past STALE_AFTER)."""
        found = await self.others()
        if found.live or not found.held:
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
                "deleted while it ran (e.g. by `h5dask gc --delete`), so its objects may "
                "be gone too; nothing was published: run the same load again")
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
           "holders", "is_lease_key", "live_holders"]
