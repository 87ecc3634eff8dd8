"""``to_h5cloud``: write an xarray Dataset (or DataTree) as a domain.

Variables are CF-encoded by xarray's own encoder, dimensions become netCDF-4 dimension
scales (so h5netcdf, netCDF-C and h5dask all see the same dimensions), and dask-backed
variables are written in parallel, one task per chunk object, from wherever the task
runs. The domain becomes visible (its ``.domain.json`` is written) only after every
chunk and metadata object it points to.

>>> import numpy as np, xarray as xr, h5dask
>>> ds = xr.Dataset({"t": (("x",), np.arange(4.0))}, coords={"x": [10, 20, 30, 40]})
>>> h5dask.to_h5cloud(ds, "memory://docs/home/w.h5")
>>> xr.open_dataset("memory://docs/home/w.h5", engine="h5cloud")["t"].values.tolist()
[0.0, 1.0, 2.0, 3.0]
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import xarray as xr
from xarray import conventions

from ..chunkio import ArraySource
from ..file import File, Group
from ..format.types import OBJ_REF, VLEN_STR
from .netcdf import NOT_A_VARIABLE

ENCODING_KEYS = {
    "chunks", "chunksizes", "compression", "compression_opts", "zlib", "complevel", "shuffle",
    "fletcher32", "fillvalue", "_FillValue", "dtype", "scale_factor", "add_offset", "units",
    "calendar", "contiguous", "missing_value", "coordinates", "preferred_chunks", "source",
    "original_shape", "szip_coding", "szip_pixels_per_block", "endian", "least_significant_digit",
    "quantize_mode", "significant_digits", "blosc_shuffle", "active_storage_url",
    "active_storage",
}
_DIMLIST_DTYPE = np.dtype("O", metadata={"vlen": OBJ_REF})
_REFLIST_DTYPE = np.dtype([("dataset", OBJ_REF), ("dimension", "<u4")])


class ChunkTarget:
    """A ``da.store`` target writing straight into a dataset's chunk objects."""

    def __init__(self, source: ArraySource, scalar: bool) -> None:
        self.source = source
        self.scalar = scalar
        self.shape = source.shape if not scalar else ()
        self.dtype = source.dtype
        self.ndim = len(self.shape)

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.scalar:
            self.source.write((0,), np.asarray(value).reshape(1))
        else:
            self.source.write(key, value)


def _check_encoding(ds: xr.Dataset, encoding: Mapping[Hashable, Mapping] | None) -> None:
    for name, enc in (encoding or {}).items():
        if name not in ds.variables:
            raise ValueError(f"encoding given for {name!r}, which is not a variable of the "
                             f"dataset (variables: {sorted(map(str, ds.variables))})")
        bad = set(enc) - ENCODING_KEYS
        if bad:
            raise ValueError(f"unexpected encoding for variable {name!r}: {sorted(bad)}; "
                             f"valid keys: {sorted(ENCODING_KEYS)}")


def _storage_chunks(var: xr.Variable, enc: Mapping[str, Any]) -> tuple[int, ...] | None:
    chunks = enc.get("chunks", enc.get("chunksizes"))
    if chunks is not None:
        if isinstance(chunks, Mapping):
            chunks = tuple(int(chunks.get(d, s)) for d, s in zip(var.dims, var.shape))
        return tuple(min(int(c), max(1, s)) for c, s in zip(chunks, var.shape))
    if var.chunks is not None and var.ndim:
        # dask chunks become storage chunks when regular (all equal but the last)
        out = []
        for dim_chunks in var.chunks:
            first = dim_chunks[0]
            if any(c != first for c in dim_chunks[:-1]) or dim_chunks[-1] > first:
                return None
            out.append(max(1, first))
        return tuple(out)
    return None


def _compression(enc: Mapping[str, Any]) -> tuple[str | None, int | None]:
    comp = enc.get("compression")
    level = enc.get("compression_opts", enc.get("complevel"))
    if comp is None and enc.get("zlib"):
        comp = "gzip"
    if comp in ("zlib", "deflate"):
        comp = "gzip"
    return comp, level


