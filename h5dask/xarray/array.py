"""The lazily indexed array of one h5dask dataset, as xarray's backends see it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from xarray.backends.common import BackendArray
from xarray.core import indexing

from ..chunkio import ArraySource
from ..errors import SizeLimitError
from ..format.chunks import normalize_selection
from ..format.types import has_vlen
from . import lookahead


class H5CloudArray(BackendArray):
    """A lazily indexed view of one dataset; pickles small (an :class:`ArraySource`).

    ``max_read_bytes`` (for dimension coordinates, which xarray loads at open) refuses
    reads larger than that with a SizeLimitError saying how to raise the limit."""

    __slots__ = ("source", "shape", "dtype", "scalar", "variable_name", "active",
                 "max_read_bytes")

    def __init__(self, source: ArraySource, shape: tuple[int, ...], dtype: np.dtype,
                 variable_name: str, active: Any = None,
                 max_read_bytes: int | None = None) -> None:
        self.source = source
        self.active = active  # an ActiveConfig when reductions may be pushed down
        self.shape = shape
        self.scalar = shape == ()
        self.dtype = np.dtype(object) if has_vlen(dtype) else dtype
        self.variable_name = variable_name
        self.max_read_bytes = max_read_bytes

    def __getitem__(self, key: indexing.ExplicitIndexer) -> np.ndarray:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self._getitem)

    def _getitem(self, key: tuple) -> np.ndarray:
        lookahead.on_task_start()
        if self.scalar:
            return self.source.read((0,)).reshape(())
        if self.max_read_bytes is not None:
            self._check_size(key)
        return self.source.read(key)

    def _check_size(self, key: tuple) -> None:
        _, out_shape = normalize_selection(key, self.shape)
        nbytes = math.prod(out_shape) * self.source.dtype.itemsize
        if self.max_read_bytes is not None and nbytes > self.max_read_bytes:
            raise SizeLimitError(
                f"dimension coordinate {self.variable_name!r} of {self.source.dataset_id}: "
                f"reading {math.prod(out_shape)} values ({nbytes} bytes) exceeds "
                f"max_coordinate_bytes={self.max_read_bytes}, the most h5dask loads for a "
                "coordinate, which xarray reads whole at open to index it. If it is "
                "genuine, pass max_coordinate_bytes=<bytes> (or None: no limit) to "
                f"xr.open_dataset, or drop_variables=[{self.variable_name!r}]")

    def __reduce__(self) -> tuple:
        return (H5CloudArray, (self.source, self.shape, self.dtype, self.variable_name,
                               self.active, self.max_read_bytes))
