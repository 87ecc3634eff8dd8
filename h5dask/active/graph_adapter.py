"""Every private dask and xarray name that pushdown relies on, in one place.

Pushdown (:mod:`h5dask.active.pushdown`) reads dask's task objects and unwraps xarray's
lazy indexing and CF-decoding wrappers. Neither library promises these names, so they
are imported here and nowhere else. :func:`load` checks all of them at once; when a new
release moves one, opening with active storage fails loudly (``active_storage="require"``)
or warns that pushdown is off (``"auto"``) instead of silently computing locally, and
``tests/active/test_graph_adapter.py`` fails on that release.

Example::

    >>> adapter = load()
    >>> adapter.apply_mask.__name__
    '_apply_mask'
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from typing import Any

from ..errors import H5DaskError

#: (module, attribute) of each private name, by the role it plays in pushdown
PRIVATE_NAMES: dict[str, tuple[str, str]] = {
    "Task": ("dask._task_spec", "Task"),
    "TaskRef": ("dask._task_spec", "TaskRef"),
    "DataNode": ("dask._task_spec", "DataNode"),
    "Alias": ("dask._task_spec", "Alias"),
    "apply_mask": ("xarray.coding.variables", "_apply_mask"),
    "scale_offset_decoding": ("xarray.coding.variables", "_scale_offset_decoding"),
    "ElementwiseFunctionArray": ("xarray.coding.common", "_ElementwiseFunctionArray"),
    "NativeEndiannessArray": ("xarray.coding.variables", "NativeEndiannessArray"),
    "LazilyIndexedArray": ("xarray.core.indexing", "LazilyIndexedArray"),
    "ImplicitToExplicitIndexingAdapter": ("xarray.core.indexing",
                                          "ImplicitToExplicitIndexingAdapter"),
    "CopyOnWriteArray": ("xarray.core.indexing", "CopyOnWriteArray"),
    "MemoryCachedArray": ("xarray.core.indexing", "MemoryCachedArray"),
}


class PushdownUnsupportedError(H5DaskError, RuntimeError):
    """The installed dask or xarray lacks a private name pushdown needs."""


@dataclass(frozen=True)
class GraphAdapter:
    """The resolved private names (see :data:`PRIVATE_NAMES`)."""

    Task: type
    TaskRef: type
    DataNode: type
    Alias: type
    apply_mask: Any
    scale_offset_decoding: Any
    ElementwiseFunctionArray: type
    NativeEndiannessArray: type
    LazilyIndexedArray: type
    ImplicitToExplicitIndexingAdapter: type
    CopyOnWriteArray: type
    MemoryCachedArray: type

    @property
    def passthrough_wrappers(self) -> tuple[type, ...]:
        """xarray wrappers that hold the same values as the array they wrap."""
        return (self.ImplicitToExplicitIndexingAdapter, self.CopyOnWriteArray,
                self.MemoryCachedArray, self.NativeEndiannessArray)

    @property
    def lazy_wrappers(self) -> tuple[type, ...]:
        """Every wrapper pushdown looks through to find an h5dask array."""
        return (*self.passthrough_wrappers, self.LazilyIndexedArray,
                self.ElementwiseFunctionArray)


def _versions() -> str:
    import dask
    import xarray

    return f"dask {dask.__version__}, xarray {xarray.__version__}"


@functools.cache
def load() -> GraphAdapter:
    """Resolve every private name, or raise :class:`PushdownUnsupportedError` listing
    what is missing (with the installed versions)."""
    found: dict[str, Any] = {}
    missing = []
    for role, (module, attr) in PRIVATE_NAMES.items():
        try:
            found[role] = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            missing.append(f"{module}.{attr}")
    if missing:
        raise PushdownUnsupportedError(
            f"active-storage pushdown does not support {_versions()}: missing "
            f"{', '.join(missing)}; pin dask/xarray to the versions h5dask is tested with, "
            f"or open with active_storage='off'")
    return GraphAdapter(**found)


__all__ = ["GraphAdapter", "PRIVATE_NAMES", "PushdownUnsupportedError", "load"]
