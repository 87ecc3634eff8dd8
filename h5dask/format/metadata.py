"""Parsing and validation of the JSON metadata objects of a domain.

Every parser takes the object's key, so errors say which object is wrong and how.

>>> meta = parse_dataset("db/k/d/x/.dataset.json", {
...     "id": "d-0123abcd-4567ef01-0000-000000-000000",
...     "type": {"class": "H5T_FLOAT", "base": "H5T_IEEE_F32LE"},
...     "shape": {"class": "H5S_SIMPLE", "dims": [100]},
...     "creationProperties": {"layout": {"class": "H5D_CHUNKED", "dims": [10]}}})
>>> meta.chunk_shape, meta.dtype.str
((10,), '<f4')
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import MetadataError, UnsupportedFilterError, UnsupportedTypeError
from .dataspace import Dataspace
from .filters import ChunkCodec
from .ids import is_valid_id
from .types import dtype_from_json
from .values import array_from_json, text_as_str, unwritten_value
from .vlen import REF_LAYOUT_HSDS, REF_LAYOUT_KEY, REF_LAYOUT_LEGACY, has_refs

CHUNKED_LAYOUTS = ("H5D_CHUNKED", "H5D_CHUNKED_REF", "H5D_CHUNKED_REF_INDIRECT")
LINKED_LAYOUTS = ("H5D_CHUNKED_REF", "H5D_CHUNKED_REF_INDIRECT", "H5D_CONTIGUOUS_REF")
KNOWN_LAYOUTS = (*CHUNKED_LAYOUTS, "H5D_CONTIGUOUS", "H5D_COMPACT", "H5D_CONTIGUOUS_REF")
#: HSDS splits a contiguous linked dataset into virtual chunks smaller than this many
#: bytes (h5json's CHUNK_MAX, used by HSDS 1.0.2 for H5D_CONTIGUOUS_REF layouts)
CONTIGUOUS_REF_CHUNK_MAX = 8096 * 1024


def load_json(key: str, data: bytes) -> dict:
    """Decode a metadata object's bytes; MetadataError naming the key if not a JSON object."""
    try:
        obj = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MetadataError(key, f"not valid JSON ({exc})") from exc
    if not isinstance(obj, dict):
        raise MetadataError(key, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def dump_json(obj: dict) -> bytes:
    """Serialise metadata as HSDS does (plain JSON, NaN as the JSON extension)."""
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class Link:
    """A group member: ``hard`` (id), ``soft`` (h5path) or ``external`` (file, h5path)."""

    name: str
    kind: str
    id: str | None = None
    h5path: str | None = None
    file: str | None = None

    def to_json(self, created: float) -> dict:
        out: dict[str, Any] = {"title": self.name, "created": created}
        if self.kind == "hard":
            out.update({"class": "H5L_TYPE_HARD", "id": self.id})
        elif self.kind == "soft":
            out.update({"class": "H5L_TYPE_SOFT", "h5path": self.h5path})
        else:
            out.update({"class": "H5L_TYPE_EXTERNAL", "h5path": self.h5path,
                        "h5domain": self.file})
        return out


def parse_link(key: str, name: str, obj: Any) -> Link:
    if not isinstance(obj, dict):
        raise MetadataError(key, f"link {name!r} is not an object")
    cls = obj.get("class")
    if cls == "H5L_TYPE_HARD":
        if not is_valid_id(obj.get("id")):
            raise MetadataError(key, f"hard link {name!r} has no valid 'id': {obj.get('id')!r}")
        return Link(name, "hard", id=obj["id"])
    if cls == "H5L_TYPE_SOFT":
        if not isinstance(obj.get("h5path"), str):
            raise MetadataError(key, f"soft link {name!r} has no 'h5path'")
        return Link(name, "soft", h5path=obj["h5path"])
    if cls == "H5L_TYPE_EXTERNAL":
        if not isinstance(obj.get("h5path"), str):
            raise MetadataError(key, f"external link {name!r} has no 'h5path'")
        file = obj.get("file") or obj.get("h5domain")
        if not isinstance(file, str):
            raise MetadataError(key, f"external link {name!r} has no 'file'")
        return Link(name, "external", h5path=obj["h5path"], file=file)
    raise MetadataError(key, f"link {name!r} has unknown class {cls!r}")


@dataclass
class AttributeMeta:
    """An attribute: its dtype, dataspace and (decoded lazily) value."""

    name: str
    type_json: Any
    space: Dataspace
    value_json: Any
    created: float = 0.0
    #: the decoded value, kept when it depends on this object alone (no committed type):
    #: a parsed object reused by a re-open (see h5dask.domain) decodes it once
    _decoded: Any = field(default=None, init=False, repr=False, compare=False)
    _dtype: np.dtype | None = field(default=None, init=False, repr=False, compare=False)
    _committed: bool | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def _names_committed_type(self) -> bool:
        if self._committed is None:
            self._committed = bool(committed_type_ids(self.type_json))
        return self._committed

    def dtype(self, key: str, resolve: Callable[[str], dict] | None = None) -> np.dtype:
        """The attribute's numpy dtype (kept, like the value, unless a committed type)."""
        if self._dtype is not None:
            return self._dtype
        dt = attribute_dtype(key, self.name, self.type_json, resolve)
        if not self._names_committed_type:
            self._dtype = dt
        return dt

    def value(self, key: str, resolve: Callable[[str], dict] | None = None,
              read_only: bool = False) -> Any:
        """The attribute's value as numpy (scalars as numpy scalars, like h5py; every
        variable-length string as ``str``, ASCII ones too, as h5py reads attributes,
        except strings inside compounds: bytes, as h5py and h5pyd read them).
        ``read_only=True``: the kept value itself, not a copy, for a caller that never
        changes it nor hands it on (e.g. reading ``DIMENSION_LIST``)."""
        keep = _kept if read_only else _fresh
        if self._decoded is not None:
            return keep(self._decoded[0])
        dt = self.dtype(key, resolve)
        if self.space.is_null:
            return None
        try:
            arr = array_from_json(self.value_json, dt, self.space.shape)
        except ValueError as exc:
            raise MetadataError(key, f"attribute {self.name!r}: {exc}") from exc
        if (dt.metadata or {}).get("vlen") is bytes:
            arr = text_as_str(arr)
        value = arr[()] if arr.ndim == 0 else arr
        if not self._names_committed_type:
            self._decoded = (value,)
        return keep(value)


def _kept(value: Any) -> Any:
    return value


def _fresh(value: Any) -> Any:
    """A kept value as the caller may change it: arrays are copied (deeply when they
    hold objects, e.g. sequences), scalars and strings are immutable."""
    if isinstance(value, np.ndarray):
        return copy.deepcopy(value) if value.dtype.kind == "O" else value.copy()
    return copy.deepcopy(value) if isinstance(value, list | dict) else value


def committed_type_ids(type_json: Any) -> set[str]:
    """The ids of committed datatypes a type JSON names (also inside compounds, arrays,
    enums and vlens).

    >>> sorted(committed_type_ids({"class": "H5T_COMPOUND", "fields": [{"type": "t-1"}]}))
    ['t-1']
    """
    found: set[str] = set()
    pending = [type_json]
    while pending:
        node = pending.pop()
        if isinstance(node, str) and node.startswith("t-"):
            found.add(node)
        elif isinstance(node, dict):
            pending.extend(node.get(k) for k in ("base", "type"))
            pending.extend(f.get("type") for f in node.get("fields") or ()
                           if isinstance(f, dict))
    return found


def attribute_dtype(key: str, name: str, type_json: Any,
                    resolve: Callable[[str], dict] | None = None) -> np.dtype:
    try:
        return dtype_from_json(type_json, resolve)
    except UnsupportedTypeError as exc:
        raise UnsupportedTypeError(f"attribute {name!r} of {key!r}: {exc}") from exc


def parse_attributes(key: str, obj: Any) -> dict[str, AttributeMeta]:
    if obj is None:
        return {}
    if isinstance(obj, list):  # older writers: a list with "name" members
        obj = {a.get("name"): a for a in obj if isinstance(a, dict)}
    if not isinstance(obj, dict):
        raise MetadataError(key, "'attributes' must be an object")
    out = {}
    for name, a in obj.items():
        if not isinstance(a, dict) or "type" not in a:
            raise MetadataError(key, f"attribute {name!r} has no 'type'")
        try:
            space = Dataspace.from_json(a.get("shape", {"class": "H5S_SCALAR"}))
        except ValueError as exc:
            raise MetadataError(key, f"attribute {name!r}: {exc}") from exc
        out[name] = AttributeMeta(name, a["type"], space, a.get("value"), a.get("created", 0.0))
    return out


@dataclass
class DomainMeta:
    key: str
    root: str | None
    raw: dict


def parse_domain(key: str, obj: dict) -> DomainMeta:
    root = obj.get("root")
    if root is not None and not is_valid_id(root):
        raise MetadataError(key, f"'root' is not a valid group id: {root!r}")
    return DomainMeta(key, root, obj)


@dataclass
class GroupMeta:
    key: str
    id: str
    links: dict[str, Link]
    attributes: dict[str, AttributeMeta]
    raw: dict


def parse_group(key: str, obj: dict) -> GroupMeta:
    gid = obj.get("id")
    if not is_valid_id(gid) or gid[0] != "g":
        raise MetadataError(key, f"'id' is not a valid group id: {gid!r}")
    links_json = obj.get("links", {})
    if not isinstance(links_json, dict):
        raise MetadataError(key, "'links' must be an object")
    links = {name: parse_link(key, name, v) for name, v in links_json.items()}
    return GroupMeta(key, gid, links, parse_attributes(key, obj.get("attributes")), obj)


@dataclass
class Layout:
    """Where a dataset's chunks are: own chunk objects, or inside an HDF5 file."""

    cls: str
    chunk_shape: tuple[int, ...]
    file_uri: str | None = None
    chunk_table: dict[str, tuple[int, int]] = field(default_factory=dict)
    chunk_table_id: str | None = None
    offset: int = 0
    size: int = 0

    @property
    def is_linked(self) -> bool:
        return self.cls in LINKED_LAYOUTS


def _contiguous_chunks(shape: tuple[int, ...], itemsize: int, limit: int) -> tuple[int, ...]:
    """The virtual chunks HSDS reads a contiguous linked dataset in (h5json's contiguous
    layout): from the last dimension back, whole extents while the chunk stays under
    ``limit`` bytes; the first dimension that does not fit is halved (rounding up) until it
    does, and every dimension before it is 1. Each chunk is then one contiguous byte range.

    >>> _contiguous_chunks((100, 2000, 3000), 4, CONTIGUOUS_REF_CHUNK_MAX)
    (1, 500, 3000)
    """
    if any(s == 0 for s in shape):
        return tuple(max(1, s) for s in shape)  # no elements: nothing is ever read
    chunks = [1] * len(shape)
    nbytes = itemsize
    for dim in range(len(shape) - 1, -1, -1):
        extent = shape[dim]
        if extent * nbytes < limit:
            chunks[dim] = extent
            nbytes *= extent
            continue
        n = extent
        while n > 1:
            n = -(-n // 2)
            if n * nbytes < limit:
                break
        chunks[dim] = n
        break
    return tuple(chunks)


def parse_layout(key: str, obj: dict, space: Dataspace, dtype: np.dtype) -> Layout:
    cp = obj.get("creationProperties") or {}
    layout = cp.get("layout") if isinstance(cp, dict) else None
    if layout is None:
        layout = obj.get("layout")
    shape = space.shape or ()
    if space.is_scalar:
        if not (isinstance(layout, dict) and layout.get("class") in LINKED_LAYOUTS):
            return Layout("H5D_CONTIGUOUS", (1,))
        shape = (1,)  # a linked scalar: one chunk "0" of one element
    if layout is None:
        return Layout("H5D_CONTIGUOUS", tuple(max(1, s) for s in shape))
    if not isinstance(layout, dict) or layout.get("class") not in KNOWN_LAYOUTS:
        raise MetadataError(key, f"unknown or malformed layout {layout!r}")
    cls = layout["class"]
    if cls in CHUNKED_LAYOUTS:
        dims = layout.get("dims")
        if (not isinstance(dims, list) or len(dims) != len(shape)
                or not all(isinstance(d, int) and d > 0 for d in dims)):
            raise MetadataError(key, f"layout dims {dims!r} do not fit shape {list(shape)}")
        chunk_shape = tuple(dims)
    elif cls == "H5D_CONTIGUOUS_REF":
        chunk_shape = _contiguous_chunks(shape, dtype.itemsize, CONTIGUOUS_REF_CHUNK_MAX)
    else:
        chunk_shape = tuple(max(1, s) for s in shape)
    out = Layout(cls, chunk_shape)
    if cls in LINKED_LAYOUTS:
        uri = layout.get("file_uri")
        # H5D_CHUNKED_REF_INDIRECT may name the file per chunk, in its chunk table
        if not isinstance(uri, str) and not (cls == "H5D_CHUNKED_REF_INDIRECT" and uri is None):
            raise MetadataError(key, f"{cls} layout has no 'file_uri'")
        out.file_uri = uri
        if cls == "H5D_CHUNKED_REF":
            table = layout.get("chunks", {})
            if not isinstance(table, dict):
                raise MetadataError(key, "H5D_CHUNKED_REF 'chunks' must be an object")
            for name, entry in table.items():
                if (not isinstance(entry, list) or len(entry) != 2
                        or not all(isinstance(v, int) and v >= 0 for v in entry)):
                    raise MetadataError(key, f"chunk table entry {name!r} must be [offset, size]")
                out.chunk_table[name] = (entry[0], entry[1])
        elif cls == "H5D_CHUNKED_REF_INDIRECT":
            cid = layout.get("chunk_table")
            if not is_valid_id(cid):
                raise MetadataError(key, f"H5D_CHUNKED_REF_INDIRECT 'chunk_table' invalid: {cid!r}")
            out.chunk_table_id = cid
        else:
            offset, size = layout.get("offset"), layout.get("size")
            if not isinstance(offset, int) or not isinstance(size, int):
                raise MetadataError(key, "H5D_CONTIGUOUS_REF needs integer 'offset' and 'size'")
            out.offset, out.size = offset, size
    return out


@dataclass
class DatasetMeta:
    key: str
    id: str
    type_json: Any
    dtype: np.dtype
    space: Dataspace
    layout: Layout
    filters: list
    codec: ChunkCodec
    fill_json: Any
    attributes: dict[str, AttributeMeta]
    raw: dict

    @property
    def shape(self) -> tuple[int, ...] | None:
        return self.space.shape

    @property
    def chunk_shape(self) -> tuple[int, ...]:
        return self.layout.chunk_shape

    def fill_value(self) -> Any:
        """The fill value as a numpy scalar of the dataset's dtype (0/empty if unset)."""
        dt = self.dtype
        if self.fill_json is None:
            return unwritten_value(dt)
        cp = self.raw.get("creationProperties") or {}
        try:
            if cp.get("fillValue_encoding") == "base64":
                raw = base64.b64decode(self.fill_json)
                return np.frombuffer(raw, dtype=dt, count=1)[0]
            return array_from_json(self.fill_json, dt, ())[()]
        except (ValueError, TypeError) as exc:
            raise MetadataError(self.key, f"fillValue {self.fill_json!r}: {exc}") from exc


def parse_dataset(key: str, obj: dict, resolve: Callable[[str], dict] | None = None) -> DatasetMeta:
    did = obj.get("id")
    if not is_valid_id(did) or did[0] != "d":
        raise MetadataError(key, f"'id' is not a valid dataset id: {did!r}")
    if "type" not in obj:
        raise MetadataError(key, "no 'type'")
    try:
        dtype = dtype_from_json(obj["type"], resolve)
    except UnsupportedTypeError as exc:
        raise UnsupportedTypeError(f"dataset {key!r}: {exc}") from exc
    try:
        space = Dataspace.from_json(obj.get("shape"))
    except ValueError as exc:
        raise MetadataError(key, f"shape: {exc}") from exc
    layout = parse_layout(key, obj, space, dtype)
    cp = obj.get("creationProperties") or {}
    if not isinstance(cp, dict):
        raise MetadataError(key, "'creationProperties' must be an object")
    filters = cp.get("filters") or obj.get("filters") or []
    if not isinstance(filters, list):
        raise MetadataError(key, "'filters' must be a list")
    try:
        codec = ChunkCodec.from_filters(filters, dtype, layout.chunk_shape,
                                        hdf5_native=layout.is_linked)
        ref_layout = obj.get(REF_LAYOUT_KEY)
        if ref_layout is None and "layout" not in obj and has_refs(dtype):
            # every h5dask version wrote the layout at the top as well, HSDS 1.0.2 only
            # in creationProperties: HSDS wrote this dataset, and only 48-byte fields
            ref_layout = REF_LAYOUT_HSDS
        if ref_layout is not None:
            if ref_layout not in (REF_LAYOUT_HSDS, REF_LAYOUT_LEGACY):
                raise MetadataError(key, f"{REF_LAYOUT_KEY} {ref_layout!r}: expected "
                                         f"{REF_LAYOUT_HSDS!r} or {REF_LAYOUT_LEGACY!r}")
            codec = dataclasses.replace(codec, ref_layout=ref_layout)
    except UnsupportedFilterError as exc:
        raise UnsupportedFilterError(f"dataset {key!r}: {exc}") from exc
    return DatasetMeta(key, did, obj["type"], dtype, space, layout, filters, codec,
                       cp.get("fillValue"), parse_attributes(key, obj.get("attributes")), obj)


@dataclass
class DatatypeMeta:
    key: str
    id: str
    type_json: Any
    attributes: dict[str, AttributeMeta]
    raw: dict


def parse_datatype(key: str, obj: dict) -> DatatypeMeta:
    tid = obj.get("id")
    if not is_valid_id(tid) or tid[0] != "t":
        raise MetadataError(key, f"'id' is not a valid datatype id: {tid!r}")
    if not isinstance(obj.get("type"), dict | str):
        raise MetadataError(key, "no 'type'")
    return DatatypeMeta(key, tid, obj["type"], parse_attributes(key, obj.get("attributes")), obj)


# -- building the JSON of new objects (one place for the HSDS schema's shapes) ---------
def object_json(obj_id: str, root_id: str, now: float, body: dict) -> dict:
    """A new group/dataset/datatype object: its id, root, timestamps, then ``body``.

    >>> object_json("g-1", "g-1", 0.0, group_json())
    {'id': 'g-1', 'root': 'g-1', 'created': 0.0, 'lastModified': 0.0, 'links': {}, 'attributes': {}}
    """
    return {"id": obj_id, "root": root_id, "created": now, "lastModified": now, **body}


def domain_json(root_id: str, owner: str, acls: Any, created: float, now: float) -> dict:
    """The ``.domain.json`` of a domain whose root group is ``root_id``.

    >>> list(domain_json("g-1", "me", {}, 0.0, 1.0))
    ['root', 'owner', 'acls', 'created', 'lastModified']
    """
    return {"root": root_id, "owner": owner, "acls": acls, "created": created,
            "lastModified": now}


def group_json() -> dict:
    """The body of a new, empty group.

    >>> group_json()
    {'links': {}, 'attributes': {}}
    """
    return {"links": {}, "attributes": {}}


def datatype_json(type_json: dict | str) -> dict:
    """The body of a new committed datatype.

    >>> datatype_json("H5T_STD_I8LE")
    {'type': 'H5T_STD_I8LE', 'attributes': {}}
    """
    return {"type": type_json, "attributes": {}}


def attribute_json(type_json: dict | str, shape: tuple[int, ...] | None, value_json: Any,
                   created: float) -> dict:
    """One entry of an object's ``attributes``; ``shape`` None is a null dataspace (no
    value), ``()`` a scalar.

    >>> attribute_json("H5T_STD_I8LE", (2,), [1, 2], 0.0)["value"]
    [1, 2]
    >>> attribute_json("H5T_STD_I8LE", None, None, 0.0)["shape"]
    {'class': 'H5S_NULL'}
    """
    out: dict[str, Any] = {"type": type_json, "shape": Dataspace(shape, shape).to_json()}
    if shape is not None:
        out["value"] = value_json
    out["created"] = created
    return out


def dataset_json(type_json: dict | str, space: Dataspace, layout: dict | None,
                 filters: list, fill_json: Any = None) -> dict:
    """The body of a new dataset; ``layout`` None for a null dataspace (no values, no
    layout). The layout is stored twice, in ``creationProperties`` and at the top, as
    HSDS does.

    >>> body = dataset_json("H5T_STD_I8LE", Dataspace((4,), (4,)), chunked_layout((2,)), [])
    >>> body["creationProperties"]
    {'layout': {'class': 'H5D_CHUNKED', 'dims': [2]}, 'filters': []}
    """
    cp: dict[str, Any] = {}
    if layout is not None:
        cp.update(layout=layout, filters=filters)
    if fill_json is not None:
        cp["fillValue"] = fill_json
    body: dict[str, Any] = {"type": type_json, "shape": space.to_json(), "creationProperties": cp}
    if layout is not None:
        body["layout"] = dict(layout)
    body["attributes"] = {}
    if "H5T_REFERENCE" in json.dumps(type_json):
        # which layout its references have, for chunks that read both ways (see vlen)
        body[REF_LAYOUT_KEY] = REF_LAYOUT_HSDS
    return body


def contiguous_layout() -> dict:
    """A scalar dataset's layout: one contiguous chunk ``"0"``, as HSDS writes it."""
    return {"class": "H5D_CONTIGUOUS"}


def chunked_layout(chunks: tuple[int, ...]) -> dict:
    """Chunk objects of shape ``chunks``.

    >>> chunked_layout((2, 3))
    {'class': 'H5D_CHUNKED', 'dims': [2, 3]}
    """
    return {"class": "H5D_CHUNKED", "dims": list(chunks)}


def chunked_ref_layout(chunks: tuple[int, ...], file_uri: str | None,
                       table: dict[str, list[int]]) -> dict:
    """Chunks inside the file ``file_uri``, ``{"i_j": [offset, size]}`` inline."""
    return {"class": "H5D_CHUNKED_REF", "dims": list(chunks), "file_uri": file_uri,
            "chunks": table}


def chunked_ref_indirect_layout(chunks: tuple[int, ...], file_uri: str | None,
                                chunk_table_id: str) -> dict:
    """Chunks inside the file ``file_uri``, listed by the chunk-table dataset."""
    return {"class": "H5D_CHUNKED_REF_INDIRECT", "dims": list(chunks), "file_uri": file_uri,
            "chunk_table": chunk_table_id}


def contiguous_ref_layout(file_uri: str | None, offset: int, size: int) -> dict:
    """A contiguous dataset at ``offset`` (``size`` bytes) of the file ``file_uri``."""
    return {"class": "H5D_CONTIGUOUS_REF", "file_uri": file_uri, "offset": offset,
            "size": size}
