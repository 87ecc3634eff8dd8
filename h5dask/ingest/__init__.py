"""Getting HDF5/netCDF-4 files into domains: copied (load) or linked in place.

>>> from h5dask.ingest import load_file, LoadSummary  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["LoadSummary", "load_file"]


def __getattr__(name: str) -> Any:
    # lazy: importing h5dask.ingest does not import the loader (h5py, tqdm)
    if name in ("load_file", "LoadSummary"):
        from . import load

        return getattr(load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
