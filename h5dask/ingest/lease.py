"""The lease of a running load: one small JSON object per run under the new domain's
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
:data:`RENEW_EVERY` seconds; one not renewed for :data:`STALE_AFTER` seconds, or whose
process is gone from this machine, is stale: its run died. A run checks that it still
holds its lease before it removes what it wrote and before it publishes.

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
from ..storage.base import ObjectStore

#: seconds after which a lease that was not renewed is stale (its load died)
STALE_AFTER = 300.0
#: how often a running load renews its lease
RENEW_EVERY = 30.0
#: tries to take a lease when another run starts at the same moment
_ATTEMPTS = 4
_LEASE_NAME = re.compile(r"/\.load-[0-9a-f]{32}\.json$")


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
    """A run's lease as stored: ``key``, ``run`` id, ``host``, ``pid``, ``domain`` and the
    times it ``started`` and was last ``renewed`` (seconds since the epoch)."""

    key: str
    run: str
    host: str = "?"
    pid: int = 0
    machine: str = ""
    domain: str = "?"
    started: float = 0.0
    renewed: float = 0.0

    def live(self, now: float) -> bool:
        """Renewed within :data:`STALE_AFTER`, and, if it ran on this machine, its
        process still there."""
        if now - self.renewed >= STALE_AFTER:
            return False
        if self.machine and self.machine == this_machine() and self.pid != os.getpid():
            return _process_alive(self.pid)
        return True

    def describe(self, now: float) -> str:
        return (f"run {self.run[:8]} (host {self.host}, pid {self.pid}, started "
                f"{max(0.0, now - self.started):.0f} s ago, lease renewed "
                f"{max(0.0, now - self.renewed):.0f} s ago)")

    @classmethod
    def parse(cls, key: str, blob: bytes) -> LeaseHolder:
        """The lease at ``key``; unreadable JSON gives a stale lease (renewed never)."""
        try:
            raw: Any = json.loads(blob)
            return cls(key, str(raw["run"]), str(raw.get("host", "?")), int(raw.get("pid", 0)),
                       str(raw.get("machine", "")), str(raw.get("domain", "?")),
                       float(raw.get("started", 0.0)), float(raw.get("renewed", 0.0)))
        except (ValueError, TypeError, KeyError):
            return cls(key, key.rsplit("/", 1)[-1])


def is_lease_key(key: str) -> bool:
    """Whether ``key`` is a load's lease object."""
    return _LEASE_NAME.search(key) is not None


async def holders(store: ObjectStore, prefix: str) -> list[LeaseHolder]:
    """Every lease under ``prefix`` (a ``db/<root>/`` prefix): one delimited listing of
    its top level (never its chunks), then each lease object."""
    keys, _dirs = await store.list_dir(prefix)
    leases = [k for k in keys if is_lease_key(k)]
    blobs = await asyncio.gather(*(store.get(k, kind="metadata") for k in leases))
    return [LeaseHolder.parse(k, b) for k, b in zip(leases, blobs) if b is not None]


async def live_holders(store: ObjectStore, prefix: str) -> list[LeaseHolder]:
    """The live leases under ``prefix``."""
    now = time.time()
    return [h for h in await holders(store, prefix) if h.live(now)]


class LoadLease:
    """The lease of one run of a load into the domain whose root is ``root_id``."""

    def __init__(self, store: ObjectStore, root_id: str, domain: str) -> None:
        self.store = store
        self.domain = domain
        self.prefix = ids.object_prefix(root_id) + "/"
        self.run = uuid.uuid4().hex
        self.key = f"{self.prefix}.load-{self.run}.json"
        self.started = time.time()
        self._renewer: asyncio.Task | None = None

    async def acquire(self) -> None:
        """Take the lease, or raise LoadInProgressError naming the run that holds it.
        Stale leases of dead runs are removed."""
        for attempt in range(_ATTEMPTS):
            await self._refuse_if_held()
            await self._write()
            now = time.time()
            found = await holders(self.store, self.prefix)
            others = [h for h in found if h.run != self.run and h.live(now)]
            if not others:
                stale = [h.key for h in found if h.run != self.run]
                await asyncio.gather(*(self.store.delete(k, kind="metadata") for k in stale))
                self._renewer = asyncio.ensure_future(self._renew())
                return
            await self.store.delete(self.key, kind="metadata")
            if attempt + 1 < _ATTEMPTS:  # both started at once: one of us goes first
                await asyncio.sleep(random.uniform(0.05, 0.5))
        self._refuse(others)

    async def check_held(self) -> None:
        """LoadInProgressError unless this run still holds the lease and no other live
        run has one (its lease went stale, e.g. a machine paused past STALE_AFTER)."""
        now = time.time()
        found = await holders(self.store, self.prefix)
        others = [h for h in found if h.run != self.run and h.live(now)]
        if others or not any(h.run == self.run for h in found):
            self._refuse(others, lost=True)

    async def others_live(self) -> bool:
        """Whether another run holds a live lease on the prefix (best effort: True if it
        cannot be told, so that nothing of another run is removed)."""
        try:
            return any(h.run != self.run for h in await live_holders(self.store, self.prefix))
        except Exception:  # noqa: BLE001 - the caller only decides whether to clean up
            return True

    async def release(self) -> None:
        """Stop renewing and delete this run's lease (best effort)."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(BaseException):
                await self._renewer
            self._renewer = None
        with contextlib.suppress(Exception):
            await self.store.delete(self.key, kind="metadata")

    async def _refuse_if_held(self) -> None:
        others = [h for h in await live_holders(self.store, self.prefix) if h.run != self.run]
        if others:
            self._refuse(others)

    def _refuse(self, others: list[LeaseHolder], lost: bool = False) -> None:
        if lost and not others:
            raise LoadInProgressError(
                f"the load into {self.domain!r} lost its lease: its lease object was "
                "deleted while it ran (e.g. by `h5dask gc --delete`), so its objects may "
                "be gone too; nothing was published: run the same load again")
        what = "lost its lease to another run" if lost else "is running already"
        raise LoadInProgressError(
            f"a load into {self.domain!r} {what}: {others[0].describe(time.time())}. Wait "
            "for it to finish (then this domain exists), or, if that run died, run again "
            f"once its lease is stale ({STALE_AFTER:.0f} s after its last renewal; at once "
            "on its own machine)")

    async def _write(self) -> None:
        body = {"run": self.run, "host": socket.gethostname(), "pid": os.getpid(),
                "machine": this_machine(), "domain": self.domain, "started": self.started,
                "renewed": time.time()}
        await self.store.put(self.key, json.dumps(body).encode(), kind="metadata")

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(RENEW_EVERY)
            with contextlib.suppress(Exception):  # the checks before publishing tell
                await self._write()


__all__ = ["RENEW_EVERY", "STALE_AFTER", "LeaseHolder", "LoadLease", "holders",
           "is_lease_key", "live_holders"]
