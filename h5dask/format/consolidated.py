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

>>> doc = build("g-1", {"g-1": digest(b"{}")}, [("db/x/0", 64)])
>>> parse(dump(doc), "g-1").objects["g-1"] == digest(b"{}")
True
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

NAME = ".h5dask-consolidated.json"
VERSION = 1


@dataclass(frozen=True)
class Consolidated:
    """What a consolidated object says about a domain."""

    root: str
    objects: dict[str, str]  # object id -> sha256 hex of its JSON bytes
    coordinate_chunks: tuple[tuple[str, int], ...]  # (chunk object key, size bound)


def digest(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def build(root: str, hashes: dict[str, str], coordinate_chunks: list[tuple[str, int]]
          ) -> dict:
    """The JSON document for a domain whose metadata objects have these hashes; the
    coordinate chunks with a bound of their stored size."""
    return {"h5dask_consolidated": VERSION, "root": root, "objects": dict(sorted(hashes.items())),
            "coordinate_chunks": [[k, int(n)] for k, n in sorted(coordinate_chunks)]}


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
        return Consolidated(doc["root"], dict(objects), pairs)
    except (ValueError, KeyError, TypeError, RecursionError):
        return None
