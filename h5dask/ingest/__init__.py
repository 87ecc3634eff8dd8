"""Getting HDF5/netCDF-4 files into domains: copied (load) or linked in place.

>>> from h5dask.ingest import load_file, LoadSummary  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

__all__ = ["LoadSummary", "linked_chunk_refs", "load_file"]


def __getattr__(name: str) -> Any:
    # lazy: reading a linked dataset imports .linked only, not the loader (h5py, tqdm)
    if name in ("load_file", "LoadSummary"):
        from . import load

        return getattr(load, name)
    if name == "linked_chunk_refs":
        from .linked import linked_chunk_refs

        return linked_chunk_refs
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
