"""The xarray backend "h5cloud": a store, a lazily indexed array, a thin entrypoint.

>>> import xarray as xr
>>> ds = xr.open_dataset("s3://bucket/home/run1.h5", engine="h5cloud", chunks={},
...                      storage_options={"anon": True})  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from xarray.backends.common import (
    AbstractDataStore,
    BackendEntrypoint,
    datatree_from_dict_with_io_cleanup,
)
from xarray.backends.store import StoreBackendEntrypoint
from xarray.core import indexing
from xarray.core.utils import FrozenDict
from xarray.core.variable import Variable

from ..active.config import ActiveConfig, resolve_active_config
from ..chunkio import ArraySource
from ..domain import DomainSession
from ..errors import (
    H5DaskError,
    ObjectNotFoundError,
    UnfollowedLinkWarning,
    UnsupportedFilterError,
    UnsupportedTypeError,
)
from ..format import ids
from ..format.filters import stated_level
from ..format.metadata import DatasetMeta, GroupMeta
from ..format.types import VLEN_STR
from ..sources import array_source
from ..storage import open_location
from ..storage.links import LinkPolicy
from . import lookahead, netcdf
from .array import H5CloudArray

#: The most bytes of a dimension coordinate that opening loads (xarray reads dimension
#: coordinates whole to build their indexes); ``max_coordinate_bytes=`` changes it
MAX_COORDINATE_BYTES = 256 << 20
#: With ``chunks={}``, a dimension split into more chunk objects than this gets dask
#: blocks of several whole chunk objects, so that the task graph (whose size dask makes
#: proportional to the blocks per dimension) stays small for any metadata
MAX_BLOCKS_PER_DIMENSION = 1 << 18


@dataclass
class GroupNode:
    """One group of a domain, with its datasets' metadata, loaded eagerly."""

    path: str  # "/" or "/a/b"
    meta: GroupMeta
    datasets: dict[str, DatasetMeta]
    subgroups: dict[str, str]  # name -> id
    attrs_of: dict[str, Mapping[str, Any]]  # dataset name -> raw attribute values


class _RawAttributes(Mapping[str, Any]):
    """An object's raw attribute values, each decoded when first asked for: an open
    needs the few the netCDF conventions read and the visible ones, never the others
    (e.g. a coordinate's ``REFERENCE_LIST``, a compound array naming every variable)."""

    def __init__(self, session: DomainSession, meta: Any) -> None:
        self._session = session
        self._meta = meta
        self._values: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._values:
            a = self._meta.attributes[name]
            # the hidden ones are read by the netCDF conventions only, never shown
            self._values[name] = None if a.space.is_null else a.value(
                self._meta.key, self._session.resolve_type,
                read_only=name in netcdf.HIDDEN_ATTRS)
        return self._values[name]

    def __contains__(self, name: object) -> bool:
        return name in self._meta.attributes

    def __iter__(self) -> Iterator[str]:
        return iter(self._meta.attributes)

    def __len__(self) -> int:
        return len(self._meta.attributes)


def _raw_attrs(session: DomainSession, meta: Any) -> Mapping[str, Any]:
    return _RawAttributes(session, meta)


