"""``to_h5cloud``: write an xarray Dataset (or DataTree) as a domain.

The write goes through xarray's own writable-store machinery, the path ``to_netcdf``
and ``to_zarr`` take (:func:`xarray.backends.writers.dump_to_store`, an
:class:`~xarray.backends.common.ArrayWriter` and a
:class:`~xarray.backends.common.WritableCFDataStore`), so CF encoding, netCDF-4
string handling (``S1`` character arrays, ``_Encoding``), object-dtype conversion,
name and attribute checks and unlimited dimensions are xarray's. Dimensions become
netCDF-4 dimension scales, so h5netcdf, netCDF-C and h5dask see the same dimensions.

Dask-backed variables are written in parallel, one task per storage chunk, each task
writing its chunk object straight to the store from wherever it runs (no lock:
the dask blocks are aligned to the storage chunks, so no two tasks of a write share a
chunk; separate region writes computed together lock the chunks their edges cut, see
:func:`chunk_merge_locks`).
The domain's metadata is written only after every chunk: a new domain becomes
visible, and an append grows the datasets, only once all the data is there.

>>> import numpy as np, xarray as xr, h5dask
>>> ds = xr.Dataset({"t": (("x",), np.arange(4.0))}, coords={"x": [10, 20, 30, 40]})
>>> h5dask.to_h5cloud(ds, "memory://docs/home/w.h5")
>>> xr.open_dataset("memory://docs/home/w.h5", engine="h5cloud")["t"].values.tolist()
[0.0, 1.0, 2.0, 3.0]
"""

from __future__ import annotations

import contextlib
import functools
import posixpath
import re
import sys
import threading
import warnings
from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
from xarray.backends.common import ArrayWriter, WritableCFDataStore, _encode_variable_name
from xarray.backends.netCDF4_ import (
    _encode_nc4_variable,
    _ensure_no_forward_slash_in_name,
    _extract_nc4_variable_encoding,
    _get_datatype,
)

try:  # xarray >= 2025.9 keeps the netCDF writer in its own module
    from xarray.backends.writers import (
        _sanitize_unlimited_dims,
        _validate_attrs,
        _validate_dataset_names,
        dump_to_store,
    )
except ImportError:  # pragma: no cover - older xarray
    from xarray.backends.api import (  # type: ignore[no-redef]
        _sanitize_unlimited_dims,
        _validate_attrs,
        _validate_dataset_names,
        dump_to_store,
    )

from ..chunkio import ArraySource
from ..errors import H5DaskError, ReadOnlyError, ValueOutOfRangeError
from ..file import Dataset, File, Group
from ..format import codecs
from ..format.types import OBJ_REF, VLEN_STR, integer_range_problem
from ..readahead import object_name
from ..storage.sync import sync
from .netcdf import HIDDEN_ATTRS, NON_COORD_PREFIX, NOT_A_VARIABLE, group_path

MODES = ("w", "w-", "a", "r+")
# CF keys an appended or region-written variable takes from the variable it extends, so
# new values are encoded as the stored ones are (same time units, same packing)
INHERITED_ENCODING = ("units", "calendar", "dtype", "_FillValue", "missing_value",
                      "scale_factor", "add_offset", "_Unsigned")
# attributes that say how a variable's stored values read: a write into a stored variable
# must leave them as they are, or every value it does not rewrite would read wrongly
READ_AS_STORED = ("units", "calendar", "scale_factor", "add_offset", "_FillValue",
                  "missing_value", "_Unsigned")
_DIMLIST_DTYPE = np.dtype("O", metadata={"vlen": OBJ_REF})
_REFLIST_DTYPE = np.dtype([("dataset", OBJ_REF), ("dimension", "<u4")])
_extract_encoding = functools.partial(
    _extract_nc4_variable_encoding, lsd_okay=False, h5py_okay=True, backend="h5cloud")


# -- errors ---------------------------------------------------------------------------
@functools.cache
def _error_class(base: type[Exception]) -> type[Exception]:
    """An h5dask error that is also ``base``, so callers catch what ``to_netcdf`` raises."""
    return type(f"H5Cloud{base.__name__}", (H5DaskError, base), {})


@contextlib.contextmanager
def _about(what: str) -> Iterator[None]:
    """Re-raise ValueError/TypeError/NotImplementedError naming ``what`` (a variable)."""
    try:
        yield
    except H5DaskError:
        raise
    except (ValueError, TypeError, NotImplementedError) as exc:
        raise _error_class(type(exc))(f"{what}: {exc}") from exc


def _unencodable(variables: Mapping, message: str) -> str:
    """Which variable the CF encoding failed on (for its error), if the message does
    not say: the first that fails on its own."""
    if any(repr(str(name)) in message for name in variables):
        return "encoding the dataset"  # the message names it
    for name, var in variables.items():
        try:
            xr.conventions.encode_cf_variable(var, name=name)
        except Exception:  # noqa: BLE001 - any failure points at this variable
            return f"variable {name!r}"
    return "encoding the dataset"


@contextlib.contextmanager
def _in_group(path: str) -> Iterator[None]:
    """Name the group in what writing a tree's node raises: a variable's name alone is
    ambiguous (every group of a tree may have an ``a``)."""
    prefix = f"group {path!r}"
    try:
        with _about(prefix):
            yield
    except H5DaskError as exc:
        message = str(exc.args[0]) if exc.args else ""
        if not message.startswith(prefix):
            exc.args = (f"{prefix}: {message}",)
        raise


def _compatibility_error() -> type[Exception]:
    """What h5netcdf raises for netCDF-invalid features (so callers catch the same)."""
    try:
        from h5netcdf.utils import CompatibilityError
    except ImportError:
        return ValueError
    return CompatibilityError


def _invalid(message: str, base: type[Exception] = ValueError) -> Exception:
    return _error_class(base)(message)


# -- chunk targets ----------------------------------------------------------------------
class ChunkTarget:
    """A ``da.store`` target writing straight into a dataset's chunk objects (picklable:
    an :class:`ArraySource` holds the store settings and the dataset's layout)."""

    def __init__(self, source: ArraySource, scalar: bool) -> None:
        self.source = source
        self.scalar = scalar
        self.shape = source.shape if not scalar else ()
        self.dtype = source.dtype
        self.ndim = len(self.shape)

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.scalar:
            self.source.write((0,), np.asarray(value).reshape(()))
            return
        merged = [object_name(self.source, index) for index in self.source.merged_chunks(key)]
        with chunk_merge_locks(merged):
            self.source.write(key, value)


_local_locks: dict[str, threading.Lock] = {}
_local_locks_guard = threading.Lock()


@contextlib.contextmanager
def chunk_merge_locks(names: Iterable[str]) -> Iterator[None]:
    """Hold a lock per chunk object in ``names`` (the chunks a write reads, merges and
    rewrites) for the duration: on a ``distributed`` worker a cluster-wide
    ``distributed.Lock``, else one of this process. The blocks of one write are aligned
    to the chunks and never share one, but separate region writes computed together
    share the chunks their regions' edges cut; without the lock one of two merges of a
    chunk was lost. Locks are taken in sorted order, so two writes never wait on each
    other in a circle; a write of whole chunks takes none.

    >>> with chunk_merge_locks(["s3://bucket/home/a.h5/d-1/0_0"]):
    ...     pass
    """
    ordered = sorted(set(names))
    if not ordered:
        yield
        return
    locks = [_merge_lock(name) for name in ordered]
    taken: list[Any] = []
    try:
        for lock in locks:
            lock.acquire()
            taken.append(lock)
        yield
    finally:
        for lock in reversed(taken):
            lock.release()