def _encode(ds: xr.Dataset, encoding: Mapping | None) -> tuple[dict, dict]:
    ds = ds.copy(deep=False)
    for name, enc in (encoding or {}).items():
        ds[name].encoding = {**ds[name].encoding, **enc}
    variables, attrs = conventions.encode_dataset_coordinates(ds)
    variables, attrs = conventions.cf_encoder(variables, attrs)
    return variables, attrs


def _data_dtype(var: xr.Variable) -> np.dtype:
    dt = var.dtype
    if dt.kind == "U" or (dt.kind == "O" and var.encoding.get("dtype") is str):
        return VLEN_STR
    if dt.kind == "O":
        return VLEN_STR  # xarray gives object arrays of str for text
    return dt


def _as_storable(var: xr.Variable, dtype: np.dtype) -> Any:
    data = var.data
    if dtype is VLEN_STR and getattr(data, "dtype", None) is not None and data.dtype.kind == "U":
        data = data.astype(object)
    return data


def _write_attrs(obj: Any, attrs: Mapping[str, Any]) -> None:
    for key, value in attrs.items():
        if isinstance(value, np.ndarray) and value.ndim == 0:
            value = value[()]
        if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
            arr = np.empty(len(value), dtype=VLEN_STR)
            arr[:] = value
            value = arr
        obj.attrs[str(key)] = value


def write_dataset(group: Group, ds: xr.Dataset, encoding: Mapping | None,
                  sources: list, targets: list, existing: bool = False) -> None:
    """Create the datasets, scales and attributes of ``ds`` in ``group``; dask arrays are
    appended to ``sources``/``targets`` for one ``da.store`` call."""
    _check_encoding(ds, encoding)
    variables, attrs = _encode(ds, encoding)
    dims: dict[Hashable, int] = {}
    for var in variables.values():
        dims.update(zip(var.dims, var.shape))
    created: dict[str, Any] = {}
    for name, var in variables.items():
        name = str(name)
        if existing and name in group:
            raise ValueError(f"variable {name!r} already exists in {group.file.url}{group.name}"
                             " (mode='a' adds variables; it does not overwrite them)")
        enc = var.encoding
        dtype = _data_dtype(var)
        chunks = _storage_chunks(var, enc) if var.ndim else None
        comp, level = _compression(enc)
        var_attrs = dict(var.attrs)
        fill = var_attrs.get("_FillValue", enc.get("fillvalue"))
        unlimited = name in dims and enc.get("unlimited", False)
        ds_obj = group.create_dataset(
            name, shape=var.shape, dtype=dtype, chunks=chunks if chunks else True,
            compression=comp, compression_opts=level, shuffle=bool(enc.get("shuffle", False)),
            fletcher32=bool(enc.get("fletcher32", False)),
            fillvalue=None if fill is None or dtype is VLEN_STR else np.asarray(fill, dtype),
            maxshape=tuple(None for _ in var.shape) if unlimited else None)
        if "_FillValue" in var_attrs and dtype is not VLEN_STR:
            var_attrs["_FillValue"] = np.asarray(var_attrs["_FillValue"], dtype=dtype)
        _write_attrs(ds_obj, var_attrs)
        created[name] = (ds_obj, var)
        data = _as_storable(var, dtype)
        if var.size == 0:
            continue
        if hasattr(data, "dask"):
            import dask.array as da

            storage = ds_obj.chunks or ds_obj.shape
            if var.ndim and tuple(c[0] for c in data.chunks) != tuple(storage):
                data = da.rechunk(data, storage)  # chunk-aligned writes need no lock
            sources.append(data.astype(dtype) if dtype is not VLEN_STR else data)
            targets.append(ChunkTarget(ds_obj.source(), var.ndim == 0))
        else:
            ds_obj[...] = np.asarray(data)
    _write_dimension_scales(group, dims, created)
    _write_attrs(group, attrs)