def load_tree(session: DomainSession) -> dict[str, GroupNode]:
    """Every group of the domain, breadth-first, each level's objects fetched concurrently."""
    nodes: dict[str, GroupNode] = {}
    level = [("/", session.root_id)]
    seen = {session.root_id}
    while level:
        groups = session.load_many([gid for _, gid in level])
        child_ids: list[str] = []
        names: dict[str, str] = {}
        for (path, _), g in zip(level, groups):
            for name, link in g.links.items():
                if link.kind == "hard" and link.id not in seen:
                    seen.add(link.id)
                    child_ids.append(link.id)
                    names[link.id] = f"{path.rstrip('/')}/{name}"
        objects = _load_named(session, [i for i in child_ids if i[0] != "g"], names)
        session.prefetch_coordinates(objects)
        next_level = []
        for (path, _gid), g in zip(level, groups):
            datasets, subgroups, attrs_of = {}, {}, {}
            for name, link in g.links.items():
                target = link.id if link.kind == "hard" else _soft_dataset(session, _gid, link)
                if link.kind == "external" or (link.kind == "soft" and (target or "d")[0] == "g"):
                    _warn_unfollowed(session, f"{path.rstrip('/')}/{name}", link)
                if target is not None and target[0] == "d" and link.kind == "soft":
                    meta = session.load(target)  # h5py, so h5netcdf, follows soft links
                    datasets[name] = meta
                    attrs_of[name] = _raw_attrs(session, meta)
                if link.kind != "hard":
                    continue
                if link.id[0] == "d":
                    meta = session.load(link.id)
                    datasets[name] = meta
                    attrs_of[name] = _raw_attrs(session, meta)
                elif link.id[0] == "g":
                    subgroups[name] = link.id
                    child = f"{path.rstrip('/')}/{name}"
                    if link.id in child_ids:
                        next_level.append((child, link.id))
            nodes[path] = GroupNode(path, g, datasets, subgroups, attrs_of)
        level = next_level
    return nodes


def _warn_unfollowed(session: DomainSession, where: str, link: Any) -> None:
    """External links, and soft links to groups, are not followed (h5py, so h5netcdf,
    would show what they lead to): say so, nothing is left out silently."""
    what = (f"an external link (to {link.h5path!r} in {link.file!r})"
            if link.kind == "external" else f"a soft link to the group {link.h5path!r}")
    warnings.warn(
        f"{session.location.url}: {where!r} is {what}, which engine='h5cloud' does not "
        "follow: it is not in the Dataset/DataTree; open what it leads to itself "
        "(h5dask.File follows it)", UnfollowedLinkWarning, stacklevel=4)


def _soft_dataset(session: DomainSession, group_id: str, link: Any) -> str | None:
    """The id a soft link leads to, or None (dangling, or not a soft link)."""
    if link.kind != "soft":
        return None
    try:
        return session.walk_path(group_id, link.name)[0]
    except (ObjectNotFoundError, KeyError):
        return None


def _load_named(session: DomainSession, obj_ids: list[str], names: dict[str, str]) -> list:
    """Load objects; an unsupported type or filter is reported by variable name."""
    try:
        return session.load_many(obj_ids)
    except (UnsupportedTypeError, UnsupportedFilterError) as exc:
        for obj_id in obj_ids:
            if obj_id in str(exc) or ids.object_key(obj_id) in str(exc):
                raise type(exc)(f"variable {names[obj_id]!r}: {exc}") from exc
        raise


PHONY_DIMS_MODES = ("sort", "access")