def _merge_lock(name: str) -> Any:
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            distributed.get_worker()
        except ValueError:  # not in a worker's task: this process's lock
            pass
        else:
            return distributed.Lock(f"h5dask-chunk-merge:{name}")
    with _local_locks_guard:
        return _local_locks.setdefault(name, threading.Lock())


def _aligned_chunks(dask_chunks: tuple[tuple[int, ...], ...], storage: tuple[int, ...],
                    offsets: tuple[int, ...]) -> tuple[tuple[int, ...], ...] | None:
    """Dask chunks whose block edges fall on storage-chunk edges (a write starting at
    ``offsets``), so no two tasks write the same chunk object; None if already so."""
    out = []
    aligned = True
    for blocks, chunk, offset in zip(dask_chunks, storage, offsets):
        edges = np.cumsum((0,) + tuple(blocks))
        if any((offset + e) % chunk for e in edges[1:-1]):
            aligned = False
        length = int(edges[-1])
        first = min(length, (-offset) % chunk or chunk)
        sizes = [first] if first else []
        sizes += [chunk] * ((length - first) // chunk)
        if sum(sizes) < length:
            sizes.append(length - sum(sizes))
        out.append(tuple(sizes) or (0,))
    return None if aligned else tuple(out)


# -- the store ------------------------------------------------------------------------
class H5CloudWriteStore(WritableCFDataStore):
    """One group of a domain open for writing, as xarray's writers expect of a store.

    ``append_dim``: variables with that dimension grow along it (their datasets must be
    resizable: written with ``unlimited_dims``); ``region``: dimension -> slice of the
    existing variables to write into.
    """

    def __init__(self, group: Group, mode: str, append_dim: Hashable | None = None,
                 region: Mapping[Hashable, slice] | None = None,
                 existing_encoding: Mapping[str, Mapping[str, Any]] | None = None,
                 invalid_netcdf: bool = False, safe_chunks: bool = True) -> None:
        self.group = group
        self.invalid_netcdf = invalid_netcdf
        self.safe_chunks = safe_chunks
        self.mode = mode
        self.append_dim = None if append_dim is None else str(append_dim)
        self.region = {str(k): v for k, v in (region or {}).items()}
        self.existing_encoding = dict(existing_encoding or {})
        self._scales = self._existing_scales()  # dimension name -> scale Dataset
        self._new_dims: dict[str, tuple[int, bool]] = {}  # name -> (size, unlimited)
        self._written: dict[str, tuple[Dataset, tuple[str, ...]]] = {}
        self._regions: dict[str, tuple[slice, ...] | None] = {}
        self._unlimited: set[str] = set()  # the unlimited dimensions asked for
        self.grown: list[tuple[Dataset, tuple[int, ...]]] = []  # (dataset, old shape)
        self.created: list[Dataset] = []  # new datasets: their chunks go if the write fails

    # -- reading what exists -------------------------------------------------------
    def _existing_scales(self) -> dict[str, Dataset]:
        if self.mode not in ("a", "r+"):
            return {}
        return _dimension_scales(self.group)

    @functools.cached_property
    def _ancestor_scales(self) -> dict[str, Dataset]:
        """The dimension scales of the groups above this one, the nearest of each name:
        netCDF-4 scoping, where a variable uses an enclosing group's dimension of its
        size instead of defining its own (as netCDF4-python and h5netcdf write trees)."""
        out: dict[str, Dataset] = {}
        path = self.group.name
        while path not in ("/", ""):
            path = posixpath.dirname(path)
            parent = self.group.file if path == "/" else self.group.file[path]
            for dim, scale in _dimension_scales(parent).items():
                out.setdefault(dim, scale)
        return out

    def get_dimensions(self) -> dict[str, int]:
        """Existing dimensions (those being appended to or region-written excepted)."""
        skip = {self.append_dim, *self.region}
        return {name: (scale.shape or (0,))[0] for name, scale in self._scales.items()
                if name not in skip}

    def get_parent_dimensions(self) -> dict[str, int]:
        """The enclosing groups' dimensions, those asked to be unlimited here excepted
        where the enclosing one is not (this group then gets its own, resizable)."""
        return {name: (scale.shape or (0,))[0] for name, scale in self._ancestor_scales.items()
                if name not in self._unlimited or scale.maxshape[0] is None}

    @classmethod
    def open(cls, url: str, mode: str = "w", group: str | None = None,
             storage_options: Mapping | None = None) -> H5CloudWriteStore:
        """A store on the domain at ``url``, for ``Dataset.dump_to_store``; the metadata
        is written by :meth:`close`.

        >>> store = H5CloudWriteStore.open("memory://docs/home/store.h5")
        >>> xr.Dataset({"v": ("x", [1, 2])}).dump_to_store(store)
        >>> store.close()
        """
        f = File(url, mode, storage_options=storage_options)
        return cls(f.require_group(group) if group not in (None, "", "/") else f, mode)

    def _reader(self) -> Any:
        """The group as the h5cloud backend reads it (what is written so far)."""
        from .backend import H5CloudStore

        return H5CloudStore(self.group._session, self.group.name)

    def get_variables(self) -> Any:
        return self._reader().get_variables()

    def get_attrs(self) -> Any:
        return self._reader().get_attrs()

    def store(self, variables: Mapping, attributes: Mapping, check_encoding_set: Any = (),
              writer: ArrayWriter | None = None, unlimited_dims: Any = None) -> None:
        """xarray's store (encode, dimensions, variables), then the dimension scales."""
        super().store(variables, attributes, frozenset(check_encoding_set), writer,
                      unlimited_dims)
        self.finish()

    def get_encoding(self) -> dict:
        return {}

    # -- encoding --------------------------------------------------------------------
    def encode(self, variables: Mapping, attributes: Mapping) -> tuple[dict, dict]:
        variables = dict(variables)
        for name, var in variables.items():
            inherited = self.existing_encoding.get(str(name))
            if inherited:
                var = var.copy(deep=False)
                var.encoding = {**inherited, **var.encoding}
                variables[name] = var
            variables[name] = _range_checked(str(name), variables[name])
        try:
            return super().encode(variables, attributes)
        except H5DaskError:
            raise
        except (ValueError, TypeError, NotImplementedError) as exc:
            # xarray's CF coders name the variable in most of their errors, not all (a
            # stored integer dtype inherited by text fails in numpy): find it
            raise _error_class(type(exc))(
                f"{_unencodable(variables, str(exc))}: {exc}") from exc

    def encode_variable(self, variable: xr.Variable, name: Hashable = None) -> xr.Variable:
        with _about(f"variable {name!r}"):
            return _encode_nc4_variable(variable, name=name)

    # -- dimensions and attributes --------------------------------------------------
    def set_dimensions(self, variables: Mapping, unlimited_dims: Iterable | None = None) -> None:
        existing = self.get_dimensions()
        for name, var in variables.items():
            for dim, size in var.sizes.items():
                if dim in existing and size != existing[dim]:
                    raise _invalid(
                        f"variable {name!r}: Unable to update size for existing dimension "
                        f"{dim!r} ({size} != {existing[dim]}); to grow it, write with "
                        f"append_dim={dim!r}, or use region= to write part of it")
        self._unlimited = {str(d) for d in unlimited_dims or ()}
        super().set_dimensions(variables, unlimited_dims)

    def set_dimension(self, name: Hashable, length: int, is_unlimited: bool = False) -> None:
        with _about(f"dimension {name!r}"):
            _ensure_no_forward_slash_in_name(name)
        if name in self._scales:  # an existing dimension being appended to / written into
            return
        if name in {self.append_dim, *self.region} and name in self._ancestor_scales:
            return  # ... which is an enclosing group's (its size is the stored one's)
        self._new_dims[str(name)] = (int(length), bool(is_unlimited))

    def set_attribute(self, key: str, value: Any) -> None:
        with _about(f"attribute {key!r} of group {self.group.name!r}"):
            self._write_attribute(self.group, key, value)

    def _write_attribute(self, obj: Any, key: str, value: Any) -> None:
        if key in HIDDEN_ATTRS:  # as h5netcdf: readers hide them, and they mean dimensions
            raise _invalid(f"attribute {key!r} of {obj.name!r}: cannot write attribute with "
                           f"reserved name {key!r} (netCDF-4 keeps it for dimension scales, "
                           "and readers hide it); rename it", AttributeError)
        if isinstance(value, bool | np.bool_) or (
                isinstance(value, np.ndarray) and value.dtype.kind == "b"):
            if not self.invalid_netcdf:
                raise _invalid(
                    f"attribute {key!r} of {obj.name!r}: boolean dtypes are not a supported "
                    "NetCDF feature; write with invalid_netcdf=True to store them anyway",
                    _compatibility_error())
            warnings.warn(f"You are writing invalid netcdf features to {obj.name!r}: "
                          f"the boolean attribute {key!r} (netCDF has no boolean type)",
                          UserWarning, stacklevel=2)
        _write_attribute(obj, key, value)

    # -- variables -------------------------------------------------------------------
    def set_variables(self, variables: Mapping, check_encoding_set: Iterable,
                      writer: ArrayWriter, unlimited_dims: Iterable | None = None) -> None:
        for vn, var in variables.items():
            name = _encode_variable_name(vn)
            target, source = self.prepare_variable(name, var, vn in check_encoding_set,
                                                   unlimited_dims=unlimited_dims)
            if target is not None:
                writer.add(source, target, region=self._regions.get(name))

    def prepare_variable(self, name: str, variable: xr.Variable, check_encoding: bool = False,
                         unlimited_dims: Iterable | None = None) -> tuple[Any, Any]:
        with _about(f"variable {name!r}"):
            return self._prepare(name, variable, check_encoding, set(unlimited_dims or ()))

    def _prepare(self, name: str, variable: xr.Variable, check: bool,
                 unlimited: set) -> tuple[Any, Any]:
        _ensure_no_forward_slash_in_name(name)
        if name.startswith(NON_COORD_PREFIX):  # readers take it for netCDF-4's own prefix
            raise ValueError(f"names starting with {NON_COORD_PREFIX!r} are netCDF-4's own: "
                             "the variable would be hidden or renamed when read; rename it")
        attrs = dict(variable.attrs)
        dtype = _get_datatype(variable, raise_on_invalid_encoding=check)
        fill = attrs.pop("_FillValue", None)
        enc = _extract_encoding(variable, raise_on_invalid=check, unlimited_dims=unlimited)
        storage_dtype = VLEN_STR if dtype is str else np.dtype(dtype)
        dims = tuple(str(d) for d in variable.dims)
        is_coordinate = dims == (name,)
        all_dims = {*self._scales, *self._new_dims}
        stored = NON_COORD_PREFIX + name if name in all_dims and not is_coordinate else name
        existing = self.group.get(stored) if stored in self.group else None
        if existing is not None and not isinstance(existing, Dataset):
            raise ValueError(f"{existing.name!r} exists and is a group, not a variable")
        if existing is not None and is_coordinate and _dimension_only(existing):
            del self.group[stored]  # a bare dimension becomes a coordinate variable
            existing = None
        if existing is not None:
            if existing._meta.layout.is_linked:
                raise ReadOnlyError(
                    f"variable {name!r}: {existing.name!r} is linked to chunks inside an "
                    "HDF5 file (h5dask load --link), which are read-only; load the file "
                    "without --link to write into it")
            _check_read_as_stored(existing, storage_dtype, {**attrs, "_FillValue": fill})
        if existing is None:
            if self.mode == "r+" or self.region or (
                    self.append_dim is not None and self.append_dim in dims
                    and self.append_dim in self._scales):
                raise ValueError(
                    f"it does not exist in {self.group.file.url}{self.group.name}, and "
                    f"{self._why_existing_only()} writes only into existing variables; "
                    "write it first without that")
            ds_obj = self._create(stored, variable, storage_dtype, enc, fill, check, unlimited)
            region = None
        else:
            ds_obj, region = self._reuse(existing, variable, dims)
        for key, value in attrs.items():
            self._write_attribute(ds_obj, key, value)
        if fill is not None:
            fill_dtype = storage_dtype if storage_dtype.kind != "O" else None
            _write_attribute(ds_obj, "_FillValue",
                             np.asarray(fill, fill_dtype) if fill_dtype else fill)
        self._written[stored] = (ds_obj, dims)
        self._regions[name] = region
        if variable.size == 0:
            return None, None
        return self._target_and_source(ds_obj, variable, storage_dtype, region)

    def _why_existing_only(self) -> str:
        if self.mode == "r+":
            return "mode='r+'"
        if self.region:
            return "region="
        return f"append_dim={self.append_dim!r}"

    def _create(self, stored: str, variable: xr.Variable, dtype: np.dtype,
                enc: dict, fill: Any, check: bool, unlimited: set) -> Dataset:
        kwargs: dict[str, Any] = {}
        if variable.ndim:  # no chunks, compression or filters for scalars, as h5netcdf
            compression, level = _compression(enc, check)
            kwargs = {"compression": compression, "compression_opts": level,
                      "shuffle": bool(enc.get("shuffle", False)),
                      "fletcher32": bool(enc.get("fletcher32", False))}
        chunks = _storage_chunks(variable, enc.get("chunksizes"), unlimited)
        if variable.ndim and _contiguous(variable, dtype, enc, kwargs, unlimited, check):
            chunks = False  # one object, H5D_CONTIGUOUS, as HSDS stores it
        maxshape = tuple(None if d in unlimited else s
                         for d, s in zip(variable.dims, variable.shape))
        fillvalue = None
        if fill is not None and dtype.kind != "O":
            fillvalue = np.asarray(fill, dtype)
        ds_obj = self.group.create_dataset(
            stored, shape=variable.shape, dtype=dtype, chunks=chunks, fillvalue=fillvalue,
            maxshape=maxshape if None in maxshape else None, **kwargs)
        self.created.append(ds_obj)
        return ds_obj

    def _reuse(self, ds_obj: Dataset, variable: xr.Variable,
               dims: tuple[str, ...]) -> tuple[Dataset, tuple[slice, ...] | None]:
        """An existing dataset to write into: grown along ``append_dim``, or a region."""
        old = tuple(ds_obj.shape or ())
        if len(old) != variable.ndim:
            raise ValueError(f"it has {variable.ndim} dimensions {dims}, but the stored "
                             f"variable {ds_obj.name!r} has shape {old}")
        region = []
        new_shape = list(old)
        for axis, (dim, size) in enumerate(zip(dims, variable.shape)):
            if dim == self.append_dim:
                limit = (ds_obj.maxshape or old)[axis]
                if limit is not None and old[axis] + size > limit:
                    raise ValueError(
                        f"cannot append along {dim!r}: the stored variable {ds_obj.name!r} "
                        f"is not resizable along it (maxshape {ds_obj.maxshape}); write "
                        f"the domain with unlimited_dims=[{dim!r}] to append to it")
                region.append(slice(old[axis], old[axis] + size))
                new_shape[axis] = old[axis] + size
            elif dim in self.region:
                sl = self.region[dim]
                start, stop, step = sl.indices(old[axis])
                if step != 1 or stop - start != size or (sl.stop or 0) > old[axis]:
                    raise ValueError(
                        f"region {dim}={sl} does not fit: it needs {size} elements "
                        f"within the stored length {old[axis]} (step 1)")
                region.append(slice(start, stop))
                self._check_safe_chunks(ds_obj, axis, dim, start, stop)
            else:
                if size != old[axis]:
                    raise ValueError(
                        f"Unable to update size for existing dimension {dim!r}: "
                        f"{size} != {old[axis]} (the stored variable {ds_obj.name!r} "
                        f"has shape {old})")
                region.append(slice(0, size))
        if self.region and not any(d in self.region for d in dims):
            raise ValueError(f"it has none of the region dimensions {sorted(self.region)}; "
                             "drop it from the dataset (ds.drop_vars) for a region write")
        if tuple(new_shape) != old:
            self.grown.append((ds_obj, old))
            ds_obj.resize(tuple(new_shape))
        return ds_obj, tuple(region) if region else None

    def _check_safe_chunks(self, ds_obj: Dataset, axis: int, dim: str, start: int,
                           stop: int) -> None:
        """Refuse a region whose edge cuts a storage chunk (not at the array's end):
        that chunk is read, merged and rewritten, and another process writing the
        neighbouring region at the same time loses its rows, silently (locks hold only
        within one process or one distributed cluster)."""
        chunk = (ds_obj.chunks or ds_obj.shape)[axis]
        length = ds_obj.shape[axis]
        if not self.safe_chunks or chunk == 0 or (
                start % chunk == 0 and (stop % chunk == 0 or stop == length)):
            return
        raise ValueError(
            f"region {dim}={start}:{stop} cuts the stored chunks of {ds_obj.name!r} "
            f"({chunk} along {dim!r}): a chunk shared with a neighbouring region is read, "
            "merged and rewritten, and a writer of that region in another process at the "
            "same time would lose its rows. Make region edges multiples of "
            f"{chunk}, drop {ds_obj.name.rsplit('/', 1)[-1]!r} from the dataset if it is "
            "written already, or pass safe_chunks=False if no other process writes these chunks "
            "meanwhile (region writes computed together in one dask computation or on "
            "one distributed cluster are safe: they lock the chunks they share)")

    def _target_and_source(self, ds_obj: Dataset, variable: xr.Variable, dtype: np.dtype,
                           region: tuple[slice, ...] | None) -> tuple[ChunkTarget, Any]:
        data = variable.data
        if dtype.kind == "O" and getattr(data, "dtype", np.dtype("O")).kind in "UT":
            data = data.astype(object)
        target = ChunkTarget(ds_obj.source(), variable.ndim == 0)
        if hasattr(data, "dask") and variable.ndim:
            offsets = tuple(r.start for r in region) if region else (0,) * variable.ndim
            storage = ds_obj.chunks or tuple(ds_obj.shape or ())
            aligned = _aligned_chunks(data.chunks, storage, offsets)
            if aligned is not None:
                data = data.rechunk(aligned)  # chunk-aligned writes need no lock
        return target, data

    # -- dimension scales --------------------------------------------------------
    def finish(self) -> None:
        """Make every dimension a netCDF-4 dimension scale and attach the variables."""
        scales: dict[str, Dataset] = dict(self._scales)
        written_ids = {ds_obj.id for ds_obj, _ in self._written.values()}
        next_dimid = _next_dimid(self.group)
        for stored, (ds_obj, dims) in self._written.items():
            if dims == (stored,):
                old = scales.get(stored)
                ds_obj.attrs["NAME"] = np.bytes_(stored)
                if old is None or old.id != ds_obj.id or "_Netcdf4Dimid" not in ds_obj.attrs:
                    ds_obj.attrs["CLASS"] = np.bytes_("DIMENSION_SCALE")
                    dimid = _dimid(old) if old is not None else next_dimid
                    next_dimid = max(next_dimid, dimid + 1)
                    ds_obj.attrs["_Netcdf4Dimid"] = np.int32(dimid)
                scales[stored] = ds_obj
        for dim, (size, unlimited) in self._new_dims.items():
            if dim not in scales:
                scale = self.group.create_dataset(
                    dim, shape=(size,), dtype="<f4", chunks=True,
                    maxshape=(None,) if unlimited else None)
                scale.attrs["CLASS"] = np.bytes_("DIMENSION_SCALE")
                scale.attrs["NAME"] = np.bytes_(f"{NOT_A_VARIABLE}.{size:10d}")
                scale.attrs["_Netcdf4Dimid"] = np.int32(next_dimid)
                next_dimid += 1
                self.created.append(scale)
                scales[dim] = scale
        self._grow_bare_dimension(scales)
        self._check_enclosing_lengths(scales)
        self._attach({**self._ancestor_scales, **scales}, written_ids)

    def _check_enclosing_lengths(self, scales: dict[str, Dataset]) -> None:
        """A variable using an enclosing group's dimension must keep its length: an
        append to this group alone would leave it longer than the dimension."""
        for ds_obj, dims in self._written.values():
            for axis, dim in enumerate(dims):
                outer = self._ancestor_scales.get(dim) if dim not in scales else None
                if outer is not None and ds_obj.shape[axis] != (outer.shape or (0,))[0]:
                    raise _invalid(
                        f"variable {ds_obj.name!r} would have {ds_obj.shape[axis]} elements "
                        f"along {dim!r}, the dimension of the enclosing {outer.name!r} "
                        f"({(outer.shape or (0,))[0]}): write the groups that dimension is "
                        f"in together (a DataTree from {posixpath.dirname(outer.name)!r}), "
                        "so that it grows with them")

    def _grow_bare_dimension(self, scales: dict[str, Dataset]) -> None:
        dim = self.append_dim
        scale = scales.get(dim) if dim is not None else None
        if scale is None or not _dimension_only(scale):
            return
        sizes = [ds_obj.shape[dims.index(dim)] for ds_obj, dims in self._written.values()
                 if dim in dims]
        if sizes and max(sizes) != scale.shape[0]:
            self.grown.append((scale, tuple(scale.shape)))
            scale.resize((max(sizes),))
            scale.attrs["NAME"] = np.bytes_(f"{NOT_A_VARIABLE}.{max(sizes):10d}")

    def _attach(self, scales: dict[str, Dataset], written_ids: set[str]) -> None:
        refs: dict[str, list[tuple[str, int]]] = {}
        for dim in {d for _, dims in self._written.values() for d in dims}:
            kept = [(str(e[0]), int(e[1])) for e in scales[dim].attrs.get("REFERENCE_LIST", [])]
            refs[dim] = [(i, a) for i, a in kept if _ref_id(i) not in written_ids]
        for stored, (ds_obj, dims) in self._written.items():
            if not dims or dims == (stored,):
                continue
            dim_list = np.empty(len(dims), dtype=_DIMLIST_DTYPE)
            for axis, dim in enumerate(dims):
                dim_list[axis] = np.array([scales[dim].id], dtype=OBJ_REF)
                refs[dim].append((ds_obj.id, axis))
            ds_obj.attrs.create("DIMENSION_LIST", dim_list)
        for dim, entries in refs.items():
            if entries:
                ref_list = np.empty(len(entries), dtype=_REFLIST_DTYPE)
                for n, entry in enumerate(entries):
                    ref_list[n] = entry
                scales[dim].attrs.create("REFERENCE_LIST", ref_list)

    def sync(self) -> None:
        pass

    def close(self, **kwargs: Any) -> None:
        """Write the metadata (data written through an ``ArrayWriter`` first)."""
        if self.group._session.writable:
            self.group._session.flush()


# -- helpers ----------------------------------------------------------------------------
def _text(value: Any) -> str | None:
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def _dimension_scales(group: Group) -> dict[str, Dataset]:
    """The group's netCDF-4 dimension scales by name."""
    out = {}
    for name in group:
        obj = group[name]
        if isinstance(obj, Dataset) and _text(obj.attrs.get("CLASS")) == "DIMENSION_SCALE":
            out[name] = obj
    return out


def _ref_id(ref: str) -> str:
    return ref.split("/")[-1]


def _dimension_only(ds_obj: Dataset) -> bool:
    return NOT_A_VARIABLE in (_text(ds_obj.attrs.get("NAME")) or "")


def _dimid(ds_obj: Dataset) -> int:
    return int(np.asarray(ds_obj.attrs["_Netcdf4Dimid"]).reshape(-1)[0])


def _next_dimid(group: Group) -> int:
    ids = [_dimid(obj) for obj in (group[name] for name in group)
           if isinstance(obj, Dataset) and "_Netcdf4Dimid" in obj.attrs]
    return max(ids, default=-1) + 1


def _write_attribute(obj: Any, key: str, value: Any) -> None:
    """One attribute, as h5netcdf writes it: text as variable-length UTF-8 strings,
    lists of text as string arrays; bytes that are not UTF-8 refused (as h5netcdf)."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value[()]
    if isinstance(value, bytes | np.bytes_):
        if b"\x00" in bytes(value):
            raise ValueError(f"Invalid value provided for attribute {key!r}: {value!r}. "
                             "Null characters cannot be stored in attribute values")
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"Invalid value provided for attribute {key!r}: {value!r}. "
                             f"Only UTF-8 encoded bytes can be stored ({exc})") from exc
        value = np.bytes_(value)
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        arr = np.empty(len(value), dtype=VLEN_STR)
        arr[:] = value
        value = arr
    obj.attrs[str(key)] = value


def _range_checked(name: str, var: xr.Variable) -> xr.Variable:
    """``var``, whose numbers are checked (as its blocks are written, if dask) to fit the
    integer dtype its encoding packs them into: xarray casts them, and 100000 in an
    int16 variable (say stored so, and inherited by a region write) became -31072.

    >>> _range_checked("v", xr.Variable("x", [1, 2], encoding={"dtype": "i1"})).values
    array([1, 2])
    """
    enc = var.encoding
    try:
        target = np.dtype(enc.get("dtype"))
    except TypeError:
        return var
    if (target.kind not in "iu" or var.dtype.kind not in "iuf" or "_Unsigned" in enc
            or enc.get("dtype") is None):  # _Unsigned: a deliberate reinterpretation
        return var
    fill = enc.get("_FillValue", var.attrs.get("_FillValue"))
    if fill is None:
        fill = enc.get("missing_value", var.attrs.get("missing_value"))
    check = functools.partial(_check_fits, name, target, enc.get("scale_factor"),
                              enc.get("add_offset"), fill is not None)
    data = var.data
    if hasattr(data, "dask"):
        return var.copy(deep=False, data=data.map_blocks(check, dtype=data.dtype))
    check(np.asarray(data))
    return var


def _check_fits(name: str, target: np.dtype, scale: Any, offset: Any, has_fill: bool,
                block: np.ndarray) -> np.ndarray:
    """``block``, if its values packed as CF packs them (minus ``offset``, over ``scale``,
    rounded; NaN stored as the fill value, so only with one) fit ``target``; else
    ValueOutOfRangeError."""
    kept = block[~np.isnan(block)] if block.dtype.kind == "f" else block.reshape(-1)
    if kept.size != block.size and not has_fill:
        raise ValueOutOfRangeError(
            f"variable {name!r}: {block.size - kept.size} NaN values, but its stored "
            f"dtype {target} has no _FillValue to store them as (xarray would store an "
            "arbitrary integer); give it a _FillValue (encoding), or fill the NaNs")
    packed = kept
    if scale is not None or offset is not None or kept.dtype.kind == "f":
        packed = np.round((kept.astype(np.float64) - (offset or 0)) / (scale or 1))
    packing = " as packed" if scale is not None or offset is not None else ""
    problem = integer_range_problem(packed, target, f"its stored dtype {target}{packing}",
                                    shown=kept)
    if problem:
        raise ValueOutOfRangeError(
            f"variable {name!r}: {problem}: they would be stored wrapped around; write "
            "values in range, or into a variable of a wider dtype")
    return block


def _check_read_as_stored(ds_obj: Dataset, dtype: np.dtype, attrs: Mapping) -> None:
    """Refuse a write into the stored ``ds_obj`` whose encoded form (``dtype``, the CF
    attributes ``attrs``) differs from the stored one: the values it does not rewrite
    would then read wrongly (days read as hours, another scale_factor)."""
    if dtype != ds_obj.dtype:
        raise ValueError(
            f"the stored variable {ds_obj.name!r} has dtype {ds_obj.dtype}, but the values "
            f"written are encoded as dtype {dtype}; drop encoding['dtype'] to write them "
            "as stored, or rewrite the whole domain (mode='w')")
    stored = ds_obj.attrs
    for key in READ_AS_STORED:
        new = attrs.get(key)
        if new is None:  # not written: the stored attribute stays as it is
            continue
        old = stored.get(key)
        if key == "_FillValue" and dtype.kind in "fc":  # no fill and NaN read the same
            old, new = (None if _is_nan(v) else v for v in (old, new))
        if key == "units" and _same_time_units(_text(old), _text(new)):
            continue  # "days since 2000-01-01" is "days since 2000-01-01 00:00:00"
        if not _same_value(old, new):
            raise ValueError(
                f"the stored variable {ds_obj.name!r} has {key}={_text(old) or old!r}, but "
                f"the values written would be encoded with {key}={_text(new) or new!r}, "
                "so its stored values would read wrongly: write values the stored "
                f"encoding can hold (for times: within its units; drop encoding[{key!r}]), "
                "or rewrite the whole domain (mode='w')")


def _same_time_units(a: str | None, b: str | None) -> bool:
    """Whether two CF "UNIT since DATE" units are the same (dates spelt differently)."""
    parsed = []
    for units in (a, b):
        match = re.fullmatch(r"\s*(\w+)\s+since\s+(.+?)\s*", units or "")
        if match is None:
            return False
        try:
            parsed.append((match[1].lower(), pd.Timestamp(match[2])))
        except (ValueError, OverflowError):  # a date pandas cannot hold: compare the text
            return False
    return parsed[0] == parsed[1]


def _is_nan(value: Any) -> bool:
    arr = np.asarray(value) if value is not None else None
    return arr is not None and arr.dtype.kind in "fc" and bool(np.isnan(arr).all())


def _same_value(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    a, b = (np.asarray(_text(v) if _text(v) is not None else v) for v in (a, b))
    if a.size == b.size == 1:  # netCDF-C writes a scalar attribute as a 1-element array
        a, b = a.reshape(()), b.reshape(())
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fciub" and b.dtype.kind in "fciub":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.all(a == b))


def _storage_chunks(var: xr.Variable, chunks: Any, unlimited: set) -> Any:
    """The storage chunk shape: the encoding's, else regular dask chunks, else chosen."""
    if not var.ndim:
        return True
    if chunks is not None:
        if isinstance(chunks, Mapping):
            chunks = tuple(int(chunks.get(d, s)) for d, s in zip(var.dims, var.shape))
        return tuple(max(1, min(int(c), s) if d not in unlimited else int(c))
                     for c, s, d in zip(chunks, var.shape, var.dims))
    if var.chunks is not None:
        out = []
        for dim_chunks in var.chunks:
            first = dim_chunks[0]
            if any(c != first for c in dim_chunks[:-1]) or dim_chunks[-1] > first:
                return True
            out.append(max(1, first))
        return tuple(out)
    return True


#: the largest contiguous variable: HSDS refuses a bigger one (it holds a contiguous
#: dataset as one chunk, at most its chunk_mem_cache_size, 128 MiB by default)
CONTIGUOUS_MAX = 128 * 2**20
#: the largest contiguous variable kept so when ``contiguous`` only came along with the
#: data (read from a netCDF file): HSDS's max_chunk_size, its recommended size for
#: contiguous storage; a bigger one is chunked, so dask reads it in parallel
CONTIGUOUS_INHERITED_MAX = 4 * 2**20


def _contiguous(variable: xr.Variable, dtype: np.dtype, enc: dict, filters: dict,
                unlimited: set, check: bool) -> bool:
    """Whether ``encoding["contiguous"]`` makes the variable one contiguous object.

    Given in ``encoding=`` (``check``), it is honoured or refused when HDF5 or HSDS
    cannot (filters, chunksizes, an unlimited dimension, over :data:`CONTIGUOUS_MAX`);
    read from a file with the data (h5netcdf reports it), it is kept for a variable of
    at most :data:`CONTIGUOUS_INHERITED_MAX` without those, else the variable is chunked
    (as h5netcdf writes it then).
    """
    if not enc.get("contiguous"):
        return False
    size = variable.size * (dtype.itemsize if dtype.kind != "O" else 16)
    conflicts = [what for what, present in (
        ("compression", filters.get("compression")), ("shuffle", filters.get("shuffle")),
        ("fletcher32", filters.get("fletcher32")),
        ("chunksizes", enc.get("chunksizes") is not None),
        ("an unlimited dimension", unlimited & set(map(str, variable.dims))))
        if present]
    if not check:
        return not conflicts and size <= CONTIGUOUS_INHERITED_MAX
    if conflicts:
        raise ValueError(f"encoding contiguous=True cannot go with {', '.join(conflicts)}: "
                         "HDF5 stores filtered, chunked or resizable data only in chunks; "
                         "drop contiguous, or the others")
    if size > CONTIGUOUS_MAX:
        raise ValueError(f"encoding contiguous=True: the variable is {size} bytes, more than "
                         f"the {CONTIGUOUS_MAX} bytes HSDS holds in one contiguous object; "
                         "drop contiguous (it is then chunked), or give chunksizes")
    return True


def _compression(enc: dict, check: bool) -> tuple[str | None, int | None]:
    """h5py-style compression from netCDF4-python or h5py-style keys (as h5netcdf)."""
    compression = enc.get("compression")
    if isinstance(compression, str):  # zlib/deflate -> gzip, unknown names: ValueError
        compression = codecs.compressor(compression).name
    if check and "complevel" in enc and "compression_opts" in enc and (
            enc["complevel"] != enc["compression_opts"]):
        raise ValueError("'complevel' and 'compression_opts' encodings mismatch")
    # an explicit compression_opts (even None, as for lzf) wins over complevel, as h5netcdf
    level = enc["compression_opts"] if "compression_opts" in enc else enc.get("complevel") or None
    if compression is None and level:
        compression = "gzip"
    return compression, level


def _existing_encoding(url: str, group: str | None, storage_options: Mapping | None,
                       names: Iterable[Hashable], append_dim: Hashable | None = None
                       ) -> dict[str, dict[str, Any]]:
    """The CF encoding of stored variables (units, calendar, dtype, fill, packing).
    With ``append_dim``, every stored variable along it must be among ``names``: one
    left out would keep its length while the dimension grows, and the domain would no
    longer open (conflicting sizes)."""
    from .backend import H5CloudStore

    store = H5CloudStore.open(url, group, storage_options)
    try:
        stored = store.get_variables()
    finally:
        store.close()  # nothing it fetched ahead is read later, perhaps stale
    names = set(map(str, names))
    left_out = sorted(name for name, var in stored.items()
                      if append_dim is not None and append_dim in var.dims and name not in names)
    if left_out:
        raise _invalid(
            f"append_dim={append_dim!r}: the stored variables {left_out} of "
            f"{url}{'' if group in (None, '', '/') else '/' + group.strip('/')} have that "
            "dimension but are not in the dataset: they would keep their length while the "
            "dimension grows, and the domain would no longer open; add them to the dataset (with "
            "their fill value where there is nothing to append)")
    out = {}
    for name in names:
        if name in stored:
            decoded = xr.conventions.decode_cf_variable(name, stored[name])
            out[name] = {k: v for k, v in decoded.encoding.items() if k in INHERITED_ENCODING}
    return out


def _with_aliases(encoding: Mapping | None) -> dict | None:
    """h5dask's encoding aliases as the keys ``to_netcdf`` takes: ``chunks`` (as for
    zarr and h5py) is ``chunksizes``, ``fillvalue`` (h5py) is ``_FillValue``."""
    if encoding is None:
        return None
    out = {}
    for name, enc in encoding.items():
        if not isinstance(enc, Mapping):  # xarray's own checks say what is wrong
            out[name] = enc
            continue
        enc = dict(enc)
        for alias, key in (("chunks", "chunksizes"), ("fillvalue", "_FillValue")):
            if alias in enc:
                enc.setdefault(key, enc.pop(alias))
        out[name] = enc
    return out


def _check_arguments(mode: str | None, append_dim: Hashable | None,
                     region: Mapping | None) -> str:
    if mode is None:  # as to_zarr: append_dim implies "a", region "r+"
        mode = "a" if append_dim is not None else "r+" if region is not None else "w"
    if mode not in MODES:
        raise _invalid(f"mode must be one of {MODES}, not {mode!r}")
    if append_dim is not None and region:
        raise _invalid("append_dim and region cannot be used together")
    if region is not None:
        if not isinstance(region, Mapping):  # e.g. to_zarr's region="auto"
            raise _invalid(f"region must be a mapping {{dim: slice}}, not {region!r}", TypeError)
        if mode not in ("a", "r+"):
            raise _invalid(f"region= writes into an existing domain: use mode='r+' or "
                           f"'a', not {mode!r}")
        for dim, sl in region.items():
            if not isinstance(sl, slice) or sl.step not in (None, 1):
                raise _invalid(f"region[{dim!r}] must be a slice with step 1, not {sl!r}")
    return mode


# -- the public function ----------------------------------------------------------------
def to_h5cloud(obj: xr.Dataset | xr.DataTree, url: str, mode: str | None = None,
               encoding: Mapping | None = None, storage_options: Mapping | None = None,
               compute: bool = True, group: str | None = None,
               unlimited_dims: Iterable[Hashable] | None = None, invalid_netcdf: bool = False,
               append_dim: Hashable | None = None, region: Mapping[Hashable, slice] | None = None,
               format: str | None = None, engine: str | None = None,
               auto_complex: bool | None = None, safe_chunks: bool = True,
               write_inherited_coords: bool = False) -> Any:
    """Write a Dataset or DataTree to the domain at ``url``, as ``to_netcdf`` writes a file.

    - ``mode``: "w" (the default; "a" with ``append_dim``, "r+" with ``region``)
      creates (or replaces) the domain, "w-" creates it (fails if it
      exists), "a" adds or rewrites variables of an existing domain (creating it if
      missing), "r+" rewrites existing variables only.
    - ``encoding``: per variable, the keys ``to_netcdf(engine="h5netcdf")`` takes:
      ``chunksizes``/``chunks``, ``compression`` (gzip, lzf, lz4, zstd, ...),
      ``compression_opts``/``complevel``/``zlib``, ``shuffle``, ``fletcher32``,
      ``_FillValue``, ``dtype`` (``"S1"`` for character arrays, ``str``), the CF keys;
      ``contiguous=True``: one object (HSDS's ``H5D_CONTIGUOUS``; re-opened with
      contiguous True and chunksizes None, as h5netcdf reports it), refused with
      filters, chunksizes, an unlimited dimension or over 128 MiB (HSDS's limit). Read
      from a netCDF file with the data (h5netcdf reports it for every unchunked
      variable) it is kept up to 4 MiB; bigger variables, and variables without it,
      are chunked (one object per chunk: parallel reads), where h5netcdf writes
      unfiltered fixed-size variables contiguous.
    - ``unlimited_dims``: dimensions whose datasets are resizable (appendable).
    - ``append_dim``: append along this dimension to an existing domain; the
      variables that have it must be stored resizable along it (``unlimited_dims``).
    - ``region``: ``{dim: slice}``: write into that part of existing variables, so
      that many writers can each fill their own part. Region edges must fall on
      storage-chunk edges (or the array's end), else a writer of the neighbouring
      region in another process could lose its rows; ``safe_chunks=False`` allows
      them when no other process writes those chunks meanwhile (region writes
      computed together in one dask computation or one distributed cluster lock the
      chunks they share).
    - ``compute=False``: return a ``dask.delayed`` that writes the chunks (in the
      workers; in-memory variables too, in blocks of whole storage chunks) and then the
      metadata; nothing is stored before it is computed. It computes with any
      scheduler or client, any number of times: the blocks of in-memory variables
      travel in its task graph (under a ``distributed`` client, through the scheduler;
      dask may warn of a large graph). ``.chunk()`` such variables first to have the
      workers make them instead.
    - ``group``: the group ("/a/b") the Dataset, or the DataTree's root, is written to.
    - A DataTree is written as ``DataTree.to_netcdf`` writes it: one group per node,
      at its path relative to the tree's root; a node uses the dimensions of the groups
      above it (netCDF-4 scoping) and gets its inherited coordinates only with
      ``write_inherited_coords=True``; ``encoding`` (and ``unlimited_dims``, or a list
      for every group) are keyed by node path: ``{"/path": {"var": {...}}}``. Every
      group is published together, once all their chunks are written.

    >>> import numpy as np, xarray as xr
    >>> ds = xr.Dataset({"v": ("time", np.arange(3.0))}, coords={"time": [0, 1, 2]})
    >>> to_h5cloud(ds, "memory://docs/home/grow.h5", unlimited_dims=["time"])
    >>> to_h5cloud(ds.assign_coords(time=[3, 4, 5]), "memory://docs/home/grow.h5",
    ...            append_dim="time")
    >>> xr.open_dataset("memory://docs/home/grow.h5", engine="h5cloud").sizes["time"]
    6
    >>> tree = xr.DataTree.from_dict({"/": ds, "/run2": xr.Dataset({"w": ("time", [1, 2, 3])})})
    >>> to_h5cloud(tree, "memory://docs/home/tree.h5")
    >>> xr.open_datatree("memory://docs/home/tree.h5", engine="h5cloud")["run2/w"].dims
    ('time',)
    """
    if format not in (None, "NETCDF4"):
        raise _invalid(f"to_h5cloud writes netCDF-4 (HDF5) domains, not format={format!r}")
    mode = _check_arguments(mode, append_dim, region)
    group = group_path(group)
    if isinstance(obj, xr.DataTree):
        parts = _tree_parts(obj, group, encoding, unlimited_dims, write_inherited_coords)
    else:
        parts = [(obj, group, _with_aliases(encoding), unlimited_dims)]
    for ds, _, enc, _ in parts:
        unknown = sorted(map(str, set(enc or ()) - set(ds.variables)))
        if unknown:  # to_netcdf fails with a bare KeyError: name the variables here
            raise _invalid(f"encoding given for {unknown}, which are not variables of the "
                           f"dataset (variables: {sorted(map(str, ds.variables))})", KeyError)
        _validate_dataset_names(ds)
        _validate_attrs(ds, "h5netcdf", invalid_netcdf)
    f = File(url, "r+" if mode == "r+" else mode, storage_options=storage_options)
    writer = _HeldArrayWriter()
    stores = []
    try:
        for ds, path, enc, unlimited in parts:
            inherited = {}
            if mode in ("a", "r+") and _has_members(f, path):
                inherited = _existing_encoding(url, path, storage_options, ds.variables,
                                               append_dim)
            if mode == "r+" and path not in f:
                raise _invalid(f"group {path!r} does not exist in {url}, and mode='r+' writes "
                               "only into existing groups and variables; write with mode='a' "
                               "to add it", KeyError)
            target = f.require_group(path) if path != "/" else f
            store = H5CloudWriteStore(target, mode, append_dim, region, inherited,
                                      invalid_netcdf, safe_chunks)
            with _in_group(path) if isinstance(obj, xr.DataTree) else contextlib.nullcontext():
                dump_to_store(ds, store, writer, encoding=enc,
                              unlimited_dims=_sanitize_unlimited_dims(ds, unlimited))
            stores.append(store)
        # every variable passed its checks: now the in-memory data, at once, or with
        # compute=False as tasks of the returned delayed (nothing is stored before then)
        writer.write_held(defer=not compute)
        writes = writer.sync(compute=False)
    except BaseException:
        _roll_back(f, stores)
        raise
    import dask

    publish = dask.delayed(_publish, pure=False)(f._session, writes)
    if not compute:
        return publish
    try:
        _settle(writes)
    except BaseException:
        _roll_back(f, stores)
        raise
    f.flush()
    return None


class _HeldArrayWriter(ArrayWriter):
    """xarray's ArrayWriter writes in-memory (numpy) variables as they are added, in
    the middle of preparing the others: one refused later (a bad region, an encoding that
    would change the stored values) had then already rewritten data. Held here until
    every variable is prepared."""

    def __init__(self) -> None:
        super().__init__(lock=False)
        self.held: list[tuple[Any, Any, Any]] = []

    def add(self, source: Any, target: Any, region: Any = None) -> None:
        if hasattr(source, "dask"):
            super().add(source, target, region)
        else:
            self.held.append((source, target, region))

    def write_held(self, defer: bool = False) -> None:
        """Write the held variables now, or (``defer``) add each as dask tasks, so
        that a ``compute=False`` write stores nothing until it is computed: a delayed
        never computed left the in-memory variables' chunks in the store (an append's
        beyond the old extent, a region's over the stored values, visibly).

        Deferred, a variable is split into blocks of whole storage chunks (parallel
        tasks, none sharing a chunk; see :func:`_held_blocks`): as one block, 200 MiB
        went through the scheduler to one worker. The blocks are embedded in the graph,
        not scattered to a cluster: a delayed bound to scattered futures failed once
        that client closed, on another client, or with another scheduler."""
        held, self.held = self.held, []
        for source, target, region in held:
            if not defer:
                target[region if region else ...] = source
                continue
            values = np.asarray(source)
            offsets = tuple(r.start for r in region) if region else (0,) * values.ndim
            blocks = (_held_blocks(values.shape, values.dtype.itemsize, target.source.chunks,
                                   offsets) if values.ndim and values.size else values.shape)
            super().add(_held_array(values, blocks), target, region)


#: the size a deferred write splits an in-memory variable into blocks of (whole
#: storage chunks, at least one): tasks big enough to be worth one, small enough for
#: the workers to share the variable
HELD_BLOCK_BYTES = 16 * 2**20


def _held_blocks(shape: tuple[int, ...], itemsize: int, storage: tuple[int, ...],
                 offsets: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Dask chunks for an in-memory array of ``shape`` written at ``offsets`` into a
    dataset of storage chunks ``storage``: block edges on storage-chunk edges (no two
    tasks write one chunk object), about :data:`HELD_BLOCK_BYTES` a block, grown along
    the last axes first (contiguous in memory).

    >>> _held_blocks((10, 6), 8, (4, 3), (0, 0))  # small: one block of whole chunks
    ((10,), (6,))
    >>> _held_blocks((2**22,), 8, (2**21,), (2**20,))  # 16 MiB chunks, written from mid-chunk
    ((1048576, 2097152, 1048576),)
    >>> _held_blocks((8, 2**20), 8, (4, 2**16), (0, 0))  # 2 MiB chunks: 8 a block, in a row
    ((4, 4), (524288, 524288))
    """
    budget = max(1, HELD_BLOCK_BYTES // max(1, itemsize * int(np.prod(storage))))
    per = [1] * len(shape)
    for axis in reversed(range(len(shape))):
        chunk = storage[axis]
        spanned = -(-(offsets[axis] % chunk + shape[axis]) // chunk)
        per[axis] = max(1, min(spanned, budget))
        budget //= per[axis]
    out = []
    for length, chunk, k, offset in zip(shape, storage, per, offsets):
        step = chunk * k  # edges at multiples of step (absolute): chunk edges
        first = min(length, (-offset) % step or step)
        sizes = [first] + [step] * ((length - first) // step)
        if sum(sizes) < length:
            sizes.append(length - sum(sizes))
        out.append(tuple(sizes))
    return tuple(out)


def _held_array(values: np.ndarray, blocks: tuple[tuple[int, ...], ...]) -> Any:
    """``values`` as a dask array of ``blocks``, each block embedded in the graph (a
    task carries only its own block, not the whole array)."""
    import dask.array as da

    return da.from_array(values, chunks=blocks, name=False, lock=False)


def _tree_parts(tree: xr.DataTree, group: str, encoding: Mapping | None,
                unlimited_dims: Any, write_inherited_coords: bool) -> list[tuple]:
    """(dataset, group path, encoding, unlimited dimensions) of each node of ``tree``, as
    ``DataTree.to_netcdf`` writes them: at the node's path relative to the tree's root,
    below ``group``; the root with the coordinates it inherits, the others without
    (they read them from above, netCDF-4 dimension scoping) unless
    ``write_inherited_coords``; ``encoding`` (and a mapping ``unlimited_dims``) keyed by
    the nodes' paths (``tree.groups``); a list of ``unlimited_dims`` is for every node
    that has the dimension."""
    encoding = dict(encoding or {})
    _check_group_keys("encoding", encoding, tree)
    per_node = isinstance(unlimited_dims, Mapping)
    if per_node:
        _check_group_keys("unlimited_dims", unlimited_dims, tree)
    elif unlimited_dims is not None:
        unlimited_dims = [unlimited_dims] if isinstance(unlimited_dims, str) else list(
            unlimited_dims)
        missing = set(unlimited_dims) - {d for node in tree.subtree for d in node.dims}
        if missing:
            raise _invalid(f"unlimited_dims {sorted(map(str, missing))} are dimensions of no "
                           f"group of the tree (groups: {list(tree.groups)})")
    parts = []
    for node in tree.subtree:
        at_root = node is tree
        ds = node.to_dataset(inherit=write_inherited_coords or at_root)
        path = posixpath.normpath(posixpath.join(group, node.relative_to(tree)))
        unlimited = (unlimited_dims.get(node.path) if per_node else
                     None if unlimited_dims is None else
                     [d for d in unlimited_dims if d in ds.dims])
        parts.append((ds, path, _with_aliases(encoding.get(node.path)), unlimited))
    return parts


def _check_group_keys(what: str, mapping: Mapping, tree: xr.DataTree) -> None:
    unknown = sorted(map(str, set(mapping) - set(tree.groups)))
    if unknown:  # same words as DataTree.to_netcdf's ValueError
        raise _invalid(
            f"unexpected encoding group name(s) provided in {what}: {unknown}; for a "
            f"DataTree, {what} is keyed by group path, one of {list(tree.groups)} "
            f"(e.g. {{{tree.groups[-1]!r}: ...}})")


def _has_members(f: File, path: str | None) -> bool:
    """Whether the group ``path`` of ``f`` exists and holds something (to write into)."""
    if path not in (None, "", "/"):
        if path not in f:
            return False
        group = f[path]
        return isinstance(group, Group) and len(group) > 0
    return len(f) > 0


def _settle(writes: Any) -> None:
    """Run the chunk writes; on a failure, return only once every write task has ended,
    so that a roll-back cannot race a write still running on a worker."""
    if writes is None:
        return
    collections = writes if isinstance(writes, tuple | list) else (writes,)
    try:
        from distributed import default_client, wait

        client = default_client()
    except (ImportError, ValueError):  # no distributed client: the local scheduler
        _compute_locally(collections)
        return
    # every chunk write (the collections' output keys, one per block) as a future: wait()
    # returns when all ended, ok or not (a failed block fails only the writes that depend
    # on it; the others run to the end). Source blocks are not kept: no future holds them.
    from dask.core import flatten

    graph: dict = {}
    for collection in collections:
        graph.update(collection.__dask_graph__())
    keys = [k for c in collections for k in flatten(c.__dask_keys__())]
    futures = client.get(graph, keys, sync=False)
    wait(futures)
    failed = [fut for fut in futures if fut.status == "error"]
    if failed:
        failed[0].result()  # raises the task's exception (nothing is gathered otherwise)


def _compute_locally(collections: Any) -> None:
    """``dask.compute`` on this process's scheduler; with threads (dask's default), in a
    pool of our own that is shut down, waiting, before this returns: dask's threaded
    scheduler raises a task's error at once while tasks already running go on, and a
    chunk they stored after the roll-back was left behind (an orphan, or data beyond
    a shrunk extent)."""
    from concurrent.futures import ThreadPoolExecutor

    import dask
    from dask.system import CPU_COUNT

    scheduler = dask.config.get("scheduler", None)
    if scheduler not in (None, "threads", "threading"):
        dask.compute(*collections)
        return
    pool = ThreadPoolExecutor(dask.config.get("num_workers", None) or CPU_COUNT)
    try:
        dask.compute(*collections, scheduler="threads", pool=pool)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _publish(session: Any, _written: Any) -> None:
    """Write the metadata, after every chunk (``_written`` makes this run after them)."""
    session.flush()


def _roll_back(f: File, stores: list[H5CloudWriteStore]) -> None:
    """Forget the metadata of a failed write; what an append wrote beyond the old
    extent is reset, so the domain reads as before (and as before if it grows again);
    the chunks stored for datasets the write created are deleted (no metadata names
    them: with mode='a' they stayed in the domain's prefix, where gc does not look).
    What a write into stored variables (mode='a' or 'r+' over a variable, region=)
    stored within their extent stays: those chunks are rewritten in place."""
    f._session.discard()
    for store in stores:
        for ds_obj, old in store.grown:
            with contextlib.suppress(Exception):
                sync(ds_obj.source().shrink_async(old))
        for ds_obj in store.created:
            with contextlib.suppress(Exception):
                sync(ds_obj.source().delete_chunks_async())
