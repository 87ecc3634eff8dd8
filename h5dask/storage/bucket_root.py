"""Which directory is the bucket root of a ``file://`` (or fsspec) domain path.

HSDS's POSIX layout puts a bucket in one directory: a domain ``/home/me/run1.h5`` is
``BUCKET/home/me/run1.h5/.domain.json``, folders are ``BUCKET/home/.domain.json`` (no
``root`` key), and every object of every domain is under ``BUCKET/db/``. A path names
the domain, not the bucket, so h5dask decides the bucket root by this rule (first match):

1. ``bucket_root`` given (``storage_options={"bucket_root": DIR}``, ``--bucket-root``):
   that directory; the domain must lie inside it.
2. An existing domain: the nearest ancestor whose ``db/`` holds the domain's root group
   (so domains HSDS or earlier h5dask versions wrote stay readable).
3. Walking up from the domain's directory through HSDS folders (directories with a
   ``.domain.json``), the first directory that is not one, if a folder was crossed or it
   already holds ``db/``: the domain is being added to that bucket. Likewise a new
   domain next to existing domains joins their bucket.
4. The nearest ancestor whose ``db/`` is empty: a bucket made for domains (HSDS's
   ``mkdir BUCKET/db``) or emptied by ``h5dask rm``.
5. Otherwise the directory that holds the domain: ``db/`` is created beside it, so
   nothing is written outside the directory named. If an ancestor already is a bucket
   holding domains (its ``db/`` has root-id folders), the intent is ambiguous: writing
   a new domain there fails with :class:`~h5dask.errors.AmbiguousBucketRootError`
   saying how to choose. A ``db/`` holding anything else is a user's own folder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..format import ids

_ROOT_PREFIX = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{8}$")


@dataclass(frozen=True)
class FileSystemProbe:
    """The few file-system questions the rule asks (local or fsspec)."""

    isdir: Callable[[str], bool]
    isfile: Callable[[str], bool]
    read: Callable[[str], bytes | None]
    names: Callable[[str], Iterable[str]]  # entry names of a directory (may be lazy)


@dataclass(frozen=True)
class BucketRoot:
    """The chosen bucket root; ``ambiguous_with`` an ancestor bucket that could be meant."""

    path: str
    ambiguous_with: str | None = None


def _db_kind(probe: FileSystemProbe, directory: str) -> str | None:
    """What ``directory/db`` is: None (absent, or something else: a user's own folder),
    ``"empty"`` (a bucket without domains) or ``"hsds"`` (it holds domains' objects)."""
    db = str(PurePosixPath(directory) / "db")
    if not probe.isdir(db):
        return None
    names = list(probe.names(db))
    if not names:
        return "empty"
    return "hsds" if any(_ROOT_PREFIX.match(name) for name in names) else None


def _existing_root_prefix(probe: FileSystemProbe, domain_dir: PurePosixPath) -> str | None:
    data = probe.read(str(domain_dir / ".domain.json"))
    if not data:
        return None
    try:
        root = json.loads(data).get("root")
    except (ValueError, AttributeError):
        return None
    return ids.object_prefix(root) if ids.is_valid_id(root) else None


def _bucket_of(probe: FileSystemProbe, domain_dir: PurePosixPath) -> str | None:
    """The directory whose db/ holds the root group of the domain at ``domain_dir``."""
    prefix = _existing_root_prefix(probe, domain_dir)
    if prefix is not None:
        for ancestor in domain_dir.parents:
            if probe.isdir(str(ancestor / prefix)):
                return str(ancestor)
    return None


def find_bucket_root(probe: FileSystemProbe, path: str) -> BucketRoot:
    """The bucket root of the domain at absolute ``path`` by rules 2-5 of the module doc.

    >>> import os
    >>> local = FileSystemProbe(os.path.isdir, os.path.isfile, lambda p: None,
    ...                         lambda p: [])
    >>> find_bucket_root(local, "/nonexistent/bucket/run1.h5")
    BucketRoot(path='/nonexistent/bucket', ambiguous_with=None)
    """
    domain_dir = PurePosixPath(path)
    existing = _bucket_of(probe, domain_dir)
    if existing is not None:
        return BucketRoot(existing)
    parent = domain_dir.parent
    root = parent
    while root != root.parent and probe.isfile(str(root / ".domain.json")):
        root = root.parent
    if root != parent or probe.isdir(str(root / "db")):
        return BucketRoot(str(root))
    if probe.isdir(str(parent)):
        for name in probe.names(str(parent)):
            sibling = _bucket_of(probe, parent / name)
            if sibling is not None:  # next to existing domains: their bucket
                return BucketRoot(sibling)
    for ancestor in root.parents:
        kind = _db_kind(probe, str(ancestor))
        if kind == "empty":  # a bucket made for domains (mkdir BUCKET/db), or emptied by rm
            return BucketRoot(str(ancestor))
        if kind == "hsds":
            return BucketRoot(str(root), ambiguous_with=str(ancestor))
    return BucketRoot(str(root))


def ambiguity_message(url: str, chosen: str, ancestor: str) -> str:
    """What to do when a new domain could belong to two buckets."""
    return (f"cannot tell which bucket the new domain {url!r} belongs to: {ancestor!r} "
            f"already holds an HSDS db/ (a bucket), but {chosen!r} is not a bucket yet. "
            f"Say which directory is the bucket root: storage_options={{'bucket_root': "
            f"{ancestor!r}}} (h5dask CLI: --bucket-root {ancestor}) to add the domain to "
            f"that bucket, or bucket_root {chosen!r} to start a new bucket there")
