"""The h5py-like API: File, Group, Dataset, attributes, links and committed types.

>>> import numpy as np, h5dask
>>> with h5dask.File("memory://docs/home/demo.h5", "w") as f:
...     ds = f.create_dataset("grp/x", data=np.arange(10.0), chunks=(5,), compression="gzip")
...     f["grp"].attrs["units"] = "K"
>>> with h5dask.File("memory://docs/home/demo.h5") as f:
...     (f["grp/x"][2:4].tolist(), f["grp"].attrs["units"], f["grp/x"].chunks)
([2.0, 3.0], 'K', (5,))
"""

from __future__ import annotations

import math
import posixpath
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np

from .chunkio import ArraySource
from .domain import DomainSession, refuse_folder_url
from .errors import (
    DomainNotFoundError,
    H5DaskError,
    IncompatibleDatasetError,
    InvalidReferenceError,
    ObjectNotFoundError,
    UnsupportedFilterError,
    UnsupportedTypeError,
    ValueOutOfRangeError,
    malformed_metadata,
)
from .format import codecs
from .format.chunks import choose_chunks
from .format.dataspace import Dataspace
from .format.filters import (
    filter_json,
    stated_level,
    warn_if_hsds_cannot_read,
    warn_if_hsds_cannot_serve_type,
)
from .format.metadata import (
    DatasetMeta,
    GroupMeta,
    Link,
    attribute_dtype,
    attribute_json,
    chunked_layout,
    contiguous_layout,
    dataset_json,
    datatype_json,
    group_json,
)
from .format.types import has_vlen, type_json_from_dtype
from .format.values import json_from_array
from .sources import array_source
from .storage import open_location
from .storage.sync import sync


