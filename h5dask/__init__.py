"""h5dask: HDF5 data in object storage (HSDS schema v2) for xarray and dask."""

from __future__ import annotations

from .admin import gc, list_domains, rm
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
from .file import Dataset, Datatype, ExternalLink, File, Group, HardLink, SoftLink
from .format.types import enum_dtype, string_dtype, vlen_dtype
from .iostats import reset_stats, stats
from .xarray import to_h5cloud

__version__ = "0.1.0"

__all__ = [
    "CorruptChunkError", "DomainNotFoundError", "H5DaskError", "MetadataError", "StorageError",
    "StoragePermissionError", "UnsupportedFilterError", "UnsupportedTypeError", "__version__",
    "Dataset", "Datatype", "ExternalLink", "File", "Group", "HardLink", "SoftLink",
    "enum_dtype", "reset_stats", "stats", "string_dtype", "to_h5cloud", "vlen_dtype",
    "gc", "list_domains", "rm",
]
