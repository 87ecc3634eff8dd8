"""A domain's metadata session: loads, caches and writes the JSON objects of one domain.

The h5py-like API (:mod:`h5dask.file`) and the xarray backend sit on top of it.
Metadata changes are kept in memory and written by :meth:`DomainSession.flush`:
new objects first (children before parents), then changed existing objects, then the
root group and the ``.domain.json`` last, so readers (and a crash) never see a link or
reference to an object that does not exist yet.
"""

from __future__ import annotations

import asyncio
import dataclasses
import getpass
import json
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import (
    AmbiguousBucketRootError,
    DomainExistsError,
    DomainNotFoundError,
    DomainURLError,
    H5DaskError,
    MetadataError,
    NotADomainError,
    ObjectNotFoundError,
    ReadOnlyError,
    StorageError,
    StoragePermissionError,
    malformed_metadata,
)
from .format import consolidated, ids
from .format.metadata import (
    DatasetMeta,
    DatatypeMeta,
    DomainMeta,
    GroupMeta,
    committed_type_ids,
    domain_json,
    dump_json,
    group_json,
    load_json,
    object_json,
    parse_dataset,
    parse_datatype,
    parse_domain,
    parse_group,
)
from .storage import Location
from .storage.links import LinkPolicy
from .storage.sync import all_ended, on_io_loop, sync

Meta = GroupMeta | DatasetMeta | DatatypeMeta
#: (root id, key -> content MD5): one listing of a domain's keys
_Listing = tuple[str, dict[str, str]]


@dataclass(frozen=True)
class _Remembered:
    """A domain's consolidated summary as last found true in this process, with the
    objects it names as parsed then (empty when not kept: see :class:`_OpenMemo`)."""

    summary: consolidated.Consolidated
    metas: dict[str, Meta]


class _OpenMemo:
    """The summaries of the last domains opened in this process.

    A re-open fetches ``.domain.json``, the consolidated object, the objects the
    remembered summary names (or, where its bodies are checked by listing, the listing
    of the domain's keys) and its coordinates' chunks all in its first round trip,
    then checks them exactly as a first open does (root, then each object's SHA-256, or
    listed MD5, against the consolidated object just fetched): a memo that is out of
    date costs wasted requests, never a stale value. The parsed objects are reused
    only when the fresh summary is the remembered one and every object fetched has its
    bytes.

    Bounded: ``domains`` summaries (of at most ``max_summary`` objects each, some 100
    bytes per object) and ``max_parsed`` parsed objects in all (some 15 KB each: the
    oldest domains' are dropped first, their summaries kept).
    """

    def __init__(self, domains: int, max_summary: int, max_parsed: int) -> None:
        self.domains = domains
        self.max_summary = max_summary
        self.max_parsed = max_parsed
        self._lock = threading.Lock()
        self._entries: OrderedDict[Any, _Remembered] = OrderedDict()

    def get(self, key: Any) -> _Remembered | None:
        with self._lock:
            return self._entries.get(key)

    def put(self, key: Any, summary: consolidated.Consolidated, metas: dict[str, Meta]
            ) -> None:
        if len(summary.objects) > self.max_summary:
            self.pop(key)
            return
        with self._lock:
            self._entries[key] = _Remembered(
                summary, metas if len(metas) <= self.max_parsed else {})
            self._entries.move_to_end(key)
            while len(self._entries) > self.domains:
                self._entries.popitem(last=False)
            parsed = sum(len(e.metas) for e in self._entries.values())
            for old_key, entry in list(self._entries.items()):
                if parsed <= self.max_parsed:
                    break
                if entry.metas:
                    parsed -= len(entry.metas)
                    self._entries[old_key] = _Remembered(entry.summary, {})

    def pop(self, key: Any) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork


#: re-opens of the last 16 domains take one round trip (see docs/format.md, "Opening")
_open_memo = _OpenMemo(domains=16, max_summary=1 << 16, max_parsed=4096)
os.register_at_fork(after_in_child=_open_memo.after_fork)


def forget_opened_domains() -> None:
    """Forget the summaries of the domains opened in this process: the next open of each
    costs two round trips again, as the first did (for measurements; never needed for
    correctness, since every open checks what it fetched).

    >>> forget_opened_domains()
    """
    _open_memo.clear()


def default_acls(owner: str) -> dict:
    """HSDS-style ACLs: the owner may do everything, everyone else may read."""
    full = dict.fromkeys(("create", "read", "update", "delete", "readACL", "updateACL"), True)
    read_only = {k: k == "read" for k in full}
    return {owner: full, "default": read_only}