class SoftLink:
    """A link to a path in the same domain: ``group["alias"] = SoftLink("/a/b")``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __repr__(self) -> str:
        return f"SoftLink({self.path!r})"


class ExternalLink:
    """A link to an object in another domain of the same bucket."""

    def __init__(self, filename: str, path: str) -> None:
        self.filename = filename
        self.path = path

    def __repr__(self) -> str:
        return f"ExternalLink({self.filename!r}, {self.path!r})"


class HardLink:
    """Returned by ``group.get(name, getlink=True)`` for hard links."""


def _external_domain(filename: str, linking_domain: str) -> str:
    """The domain (path in the bucket, no leading slash) an external link's file names,
    as h5pyd resolves it: ``hdf5://`` and absolute paths from the bucket's root, a
    relative path from the folder of the domain that holds the link.

    >>> _external_domain("other.h5", "home/me/run.h5"), _external_domain("/a/b.h5", "home/x.h5")
    ('home/me/other.h5', 'a/b.h5')
    >>> _external_domain("hdf5://home/you/c.h5", "home/me/run.h5")
    'home/you/c.h5'
    >>> _external_domain("../../../etc/passwd", "home/me/run.h5")  # refused when opened
    'home/me/../../../etc/passwd'
    """
    if filename.startswith("hdf5://"):
        filename = "/" + filename[len("hdf5://"):]
    joined = posixpath.join(posixpath.dirname("/" + linking_domain.strip("/")), filename)
    parts: list[str] = []
    for part in joined.split("/"):
        if part == "..":
            if not parts:  # above the bucket's root: left as written, for the key
                return joined.strip("/")  # check to refuse by its ".." (no clamping)
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


def _root_relative_hint(loc: Any, filename: str, domain: str) -> str:
    """What to write when a relative external link names a missing domain but, read from
    the bucket's root (as h5dask resolved such links before it followed h5pyd), an
    existing one: the link is never followed there, only the error says so."""
    from .storage import Location

    if filename.startswith(("/", "hdf5://")):
        return ""
    from_root = _external_domain("/" + filename, loc.domain)
    if from_root == domain:
        return ""
    try:
        File(Location(loc.store, from_root)).close()
    except H5DaskError:  # missing (or unreadable) there too: no hint
        return ""
    return (f"the external link's file {filename!r} is relative, so it is resolved from the "
            f"folder of {loc.domain!r}, as h5pyd does; the domain {from_root!r} exists at the "
            f"bucket's root, where h5dask resolved relative links before: if that is the one "
            f"meant, write the link as '/{from_root}'")


# -- attributes -------------------------------------------------------------------------
class AttributeManager(MutableMapping):
    """The attributes of a group, dataset or committed datatype (like ``h5py.AttributeManager``).

    Values come back as numpy scalars/arrays; variable-length strings as ``str``.
    """

    def __init__(self, session: DomainSession, obj_id: str) -> None:
        self._session = session
        self._id = obj_id

    def _attrs(self) -> dict:
        return self._session.load(self._id).attributes

    def __getitem__(self, name: str) -> Any:
        attrs = self._attrs()
        if name not in attrs:
            raise KeyError(f"no attribute {name!r} (attributes: {sorted(attrs)})")
        meta = self._session.load(self._id)
        with malformed_metadata(meta.key):  # a type or value the JSON gets wrong
            if attrs[name].space.is_null:  # no value, only a type: h5py's Empty
                return _empty(self.dtype_of(name))
            return attrs[name].value(meta.key, self._session.resolve_type)

    def dtype_of(self, name: str) -> np.dtype:
        """The dtype of one attribute, without decoding its value."""
        meta = self._session.load(self._id)
        a = meta.attributes[name]
        with malformed_metadata(meta.key):
            return attribute_dtype(meta.key, name, a.type_json, self._session.resolve_type)

    def shape_of(self, name: str) -> tuple[int, ...] | None:
        return self._attrs()[name].space.shape

    def raw_json(self, name: str) -> dict:
        """The attribute's JSON as stored (type, shape, value)."""
        a = self._attrs()[name]
        return {"type": a.type_json, "shape": a.space.to_json(), "value": a.value_json}

    def __setitem__(self, name: str, value: Any) -> None:
        self.create(name, value)

    def create(self, name: str, data: Any, shape: tuple[int, ...] | None = None,
               dtype: Any = None) -> None:
        """Create or replace an attribute, like h5py's ``attrs.create``."""
        if not isinstance(name, str) or not name:
            raise ValueError("attribute names must be non-empty strings")
        h5py = sys.modules.get("h5py")  # h5py.Empty(dtype): a null dataspace, as in h5py
        if h5py is not None and isinstance(data, h5py.Empty):
            entry = attribute_json(type_json_from_dtype(np.dtype(data.dtype)), None, None,
                                   time.time())
            self._session.update(self._id, lambda obj: obj.setdefault(
                "attributes", {}).__setitem__(name, entry))
            return
        arr = _as_array(data, dtype)
        if shape is not None:
            arr = arr.reshape(shape)
        try:
            value_json = json_from_array(arr)
        except InvalidReferenceError as exc:  # name the attribute as the user knows it
            exc.args = (f"attribute {name!r}: {exc}",)
            raise
        entry = attribute_json(type_json_from_dtype(arr.dtype), arr.shape, value_json,
                               time.time())

        def change(obj: dict) -> None:
            obj.setdefault("attributes", {})[name] = entry

        self._session.update(self._id, change)

    def __delitem__(self, name: str) -> None:
        if name not in self._attrs():
            raise KeyError(f"no attribute {name!r}")
        self._session.update(self._id, lambda obj: obj["attributes"].pop(name))

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._attrs()))

    def __len__(self) -> int:
        return len(self._attrs())

    def __repr__(self) -> str:
        return f"<Attributes of {self._id}: {sorted(self._attrs())}>"


def _empty(dtype: np.dtype) -> Any:
    """The value of a null dataspace, as h5py gives it (``h5py.Empty(dtype)``)."""
    import h5py

    return h5py.Empty(dtype)


def _as_array(data: Any, dtype: Any = None) -> np.ndarray:
    if dtype is not None:
        dtype = np.dtype(dtype)
        if has_vlen(dtype):
            arr = np.asarray(data, dtype=object)
            out = np.empty(arr.shape, dtype=dtype)
            out[...] = arr
            return out
        return np.asarray(data, dtype=dtype)
    if isinstance(data, str):
        from .format.types import VLEN_STR

        return np.array(data, dtype=VLEN_STR)
    arr = np.asarray(data)
    if arr.dtype.kind == "U":
        from .format.types import VLEN_STR

        out = np.empty(arr.shape, dtype=VLEN_STR)
        out[...] = arr.astype(object)
        return out
    if arr.dtype.kind == "O" and not arr.dtype.metadata:
        from .format.types import VLEN_STR

        if all(isinstance(x, str) for x in arr.reshape(-1)):
            out = np.empty(arr.shape, dtype=VLEN_STR)
            out[...] = arr
            return out
        raise UnsupportedTypeError(f"cannot store object array of {set(map(type, arr.flat))}")
    return arr


