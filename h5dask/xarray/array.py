"""The lazily indexed array of one h5dask dataset, as xarray's backends see it."""

from __future__ import annotations

from typing import Any

import numpy as np
from xarray.backends.common import BackendArray
from xarray.core import indexing

from ..chunkio import ArraySource
from ..format.types import has_vlen


class H5CloudArray(BackendArray):
    """A lazily indexed view of one dataset; pickles small (an :class:`ArraySource`)."""

    __slots__ = ("source", "shape", "dtype", "scalar", "variable_name", "active")

    def __init__(self, source: ArraySource, shape: tuple[int, ...], dtype: np.dtype,
                 variable_name: str, active: Any = None) -> None:
        self.source = source
        self.active = active  # an ActiveConfig when reductions may be pushed down
        self.shape = shape
        self.scalar = shape == ()
        self.dtype = np.dtype(object) if has_vlen(dtype) else dtype
        self.variable_name = variable_name

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self._getitem)

    def _getitem(self, key: tuple) -> np.ndarray:
        if self.scalar:
            return self.source.read((0,)).reshape(())
        return self.source.read(key)

    def __reduce__(self) -> tuple:
        return (H5CloudArray, (self.source, self.shape, self.dtype, self.variable_name,
                               self.active))