class DomainSession:
    """The open metadata of one domain (mode r, r+, w, a)."""

    def __init__(self, location: Location, mode: str = "r", owner: str | None = None,
                 link_policy: LinkPolicy | None = None, consolidated: bool = False,
                 new_root_id: str | None = None) -> None:
        """``consolidated=True``: use the domain's consolidated object, if any, to fetch
        all its metadata and coordinate chunks at once (see
        :mod:`h5dask.format.consolidated`); the xarray backend does, the h5py-like API
        reads lazily instead. ``new_root_id``: the root group's id if the domain is
        created (default: a fresh one)."""
        if new_root_id is not None and not ids.is_root_id(new_root_id):
            raise ValueError(f"{new_root_id!r} is not a root group's id")
        self._new_root_id = new_root_id
        self._walked = False  # load_all() done
        if mode not in ("r", "r+", "w", "w-", "x", "a"):
            raise ValueError(f"mode must be one of r, r+, w, w-, x, a; got {mode!r}")
        self.location = location
        self.store = location.store
        #: which files linked datasets may read (default: the domain's store, and the
        #: prefixes in H5DASK_ALLOWED_LINK_PREFIXES)
        self.link_policy = link_policy if link_policy is not None else LinkPolicy.from_option()
        self.mode = mode
        self.writable = mode != "r"
        self._cache: dict[str, Any] = {}  # id -> parsed meta
        self._dirty: dict[str, dict] = {}  # id -> JSON to write
        self._new_ids: set[str] = set()  # created in this session, not written yet
        self._domain_json: dict | None = None
        self._domain_dirty = False
        self._hashes: dict[str, str] = {}  # id -> sha256 of its JSON as read or written
        self._md5s: dict[str, str] = {}  # id -> MD5 of the same bytes (see consolidated)
        #: "absent", "used" or "stale" (then every object was checked, nothing trusted)
        self.consolidated_state = "absent"
        self._use_consolidated = consolidated
        self.owner = owner or _default_owner()
        try:
            self.root_id = self._open()
        except BaseException:
            _open_memo.pop(self._memo_key)
            self.forget_prefetched()  # chunk GETs started for an open that failed
            raise

    # -- opening --------------------------------------------------------------------
    def _open(self) -> str:
        key = self.location.domain_key
        summary_blob = None
        early: dict[str, bytes | None] = {}  # objects fetched with .domain.json (see memo)
        listing: _Listing | None = None  # listed with .domain.json (see memo)
        memo = None
        if self._use_consolidated and self.mode in ("r", "r+", "a"):
            memo = _open_memo.get(self._memo_key)
            if memo is not None:
                self._start_chunks(memo.summary.coordinate_chunks)
            listed = memo is not None and self._listable(memo.summary)
            # one round trip for both (and, on a re-open, for the objects the summary
            # named last time, or the listing that checks their bodies): the summary is
            # tried only if the domain exists
            data, summary_blob, early, listing = sync(self._get_first(
                key, self._consolidated_key,
                list(memo.summary.objects) if memo is not None and not listed else [],
                memo.summary.root if listed else None))
        else:
            data = sync(self.store.get(key, kind="metadata"))
        exists = data is not None
        if self.mode in ("w-", "x") and exists:
            raise DomainExistsError(
                f"domain {self.location.url!r} already exists (mode {self.mode!r}): open it "
                "with mode 'w' to replace it, or 'a' to add to it")
        if self.mode in ("r", "r+") and not exists:
            raise self._not_found()
        if exists and self.mode in ("r", "r+", "a"):
            domain = parse_domain(key, _load_json(key, data))
            if domain.root is None:
                raise DomainNotFoundError(
                    self.location.url, "it is a folder, not a domain (no 'root' in .domain.json)")
            self._domain_json = domain.raw
            summary = consolidated.parse(summary_blob, domain.root)
            if summary is not None:
                sync(self._load_consolidated(summary, early, memo, listing))
            if self._use_consolidated:
                self._remember(summary)
            self._prefetch_root(domain)
            return domain.root
        # a new domain (w, w-, x, or a on nothing): a fresh root; published on flush
        if self.location.ambiguity:
            raise AmbiguousBucketRootError(self.location.ambiguity)
        now = time.time()
        root = self._new_root_id or ids.new_root_id()
        previous = _previous_domain(key, data) if exists else {}
        self._domain_json = domain_json(
            root, previous.get("owner", self.owner),
            previous.get("acls", default_acls(self.owner)), previous.get("created", now), now)
        self._domain_dirty = True
        self._new_object(root, object_json(root, root, now, group_json()))
        return root

    def _not_found(self) -> DomainNotFoundError:
        """No ``.domain.json``: say so, or, if the URL names a plain HDF5/netCDF file,
        say how to open or import it instead."""
        from .format.signature import HEAD_SIZE, describe, sniff

        url = self.location.url
        try:
            head = sync(self.store.get(self.location.domain, kind="metadata",
                                       byte_range=(0, HEAD_SIZE)))
        except (H5DaskError, OSError):
            head = None
        kind = sniff(head) if head else None
        if kind == "hdf5":
            return NotADomainError(url,
                f"{url!r} is {describe(kind)}, not an h5dask/HSDS domain: open it with "
                f"xr.open_dataset(..., engine='h5netcdf'), or make a domain of it with "
                f"`h5dask load {url} DOMAIN_URL` (or h5dask.load; --link / link=True "
                f"references its chunks where they are instead of copying them) and open "
                f"that")
        if kind == "netcdf3":
            return NotADomainError(url,
                f"{url!r} is {describe(kind)}, not an h5dask/HSDS domain: open it with "
                f"xr.open_dataset(..., engine='scipy') or 'netcdf4'")
        store, domain = self.store, self.location.domain

        def near_miss() -> str:  # its requests are paid only when the error is shown
            if on_io_loop():
                return ""  # (a message formatted on the loop cannot wait for it)
            try:
                return sync(_near_miss(store, domain))
            except (H5DaskError, OSError):
                return ""

        return DomainNotFoundError(url, near_miss)

    async def _get_first(self, domain_key: str, consolidated_key: str, obj_ids: list[str],
                         listed_root: str | None
                         ) -> tuple[bytes | None, bytes | None, dict[str, bytes | None],
                                    _Listing | None]:
        """The first round trip: ``.domain.json``, the consolidated object and the
        objects ``obj_ids`` (those a re-open expects) or the listing of the domain
        ``listed_root`` (a re-open's, where bodies are checked by listing), all at once."""
        got = await asyncio.gather(self.store.get(domain_key, kind="metadata"),
                                   self.store.get(consolidated_key, kind="metadata"),
                                   self._fetch_objects(obj_ids),
                                   self._list_domain(listed_root))
        return got[0], got[1], dict(zip(obj_ids, got[2])), got[3]

    def _listable(self, summary: consolidated.Consolidated) -> bool:
        """Whether one LIST can check this summary's bodies here (see consolidated)."""
        return bool(summary.md5) and self.store.content_md5_listing

    async def _list_domain(self, root: str | None) -> _Listing | None:
        """(root, key -> content MD5) of the first page of keys of a domain's objects;
        None if the store cannot list them (then the objects are fetched one by one)."""
        if root is None:
            return None
        try:
            found = await self.store.list_md5(ids.object_prefix(root) + "/",
                                              consolidated.LIST_PAGE)
        except StoragePermissionError:
            # e.g. a public bucket that allows GetObject only: GETs still work
            self.store.content_md5_listing = False  # (this store instance, this process)
            return None
        except StorageError:
            return None  # failed after its retries: the GETs may fare better
        return None if found is None else (root, found)

    @property
    def _consolidated_key(self) -> str:
        return f"{self.location.domain}/{consolidated.NAME}"

    @property
    def _memo_key(self) -> tuple[Any, str]:
        # the store instance (one per endpoint, bucket and credentials in a process; held
        # by the key, so never mistaken for a later one) and the domain
        return self.store, self.location.domain_key

    async def _load_consolidated(self, summary: consolidated.Consolidated,
                                 early: dict[str, bytes | None] | None = None,
                                 memo: _Remembered | None = None,
                                 listing: _Listing | None = None, chunks: bool = True) -> None:
        """Fetch every object the summary names, and (``chunks``) its coordinates' chunks, at once
        (those in ``early``, fetched with ``.domain.json`` on a re-open, are not fetched
        again), or, where the summary's bodies can be checked by one listing (see
        :mod:`h5dask.format.consolidated`), list the domain's keys instead. Only what was
        fetched, or listed with the MD5 of its body, is used; the summary is "stale" if
        any object is missing or its bytes are not the ones summarised (then the usual
        walk fills the gaps)."""
        early = early or {}
        if chunks:
            self._start_chunks(summary.coordinate_chunks)  # dropped by forget_prefetched
        if self._listable(summary) and summary.bodies:
            if listing is None or listing[0] != summary.root:
                listing = await self._list_domain(summary.root)
            if listing is not None and self._use_bodies(summary, listing[1], memo):
                return
        ids_ = sorted(summary.objects, key=lambda i: i[0] != "t")  # datatypes first
        late = [i for i in ids_ if i not in early]
        fetched = dict(zip(late, await self._fetch_objects(late)))
        blobs = [early[i] if i in early else fetched[i] for i in ids_]
        digests = [None if b is None else consolidated.digest(b) for b in blobs]
        stale = any(d is None or d != summary.objects[i] for i, d in zip(ids_, digests))
        if not stale and self._reuse_memo(summary, memo):
            return
        for obj_id, blob in zip(ids_, blobs):
            if blob is None:
                continue
            try:  # what was fetched is the object as it is now: kept, whatever the summary
                self._cache_blobs([obj_id], [blob])
            except (H5DaskError, RuntimeError):
                stale = True  # e.g. no longer linked and unreadable: the walk decides
        self.consolidated_state = "stale" if stale else "used"

    def _reuse_memo(self, summary: consolidated.Consolidated, memo: _Remembered | None
                    ) -> bool:
        """Take the memo's parsed objects if the summary, found true, is the remembered
        one: every object has the bytes it had when they were parsed (committed
        datatypes included)."""
        if memo is None or not memo.metas or memo.summary.objects != summary.objects:
            return False
        self._cache.update(memo.metas)
        self._hashes.update(summary.objects)
        self._md5s.update(memo.summary.md5)
        self.consolidated_state = "used"
        return True

    def _use_bodies(self, summary: consolidated.Consolidated, listed: dict[str, str],
                    memo: _Remembered | None) -> bool:
        """Use the bodies the listing ``listed`` (key -> content MD5) shows unchanged;
        False if it shows none (then this store's ETags are not content MD5s, e.g. SSE-KMS,
        and the objects are fetched instead, here and in later opens)."""
        ids_ = sorted(summary.bodies, key=lambda i: i[0] != "t")  # datatypes first
        verified = [i for i in ids_ if listed.get(ids.object_key(i)) == summary.md5[i]]
        if not verified:
            self.store.content_md5_listing = False  # (this store instance, this process)
            return False
        stale = len(verified) != len(summary.objects)
        if not stale and self._reuse_memo(summary, memo):
            return True
        for obj_id in verified:
            key = ids.object_key(obj_id)
            try:  # the object as it is now (its MD5 says so), whatever the summary
                self._cache[obj_id] = self._parse(obj_id, key, summary.bodies[obj_id])
            except (H5DaskError, RuntimeError):
                stale = True  # e.g. no longer linked and unreadable: the walk decides
                continue
            self._hashes[obj_id] = summary.objects[obj_id]
            self._md5s[obj_id] = summary.md5[obj_id]
        # the others (changed, or beyond the listing's page) are fetched by the walk
        self.consolidated_state = "stale" if stale else "used"
        return True

    def _start_chunks(self, chunks: Iterable[tuple[str, int]]) -> None:
        """Start the GETs of these chunk objects with one launch (their bytes are
        taken by the reads at open, and dropped by :meth:`forget_prefetched`)."""
        from .readahead import get_readahead

        ra = get_readahead()
        for key, bound in chunks:
            ra.start_key(self.store, key, bound, owner=self, launch=False)
        ra.launch()

    def _remember(self, summary: consolidated.Consolidated | None) -> None:
        """Remember a summary found true, so that a re-open in this process fetches its
        objects in the first round trip; forget the domain otherwise."""
        if summary is None or self.consolidated_state != "used":
            _open_memo.pop(self._memo_key)
            return
        metas = {i: self._cache[i] for i in summary.objects if i in self._cache}
        _open_memo.put(self._memo_key, dataclasses.replace(summary, bodies={}),  # (parsed)
                       metas if len(metas) == len(summary.objects) else {})

    def prefetch_coordinates(self, metas: Iterable[Meta]) -> None:
        """Start fetching the chunks of the small coordinates among ``metas`` (xarray
        reads them all at open), together rather than one round trip each."""
        self._start_chunks([chunk for meta in metas if isinstance(meta, DatasetMeta)
                            for chunk in _coordinate_chunks_of(meta)])

    def forget_prefetched(self) -> None:
        """Drop chunk bytes fetched at open and not used by now (so none is read late)."""
        from .readahead import get_readahead

        get_readahead().forget(owner=self)

    def _prefetch_root(self, domain: DomainMeta) -> None:
        assert domain.root is not None
        self.load(domain.root)

    # -- reading metadata -----------------------------------------------------------
    def _parse(self, obj_id: str, key: str, obj: dict) -> Meta:
        kind = obj_id[0]
        if not isinstance(obj, dict):
            raise MetadataError(key, f"must be a JSON object, not {type(obj).__name__}")
        if obj.get("id") != obj_id:
            raise MetadataError(key, f"'id' is {obj.get('id')!r}, expected {obj_id!r}")
        with malformed_metadata(key):
            if kind == "g":
                return parse_group(key, obj)
            if kind == "d":
                return parse_dataset(key, obj, self.resolve_type)
            return parse_datatype(key, obj)

    async def _fetch_objects(self, obj_ids: list[str]) -> list[bytes | None]:
        keys = [ids.object_key(i) for i in obj_ids]
        return list(await asyncio.gather(*(self.store.get(k, kind="metadata") for k in keys)))

    def _cache_blobs(self, obj_ids: list[str], blobs: list[bytes | None]) -> list[str]:
        """Parse and cache fetched objects (datatypes first, so datasets can resolve
        committed types from the cache); returns the keys of those that were missing."""
        order = sorted(range(len(obj_ids)), key=lambda n: obj_ids[n][0] != "t")
        missing = []
        for n in order:
            obj_id, key = obj_ids[n], ids.object_key(obj_ids[n])
            if blobs[n] is None:
                missing.append(key)
                continue
            obj = _load_json(key, blobs[n])
            self._cache[obj_id] = self._parse(obj_id, key, obj)
            self._note_bytes(obj_id, blobs[n])
        return missing

    async def load_many_async(self, obj_ids: Iterable[str]) -> list[Meta]:
        """Load (concurrently) and cache the metadata of many objects.

        Committed datatypes that the datasets name by id are fetched here too, before the
        datasets are parsed: parsing runs on the I/O loop, where it must not block.
        """
        obj_ids = list(obj_ids)
        fetched = await self._fetch_json([i for i in dict.fromkeys(obj_ids)
                                          if i not in self._cache])
        while True:  # a committed type may itself name another one
            named = {t for i, (_key, obj) in fetched.items()
                     if i[0] in "dt" and isinstance(obj, dict)  # else refused when parsed
                     for t in committed_type_ids(obj.get("type"))}
            named -= self._cache.keys() | fetched.keys()
            if not named:
                break
            fetched.update(await self._fetch_json(sorted(named)))
        # datatypes first, so datasets resolve committed types from the cache
        for obj_id in sorted(fetched, key=lambda i: i[0] != "t"):
            key, obj = fetched[obj_id]
            self._cache[obj_id] = self._parse(obj_id, key, obj)
        return [self._cache[i] for i in obj_ids]

    async def _fetch_json(self, obj_ids: list[str]) -> dict[str, tuple[str, Any]]:
        """id -> (key, JSON) of objects fetched concurrently; all must exist."""
        keys = [ids.object_key(i) for i in obj_ids]
        blobs = await asyncio.gather(*(self.store.get(k, kind="metadata") for k in keys))
        missing = [k for k, b in zip(keys, blobs) if b is None]
        if missing:
            raise MetadataError(missing[0], "object is linked from the domain but does not exist")
        for i, b in zip(obj_ids, blobs):
            self._note_bytes(i, b)
        return {i: (k, _load_json(k, b)) for i, k, b in zip(obj_ids, keys, blobs)}

    def load_all(self) -> None:
        """A read-only session about to walk the whole tree (``visititems``): fetch every
        metadata object at once through the domain's consolidated object, if it has one
        (one GET, then one LIST or one concurrent round trip), instead of a round trip
        per group. Once per session; nothing else changes (objects are still checked
        as :meth:`_load_consolidated` checks them, and missing ones loaded one by one)."""
        if self.writable or self.consolidated_state != "absent" or self._walked:
            return
        self._walked = True
        blob = sync(self.store.get(self._consolidated_key, kind="metadata"))
        summary = consolidated.parse(blob, self.root_id)
        if summary is not None:
            sync(self._load_consolidated(summary, chunks=False))

    def load_many(self, obj_ids: Iterable[str]) -> list[Meta]:
        obj_ids = list(obj_ids)
        if all(i in self._cache for i in obj_ids):  # e.g. all fetched at open
            return [self._cache[i] for i in obj_ids]
        return sync(self.load_many_async(obj_ids))

    def load(self, obj_id: str) -> Meta:
        if obj_id in self._cache:
            return self._cache[obj_id]
        return self.load_many([obj_id])[0]

    def _note_bytes(self, obj_id: str, blob: bytes) -> None:
        """Remember the digests of an object's bytes as read or written (for the
        consolidated object this session may write)."""
        self._hashes[obj_id] = consolidated.digest(blob)
        self._md5s[obj_id] = consolidated.md5(blob)

    def resolve_type(self, type_id: str) -> dict:
        """The type JSON of a committed datatype (loaded if needed)."""
        meta = self._cache.get(type_id)
        if meta is None:
            key = ids.object_key(type_id)
            data = sync(self.store.get(key, kind="metadata"))
            if data is None:
                raise MetadataError(key, "committed datatype does not exist")
            meta = self._parse(type_id, key, _load_json(key, data))
            self._cache[type_id] = meta
            self._note_bytes(type_id, data)
        return meta.type_json

    def raw(self, obj_id: str) -> dict:
        """The JSON of an object, as it will be written (a copy-on-write working copy)."""
        if obj_id in self._dirty:
            return self._dirty[obj_id]
        return self.load(obj_id).raw

    # -- writing metadata -----------------------------------------------------------
    def check_writable(self) -> None:
        if not self.writable:
            raise ReadOnlyError(f"domain {self.location.url!r} is open read-only (mode 'r')")

    def _new_object(self, obj_id: str, obj: dict) -> None:
        self._new_ids.add(obj_id)
        self._dirty[obj_id] = obj
        self._cache[obj_id] = self._parse(obj_id, ids.object_key(obj_id), obj)

    def new_object(self, kind: str, body: dict, obj_id: str | None = None) -> str:
        """Create a group/dataset/datatype object (written on flush); returns its id
        (``obj_id``, or a fresh one)."""
        self.check_writable()
        if obj_id is None:
            obj_id = ids.new_object_id(kind, self.root_id)
        elif ids.kind_of(obj_id) != kind or ids.root_id_of(obj_id) != self.root_id \
                or ids.is_root_id(obj_id):
            raise ValueError(f"{obj_id!r} is no {kind} id of the domain {self.root_id}")
        self._new_object(obj_id, object_json(obj_id, self.root_id, time.time(), body))
        return obj_id

    def update(self, obj_id: str, change: Any) -> Meta:
        """Apply ``change(json)`` to an object's JSON and re-parse it (written on flush)."""
        self.check_writable()
        obj = self._dirty.get(obj_id)
        if obj is None:
            obj = _deep_copy(self.load(obj_id).raw)
        change(obj)
        obj["lastModified"] = time.time()
        meta = self._parse(obj_id, ids.object_key(obj_id), obj)
        self._dirty[obj_id] = obj
        self._cache[obj_id] = meta
        return meta

    async def flush_async(self) -> None:
        """Write pending metadata: datatypes, datasets, groups, root group, domain."""
        if not self._dirty and not self._domain_dirty:
            return
        _open_memo.pop(self._memo_key)  # the next open learns the new summary afresh
        # New objects first (no published object can point at them yet), then changed
        # existing ones (which may now point at the new ones: an attribute, a link), then
        # the root group; by kind within each: types, datasets, groups. So a crash at any
        # point leaves no published reference to an object that does not exist.
        rank = {"t": 0, "d": 1, "g": 2}

        def level(obj_id: str) -> int:
            if ids.is_root_id(obj_id):
                return 6
            return rank[obj_id[0]] + (0 if obj_id in self._new_ids else 3)

        blobs = {i: dump_json(o) for i, o in self._dirty.items()}
        for i, blob in blobs.items():  # the summary describes the state after this flush
            self._note_bytes(i, blob)
        levels = sorted({level(i) for i in self._dirty})
        for n, lvl in enumerate(levels):
            if n == len(levels) - 1:
                # the summary goes just before the last level of objects, which publishes
                # the change: a crash before it leaves a summary readers find stale
                await self._write_consolidated()
            batch = [i for i in self._dirty if level(i) == lvl]
            # all ended before a failure is raised: a retried flush (or the next level,
            # a lease's release, the exit) must not race PUTs of this one still running
            await all_ended((self.store.put(ids.object_key(i), blobs[i], kind="metadata")
                             for i in batch), "metadata PUTs")
            for i in batch:
                self._dirty.pop(i, None)
                self._new_ids.discard(i)
        if not levels:
            await self._write_consolidated()
        if self._domain_dirty:
            assert self._domain_json is not None
            await self.store.put(self.location.domain_key, dump_json(self._domain_json),
                                 kind="metadata")
            self._domain_dirty = False

    async def _write_consolidated(self) -> None:
        """Summarise every metadata object of the domain (loading those this session has
        not seen) and its coordinates' chunks in the consolidated object."""
        seen = {self.root_id}
        level = [self.root_id]
        coordinate_chunks: list[tuple[str, int]] = []
        chunk_objects = 0  # at most, under the domain's prefix
        while level:
            metas = await self.load_many_async(level)
            level = []
            for meta in metas:
                if isinstance(meta, DatasetMeta):
                    coordinate_chunks += _coordinate_chunks_of(meta)
                    chunk_objects += _chunk_objects_at_most(meta)
                    continue
                if not isinstance(meta, GroupMeta):
                    continue
                for link in meta.links.values():
                    if link.kind == "hard" and link.id not in seen:
                        seen.add(link.id)
                        level.append(link.id)
        hashes = {i: self._hashes[i] for i in seen if i in self._hashes}
        if len(hashes) != len(seen):  # an object known only as parsed: nothing to vouch for
            await self.store.delete(self._consolidated_key, kind="metadata")
            return
        blob = consolidated.dump(consolidated.build(self.root_id, hashes, coordinate_chunks,
                                                    self._bodies(seen, chunk_objects)))
        if len(blob) > consolidated.MAX_BODY_BYTES:  # a large domain: hashes only
            blob = consolidated.dump(consolidated.build(self.root_id, hashes, coordinate_chunks))
        await self.store.put(self._consolidated_key, blob, kind="metadata")

    def _bodies(self, obj_ids: set[str], chunk_objects: int) -> dict[str, tuple[str, dict]]:
        """(MD5, JSON) of every object, for a summary that one LIST can check: none if
        the domain's keys may not fit in one listing page, or an MD5 is unknown."""
        if len(obj_ids) + chunk_objects > consolidated.LIST_PAGE or \
                not obj_ids <= self._md5s.keys():
            return {}
        # the JSON as written by this flush, or as read (parsed objects are never
        # changed in place: update() works on a copy)
        return {i: (self._md5s[i], self._dirty[i] if i in self._dirty else self._cache[i].raw)
                for i in obj_ids}

    def flush(self) -> None:
        sync(self.flush_async())

    def discard(self) -> None:
        """Forget unwritten metadata (a new domain stays invisible)."""
        self._dirty.clear()
        self._new_ids.clear()
        self._domain_dirty = False

    # -- paths ------------------------------------------------------------------------
    def walk_path(self, start_id: str, path: str, follow: int = 16) -> tuple[str, Any]:
        """Resolve ``path`` from a group; returns (object id or "", link) of the target."""
        if path.startswith("/"):
            start_id, path = self.root_id, path.lstrip("/")
        current = start_id
        parts = [p for p in path.split("/") if p not in ("", ".")]
        link = None
        for n, name in enumerate(parts):
            meta = self.load(current)
            if not isinstance(meta, GroupMeta):
                raise ObjectNotFoundError(f"{'/'.join(parts[:n])!r} is not a group")
            link = meta.links.get(name)
            if link is None:
                raise ObjectNotFoundError(
                    f"no object {name!r} in group {'/' + '/'.join(parts[:n])!r} of "
                    f"{self.location.url} (members: {sorted(meta.links)[:20]})")
            if link.kind == "soft":
                if follow <= 0:
                    raise ObjectNotFoundError(f"too many soft links resolving {path!r}")
                current, link = self.walk_path(self.root_id, link.h5path, follow - 1)
            elif link.kind == "external":
                if n != len(parts) - 1:
                    raise ObjectNotFoundError(f"cannot walk through external link {name!r}")
                return "", link
            else:
                current = link.id
        return current, link