# -- objects ----------------------------------------------------------------------------
class HLObject:
    """Common parts of groups, datasets and committed datatypes."""

    def __init__(self, session: DomainSession, obj_id: str, name: str) -> None:
        self._session = session
        self.id = obj_id
        self.name = name

    @property
    def attrs(self) -> AttributeManager:
        return AttributeManager(self._session, self.id)

    @property
    def file(self) -> File:
        return File._from_session(self._session)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HLObject) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)


class Datatype(HLObject):
    """A committed (named) datatype."""

    @property
    def dtype(self) -> np.dtype:
        from .format.types import dtype_from_json

        meta = self._session.load(self.id)
        return dtype_from_json(meta.type_json, self._session.resolve_type)

    def __repr__(self) -> str:
        return f"<h5dask Datatype {self.name!r} ({self.dtype})>"


class Group(HLObject, Mapping):
    """A group: a mapping of names to groups, datasets, committed types.

    >>> import numpy as np, h5dask
    >>> with h5dask.File("memory://docs/home/group.h5", "w") as f:
    ...     _ = f.create_group("obs").create_dataset("t", data=np.arange(3.0))
    ...     sorted(f["obs"]), f["obs/t"].name
    (['t'], '/obs/t')
    """

    @property
    def _meta(self) -> GroupMeta:
        meta = self._session.load(self.id)
        assert isinstance(meta, GroupMeta)
        return meta

    def _child_name(self, name: str) -> str:
        return posixpath.normpath(posixpath.join(self.name, name)) if not name.startswith(
            "/") else posixpath.normpath(name)

    def _wrap(self, obj_id: str, name: str) -> HLObject:
        kind = obj_id[0]
        if kind == "g":
            return Group(self._session, obj_id, name)
        if kind == "d":
            return Dataset(self._session, obj_id, name)
        return Datatype(self._session, obj_id, name)

    def __getitem__(self, path: str) -> Any:
        if not isinstance(path, str):
            raise TypeError(f"group members are looked up by name, not {type(path).__name__}")
        if path in ("", "/") and path == "/":
            return self.file
        obj_id, link = self._session.walk_path(self.id, path)
        if link is not None and link.kind == "external":
            return self._follow_external(link)
        return self._wrap(obj_id, self._child_name(path))

    def _follow_external(self, link: Link) -> Any:
        from .storage import Location

        loc = self._session.location
        domain = _external_domain(link.file, loc.domain)
        try:
            target = File(Location(loc.store, domain))
        except DomainNotFoundError as exc:
            hint = _root_relative_hint(loc, link.file, domain)
            if hint:
                raise DomainNotFoundError(exc.url, hint) from exc
            raise
        return target[link.h5path]

    def get(self, name: str, default: Any = None, getlink: bool = False) -> Any:
        """Like h5py: the object, ``default``, or with ``getlink`` the link itself."""
        if getlink:
            link = self._meta.links.get(name)
            if link is None:
                return default
            if link.kind == "soft":
                return SoftLink(link.h5path)
            if link.kind == "external":
                return ExternalLink(link.file, link.h5path)
            return HardLink()
        try:
            return self[name]
        except (ObjectNotFoundError, KeyError):
            return default

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        try:
            self._session.walk_path(self.id, path)
            return True
        except (ObjectNotFoundError, KeyError):
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._meta.links))

    def __len__(self) -> int:
        return len(self._meta.links)

    def prefetch(self) -> None:
        """Load the metadata of every hard-linked member concurrently (one round trip)."""
        ids_ = [link.id for link in self._meta.links.values() if link.kind == "hard"]
        self._session.load_many(ids_)

    def visititems(self, func: Any) -> Any:
        """Call ``func(relative_name, obj)`` for every object below, in h5py's order:
        depth-first, members by name, each object once (by its first hard link); soft
        and external links are not followed. Each group's members' metadata is fetched
        concurrently, or all at once where the domain has a consolidated object (a
        read-only file). Stops at (and returns) the first non-None return.

        >>> names = []; f.visititems(lambda n, o: names.append(n))  # doctest: +SKIP
        """
        seen = {self.id}
        self._session.load_all()

        def walk(group: Group, prefix: str) -> Any:
            group.prefetch()
            for name in group:
                link = group._meta.links[name]
                if link.kind != "hard" or link.id in seen:
                    continue
                seen.add(link.id)
                rel = f"{prefix}{name}"
                obj = group._wrap(link.id, group._child_name(name))
                result = func(rel, obj)
                if result is None and isinstance(obj, Group):
                    result = walk(obj, rel + "/")
                if result is not None:
                    return result
            return None

        return walk(self, "")

    def visit(self, func: Any) -> Any:
        return self.visititems(lambda name, _obj: func(name))

    # -- creating ---------------------------------------------------------------------
    def _parent_and_leaf(self, path: str, create: bool) -> tuple[Group, str]:
        head, _, leaf = path.strip("/").rpartition("/")
        if not leaf:
            raise ValueError(f"invalid member name {path!r}")
        base: Group = self.file if path.startswith("/") else self
        if not head:
            return base, leaf
        group = base
        for part in head.split("/"):
            if part in group:
                nxt = group[part]
                if not isinstance(nxt, Group):
                    raise ValueError(f"{nxt.name!r} is not a group")
                group = nxt
            elif create:
                group = group.create_group(part)
            else:
                raise ObjectNotFoundError(f"no group {part!r} in {group.name!r}")
        return group, leaf

    def _add_link(self, leaf: str, link: Link) -> None:
        if leaf in self._meta.links:
            raise ValueError(f"an object named {leaf!r} already exists in {self.name!r}")
        entry = link.to_json(time.time())
        self._session.update(self.id, lambda obj: obj.setdefault("links", {}).__setitem__(
            leaf, entry))

    def create_group(self, name: str) -> Group:
        """Create a group (intermediate groups too); ValueError if the name exists."""
        parent, leaf = self._parent_and_leaf(name, create=True)
        gid = self._session.new_object("g", group_json())
        parent._add_link(leaf, Link(leaf, "hard", id=gid))
        return Group(self._session, gid, parent._child_name(leaf))

    def require_group(self, name: str) -> Group:
        if name in self:
            obj = self[name]
            if not isinstance(obj, Group):
                raise TypeError(f"{name!r} exists and is not a group")
            return obj
        return self.create_group(name)

    def create_dataset(self, name: str, shape: Any = None, dtype: Any = None, data: Any = None,
                       chunks: Any = True, compression: str | int | None = None,
                       compression_opts: int | None = None, shuffle: bool = False,
                       fletcher32: bool = False, fillvalue: Any = None,
                       maxshape: Any = None) -> Dataset:
        """Create a dataset, like h5py's ``create_dataset``.

        ``chunks``: a shape, True (choose), None (one chunk) or False (contiguous: one
        object, as HSDS stores an ``H5D_CONTIGUOUS`` dataset; h5py reports chunks None;
        no filters, not resizable); ``compression``: gzip (with level
        ``compression_opts`` 0-9, or an int level), lz4, zstd, ...
        """
        parent, leaf = self._parent_and_leaf(name, create=True)
        committed = dtype if isinstance(dtype, Datatype) else None
        if committed is not None:
            dtype = committed.dtype
        if data is not None:
            arr = _as_array(data, dtype)
            shape = arr.shape if shape is None else tuple(shape)
            dtype = arr.dtype
        else:
            arr = None
        if shape is None:
            raise TypeError("create_dataset needs shape= or data=")
        shape = (shape,) if isinstance(shape, int) else tuple(int(s) for s in shape)
        dtype = np.dtype("<f4" if dtype is None else dtype)
        type_json = _type_for(self._session, committed if committed is not None else dtype)
        warn_if_hsds_cannot_serve_type(dtype, parent._child_name(leaf))
        space = Dataspace(shape, _maxshape(shape, maxshape))
        if chunks is False and space.maxshape != shape:
            # the one object of a contiguous layout holds exactly the shape: a resize
            # would change the layout under the stored object (HDF5 refuses it too)
            raise ValueError(f"{name!r}: a contiguous dataset (chunks=False) cannot be "
                             f"resizable (maxshape {space.maxshape}, shape {shape}): only "
                             "chunked datasets can be resized; give chunks, or no maxshape")
        chunk_shape = choose_chunks(shape, dtype, chunks, space.maxshape)
        filters = _filters(compression, compression_opts, shuffle, fletcher32)
        if chunks is False and filters:
            raise ValueError(f"{name!r}: a contiguous dataset (chunks=False) cannot have "
                             "filters (compression, shuffle, fletcher32): HDF5 applies them "
                             "to chunks; give chunks, or no filters")
        # a scalar dataset is one contiguous chunk "0", as HSDS writes it (h5pyd and h5py
        # then report chunks None); so is chunks=False; everything else is chunked
        layout = (contiguous_layout() if shape == () or chunks is False
                  else chunked_layout(chunk_shape))
        fill_json = (None if fillvalue is None
                     else json_from_array(np.asarray(_as_array(fillvalue, dtype))))
        did = self._session.new_object("d", dataset_json(type_json, space, layout, filters,
                                                         fill_json))
        parent._add_link(leaf, Link(leaf, "hard", id=did))
        ds = Dataset(self._session, did, parent._child_name(leaf))
        if arr is not None and arr.size:
            ds[...] = arr
        return ds

    def require_dataset(self, name: str, shape: Any, dtype: Any, exact: bool = False,
                        **kwargs: Any) -> Dataset:
        """The dataset ``name``, created if missing; an existing one must have ``shape``
        and a dtype ``dtype`` casts to safely (``exact``: the same dtype), as in h5py:
        values meant for ``dtype`` must not be cut to fit another (floats into ints).

        >>> with File("memory://docs/home/require.h5", "w") as f:
        ...     a = f.require_dataset("a", (3,), "<i4")
        ...     f.require_dataset("a", 3, "<i2") == a
        True
        """
        if name not in self:
            return self.create_dataset(name, shape=shape, dtype=dtype, **kwargs)
        ds = self[name]
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if not isinstance(ds, Dataset) or ds.shape != shape:
            raise TypeError(f"{name!r} exists with another shape or kind")
        wanted = np.dtype(dtype.dtype if isinstance(dtype, Datatype) else dtype)
        if (wanted != ds.dtype) if exact else not np.can_cast(wanted, ds.dtype):
            raise IncompatibleDatasetError(
                f"{ds.name!r} exists with dtype {ds.dtype}, which {wanted} "
                f"{'is not' if exact else 'does not cast to safely'}; require it with its "
                "dtype, or create the dataset under another name")
        return ds

    def __setitem__(self, name: str, value: Any) -> None:
        parent, leaf = self._parent_and_leaf(name, create=True)
        if isinstance(value, SoftLink):
            parent._add_link(leaf, Link(leaf, "soft", h5path=value.path))
        elif isinstance(value, ExternalLink):
            parent._add_link(leaf, Link(leaf, "external", h5path=value.path, file=value.filename))
        elif isinstance(value, HLObject):
            parent._add_link(leaf, Link(leaf, "hard", id=value.id))
        elif isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(
                value, np.generic)):
            tid = self._session.new_object(
                "t", datatype_json(type_json_from_dtype(np.dtype(value))))
            parent._add_link(leaf, Link(leaf, "hard", id=tid))
        else:
            parent.create_dataset(leaf, data=value)

    def __delitem__(self, name: str) -> None:
        parent, leaf = self._parent_and_leaf(name, create=False)
        if leaf not in parent._meta.links:
            raise KeyError(f"no member {leaf!r} in {parent.name!r}")
        # only the link goes; unreachable objects are left for a garbage collector, as HSDS
        self._session.update(parent.id, lambda obj: obj["links"].pop(leaf))

    def __repr__(self) -> str:
        return f"<h5dask Group {self.name!r} ({len(self)} members)>"


