"""Housekeeping of domains in a bucket: list them, remove them, collect orphaned objects.

Everything a domain owns lies in two places (HSDS schema v2): its ``<path>/.domain.json``
and every object under ``db/<root id prefix>/`` (the first 16 hex digits of its root
group's id, see :mod:`h5dask.format.ids`). A linked domain's source file is not the
domain's and is never removed.

>>> import h5dask, numpy as np
>>> with h5dask.File("memory://admin-doc/home/a.h5", "w") as f:
...     f["x"] = np.arange(3)
>>> list_domains("memory://admin-doc/")
['memory:///admin-doc/home/a.h5']
>>> rm("memory://admin-doc/home/a.h5").objects  # group, dataset, chunk, .domain.json, summary
5
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .domain import domain_roots
from .errors import DomainNotFoundError, FolderNotEmptyError, LeaseLostError
from .format import ids
from .storage import ObjectStore, open_location, open_prefix
from .storage.sync import all_ended, sync

_DOMAIN_FILE = ".domain.json"
_ROOT_PREFIX = re.compile(r"^db/[0-9a-f]{8}-[0-9a-f]{8}/$")
#: objects younger than this are never collected (a load may still be writing them)
DEFAULT_MIN_AGE = 3600.0
#: gc asks the store whether it still holds its lease before every this many deletes
#: (and its lease's own finding before each one)
DELETE_BATCH = 100


@dataclass
class Removal:
    """What :func:`rm` removed (or, with ``dry_run``, would remove)."""

    domains: list[str] = field(default_factory=list)  # domain URLs
    objects: int = 0  # objects deleted, .domain.json files included
    dry_run: bool = False

    def __str__(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        return "\n".join(f"{verb} {d}" for d in self.domains) + (
            f"\n{verb} {len(self.domains)} domain(s), {self.objects} object(s)")


@dataclass
class Orphan:
    """A ``db/`` root-id prefix no ``.domain.json`` references."""

    prefix: str  # e.g. "db/0123abcd-4567ef01/"
    objects: int
    age_seconds: float  # since its newest object was written
    collected: bool = False  # False if kept: younger than min_age, or a load writes it
    #: the live lease of the load writing it (see h5dask.ingest.lease), "" if none
    loading: str = ""


@dataclass
class Collection:
    """What :func:`gc` found (and deleted, with ``delete=True``)."""

    bucket: str
    orphans: list[Orphan] = field(default_factory=list)
    deleted: bool = False
    #: stale leases (dead or long silent owner) left in the prefixes of published
    #: domains by loads that could not delete them (deleted with ``delete=True``)
    stale_leases: list[str] = field(default_factory=list)
    #: ages were judged by this machine's clock: the store refused gc's probe write
    #: (read-only credentials) or tells no write times
    local_clock: bool = False

    def __str__(self) -> str:
        lines = []
        for o in self.orphans:
            state = ("deleted" if self.deleted else "orphaned") if o.collected else (
                f"kept: a load is writing it, {o.loading}" if o.loading else
                "kept: younger than the minimum age (a load in progress?)")
            lines.append(f"{self.bucket}/{o.prefix}  {o.objects} objects, "
                         f"{o.age_seconds / 3600:.1f} h old  {state}")
        old = [o for o in self.orphans if o.collected]
        lines.append(f"{len(old)} orphaned prefix(es), {sum(o.objects for o in old)} objects"
                     + (" deleted" if self.deleted else
                        " (run with --delete / delete=True to remove them)" if old else ""))
        if self.stale_leases:
            lines.append(f"{len(self.stale_leases)} stale lease(s) of finished or dead loads "
                         + ("deleted" if self.deleted else "(--delete removes them)"))
        if self.local_clock:
            lines.append("(ages by this machine's clock: the store refused a probe write or "
                         "tells no write times; a clock that is off makes them wrong)")
        return "\n".join(lines)


# -- walking a bucket --------------------------------------------------------------------
async def _domain_files(store: ObjectStore, prefix: str) -> list[str]:
    """Every ``.domain.json`` key under ``prefix``, never descending into a ``db/``
    directory (a bucket's objects: there may be millions; on a file system buckets can
    be nested in folders, so any ``db/``)."""
    keys, dirs = await store.list_dir(prefix)
    found = [k for k in keys if k.rsplit("/", 1)[-1] == _DOMAIN_FILE]
    subdirs = [d for d in dirs if d.rstrip("/").rsplit("/", 1)[-1] != "db"]
    for nested in await asyncio.gather(*(_domain_files(store, d) for d in subdirs)):
        found.extend(nested)
    return sorted(found)


def _domain_url(store: ObjectStore, key: str) -> str:
    return store.url_of(key[:-len('/' + _DOMAIN_FILE)])


def list_domains(url: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """The URLs of the domains at or under ``url`` (a bucket, folder or prefix), sorted.

    >>> list_domains("memory://no-such-place/")
    []
    """
    store, prefix = open_prefix(url, storage_options)

    async def run() -> list[str]:
        roots = await domain_roots(store, await _domain_files(store, prefix))
        return [_domain_url(store, k) for k, root in roots.items() if root]

    return sync(run())


# -- rm ------------------------------------------------------------------------------------
def _open_domain(url: str, storage_options: Mapping[str, Any] | None
                 ) -> tuple[ObjectStore, str, str] | None:
    """(store, .domain.json key, root id) if ``url`` names an existing domain."""
    try:
        location = open_location(url, storage_options)
    except ValueError:  # names no domain path (a bucket root)
        return None
    root = sync(domain_roots(location.store, [location.domain_key]))[location.domain_key]
    return (location.store, location.domain_key, root) if root else None


async def _remove_domain(store: ObjectStore, key: str, root: str, dry_run: bool) -> int:
    """Delete a domain's objects (in db/ and beside its .domain.json), then its
    .domain.json last (so an interrupted rm can be run again); the number of objects."""
    objects_prefix = ids.object_prefix(root) + "/"
    # the domain's own objects beside .domain.json (e.g. consolidated metadata) go too;
    # only those beside it: domains in folders below it are not its objects
    beside_keys, _ = await store.list_dir(key[:-len(_DOMAIN_FILE)])
    beside = [k for k in beside_keys if k != key]
    objects = len(beside)
    # page by page: a domain may have millions of chunk objects, never all held at once
    async for page in store.iter_list(objects_prefix):
        objects += len(page)
        if not dry_run:
            # each batch ends whole before a failure is raised: rm must not return
            # while deletes still run, which could remove objects written after it
            await all_ended((store.delete(k) for k in page), "deletes")
    if not dry_run:
        await all_ended((store.delete(k) for k in beside), "deletes")
        await store.delete(key, kind="metadata")
        await store.prune(objects_prefix)
        await store.prune(key[:-len(_DOMAIN_FILE)])
    return objects + 1


def rm(url: str, *, recursive: bool = False, dry_run: bool = False,
       storage_options: Mapping[str, Any] | None = None) -> Removal:
    """Remove the domain at ``url`` with all its objects; with ``recursive=True`` also
    every domain (and folder) under a folder or prefix. ``dry_run`` only reports.

    Raises DomainNotFoundError if nothing is there, FolderNotEmptyError for a folder
    or prefix holding domains without ``recursive``. A linked domain's source file stays.

    >>> rm("memory://rm-doc/home/none.h5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    h5dask.errors.DomainNotFoundError: no h5dask/HSDS domain at ...
    """
    domain = _open_domain(url, storage_options)
    if domain is not None:  # one domain, found where its objects are
        store, key, root = domain
        removal = Removal(dry_run=dry_run, domains=[_domain_url(store, key)])
        removal.objects = sync(_remove_domain(store, key, root, dry_run))
        return removal
    store, prefix = open_prefix(url, storage_options)

    async def run() -> Removal:
        removal = Removal(dry_run=dry_run)
        found = await domain_roots(store, await _domain_files(store, prefix))
        domains = {k: r for k, r in found.items() if r}
        if not found:
            raise DomainNotFoundError(url)
        if not recursive:
            raise FolderNotEmptyError(
                f"{url!r} is a folder or prefix holding {len(domains)} domain(s), not one "
                "domain: pass --recursive (recursive=True) to remove everything under it")
        for key, root in domains.items():
            removal.objects += await _remove_domain(store, key, root, dry_run)
            removal.domains.append(_domain_url(store, key))
        folders = [k for k, r in found.items() if not r]
        if not dry_run:
            await all_ended((store.delete(k, kind="metadata") for k in folders), "deletes")
            for key in folders:
                await store.prune(key[:-len(_DOMAIN_FILE)])
        removal.objects += len(folders)
        return removal

    return sync(run())


# -- gc ------------------------------------------------------------------------------------
async def _running_load(store: ObjectStore, prefix: str, keys: Mapping[str, float],
                        now: float) -> str:
    """The live lease of a load writing ``prefix`` (whose objects are ``keys``), as
    text, or "": for the report of a dry run (``now`` by the store's clock; deleting
    judges under gc's own lease, see :func:`_collect`)."""
    from .ingest.lease import is_lease_key, live_holders

    if not any(is_lease_key(k) for k in keys):
        return ""
    running = await live_holders(store, prefix, now)
    return running[0].describe(now) if running else ""


async def _stale_leases(store: ObjectStore, prefixes: set[str], now: float) -> list[str]:
    """The stale leases in the top level of ``prefixes`` (published domains': a load
    that published and then failed to delete its lease leaves it there, and gc never
    collects a referenced prefix), ``now`` by the store's clock: one delimited listing
    per prefix, the lease objects read only where there are some. Also clock probes
    (:func:`~h5dask.ingest.lease.store_now`) a crash left there or in ``db/`` itself,
    once older than a lease's TTL."""
    from .ingest.lease import STALE_AFTER, holders, is_lease_key

    async def old_probes(keys: list[str]) -> list[str]:
        probes = [k for k in keys if k.rsplit("/", 1)[-1].startswith(".h5dask-clock-")]
        found = await asyncio.gather(*(store.stat(k) for k in probes))
        return [k for k, v in zip(probes, found)
                if v is not None and now - (v.modified or now) >= STALE_AFTER]

    async def stale_in(prefix: str) -> list[str]:
        keys, _ = await store.list_dir(prefix)
        stale = await old_probes(keys)
        if not any(is_lease_key(k) for k in keys):
            return stale
        return stale + [h.key for h in await holders(store, prefix) if not h.live(now)]

    found = await asyncio.gather(*(stale_in(p) for p in ["db/", *sorted(prefixes)]))
    return [key for keys in found for key in keys]


async def _referenced(store: ObjectStore) -> set[str]:
    """The ``db/<root id>/`` prefixes some ``.domain.json`` of the bucket references."""
    roots = await domain_roots(store, await _domain_files(store, ""))
    return {ids.object_prefix(r) + "/" for r in roots.values() if r}


async def _delete_holding(store: ObjectStore, gc_lease: Any, prefix: str,
                          keys: list[str]) -> None:
    """Delete ``keys`` of ``prefix`` while gc holds its lease there: the store is asked
    (one HEAD) before every :data:`DELETE_BATCH` deletes and once more after the last,
    and right before each delete is sent (once a request slot is had) the lease's own
    finding is checked: its renewer's, and whether gc paused long enough to be judged
    stale. Once the lease is lost (taken over, deleted, or gc paused past its TTL) not
    one more delete is sent: :class:`LeaseLostError` (also when the loss is found only
    after the last delete: then a load may have taken the prefix meanwhile)."""
    sent: set[str] = set()  # (a retried delete is sent again: counted once)

    def check(key: str) -> None:
        if gc_lease.lost_by_now():
            raise _lost(prefix, sent)
        sent.add(key)

    async def one(key: str) -> None:
        await store.delete(key, before_sending=lambda: check(key))

    for start in range(0, len(keys), DELETE_BATCH):
        if not await gc_lease.still_held():
            raise _lost(prefix, sent)
        # every one ends (after a loss each finds it, unsent) before gc goes on
        await all_ended((one(k) for k in keys[start:start + DELETE_BATCH]), "deletes")
    if keys and not await gc_lease.still_held():
        raise _lost(prefix, sent)


def _lost(prefix: str, done: set[str]) -> LeaseLostError:
    return LeaseLostError(
        f"`h5dask gc --delete` lost its lease on {prefix} while deleting it (the lease "
        "object was deleted or rewritten by another, or gc paused so long that another "
        f"may have taken the prefix over): it stopped at once, after {len(done)} deletes "
        "sent there (the first ones of a batch may have been sent before the loss was "
        "found); nothing else of that prefix was deleted. Check that no load is writing "
        "it, then run it again")


async def _collect(store: ObjectStore, orphans: list[Orphan]) -> list[Orphan]:
    """Delete the orphans' objects, each under gc's lease on its prefix (see
    :class:`~h5dask.ingest.lease.GcLease`): a load holding a live lease keeps its prefix,
    a load starting meanwhile refuses. Returns the orphans that still are orphans: one a
    load published before gc's lease (its domain listed again after every lease was
    taken) is left out."""
    from .ingest.lease import GcLease

    held: list[tuple[Orphan, GcLease]] = []
    try:
        for orphan in orphans:
            gc_lease = GcLease(store, orphan.prefix)
            held.append((orphan, gc_lease))  # before taking: released even if take fails
            found = await gc_lease.take()
            if found.live:
                held.pop()  # take() deleted its lease again
                orphan.collected, orphan.loading = False, found.live[0].describe(found.now)
        referenced = await _referenced(store) if held else set()
        for orphan, gc_lease in held:
            if orphan.prefix in referenced:
                continue
            keys = [k for k in await store.list(orphan.prefix) if k != gc_lease.key]
            await _delete_holding(store, gc_lease, orphan.prefix, keys)
            orphan.objects = len(keys)
            await gc_lease.release()  # last: until now, no load starts on the prefix
            await store.prune(orphan.prefix)
    finally:
        # every release ended before gc returns or raises (nothing of it left running)
        await all_ended((gc_lease.release() for _, gc_lease in held), "lease releases")
    return [o for o in orphans if o.prefix not in referenced]


def gc(bucket_url: str, *, delete: bool = False, min_age: float = DEFAULT_MIN_AGE,
       storage_options: Mapping[str, Any] | None = None) -> Collection:
    """Find the ``db/<root id>/`` prefixes of a bucket that no ``.domain.json`` references
    (left by an interrupted load, or by ``--overwrite`` replacing a domain) and, with
    ``delete=True``, remove those whose newest object is older than ``min_age`` seconds
    and that no running load holds (a live lease, see :mod:`h5dask.ingest.lease`).

    It also finds the stale leases (see :mod:`h5dask.ingest.lease`: owner dead, or not
    renewed for their TTL by the store's clock) that loads which published and then
    could not delete them left in their domains' prefixes, and deletes them too.

    Ages are judged by the store's clock (the one that wrote the objects' times, never
    this machine's, which may be hours off): gc writes, reads back and deletes one tiny
    probe object in ``db/``; where that is refused it judges by this machine's
    clock and says so.

    ``bucket_url`` names the bucket root: ``s3://bucket`` or the directory holding ``db/``.

    >>> gc("memory://gc-doc/").orphans
    []
    """
    if min_age < 0:
        raise ValueError(f"min_age must be >= 0 seconds, not {min_age}")
    store, prefix = open_prefix(bucket_url, storage_options)
    if prefix:
        raise ValueError(
            f"{bucket_url!r} is inside a bucket ({store.root_url}), not its root: gc looks at "
            f"every domain of a bucket, give {store.root_url}")

    async def run() -> Collection:
        from .ingest.lease import store_now

        referenced = await _referenced(store)
        _, dirs = await store.list_dir("db/")
        candidates = [d for d in dirs if _ROOT_PREFIX.match(d) and d not in referenced]
        collection = Collection(store.root_url, deleted=delete)
        # ages by the store's clock, the one that wrote the objects' times (a probe in
        # db/, where gc must be allowed to write; none in a bucket without db/)
        now = await store_now(store, "db/") if candidates or referenced else time.time()
        if now is None:
            now, collection.local_clock = time.time(), True
        for candidate in candidates:
            times = await store.list_modified(candidate)
            if not times:
                continue  # an emptied "directory" some stores still list
            age = now - max(times.values())
            old = age >= min_age
            loading = "" if delete and old else await _running_load(store, candidate, times,
                                                                    now)
            collection.orphans.append(Orphan(candidate, len(times), age,
                                             collected=old and not loading, loading=loading))
        collection.stale_leases = await _stale_leases(store, referenced, now)
        if delete:
            # (safe: a stale lease's owner, should it wake, finds it gone and stops)
            # all ended before a failure is raised: none still running when gc returns
            await all_ended((store.delete(k, kind="metadata")
                             for k in collection.stale_leases), "deletes of stale leases")
            kept = [o for o in collection.orphans if not o.collected]
            collected = await _collect(store, [o for o in collection.orphans if o.collected])
            collection.orphans = sorted(kept + collected, key=lambda o: o.prefix)
        return collection

    return sync(run())


__all__ = ["Collection", "FolderNotEmptyError", "Orphan", "Removal", "gc", "list_domains", "rm"]