def _write_dimension_scales(group: Group, dims: Mapping[Hashable, int],
                            created: dict[str, Any]) -> None:
    scale_ids: dict[str, str] = {}
    refs: dict[str, list[tuple[str, int]]] = {}
    next_dimid = _next_dimid(group)
    for dim, size in dims.items():
        dim = str(dim)
        coord = created.get(dim)
        if coord is not None and coord[1].dims == (dim,):
            scale = coord[0]
            scale.attrs["NAME"] = np.bytes_(dim)
        elif dim in group:
            scale = _existing_scale(group, dim, size)  # mode="a": share the dimension
            refs[dim] = [(str(e[0]), int(e[1])) for e in scale.attrs.get("REFERENCE_LIST", [])]
            scale_ids[dim] = scale.id
            continue
        else:
            scale = group.create_dataset(dim, shape=(size,), dtype="<f4", chunks=True)
            scale.attrs["NAME"] = np.bytes_(f"{NOT_A_VARIABLE}.{size:10d}")
        scale.attrs["CLASS"] = np.bytes_("DIMENSION_SCALE")
        scale.attrs["_Netcdf4Dimid"] = np.int32(next_dimid)
        next_dimid += 1
        scale_ids[dim] = scale.id
        refs[dim] = []
    for _name, (ds_obj, var) in created.items():
        if var.dims and not (var.ndim == 1 and str(var.dims[0]) == _name):
            dim_list = np.empty(var.ndim, dtype=_DIMLIST_DTYPE)
            for axis, dim in enumerate(var.dims):
                dim_list[axis] = np.array([scale_ids[str(dim)]], dtype=OBJ_REF)
                refs[str(dim)].append((ds_obj.id, axis))
            ds_obj.attrs.create("DIMENSION_LIST", dim_list)
    for dim, entries in refs.items():
        if entries:
            ref_list = np.empty(len(entries), dtype=_REFLIST_DTYPE)
            for n, (ds_id, axis) in enumerate(entries):
                ref_list[n] = (ds_id, axis)
            group[dim].attrs.create("REFERENCE_LIST", ref_list)


def _next_dimid(group: Group) -> int:
    ids = [int(np.asarray(obj.attrs["_Netcdf4Dimid"]).reshape(-1)[0])
           for obj in (group[name] for name in group)
           if not isinstance(obj, Group) and "_Netcdf4Dimid" in obj.attrs]
    return max(ids, default=-1) + 1


def _existing_scale(group: Group, dim: str, size: int) -> Any:
    scale = group[dim]
    if isinstance(scale, Group) or scale.attrs.get("CLASS") != b"DIMENSION_SCALE":
        raise ValueError(f"dimension {dim!r} clashes with the non-coordinate variable "
                         f"{scale.name!r} in {group.file.url}")
    if scale.shape != (size,):
        raise ValueError(f"dimension {dim!r} has size {size}, but the domain's dimension "
                         f"scale {scale.name!r} has shape {scale.shape}")
    return scale


def to_h5cloud(obj: xr.Dataset | xr.DataTree, url: str, mode: str = "w",
               encoding: Mapping | None = None, storage_options: Mapping | None = None,
               compute: bool = True, group: str | None = None) -> Any:
    """Write a Dataset or DataTree to the domain at ``url``.

    ``mode``: "w" creates (or replaces) the domain, "a" adds variables to an existing
    one. ``encoding``: per-variable ``chunks``, ``compression`` (gzip, lz4, zstd, ...),
    ``compression_opts``, ``shuffle``, ``fillvalue``/``_FillValue`` and the CF keys.
    With ``compute=False`` returns a ``dask.delayed`` that writes the chunks and then
    publishes the metadata when computed.
    """
    if mode not in ("w", "w-", "a"):
        raise ValueError(f"mode must be 'w', 'w-' or 'a', not {mode!r}")
    f = File(url, mode, storage_options=storage_options)
    sources: list = []
    targets: list = []
    existing = mode == "a"
    if isinstance(obj, xr.DataTree):
        for node in obj.subtree:
            path = node.path if group is None else f"/{group.strip('/')}{node.path}"
            g = f.require_group(path) if path not in ("", "/") else f
            write_dataset(g, node.to_dataset(inherit=False),
                          (encoding or {}).get(node.path) if encoding else None,
                          sources, targets, existing)
    else:
        g = f.require_group(group) if group else f
        write_dataset(g, obj, encoding, sources, targets, existing)
    if not sources:
        f.close()
        if not compute:
            import dask

            return dask.delayed(lambda: None)()
        return None
    import dask
    import dask.array as da

    stored = da.store(sources, targets, lock=False, compute=False)
    publish = dask.delayed(_publish, pure=False)(f._session, stored)
    if compute:
        publish.compute()
        return None
    return publish


def _publish(session: Any, _stored: Any) -> None:
    session.flush()