def _type_for(session: DomainSession, dtype: Any) -> Any:
    if isinstance(dtype, Datatype):
        # HSDS stores a committed type inline, with the committed type's id
        return {**session.resolve_type(dtype.id), "id": dtype.id}
    return type_json_from_dtype(np.dtype(dtype))


def _maxshape(shape: tuple[int, ...], maxshape: Any) -> tuple[int | None, ...]:
    if maxshape is None:
        return shape
    maxshape = tuple(maxshape)
    if len(maxshape) != len(shape) or any(m is not None and m < s for m, s in zip(maxshape, shape)):
        raise ValueError(f"maxshape {maxshape} does not fit shape {shape}")
    return maxshape


def _filters(compression: Any, opts: Any, shuffle: bool, fletcher32: bool) -> list:
    filters: list = []
    if shuffle:
        filters.append(filter_json("shuffle"))
    if isinstance(compression, int) and not isinstance(compression, bool):
        compression, opts = "gzip", compression
    if compression == "bitshuffle":  # as hdf5plugin.Bitshuffle() in h5py
        filters.append(filter_json("bitshuffle"))
        compression = None
    if compression:
        codec = codecs.compressor(compression)
        filters.append(codec.json(codec.check_level(opts)))
        warn_if_hsds_cannot_read(codec)
    if fletcher32:
        filters.append(filter_json("fletcher32"))
    return filters