class H5CloudStore(AbstractDataStore):
    """A read-only xarray data store over one group of a domain."""

    def __init__(self, session: DomainSession, group: str | None = None,
                 tree: dict[str, GroupNode] | None = None, active: Any = None,
                 phony_dims: str = "sort") -> None:
        if phony_dims not in PHONY_DIMS_MODES:
            raise ValueError(f"phony_dims must be one of {PHONY_DIMS_MODES} (as in h5netcdf), "
                             f"not {phony_dims!r}")
        self.phony_dims = phony_dims
        self.session = session
        self.active = active
        self.max_coordinate_bytes: int | None = MAX_COORDINATE_BYTES
        self.tree = tree if tree is not None else load_tree(session)
        self.group = netcdf.group_path(group)
        if self.group not in self.tree:
            raise _missing_group(self.group, session, self.tree)
        self._dims_cache: dict[str, tuple[str, ...]] | None = None

    @classmethod
    def open(cls, url: str, group: str | None = None,
             storage_options: Mapping[str, Any] | None = None,
             allowed_link_prefixes: Iterable[str] | None = None,
             phony_dims: str = "sort",
             verify_unversioned_links: bool | None = None) -> H5CloudStore:
        """Open a domain URL (reads metadata objects only); ``allowed_link_prefixes``
        and ``verify_unversioned_links`` as for :class:`h5dask.File`.

        A re-open starts the GETs of the coordinates' chunks with the metadata; what the
        reads of this open have not taken is dropped by :meth:`close` (or when the store
        is collected), so that a chunk fetched now is never read after another process
        rewrote it."""
        session = DomainSession(open_location(url, storage_options), "r",
                                link_policy=LinkPolicy.from_option(
                                    allowed_link_prefixes,
                                    verify_unversioned=verify_unversioned_links),
                                consolidated=True)
        try:
            store = cls(session, group, phony_dims=phony_dims)
        except BaseException:
            session.forget_prefetched()
            raise
        weakref.finalize(store, session.forget_prefetched)
        return store

    @property
    def node(self) -> GroupNode:
        return self.tree[self.group]

    # -- dimensions -------------------------------------------------------------------
    def _scope(self) -> list[str]:
        """The group and its ancestors, innermost first."""
        parts = [p for p in self.group.split("/") if p]
        return ["/" + "/".join(parts[:n]) if n else "/" for n in range(len(parts), -1, -1)]

    def _phony_order(self) -> tuple[list[str], int]:
        """(groups in the order h5netcdf creates their phony dimensions, first number).

        ``"sort"``: every group, depth-first by name (h5py's order), numbered after the
        file's largest netCDF dimension id; ``"access"``: only the groups opened on the
        way to this one (the root first), numbered from 0."""
        if self.phony_dims == "access":
            return list(reversed(self._scope())), 0
        all_attrs = [a for node in self.tree.values() for a in node.attrs_of.values()]
        order = sorted(self.tree, key=lambda p: [part for part in p.split("/") if part])
        return order, netcdf.max_dimid(all_attrs) + 1

    def _variable_dims(self) -> dict[str, tuple[str, ...]]:
        if self._dims_cache is not None:
            return self._dims_cache
        id_to_name = {}
        for node in self.tree.values():
            for name, meta in node.datasets.items():
                id_to_name[meta.id] = f"{node.path.rstrip('/')}/{name}"
        order, offset = self._phony_order()
        counter = [0]
        scope_dims = []
        phony_here: dict[int, list[str]] = {}
        # phony dimensions are numbered across the file, group by group
        for path in order:
            node = self.tree[path]
            dims = netcdf.group_dimensions(node.meta, node.datasets, node.attrs_of)
            phony = netcdf.phony_dimensions(dims, node.datasets, node.attrs_of, counter, offset)
            if path == self.group:
                phony_here = phony
            if path in self._scope():
                scope_dims.append((path, dims))
        scope_dims.sort(key=lambda pd: -len(pd[0]) if pd[0] != "/" else 0)
        scope = [d for _, d in sorted(scope_dims, key=lambda pd: self._scope().index(pd[0]))]
        node = self.node
        self._dims_cache = {
            name: netcdf.variable_dimensions(name, meta, node.attrs_of[name], scope, id_to_name,
                                             phony_here)
            for name, meta in node.datasets.items()
        }
        return self._dims_cache

    # -- the AbstractDataStore interface ---------------------------------------------------
    def open_store_variable(self, name: str, meta: DatasetMeta) -> Variable:
        node = self.node
        dims = self._variable_dims()[name]
        if meta.space.is_null:
            raise UnsupportedTypeError(f"variable {name!r} has a null dataspace")
        try:
            source = self._source(meta, name)
        except H5DaskError as exc:
            # name the variable, keeping the error's type and fields (MetadataError.key,
            # LinkedReferenceRefused.uri, ...): a new instance could not be built from
            # the message alone
            exc.args = (f"variable {name!r}: {exc}",)
            raise
        shape = meta.shape or ()
        is_index = len(dims) == 1 and dims[0] == name  # xarray loads it at open
        array = H5CloudArray(source, shape, meta.dtype, name, self.active,
                             self.max_coordinate_bytes if is_index else None)
        data = indexing.LazilyIndexedArray(array)
        attrs = _read_attributes(
            netcdf.public_attributes(self._attr_triples(meta, node.attrs_of[name])), name)
        encoding: dict[str, Any] = {"source": self.session.location.url,
                                    "original_shape": shape}
        vlen = (meta.dtype.metadata or {}).get("vlen") if meta.dtype.kind == "O" else None
        encoding["dtype"] = str if vlen is str else meta.dtype
        chunks = None if meta.space.is_scalar else meta.chunk_shape
        if chunks and meta.layout.cls.startswith("H5D_CHUNKED"):
            encoding["chunksizes"] = chunks
            encoding["contiguous"] = False
        else:
            encoding["contiguous"] = True
            encoding["chunksizes"] = None
        if chunks:
            # (an index coordinate is loaded at open, not split in dask blocks)
            blocks = chunks if is_index else _block_shape(name, shape, chunks)
            encoding["preferred_chunks"] = dict(zip(dims, blocks))
        codec = meta.codec
        # the level the metadata states: none for lz4 and the Blosc family unless one was
        # given, as h5netcdf reports HDF5's LZ4 and h5pyd reports HSDS's (round trip)
        level = stated_level(meta.filters)
        if codec.compressor == "gzip":
            encoding["zlib"] = True
            encoding["complevel"] = level
        elif codec.compressor:
            encoding["compression"] = codec.compressor
            encoding["compression_opts"] = level
        encoding["shuffle"] = codec.shuffle
        encoding["fletcher32"] = codec.fletcher32
        return Variable(dims, data, attrs, encoding)

    def _source(self, meta: DatasetMeta, name: str) -> ArraySource:
        # the path: where a linked layout that recorded none is looked for in its file
        source = array_source(self.session, meta, meta.key,
                              path=f"{self.group.rstrip('/')}/{name}")
        if (meta.dtype.metadata or {}).get("vlen") is bytes:
            # h5netcdf reads every variable-length string variable as str; the chunk
            # bytes are the same whatever the character set. The fill value (what chunks
            # never written read as) must be str too, not bytes among the str
            fill = source.fill_value
            if isinstance(fill, bytes):
                fill = fill.decode("utf-8", "surrogateescape")
            source = dataclasses.replace(source, dtype=VLEN_STR, codec=dataclasses.replace(
                source.codec, dtype=VLEN_STR), fill_value=fill)
        return source

    def _attr_triples(self, meta: Any, values: Mapping[str, Any]) -> dict[str, tuple]:
        """name -> (value, dtype, is_null) of the visible attributes (hidden ones, of
        whatever type, are never shown by netCDF readers: not decoded)."""
        out = {}
        for name, a in meta.attributes.items():
            if name in netcdf.HIDDEN_ATTRS:
                continue
            dt = a.dtype(meta.key, self.session.resolve_type)
            out[name] = (values.get(name), dt, a.space.is_null)
        return out

    def get_variables(self) -> FrozenDict:
        out = {}
        for name, meta in self.node.datasets.items():
            attrs = self.node.attrs_of[name]
            if netcdf.is_dimension_only(attrs):
                continue
            out[name.replace(netcdf.NON_COORD_PREFIX, "")] = self.open_store_variable(name, meta)
        return FrozenDict(out)

    def get_attrs(self) -> FrozenDict:
        meta = self.node.meta
        values = _raw_attrs(self.session, meta)
        return FrozenDict(_read_attributes(
            netcdf.public_attributes(self._attr_triples(meta, values)), self.group))

    def get_dimensions(self) -> FrozenDict:
        dims: dict[str, int] = {}
        for name, var_dims in self._variable_dims().items():
            shape = self.node.datasets[name].shape or ()
            dims.update(zip(var_dims, shape))
        return FrozenDict(dims)

    def get_encoding(self) -> dict:
        unlimited = set()
        for name, meta in self.node.datasets.items():
            if netcdf.is_dimension_scale(self.node.attrs_of[name]) and meta.space.maxshape and (
                    meta.space.maxshape[0] is None):
                unlimited.add(name)
        return {"unlimited_dims": unlimited}

    def close(self) -> None:
        """Drop the chunk GETs started at open that no read has taken."""
        self.session.forget_prefetched()


