"""Reading, through h5py, what planning needs to know of a source dataset
(:class:`~.plan.SourceDataset`): its type, dataspace, layout, filters, fill value and
stored chunks. Called in the loader's h5py thread.

>>> import h5py, numpy as np, tempfile, os
>>> from h5dask.ingest.hdf5 import H5Types, H5Values, walk
>>> path = os.path.join(tempfile.mkdtemp(), "x.h5")
>>> with h5py.File(path, "w") as f:
...     _ = f.create_dataset("t", data=np.arange(100.0), chunks=(10,))
>>> with h5py.File(path) as f:
...     obj = next(o for o in walk(f, []) if o.kind == "d")
...     src = describe_dataset(obj, H5Types({}), H5Values(f, {}))
>>> (src.layout, src.chunks, len(src.stored))
('chunked', (10,), 10)
"""

from __future__ import annotations

from typing import Any

from ..errors import UnsupportedTypeError
from ..format.types import dtype_from_json, has_vlen
from .hdf5 import H5Types, H5Values, SourceObject, same_layout, text
from .plan import SourceDataset, StoredChunk


def describe_dataset(obj: SourceObject, types: H5Types, values: H5Values) -> SourceDataset:
    """What ``obj`` (a dataset) is; UnsupportedTypeError for what HSDS cannot hold."""
    from h5py import h5d, h5s

    dset = obj.h5
    tid = dset.id.get_type()
    type_json = types.json(tid)
    dt = dtype_from_json(type_json)
    if dt.subdtype is not None:
        raise UnsupportedTypeError(
            "a dataset whose element type is an HDF5 array type (h5py reads it as extra "
            "axes); HSDS chunk layouts have no equivalent")
    space = dset.id.get_space()
    stype = space.get_simple_extent_type()
    shape: tuple[int, ...] | None
    maxshape: tuple[int | None, ...] | None
    if stype == h5s.NULL:
        shape, maxshape = None, None
    elif stype == h5s.SCALAR:
        shape, maxshape = (), ()
    else:
        shape = tuple(int(s) for s in dset.shape)
        maxshape = tuple(None if m is None else int(m) for m in dset.maxshape)
    dcpl = dset.id.get_create_plist()
    layout = dcpl.get_layout()
    if layout == h5d.VIRTUAL:
        _check_virtual_sources(dcpl)
    filters = tuple((int(code), tuple(cd)) for code, _flags, cd, _name in
                    (dcpl.get_filter(i) for i in range(dcpl.get_nfilters())))
    fill_json = None
    # H5D_FILL_TIME_NEVER: HDF5 never writes the fill value, and leaves what it reads of
    # unwritten storage as the caller's buffer was (h5py's: zeros). The domain then
    # gets no fill value (HSDS and h5dask read zeros there, as h5py does)
    fill_time_never = dcpl.get_fill_time() == h5d.FILL_TIME_NEVER
    if (dcpl.fill_value_defined() == h5d.FILL_VALUE_USER_DEFINED and not has_vlen(dt)
            and not fill_time_never):
        try:
            fill_json = values.one(dset.fillvalue, dt)
        except (UnsupportedTypeError, TypeError, ValueError):
            fill_json = None
    empty = shape is None or 0 in shape
    stored: tuple[StoredChunk, ...] = ()
    allocated, data_offset, storage_size = True, None, 0
    external = layout == h5d.CONTIGUOUS and dcpl.get_external_count() > 0
    if layout == h5d.CHUNKED and not empty:
        stored = _stored_chunks(dset)
        allocated = bool(stored)
    elif layout == h5d.CONTIGUOUS and not external:
        storage_size = int(dset.id.get_storage_size())
        if not empty:
            allocated = storage_size > 0
        offset = dset.id.get_offset() if allocated else None
        data_offset = None if offset is None else int(offset)
    names = {h5d.CHUNKED: "chunked", h5d.CONTIGUOUS: "contiguous", h5d.COMPACT: "compact"}
    return SourceDataset(
        obj.path, type_json, dt, dset.dtype.itemsize, shape, maxshape,
        names.get(layout, "virtual"), tuple(dset.chunks) if layout == h5d.CHUNKED else None,
        filters, same_layout(tid, dt), fill_json, stored, allocated, external, data_offset,
        storage_size, fill_time_never)


def _check_virtual_sources(dcpl: Any) -> None:
    """UnsupportedTypeError for a virtual dataset mapping other files: the source file is
    read through a file object, and there HDF5 finds no other file by a relative name and
    reads their parts as the fill value, silently."""
    others = sorted({text(dcpl.get_virtual_filename(i)) for i in range(dcpl.get_virtual_count())}
                    - {"."})
    if others:
        raise UnsupportedTypeError(
            f"a virtual dataset with values in other files ({', '.join(others)}), which "
            "load cannot open; load those files, or make a copy of the dataset in this file")


def _stored_chunks(dset: Any) -> tuple[StoredChunk, ...]:
    infos: list[Any] = []
    if hasattr(dset.id, "chunk_iter"):
        dset.id.chunk_iter(infos.append)
    else:  # HDF5 older than 1.14
        infos = [dset.id.get_chunk_info(i) for i in range(dset.id.get_num_chunks())]
    return tuple(StoredChunk(tuple(int(o) for o in info.chunk_offset), int(info.byte_offset),
                             int(info.size), int(info.filter_mask)) for info in infos)


__all__ = ["describe_dataset"]
