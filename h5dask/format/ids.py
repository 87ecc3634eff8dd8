"""Object ids and object keys of the HSDS schema v2.

A v2 id is ``<c>-<8 hex>-<8 hex>-<4 hex>-<6 hex>-<6 hex>`` with ``c`` one of g, d, t.
Every object of a domain shares the first 16 hex digits of its root group's id; a
root group's id is recognisable because its last 16 hex digits are its first 16,
each rotated by 8 (``0 -> 8``, ``9 -> 1``, ``f -> 7``).

Keys: the root group at ``db/<hex 0:8>-<hex 8:16>/.group.json``; any other object at
``db/<hex 0:8>-<hex 8:16>/<g|d|t>/<hex 16:20>-<hex 20:26>-<hex 26:32>/.<kind>.json``;
chunk ``(i, j, k)`` of a dataset at ``<dataset prefix>/i_j_k``.

>>> root = new_root_id()
>>> is_root_id(root), object_key(root).endswith("/.group.json")
(True, True)
>>> d = new_object_id("d", root)
>>> chunk_key(d, (0, 1)).split("/")[-1]
'0_1'
"""

from __future__ import annotations

import hashlib
import re
import secrets

_ID_RE = re.compile(
    r"^([gdt])-([0-9a-f]{8})-([0-9a-f]{8})-([0-9a-f]{4})-([0-9a-f]{6})-([0-9a-f]{6})$")
_SUFFIX = {"g": ".group.json", "d": ".dataset.json", "t": ".datatype.json"}


def _rot(hexchars: str) -> str:
    return "".join(format((int(c, 16) + 8) % 16, "x") for c in hexchars)


def _format(kind: str, hex32: str) -> str:
    h = hex32
    return f"{kind}-{h[0:8]}-{h[8:16]}-{h[16:20]}-{h[20:26]}-{h[26:32]}"


def _hex(obj_id: str) -> str:
    m = _ID_RE.match(obj_id) if isinstance(obj_id, str) else None
    if m is None:
        raise ValueError(f"{obj_id!r} is not an HSDS schema-v2 object id")
    return "".join(m.groups()[1:])


def is_valid_id(obj_id: object) -> bool:
    """True for a well-formed v2 group, dataset or datatype id."""
    return isinstance(obj_id, str) and _ID_RE.match(obj_id) is not None


#: the folder HSDS puts before an id in a reference value ("datasets/d-...")
REFERENCE_COLLECTIONS = {"g": "groups", "d": "datasets", "t": "datatypes"}


def reference_id(value: object) -> str:
    """The object id an object-reference value stands for, ``""`` for a null reference.

    Accepts an id (str, numpy str, or ASCII bytes as h5pyd reads references), the same
    with HSDS's ``groups/``, ``datasets/`` or ``datatypes/`` prefix, or an object with an
    ``id`` (an ``h5dask.File``/group/dataset); ``None``, ``""`` and ``b""`` are null.
    Raises :class:`~h5dask.errors.InvalidReferenceError` for anything else.

    >>> reference_id(b"datasets/d-0a1b2c3d-4e5f6a7b-8c9d-0e1f2a-3b4c5d")
    'd-0a1b2c3d-4e5f6a7b-8c9d-0e1f2a-3b4c5d'
    >>> reference_id(None)
    ''
    """
    from ..errors import InvalidReferenceError

    if value is None:
        return ""
    if not isinstance(value, str | bytes) and isinstance(getattr(value, "id", None), str):
        value = value.id  # an h5dask object
    if isinstance(value, bytes):
        try:
            value = value.rstrip(b"\x00").decode("ascii")
        except UnicodeDecodeError:
            raise InvalidReferenceError(
                f"object reference {value[:60]!r} is not ASCII; write an object id such "
                f"as obj.id, or b'' for a null reference") from None
    if not isinstance(value, str):
        raise InvalidReferenceError(
            f"an object reference cannot be {type(value).__name__} {value!r}; write an "
            f"object id such as obj.id, the object itself, or '' for a null reference")
    text = str(value)
    if not text:
        return ""
    collection, _, obj_id = text.rpartition("/")
    if collection and REFERENCE_COLLECTIONS.get(obj_id[:1]) != collection:
        raise InvalidReferenceError(
            f"object reference {text[:60]!r}: only an id or 'groups/g-...', "
            f"'datasets/d-...', 'datatypes/t-...' can be stored")
    if not is_valid_id(obj_id):
        raise InvalidReferenceError(
            f"object reference {text[:60]!r} is not an HSDS object id (g-/d-/t- and "
            f"32 hex digits); write obj.id, the object itself, or '' for a null reference")
    return obj_id