class Dataset(HLObject):
    """An n-dimensional array stored as chunk objects (like ``h5py.Dataset``): indexing
    reads only the chunk objects the selection touches.

    >>> import numpy as np, h5dask
    >>> with h5dask.File("memory://docs/home/dataset.h5", "w") as f:
    ...     d = f.create_dataset("x", data=np.arange(12.0).reshape(3, 4), chunks=(1, 4))
    ...     d.shape, d.chunks, d[1, 1:3].tolist()
    ((3, 4), (1, 4), [5.0, 6.0])
    """

    @property
    def _meta(self) -> DatasetMeta:
        try:
            meta = self._session.load(self.id)
        except (UnsupportedFilterError, UnsupportedTypeError) as exc:
            # the metadata's key alone does not say which dataset of the domain it is
            message = str(exc)
            if not message.startswith(repr(self.name)):
                raise type(exc)(f"{self.name!r}: {message}") from exc
            raise
        assert isinstance(meta, DatasetMeta)
        return meta

    @property
    def shape(self) -> tuple[int, ...] | None:
        return self._meta.shape

    @property
    def maxshape(self) -> tuple[int | None, ...] | None:
        return self._meta.space.maxshape

    @property
    def ndim(self) -> int:
        return len(self.shape or ())

    @property
    def size(self) -> int:
        return math.prod(self.shape or ())

    @property
    def dtype(self) -> np.dtype:
        return self._meta.dtype

    @property
    def chunks(self) -> tuple[int, ...] | None:
        """The chunk shape (None for scalar and non-chunked layouts, as in h5py)."""
        meta = self._meta
        if meta.space.is_scalar or meta.layout.cls not in (
                "H5D_CHUNKED", "H5D_CHUNKED_REF", "H5D_CHUNKED_REF_INDIRECT"):
            return None
        return meta.chunk_shape

    @property
    def layout(self) -> str:
        return self._meta.layout.cls

    @property
    def fillvalue(self) -> Any:
        value = self._meta.fill_value()
        if isinstance(value, str) and (self.dtype.metadata or {}).get("vlen") is str:
            return value.encode("utf-8", "surrogateescape")  # bytes, as in h5py
        return value

    @property
    def compression(self) -> str | None:
        return self._meta.codec.compressor

    @property
    def compression_opts(self) -> int | None:
        """The level the dataset's metadata states (None if none: as h5pyd reports)."""
        return stated_level(self._meta.filters) if self._meta.codec.compressor else None

    @property
    def shuffle(self) -> bool:
        return self._meta.codec.shuffle

    @property
    def fletcher32(self) -> bool:
        return self._meta.codec.fletcher32

    @property
    def filters(self) -> list:
        return list(self._meta.filters)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("a scalar dataset has no len()")
        return self.shape[0]

    def source(self) -> ArraySource:
        """The picklable chunk-level reader/writer of this dataset."""
        return array_source(self._session, self._meta, self.name)

    def __getitem__(self, selection: Any) -> Any:
        meta = self._meta
        if meta.space.is_null:
            return _empty(meta.dtype)
        if meta.space.is_scalar:
            if selection not in ((), Ellipsis):
                raise IndexError("a scalar dataset takes [()] or [...]")
            value = _utf8_as_bytes(self.source().read((0,)))
            return value[()] if selection == () else np.asarray(value)
        out = _utf8_as_bytes(self.source().read(selection))
        return out[()] if out.ndim == 0 else out  # one element: a numpy scalar, as in h5py

    def asstr(self, encoding: str | None = None, errors: str = "strict") -> AsStrWrapper:
        """A view of a string dataset whose reads give ``str`` (as h5py's ``asstr()``):
        bytes decoded with ``encoding`` (by default the dataset's: UTF-8 or ASCII).

        >>> import h5dask
        >>> with h5dask.File("memory://docs/home/asstr.h5", "w") as f:
        ...     ds = f.create_dataset("s", data=["ä", "b"], dtype=h5dask.string_dtype())
        ...     (ds[0], ds.asstr()[0], ds.asstr()[...].tolist(), len(ds.asstr()))
        (b'\\xc3\\xa4', 'ä', ['ä', 'b'], 2)
        """
        string_encoding = _string_encoding(self.dtype)
        if string_encoding is None:
            raise TypeError("dset.asstr() can only be used on datasets with an HDF5 "
                            "string datatype")
        return AsStrWrapper(self, encoding or string_encoding, errors)

    def __setitem__(self, selection: Any, values: Any) -> None:
        self._session.check_writable()
        meta = self._meta
        try:
            if meta.space.is_scalar:
                self.source().write((0,), np.asarray(values).reshape(()))
                return
            self.source().write(selection, values)
        except (ValueOutOfRangeError, InvalidReferenceError) as exc:  # name the dataset
            exc.args = (f"{self.name!r}: {exc}",)
            raise

    def read_direct_chunk(self, index: tuple[int, ...]) -> np.ndarray | None:
        """One decoded chunk (full chunk shape) or None if it was never written."""
        return sync(self.source().read_chunk_async(tuple(index)))

    def resize(self, size: Any, axis: int | None = None) -> None:
        """Change the shape of an extensible dataset (within ``maxshape``); only chunked
        datasets can be resized, as in h5py."""
        self._session.check_writable()
        if self.chunks is None:
            # a contiguous (or scalar) dataset is one object holding exactly its shape:
            # changing the shape would make it read as corrupt, or silently reshaped
            raise TypeError(f"{self.name!r}: only chunked datasets can be resized (its "
                            f"layout is {self.layout}, shape {self.shape}); copy it into "
                            "a chunked dataset created with maxshape to resize it")
        shape = list(self.shape or ())
        if axis is not None:
            shape[axis] = int(size)
        else:
            shape = [int(s) for s in (size if not isinstance(size, int) else (size,))]
        maxshape = self.maxshape or ()
        if len(shape) != len(maxshape) or any(
                m is not None and s > m for s, m in zip(shape, maxshape)):
            raise ValueError(f"new shape {tuple(shape)} exceeds maxshape {maxshape}")

        def change(obj: dict) -> None:
            obj["shape"]["dims"] = shape

        old = tuple(self.shape or ())
        if any(n < o for n, o in zip(shape, old)):
            # what falls outside must read as the fill value if the dataset grows again
            sync(self.source().shrink_async(tuple(shape)))
        self._session.update(self.id, change)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = np.asarray(self[()] if self.shape == () else self[...])
        return arr.astype(dtype) if dtype is not None else arr

    def __repr__(self) -> str:
        return f"<h5dask Dataset {self.name!r}: shape {self.shape}, {self.dtype}>"