def _block_shape(name: str, shape: tuple[int, ...], chunks: tuple[int, ...]) -> tuple[int, ...]:
    """The dask block shape ``chunks={}`` gives: the chunk shape, or along a dimension of
    more than MAX_BLOCKS_PER_DIMENSION chunk objects the smallest multiple of it that
    keeps the blocks under that number (each block still reads whole chunk objects).

    >>> _block_shape("v", (2**22, 10), (1, 10))
    (16, 10)
    """
    blocks = []
    for n, c in zip(shape, chunks):
        nchunks = (n + c - 1) // c
        blocks.append(c * max(math.ceil(nchunks / MAX_BLOCKS_PER_DIMENSION), 1))
    if tuple(blocks) != tuple(chunks):
        warnings.warn(f"variable {name!r} has more than {MAX_BLOCKS_PER_DIMENSION} chunk "
                      f"objects along a dimension (shape {shape}, chunks {chunks}); with "
                      f"chunks={{}} its dask blocks are {tuple(blocks)}, several chunk objects "
                      "each, to keep the task graph small. Pass chunks= to choose.",
                      stacklevel=2)
    return tuple(blocks)


def _read_attributes(attrs: dict[str, Any], where: str) -> dict[str, Any]:
    """Bytes attributes decoded to str, as xarray's h5netcdf backend does (GH451) on top
    of h5netcdf's own normalisation: netCDF-C writes one-character text attributes such
    as ``axis = "T"`` as fixed-length ``S1`` strings, which h5netcdf leaves as bytes."""
    out = {}
    for k, v in attrs.items():
        if k not in ("_FillValue", "missing_value") and isinstance(v, bytes):
            try:
                v = v.decode("utf-8")
            except UnicodeDecodeError:
                warnings.warn(f"'utf-8' codec can't decode bytes for attribute {k!r} of "
                              f"{where!r}, returning bytes undecoded.", UnicodeWarning,
                              stacklevel=2)
        out[k] = v
    return out