def kind_of(obj_id: str) -> str:
    """``'g'``, ``'d'`` or ``'t'``."""
    _hex(obj_id)
    return obj_id[0]


def new_root_id(seed: str | None = None) -> str:
    """A root-group id (its last 16 hex digits rotate its first 16): a fresh one, or
    the one ``seed`` stands for (the same seed, the same id: a load run again after an
    interruption finds what it had written, see :mod:`h5dask.ingest`).

    >>> new_root_id("a") == new_root_id("a") != new_root_id("b")
    True
    >>> is_root_id(new_root_id("a")) and new_root_id() != new_root_id()
    True
    """
    first = secrets.token_hex(8) if seed is None else _digest(seed)
    return _format("g", first + _rot(first))


def new_object_id(kind: str, root_id: str, name: str | None = None) -> str:
    """An id of ``kind`` (g, d, t) in the domain whose root group is ``root_id``, never a
    root group's: a fresh one, or the one ``name`` (say a source object's path) stands for.

    >>> root = new_root_id("a")
    >>> new_object_id("d", root, "/x") == new_object_id("d", root, "/x")
    True
    >>> root_id_of(new_object_id("d", root, "/x")) == root
    True
    """
    if kind not in _SUFFIX:
        raise ValueError(f"object kind must be one of g, d, t, not {kind!r}")
    prefix = _hex(root_id)[:16]
    text = f"{root_id}\n{kind}\n{name}"
    while True:
        candidate = _format(kind, prefix + (secrets.token_hex(8) if name is None
                                            else _digest(text)))
        if not (kind == "g" and is_root_id(candidate)):
            return candidate
        text += "\n"  # (one in 2**64: a group id shaped like a root's)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def is_root_id(obj_id: str) -> bool:
    """True if ``obj_id`` is a root group's id."""
    h = _hex(obj_id)
    return obj_id[0] == "g" and h[16:] == _rot(h[:16])


def root_id_of(obj_id: str) -> str:
    """The id of the root group of the domain ``obj_id`` belongs to."""
    first = _hex(obj_id)[:16]
    return _format("g", first + _rot(first))


def object_prefix(obj_id: str) -> str:
    """The key prefix under which the object's JSON (and a dataset's chunks) lie."""
    h = _hex(obj_id)
    base = f"db/{h[0:8]}-{h[8:16]}"
    if is_root_id(obj_id):
        return base
    return f"{base}/{obj_id[0]}/{h[16:20]}-{h[20:26]}-{h[26:32]}"


def object_key(obj_id: str) -> str:
    """The key of the object's JSON metadata."""
    return f"{object_prefix(obj_id)}/{_SUFFIX[obj_id[0]]}"


def chunk_name(index: tuple[int, ...]) -> str:
    """``(0, 1, 2) -> '0_1_2'``; a scalar dataset's one chunk is ``'0'``."""
    return "_".join([str(int(i)) for i in index]) if index else "0"


def chunk_key(dataset_id: str, index: tuple[int, ...]) -> str:
    """The key of chunk ``index`` of a dataset."""
    if dataset_id[0] != "d":
        raise ValueError(f"{dataset_id!r} is not a dataset id")
    return f"{object_prefix(dataset_id)}/{chunk_name(index)}"


def domain_key(domain: str) -> str:
    """``'home/user/run1.h5' -> 'home/user/run1.h5/.domain.json'``."""
    return f"{domain.strip('/')}/.domain.json"