def _utf8_as_bytes(arr: np.ndarray) -> np.ndarray:
    """Variable-length UTF-8 strings as bytes, as h5py reads datasets (str only through
    ``asstr()``); the shared read path gives str, which the xarray engine keeps."""
    dt = arr.dtype
    if dt.kind != "O" or dt.names or (dt.metadata or {}).get("vlen") is not str:
        return arr
    out = np.empty(arr.shape, dtype=dt)
    out.reshape(-1)[:] = [v.encode("utf-8", "surrogateescape") if isinstance(v, str) else v
                          for v in arr.reshape(-1)]
    return out


def _string_encoding(dt: np.dtype) -> str | None:
    """``"utf-8"`` or ``"ascii"`` for an HDF5 string dtype, else None (as
    ``h5py.check_string_dtype``)."""
    meta = dt.metadata or {}
    if dt.kind == "O" and not dt.names:
        vlen = meta.get("vlen")
        return "utf-8" if vlen is str else "ascii" if vlen is bytes else None
    if dt.kind == "S":
        return "utf-8" if meta.get("h5py_encoding") == "utf-8" else "ascii"
    return None


class AsStrWrapper:
    """Reads of a string dataset decoded to ``str`` (h5py's ``AsStrWrapper``)."""

    def __init__(self, dset: Dataset, encoding: str, errors: str = "strict") -> None:
        self._dset = dset
        self.encoding = encoding
        self.errors = errors

    def __getitem__(self, selection: Any) -> Any:
        raw = self._dset[selection]
        if np.isscalar(raw):
            return raw.decode(self.encoding, self.errors)
        raw = np.asarray(raw)
        return np.array([b.decode(self.encoding, self.errors) for b in raw.flat],
                        dtype=object).reshape(raw.shape)

    def __len__(self) -> int:
        return len(self._dset)

    @property
    def shape(self) -> tuple[int, ...] | None:
        return self._dset.shape

    @property
    def ndim(self) -> int:
        return self._dset.ndim

    @property
    def size(self) -> int:
        return self._dset.size

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(object)  # what reads give, as h5py's

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        if copy is False:
            raise ValueError("AsStrWrapper.__array__ received copy=False but memory "
                             "allocation cannot be avoided on read")
        return np.asarray(self[()], dtype=dtype or self.dtype)

    def __repr__(self) -> str:
        return f"<h5dask AsStrWrapper of {self._dset!r}>"


