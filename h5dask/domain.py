"""A domain's metadata session: loads, caches and writes the JSON objects of one domain.

The h5py-like API (:mod:`h5dask.file`) and the xarray backend sit on top of it.
Metadata changes are kept in memory and written by :meth:`DomainSession.flush`:
new objects first (children before parents), then changed existing objects, then the
root group and the ``.domain.json`` last, so readers (and a crash) never see a link or
reference to an object that does not exist yet.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from collections.abc import Iterable
from typing import Any

from .errors import (
    DomainNotFoundError,
    MetadataError,
    ObjectNotFoundError,
    ReadOnlyError,
    malformed_metadata,
)
from .format import ids
from .format.metadata import (
    DatasetMeta,
    DatatypeMeta,
    DomainMeta,
    GroupMeta,
    dump_json,
    load_json,
    parse_dataset,
    parse_datatype,
    parse_domain,
    parse_group,
)
from .storage import Location
from .storage.links import LinkPolicy
from .storage.sync import sync

Meta = GroupMeta | DatasetMeta | DatatypeMeta


def default_acls(owner: str) -> dict:
    """HSDS-style ACLs: the owner may do everything, everyone else may read."""
    full = dict.fromkeys(("create", "read", "update", "delete", "readACL", "updateACL"), True)
    read_only = {k: k == "read" for k in full}
    return {owner: full, "default": read_only}


class DomainSession:
    """The open metadata of one domain (mode r, r+, w, a)."""

    def __init__(self, location: Location, mode: str = "r", owner: str | None = None,
                 link_policy: LinkPolicy | None = None) -> None:
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
        self.owner = owner or _default_owner()
        self.root_id = self._open()

    # -- opening --------------------------------------------------------------------
    def _open(self) -> str:
        key = self.location.domain_key
        data = sync(self.store.get(key, kind="metadata"))
        exists = data is not None
        if self.mode in ("w-", "x") and exists:
            raise FileExistsError(
                f"domain {self.location.url!r} already exists (mode {self.mode!r})")
        if self.mode in ("r", "r+") and not exists:
            raise DomainNotFoundError(self.location.url)
        if exists and self.mode in ("r", "r+", "a"):
            domain = parse_domain(key, _load_json(key, data))
            if domain.root is None:
                raise DomainNotFoundError(
                    self.location.url, "it is a folder, not a domain (no 'root' in .domain.json)")
            self._domain_json = domain.raw
            self._prefetch_root(domain)
            return domain.root
        # a new domain (w, w-, x, or a on nothing): a fresh root; published on flush
        now = time.time()
        root = ids.new_root_id()
        previous = _previous_domain(key, data) if exists else {}
        self._domain_json = {
            "root": root,
            "owner": previous.get("owner", self.owner),
            "acls": previous.get("acls", default_acls(self.owner)),
            "created": previous.get("created", now),
            "lastModified": now,
        }
        self._domain_dirty = True
        self._new_object(root, {"id": root, "root": root, "created": now, "lastModified": now,
                                "links": {}, "attributes": {}})
        return root

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

    async def load_many_async(self, obj_ids: Iterable[str]) -> list[Meta]:
        """Load (concurrently) and cache the metadata of many objects.

        Committed datatypes that the datasets name by id are fetched here too, before the
        datasets are parsed: parsing runs on the I/O loop, where it must not block.
        """
        obj_ids = list(obj_ids)
        fetched = await self._fetch_json([i for i in dict.fromkeys(obj_ids)
                                          if i not in self._cache])
        while True:  # a committed type may itself name another one
            named = {t for i, (_key, obj) in fetched.items() if i[0] in "dt"
                     for t in _committed_type_ids(obj)} - self._cache.keys() - fetched.keys()
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
        return {i: (k, _load_json(k, b)) for i, k, b in zip(obj_ids, keys, blobs)}

    def load_many(self, obj_ids: Iterable[str]) -> list[Meta]:
        return sync(self.load_many_async(list(obj_ids)))

    def load(self, obj_id: str) -> Meta:
        if obj_id in self._cache:
            return self._cache[obj_id]
        return self.load_many([obj_id])[0]

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

    def new_object(self, kind: str, body: dict) -> str:
        """Create a group/dataset/datatype object (written on flush); returns its id."""
        self.check_writable()
        obj_id = ids.new_object_id(kind, self.root_id)
        now = time.time()
        obj = {"id": obj_id, "root": self.root_id, "created": now, "lastModified": now, **body}
        self._new_object(obj_id, obj)
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
        # New objects first (no published object can point at them yet), then changed
        # existing ones (which may now point at the new ones: an attribute, a link), then
        # the root group; by kind within each: types, datasets, groups. So a crash at any
        # point leaves no published reference to an object that does not exist.
        rank = {"t": 0, "d": 1, "g": 2}

        def level(obj_id: str) -> int:
            if ids.is_root_id(obj_id):
                return 6
            return rank[obj_id[0]] + (0 if obj_id in self._new_ids else 3)

        levels = sorted({level(i) for i in self._dirty})
        for lvl in levels:
            batch = [(i, o) for i, o in self._dirty.items() if level(i) == lvl]
            await asyncio.gather(*(self.store.put(ids.object_key(i), dump_json(o),
                                                  kind="metadata") for i, o in batch))
            for i, _ in batch:
                self._dirty.pop(i, None)
                self._new_ids.discard(i)
        if self._domain_dirty:
            assert self._domain_json is not None
            await self.store.put(self.location.domain_key, dump_json(self._domain_json),
                                 kind="metadata")
            self._domain_dirty = False

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


def _committed_type_ids(obj: Any) -> set[str]:
    """The ids of committed datatypes a dataset's type JSON names (also inside compounds,
    arrays, enums and vlens)."""
    found: set[str] = set()
    pending = [obj.get("type") if isinstance(obj, dict) else None]
    while pending:
        node = pending.pop()
        if isinstance(node, str) and node.startswith("t-"):
            found.add(node)
        elif isinstance(node, dict):
            pending.extend(node.get(k) for k in ("base", "type"))
            pending.extend(f.get("type") for f in node.get("fields") or ()
                           if isinstance(f, dict))
    return found