#: coordinates whose chunks a consolidated object lists: small and few
_COORDINATE_CHUNK_BYTES = 2**20
_COORDINATE_CHUNKS = 16


def _coordinate_chunks_of(meta: DatasetMeta) -> list[tuple[str, int]]:
    """(key, size bound) of each chunk of a small 1-D netCDF dimension coordinate."""
    shape = meta.shape
    if not shape or len(shape) != 1 or meta.layout.is_linked or "CLASS" not in meta.attributes:
        return []
    try:
        cls = _text(meta.attributes["CLASS"].value(meta.key, None))
        name = _text(meta.attributes["NAME"].value(meta.key, None)) \
            if "NAME" in meta.attributes else ""
    except Exception:  # noqa: BLE001 - an odd attribute: just not summarised
        return []
    if "not a netCDF variable" in name:  # a dimension only: xarray reads no values
        return []
    chunk = meta.chunk_shape[0]
    count = -(-shape[0] // chunk) if chunk else 0
    bound = chunk * meta.dtype.itemsize + 1024  # compression's worst-case overhead
    if cls != "DIMENSION_SCALE" or not 0 < count <= _COORDINATE_CHUNKS or \
            bound > _COORDINATE_CHUNK_BYTES or meta.dtype.kind == "O":
        return []
    return [(ids.chunk_key(meta.id, (i,)), bound) for i in range(count)]


def _chunk_objects_at_most(meta: DatasetMeta) -> int:
    """How many chunk objects a dataset's grid may have (linked ones have none)."""
    if meta.layout.is_linked:
        return 0
    shape, chunks = meta.shape or (), meta.chunk_shape or ()
    return math.prod(-(-n // c) if c else 1 for n, c in zip(shape, chunks)) or 1


def _text(value: Any) -> str:
    value = value.item() if hasattr(value, "item") else value
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def refuse_folder_url(url: str, name: str = "NAME.h5") -> None:
    """Refuse ``url`` for a new domain when it ends in "/": it names a folder, and the
    domain would take the folder's name (``s3://b/home/me/`` -> ``home/me``).

    >>> refuse_folder_url("s3://b/home/me/", "tas.h5")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    h5dask.errors.DomainURLError: 's3://b/home/me/' names a folder, ... 's3://b/home/me/tas.h5'
    """
    if url.endswith("/"):
        raise DomainURLError(f"{url!r} names a folder, not a domain: give the new "
                             f"domain's name, e.g. {url + name!r}")


_NEAR_MISS_CHILDREN = 20  # sub-prefixes checked for a domain when a URL names a folder
_NEAR_MISS_PARENTS = 8  # nearest ancestors checked for a domain the URL is a path inside


async def domain_roots(store: Any, keys: list[str]) -> dict[str, str | None]:
    """``.domain.json`` key -> the root group id it names (None: no such object, or not
    a domain's JSON: a folder), fetched at once. Lenient on purpose: ``h5dask gc`` keeps
    the objects of every root named here, even of a domain this version cannot open."""
    blobs = await asyncio.gather(*(store.get(k, kind="metadata") for k in keys))
    out: dict[str, str | None] = {}
    for key, blob in zip(keys, blobs):
        try:
            root = json.loads(blob).get("root") if blob else None
        except (ValueError, AttributeError):
            root = None
        out[key] = root if ids.is_valid_id(root) else None
    return out


async def _domain_roots(store: Any, paths: list[str]) -> dict[str, str | None]:
    """Domain path -> its root id (None: not a domain)."""
    roots = await domain_roots(store, [f"{p}/.domain.json" for p in paths])
    return {p: roots[f"{p}/.domain.json"] for p in paths}


async def _near_miss(store: Any, domain: str) -> str:
    """What a URL that names no domain names instead, said as what to do: a path inside
    a domain (a group: pass ``group=``), or a folder with domains below it. Only run
    when the error of a failed open is shown; at most _NEAR_MISS_PARENTS +
    _NEAR_MISS_CHILDREN GETs and one LIST, whatever the path's depth or the folder's
    size."""
    parts = domain.split("/")
    parents = ["/".join(parts[:n]) for n in range(len(parts) - 1, 0, -1)][:_NEAR_MISS_PARENTS]
    for parent, root in (await _domain_roots(store, parents)).items():
        if root is not None:
            inside = "/" + domain[len(parent) + 1:]
            return (f"{store.url_of(parent)} is the domain and {inside!r} a path inside "
                    f"it: open the domain and name the path apart, as in xr.open_dataset("
                    f"domain, group={inside!r}), h5dask.File(domain)[{inside!r}] or "
                    f"`h5dask info DOMAIN --path {inside}`")
    _, subdirs = await store.list_dir(domain + "/")
    if not subdirs:
        return ""
    below = [d.rstrip("/") for d in subdirs[:_NEAR_MISS_CHILDREN]]
    found = [p for p, root in (await _domain_roots(store, below)).items() if root]
    listing = f"`h5dask ls {store.url_of(domain)}/` lists the domains under it"
    if not found:
        return f"it is a folder or prefix: {listing}"
    names = ", ".join(p.rsplit("/", 1)[-1] for p in found[:5])
    more = ", ..." if len(found) > 5 else ""
    return f"it is a folder holding domains ({names}{more}): open one of them; {listing}"


def _previous_domain(key: str, data: bytes) -> dict:
    """The JSON of a domain that mode "w" replaces: its owner and ACLs are kept; a broken
    one is replaced like any other (that is what "w" is for)."""
    try:
        return parse_domain(key, _load_json(key, data)).raw
    except MetadataError:
        return {}


def _load_json(key: str, data: bytes) -> dict:
    with malformed_metadata(key):  # e.g. nesting too deep for the JSON parser
        return load_json(key, data)


def _default_owner() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "h5dask"


def _deep_copy(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _deep_copy(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_deep_copy(v) for v in obj]
    return obj
