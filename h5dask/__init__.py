"""h5dask: HDF5 data in object storage (HSDS schema v2) for xarray and dask.

``import h5dask`` is cheap: the exceptions are imported at once, everything else (the
h5py-like API, xarray, dask, the loader) on first use of its name (PEP 562), so the
command line and xarray's backend discovery do not pay for what they do not use.

Example::

    import xarray as xr, h5dask

    h5dask.load("tas.nc", "s3://bucket/home/me/tas.h5")
    ds = xr.open_dataset("s3://bucket/home/me/tas.h5", engine="h5cloud", chunks={})
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import (
    CorruptChunkError,
    DomainNotFoundError,
    H5DaskError,
    MetadataError,
    StorageError,
    StoragePermissionError,
    UnsupportedFilterError,
    UnsupportedTypeError,
)

if TYPE_CHECKING:  # for type checkers and IDEs; at run time see __getattr__
    from .file import Dataset, Datatype, ExternalLink, File, Group, HardLink, SoftLink
    from .format.types import enum_dtype, string_dtype, vlen_dtype
    from .ingest.load import LoadSummary
    from .iostats import reset_stats, stats
    from .xarray import to_h5cloud

__version__ = "0.1.0"

# public name -> the module that defines it, imported on first access
_LAZY = {
    **dict.fromkeys(("Dataset", "Datatype", "ExternalLink", "File", "Group", "HardLink",
                     "SoftLink"), ".file"),
    **dict.fromkeys(("enum_dtype", "string_dtype", "vlen_dtype"), ".format.types"),
    **dict.fromkeys(("reset_stats", "stats"), ".iostats"),
    **dict.fromkeys(("gc", "list_domains", "rm"), ".admin"),
    "to_h5cloud": ".xarray",
}

__all__ = [
    "CorruptChunkError", "DomainNotFoundError", "H5DaskError", "MetadataError", "StorageError",
    "StoragePermissionError", "UnsupportedFilterError", "UnsupportedTypeError", "__version__",
    "Dataset", "Datatype", "ExternalLink", "File", "Group", "HardLink", "SoftLink",
    "enum_dtype", "load", "reset_stats", "stats", "string_dtype", "to_h5cloud", "vlen_dtype",
    "gc", "list_domains", "rm",
]


def load(src: str | os.PathLike[str], url: str, *, storage_options: Mapping[str, Any] | None = None,
         link: bool = False, overwrite: bool = False, progress: bool = False,
         **options: Any) -> LoadSummary:
    """Import the HDF5/netCDF-4 file ``src`` as the domain at ``url``; the Python form of
    ``h5dask load``. Returns a summary (objects, chunks and bytes written, time taken).

    ``src`` is a local path or an fsspec URL; ``url`` the new domain
    (``s3://bucket/path/name.h5``, ``file://...``), or a folder ending in "/" that
    receives it as NAME.h5 (``summary.url`` says where). ``storage_options`` are the domain
    store's (s3fs conventions); ``link=True`` references the file's chunks instead of
    copying them (the file must stay where it is); ``overwrite=True`` replaces an
    existing domain; ``progress=True`` shows a progress bar on stderr. Further options
    (``chunks``, ``compression``, ``src_storage_options``, ``max_workers``, ...) are
    those of :func:`h5dask.ingest.load.load_file`.

    Example::

        summary = h5dask.load("tas.nc", "s3://bucket/home/me/tas.h5")
        ds = xr.open_dataset(summary.url, engine="h5cloud", chunks={})
    """
    from .ingest.load import load_file

    return load_file(src, url, storage_options=storage_options, link=link,
                     overwrite=overwrite, progress=progress, **options)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