def _missing_group(group: str, session: DomainSession,
                   tree: Mapping[str, GroupNode]) -> ObjectNotFoundError:
    return ObjectNotFoundError(
        f"group {group!r} not found in {session.location.url}; its groups are "
        f"{sorted(tree)}: pass one of them as group=")


def _is_domain_url(path: str) -> bool:
    if "://" in path:
        scheme = path.split("://", 1)[0]
        if scheme == "file":
            return os.path.isfile(os.path.join(path[len("file://"):], ".domain.json"))
        return scheme not in ("http", "https") and not path.rstrip("/").endswith(
            (".zarr", ".nc", ".nc4", ".grib", ".zip"))
    return os.path.isfile(os.path.join(path, ".domain.json"))


class H5CloudBackendEntrypoint(BackendEntrypoint):
    """``engine="h5cloud"``: HSDS schema-v2 domains in object storage, read directly
    (the implementation; xarray finds it through :mod:`h5dask.xarray.entrypoint`, which
    names the parameters and hands every call over to this class).

    >>> import xarray as xr
    >>> "h5cloud" in xr.backends.list_engines()
    True
    """

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        return isinstance(filename_or_obj, str | os.PathLike) and _is_domain_url(
            os.fspath(filename_or_obj))

    def _store(self, filename_or_obj: Any, group: str | None,
               storage_options: Mapping[str, Any] | None,
               allowed_link_prefixes: Iterable[str] | None = None,
               phony_dims: str = "sort",
               verify_unversioned_links: bool | None = None) -> H5CloudStore:
        if isinstance(filename_or_obj, H5CloudStore):
            return filename_or_obj
        if not isinstance(filename_or_obj, str | os.PathLike):
            raise TypeError(f"engine 'h5cloud' opens URL strings, not {type(filename_or_obj)}")
        return H5CloudStore.open(os.fspath(filename_or_obj), group, storage_options,
                                 allowed_link_prefixes, phony_dims, verify_unversioned_links)

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        mask_and_scale: bool = True,
        decode_times: bool = True,
        concat_characters: bool = True,
        decode_coords: bool | str = True,
        use_cftime: bool | None = None,
        decode_timedelta: bool | None = None,
        group: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        active_storage_url: str | None = None,
        active_storage: str | bool | None = None,
        allowed_link_prefixes: Iterable[str] | None = None,
        max_coordinate_bytes: int | None = MAX_COORDINATE_BYTES,
        phony_dims: str = "sort",
        verify_unversioned_links: bool | None = None,
    ) -> Any:
        """``allowed_link_prefixes``: URL prefixes outside the domain's store that linked
        datasets may read; ``verify_unversioned_links``: check linked layouts that
        recorded no version of their file (both: see :class:`h5dask.File`).
        ``max_coordinate_bytes``: the most
        bytes of a dimension coordinate loaded at open (None: no limit), see
        docs/reliability.md. ``phony_dims`` names axes without dimension scales as
        h5netcdf does: ``"sort"`` (numbered across the file) or ``"access"``."""
        opened_here = not isinstance(filename_or_obj, H5CloudStore)
        store = self._store(filename_or_obj, group, storage_options, allowed_link_prefixes,
                            phony_dims, verify_unversioned_links)
        try:
            lookahead.install()
            store.active = _active_config(active_storage_url, active_storage)
            store.max_coordinate_bytes = max_coordinate_bytes
            ds = StoreBackendEntrypoint().open_dataset(
                store, mask_and_scale=mask_and_scale, decode_times=decode_times,
                concat_characters=concat_characters, decode_coords=decode_coords,
                drop_variables=drop_variables, use_cftime=use_cftime,
                decode_timedelta=decode_timedelta)
            _load_dimension_coordinates(ds)
        finally:
            if opened_here:  # nothing fetched at open is read later (a store passed in:
                store.close()  # its opener closes it, after its other groups)
        return ds

    def open_groups_as_dict(  # type: ignore[override]
        self, filename_or_obj: Any, *, group: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        allowed_link_prefixes: Iterable[str] | None = None,
        verify_unversioned_links: bool | None = None, **kwargs: Any,
    ) -> dict[str, Any]:
        root = self._store(filename_or_obj, None, storage_options, allowed_link_prefixes,
                           "sort", verify_unversioned_links)
        try:
            return self._open_groups(root, netcdf.group_path(group), **kwargs)
        finally:
            if not isinstance(filename_or_obj, H5CloudStore):
                root.close()

    def _open_groups(self, root: H5CloudStore, base: str, **kwargs: Any) -> dict[str, Any]:
        if base not in root.tree:
            raise _missing_group(base, root.session, root.tree)
        out = {}
        for path in sorted(root.tree):
            if path != base and not path.startswith(base.rstrip("/") + "/"):
                continue
            store = H5CloudStore(root.session, path, root.tree,
                                 phony_dims=kwargs.get("phony_dims", "sort"))
            ds = self.open_dataset(store, **kwargs)
            rel = "/" + path[len(base):].strip("/") if base != "/" else path
            out[rel] = ds
        return out

    def open_datatree(  # type: ignore[override]
        self, filename_or_obj: Any, *, group: str | None = None,
        storage_options: Mapping[str, Any] | None = None,
        allowed_link_prefixes: Iterable[str] | None = None,
        verify_unversioned_links: bool | None = None, **kwargs: Any,
    ) -> Any:
        groups = self.open_groups_as_dict(filename_or_obj, group=group,
                                          storage_options=storage_options,
                                          allowed_link_prefixes=allowed_link_prefixes,
                                          verify_unversioned_links=verify_unversioned_links,
                                          **kwargs)
        # each node closes its group's store (as xarray's netCDF backends): what a
        # group's open fetched ahead is dropped when the tree is closed
        return datatree_from_dict_with_io_cleanup(groups)


def _load_dimension_coordinates(ds: Any) -> None:
    """Load the dimension coordinates now, from the chunks fetched with the metadata
    (xarray loads them next anyway, to build its indexes)."""
    for name in ds.dims:
        var = ds.variables.get(name)
        if var is not None and var.dims == (name,):
            var.load()


def _active_config(url: str | None, mode: str | bool | None) -> ActiveConfig | None:
    """The active-storage settings; installs pushdown when a server is configured."""
    config = resolve_active_config(url, mode)
    if config is not None:
        from ..active.pushdown import enable_pushdown

        enable_pushdown(config)
    return config