class File(Group):
    """An HSDS schema-v2 domain in object storage, opened like an HDF5 file.

    ``mode``: r (read), r+ (read/write, must exist), w (create or replace), w-/x (create,
    fail if it exists), a (read/write, create if missing). A new domain becomes visible
    when the file is closed (or flushed), after everything it points to is written.

    ``allowed_link_prefixes``: URL prefixes outside the domain's store that linked
    datasets (``H5D_*_REF`` layouts) may read, e.g. ``["file:///data/cmip6/"]``; by
    default only the domain's own store (on S3, any bucket of the same endpoint) and
    what ``H5DASK_ALLOWED_LINK_PREFIXES`` lists (see :mod:`h5dask.storage.links`).
    ``verify_unversioned_links=True``: check linked layouts that recorded no version of
    their file (HSDS's hsload --link, earlier h5dask) against the file's metadata before
    reading them (default: ``H5DASK_VERIFY_UNVERSIONED_LINKS``, else read them with an
    UnverifiedLinkWarning; see :func:`h5dask.sources.linked_chunk_refs`).

    >>> with File("memory://doctest-file/home/doc.h5", "w") as f:
    ...     _ = f.create_dataset("x", data=[1, 2, 3])
    >>> File("memory://doctest-file/home/doc.h5", allowed_link_prefixes=["file:///data/"])["x"][:]
    array([1, 2, 3])
    """

    def __init__(self, url: Any, mode: str = "r", storage_options: Mapping | None = None,
                 owner: str | None = None, *,
                 allowed_link_prefixes: Iterable[str] | None = None,
                 verify_unversioned_links: bool | None = None) -> None:
        from .storage import Location
        from .storage.links import LinkPolicy

        if mode in ("w", "w-", "x", "a") and not isinstance(url, Location):
            refuse_folder_url(str(url))
        location = url if isinstance(url, Location) else open_location(str(url), storage_options)
        session = DomainSession(location, mode, owner,
                                LinkPolicy.from_option(
                                    allowed_link_prefixes,
                                    verify_unversioned=verify_unversioned_links))
        super().__init__(session, session.root_id, "/")
        self._closed = False

    @classmethod
    def _from_session(cls, session: DomainSession) -> File:
        self = cls.__new__(cls)
        HLObject.__init__(self, session, session.root_id, "/")
        self._closed = False
        return self

    @property
    def url(self) -> str:
        return self._session.location.url

    @property
    def filename(self) -> str:
        return self.url

    @property
    def mode(self) -> str:
        return "r" if not self._session.writable else "r+"

    def flush(self) -> None:
        """Write pending metadata (and publish a new domain)."""
        if self._session.writable:
            self._session.flush()

    def close(self) -> None:
        if not self._closed and self._session.writable:
            self._session.flush()
        self._closed = True

    def __enter__(self) -> File:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None and self._session.writable and self._session._domain_dirty:
            # an exception while creating a domain: do not publish half of it
            self._session.discard()
            self._closed = True
            return
        self.close()

    def __repr__(self) -> str:
        return f"<h5dask File {self.url!r} (mode {self._session.mode})>"


def open_file(url: str, mode: str = "r", **kwargs: Any) -> File:
    """Same as :class:`File`."""
    return File(url, mode, **kwargs)


__all__ = ["AttributeManager", "Dataset", "Datatype", "ExternalLink", "File", "Group",
           "HardLink", "SoftLink", "open_file"]
