"""The consolidated metadata object: one optional object that lets a reader fetch all of
a domain's metadata (and its coordinates' chunks) in one round trip.

It sits next to the domain's ``.domain.json`` as ``.h5dask-consolidated.json``; HSDS
never reads it (its folder listings look for ``.domain.json`` only) and h5dask never
trusts it: it names the metadata objects of the domain with the SHA-256 of the bytes
each had when it was written, and the chunk objects of its coordinates. A reader fetches
those objects concurrently, straight away, and uses what it *fetched*; the hashes tell
it whether the summary is stale (an object changed, by HSDS or a writer that does not
know about this object, since), in which case it walks the domain as without one. So a
stale object costs at most some wasted requests, never a wrong value.

A small domain's summary also carries each object's JSON (``bodies``) with the MD5 of
its bytes: on a store whose listing gives each object's content MD5 (the ETag of an S3
object written in one PUT), one LIST of the domain's keys checks them all, instead of
one GET per object. A body is used only if the listing shows its object with exactly
that MD5 now; any other object is fetched (or walked) as without bodies.

>>> doc = build("g-1", {"g-1": digest(b"{}")}, [("db/x/0", 64)])
>>> parse(dump(doc), "g-1").objects["g-1"] == digest(b"{}")
True
>>> doc = build("g-1", {"g-1": digest(b"{}")}, [], {"g-1": (md5(b"{}"), {})})
>>> parse(dump(doc), "g-1").bodies
{'g-1': {}}
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

NAME = ".h5dask-consolidated.json"
VERSION = 1
#: keys one LIST request returns (S3's page): a summary carries bodies only for domains
#: whose objects and chunk objects fit in it, so that one LIST checks every body
LIST_PAGE = 1000
#: the most JSON a summary embeds as bodies (beyond it, objects are fetched one by one)
MAX_BODY_BYTES = 4 << 20
_MD5_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Consolidated:
    """What a consolidated object says about a domain."""

    root: str
    objects: dict[str, str]  # object id -> sha256 hex of its JSON bytes
    coordinate_chunks: tuple[tuple[str, int], ...]  # (chunk object key, size bound)
    #: object id -> MD5 hex of its JSON bytes, for the objects whose JSON is in ``bodies``
    md5: dict[str, str] = field(default_factory=dict)
    #: object id -> its JSON, as written (use only after checking ``md5`` against storage)
    bodies: dict[str, dict] = field(default_factory=dict)


def digest(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def md5(data: bytes | memoryview) -> str:
    """The MD5 hex of an object's bytes: what an S3 listing shows as its ETag."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def build(root: str, hashes: dict[str, str], coordinate_chunks: list[tuple[str, int]],
          bodies: dict[str, tuple[str, dict]] | None = None) -> dict:
    """The JSON document for a domain whose metadata objects have these hashes; the
    coordinate chunks with a bound of their stored size; ``bodies``: object id -> (MD5
    of its bytes, its JSON), for every object or none."""
    doc = {"h5dask_consolidated": VERSION, "root": root,
           "objects": dict(sorted(hashes.items())),
           "coordinate_chunks": [[k, int(n)] for k, n in sorted(coordinate_chunks)]}
    if bodies:
        doc["md5"] = {i: m for i, (m, _) in sorted(bodies.items())}
        doc["bodies"] = {i: b for i, (_, b) in sorted(bodies.items())}
    return doc


def dump(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def parse(data: bytes | None, root: str | None) -> Consolidated | None:
    """The consolidated object, or None if absent, unreadable, of another version or of
    another root (the domain was replaced since): any doubt means "walk the domain"."""
    if data is None:
        return None
    try:
        doc = json.loads(data)
        if not isinstance(doc, dict) or doc.get("h5dask_consolidated") != VERSION:
            return None
        objects = doc["objects"]
        chunks = doc.get("coordinate_chunks", [])
        if (doc.get("root") != root or not isinstance(objects, dict)
                or not all(isinstance(k, str) and isinstance(v, str)
                           for k, v in objects.items())
                or not isinstance(chunks, list)):
            return None
        pairs = tuple((str(k), int(n)) for k, n in chunks)
        if not all(n >= 0 for _, n in pairs):
            return None
        md5s, bodies = _bodies(doc, objects)
        return Consolidated(doc["root"], dict(objects), pairs, md5s, bodies)
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


def _bodies(doc: dict, objects: dict) -> tuple[dict[str, str], dict[str, dict]]:
    """The embedded bodies and their MD5s, or none at all if any is malformed (the
    objects are then fetched: a doubt about bodies costs requests, not the summary)."""
    md5s, bodies = doc.get("md5"), doc.get("bodies")
    if not isinstance(md5s, dict) or not isinstance(bodies, dict) or \
            md5s.keys() != bodies.keys() or not md5s.keys() <= objects.keys() or \
            not all(isinstance(m, str) and _MD5_RE.fullmatch(m) for m in md5s.values()) or \
            not all(isinstance(b, dict) for b in bodies.values()):
        return {}, {}
    return md5s, bodies
