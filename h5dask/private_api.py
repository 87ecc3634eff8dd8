"""Every private dask, xarray and distributed name h5dask relies on, in one place.

Pushdown (:mod:`h5dask.active.pushdown`) and read-ahead (:mod:`h5dask.xarray.lookahead`)
read dask's task objects and unwrap xarray's lazy indexing and CF-decoding wrappers;
read-ahead also looks at a distributed worker's queue. Neither library promises these
names, so they are imported here and nowhere else. :func:`load` checks all of them at
once; when a new release moves one, opening with active storage fails loudly
(``active_storage="require"``) or warns that pushdown is off (``"auto"``) instead of
silently computing locally, and ``tests/test_private_api.py`` fails on that
release.

Example::

    >>> adapter = load()
    >>> adapter.apply_mask.__name__
    '_apply_mask'
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from .errors import H5DaskError

#: (module, attribute) of each private name, by the role it plays in pushdown
PRIVATE_NAMES: dict[str, tuple[str, str]] = {
    "Task": ("dask._task_spec", "Task"),
    "TaskRef": ("dask._task_spec", "TaskRef"),
    "DataNode": ("dask._task_spec", "DataNode"),
    "Alias": ("dask._task_spec", "Alias"),
    "execute_subgraph": ("dask._task_spec", "_execute_subgraph"),
    "apply_mask": ("xarray.coding.variables", "_apply_mask"),
    "scale_offset_decoding": ("xarray.coding.variables", "_scale_offset_decoding"),
    "ElementwiseFunctionArray": ("xarray.coding.common", "_ElementwiseFunctionArray"),
    "NativeEndiannessArray": ("xarray.coding.variables", "NativeEndiannessArray"),
    "LazilyIndexedArray": ("xarray.core.indexing", "LazilyIndexedArray"),
    "ImplicitToExplicitIndexingAdapter": ("xarray.core.indexing",
                                          "ImplicitToExplicitIndexingAdapter"),
    "CopyOnWriteArray": ("xarray.core.indexing", "CopyOnWriteArray"),
    "MemoryCachedArray": ("xarray.core.indexing", "MemoryCachedArray"),
    "BoolTypeArray": ("xarray.coding.variables", "BoolTypeArray"),
}

#: the same for distributed, which is optional (read-ahead on workers needs it)
DISTRIBUTED_NAMES: dict[str, tuple[str, str]] = {
    "thread_state": ("distributed.worker", "thread_state"),
    "get_worker": ("distributed", "get_worker"),
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
    execute_subgraph: Any
    apply_mask: Any
    scale_offset_decoding: Any
    ElementwiseFunctionArray: type
    NativeEndiannessArray: type
    LazilyIndexedArray: type
    ImplicitToExplicitIndexingAdapter: type
    CopyOnWriteArray: type
    MemoryCachedArray: type
    BoolTypeArray: type

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

    @property
    def elementwise_wrappers(self) -> tuple[type, ...]:
        """Wrappers that read exactly the elements of the array they wrap (read-ahead
        looks through them: which chunks are read is all that matters there)."""
        return (*self.passthrough_wrappers, self.ElementwiseFunctionArray,
                self.BoolTypeArray)


def _versions() -> str:
    import dask
    import xarray

    try:
        import distributed

        extra = f", distributed {distributed.__version__}"
    except ImportError:
        extra = ""
    return f"dask {dask.__version__}, xarray {xarray.__version__}{extra}"


def _resolve(names: dict[str, tuple[str, str]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    missing = []
    for role, (module, attr) in names.items():
        try:
            found[role] = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            missing.append(f"{module}.{attr}")
    if missing:
        raise PushdownUnsupportedError(
            f"h5dask's pushdown and read-ahead do not support {_versions()}: missing "
            f"{', '.join(missing)}; pin dask/xarray/distributed to the versions h5dask is "
            f"tested with, or open with active_storage='off'")
    return found


@functools.cache
def load() -> GraphAdapter:
    """Resolve every private name, or raise :class:`PushdownUnsupportedError` listing
    what is missing (with the installed versions)."""
    return GraphAdapter(**_resolve(PRIVATE_NAMES))


@functools.cache
def load_distributed() -> dict[str, Any] | None:
    """The private names of distributed (see :data:`DISTRIBUTED_NAMES`), or None when
    distributed is not installed; raises :class:`PushdownUnsupportedError` when it is
    installed but lacks one."""
    if importlib.util.find_spec("distributed") is None:
        return None
    return _resolve(DISTRIBUTED_NAMES)


__all__ = ["DISTRIBUTED_NAMES", "GraphAdapter", "PRIVATE_NAMES", "PushdownUnsupportedError",
           "load", "load_distributed"]
