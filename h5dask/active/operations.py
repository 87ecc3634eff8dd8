"""The five Reductionist operations on a NumPy array, with Reductionist's exact semantics.

* The stored bytes are viewed with the request's dtype and byte order, shaped with
  ``shape`` in ``order`` (C or F), then ``selection`` is applied (NumPy slices).
* Missing data are left out of every reduction: ``missing_value`` (x == v),
  ``missing_values`` (x in vs), ``valid_min`` (x < min), ``valid_max`` (x > max),
  ``valid_range`` (x < min or x > max). NaN is never equal to a missing value, nor
  less or greater than a bound, so it is never missing (Reductionist's
  ``Missing::is_missing``): a NaN goes into sums and counts.
* ``count`` is the number of non-missing elements that went into each result
  element; ``count`` (the operation) returns those counts as int64.
* ``axis`` None reduces over everything (scalar result, shape ``[]``, count a
  one-element list); a tuple of axes reduces over those; ``()`` reduces over no
  axis (element-wise: the value itself, count 1 or 0 when missing).
* A result element with no non-missing input is the fold's start value: 0 for
  ``sum``, the dtype's largest finite value for ``min`` and its lowest for ``max``
  (with count 0).
* ``sum`` accumulates in the request dtype (integers wrap around, as Reductionist);
  with ``sum_int64`` (an h5dask extension) integer sums accumulate in int64 (uint64
  for unsigned dtypes) and the reply has that dtype, so a chunk of int32 cannot wrap.
* ``select`` returns the selected elements and ignores ``axis``; its count is a
  one-element list, the number of non-missing selected elements.
* Reductions over at least one axis come out in C order. Element-wise results
  (``select``, and ``min``/``max``/``sum`` with ``axis: []``) come out in the
  request's ``order`` (so Fortran order gives Fortran-ordered bytes and counts), as
  Reductionist does; ``count`` with ``axis: []`` comes out in C order whatever the
  ``order``, as Reductionist's (it maps the array without transposing it first).
* Results are in native byte order.
* Deviation: a NaN reaching ``min``/``max`` propagates (NumPy) where Reductionist
  fails the request.

Example::

    >>> import numpy as np
    >>> r = reduce_array("sum", np.arange(6, dtype="int32").reshape(2, 3), axis=(1,))
    >>> r.values.tolist(), r.shape, r.counts.tolist()
    ([3, 12], (2,), [3, 3])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from h5dask.active.request import Missing, ReductionRequest

__all__ = ["Result", "build_array", "keep_mask", "reduce_array", "run"]


@dataclass(frozen=True)
class Result:
    """An operation's answer: flat ``values`` in reply order, their ``shape``, ``counts``."""

    values: np.ndarray
    shape: tuple[int, ...]
    counts: np.ndarray

    @property
    def dtype(self) -> str:
        """The reply dtype name, e.g. ``"int64"`` for ``count``."""
        return self.values.dtype.name


def build_array(data: bytes | memoryview, req: ReductionRequest) -> np.ndarray:
    """View decoded bytes as the request's (selected) array, still in stored byte order.

    Example::

        >>> req = ReductionRequest("s3", "http://h:1/b/k", "int32", byte_order="big",
        ...                        shape=(2, 2))
        >>> build_array(np.arange(4, dtype=">i4").tobytes(), req).tolist()
        [[0, 1], [2, 3]]
    """
    arr = np.frombuffer(data, dtype=req.stored_dtype)
    arr = arr.reshape(req.shape or (arr.size,), order=req.order)  # type: ignore[call-overload]
    if req.selection is not None:
        arr = arr[tuple(s.to_slice() for s in req.selection)]
    return arr


def keep_mask(arr: np.ndarray, missing: Missing | None) -> np.ndarray | None:
    """Boolean array, True where an element is not missing; None when nothing can be.

    Example::

        >>> keep_mask(np.array([1, 5, 9]), Missing("valid_max", (5,))).tolist()
        [True, True, False]
    """
    if missing is None:
        return None
    v = np.array(missing.values, dtype=arr.dtype)
    if missing.kind == "missing_value":
        return arr != v[0]
    if missing.kind == "missing_values":
        return ~np.isin(arr, v)
    # "not below", not "at least": a NaN is kept, as Reductionist keeps it
    if missing.kind == "valid_min":
        return ~(arr < v[0])
    if missing.kind == "valid_max":
        return ~(arr > v[0])
    if missing.kind == "valid_range":
        return ~((arr < v[0]) | (arr > v[1]))
    raise ValueError(f"unknown missing kind {missing.kind!r}")


def _bounds(dtype: np.dtype) -> tuple[int | float, int | float]:
    info = np.iinfo(dtype) if dtype.kind in "iu" else np.finfo(dtype)
    return info.min, info.max  # finite bounds, like Rust's num_traits::Bounded


def reduce_array(
    operation: str,
    arr: np.ndarray,
    axis: Sequence[int] | None = None,
    missing: Missing | None = None,
    order: str = "C",
    skip_nan: bool = False,
    sum_int64: bool = False,
) -> Result:
    """Apply ``operation`` (count/min/max/sum/select) to ``arr`` as Reductionist defines it.

    Example::

        >>> r = reduce_array("max", np.array([1, 7, 3], dtype="uint32"),
        ...                  missing=Missing("missing_value", (7,)))
        >>> r.values.tolist(), r.shape, r.counts.tolist()
        ([3], (), [2])
    """
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    keep = keep_mask(arr, missing)
    skips = skip_nan and arr.dtype.kind == "f"
    if skips and keep is None and operation in ("min", "max", "sum") and (axis is None or axis):
        # NaN propagates through sums and extremes: a NaN-free answer of the plain
        # reduction proves there was no NaN to skip, at a quarter of the masked cost
        with np.errstate(invalid="ignore"):  # inf - inf: then masked below
            plain = reduce_array(operation, arr, axis, None, order)
        if not np.isnan(plain.values).any():
            return plain
    if skip_nan and arr.dtype.kind == "f":
        not_nan = ~np.isnan(arr)
        keep = not_nan if keep is None else keep & not_nan
    if operation == "select":
        n = arr.size if keep is None else int(np.count_nonzero(keep))
        # a view when the selection is contiguous in that order: the reply is written
        # straight from the decoded data, never copied (the server's memory bound)
        values = arr.ravel(order=order)  # type: ignore[call-overload]
        return Result(values, arr.shape, np.array([n], dtype=np.int64))
    if operation not in ("count", "min", "max", "sum"):
        raise ValueError(f"unknown operation {operation!r}")
    if axis is not None and len(axis) == 0:  # element-wise: "reduction over no axes"
        counts = np.ones(arr.shape, np.int64) if keep is None else keep.astype(np.int64)
        values = counts if operation == "count" else arr
        if operation == "count":
            order = "C"  # Reductionist's count maps the array in its logical (C) order
        return Result(
            values.ravel(order=order).copy(),  # type: ignore[call-overload]
            arr.shape,
            counts.ravel(order=order),  # type: ignore[call-overload]
        )

    axes = None if axis is None else tuple(axis)
    if keep is None:
        reduced = range(arr.ndim) if axes is None else axes
        out_shape = (
            () if axes is None else tuple(n for i, n in enumerate(arr.shape) if i not in axes)
        )
        n_in = int(np.prod([arr.shape[i] for i in reduced], dtype=np.int64))
        counts = np.full(out_shape, n_in, dtype=np.int64)
        where: np.ndarray | bool = True
    else:
        counts = np.asarray(np.count_nonzero(keep, axis=axes), dtype=np.int64)
        where = keep

    out_dtype = np.dtype(np.int64) if operation == "count" else arr.dtype
    if operation == "count":
        values = counts
    elif operation == "sum":
        if sum_int64 and arr.dtype.kind in "iu":
            out_dtype = np.dtype(np.int64 if arr.dtype.kind == "i" else np.uint64)
        if keep is not None and arr.dtype.kind == "f":
            # zeros for the missing values, then NumPy's pairwise sum: numpy.nansum's
            # order of additions (a masked sum adds in another order), so a chunk sums
            # to the last bit as xarray's skipna sum of it does (one temporary copy)
            values = np.sum(np.where(keep, arr, arr.dtype.type(0)), axis=axes, dtype=out_dtype)
        else:
            values = np.sum(arr, axis=axes, dtype=out_dtype, where=where)
    else:
        lo, hi = _bounds(arr.dtype)
        ufunc = np.minimum if operation == "min" else np.maximum
        initial = hi if operation == "min" else lo
        values = ufunc.reduce(arr, axis=axes, initial=initial, where=where)
    values = np.asarray(values, dtype=out_dtype)
    return Result(np.ascontiguousarray(values).ravel(), values.shape, counts.ravel())


def run(
    operation: str, data: bytes | memoryview, req: ReductionRequest, *, consume: bool = False
) -> Result:
    """Run ``operation`` on decoded chunk bytes as ``req`` describes them.

    ``consume=True`` lets the operation overwrite ``data`` when it is writable (a
    non-native byte order is then swapped in place instead of copied); the result of a
    ``select`` may be a view of ``data`` either way.

    Example::

        >>> req = ReductionRequest("s3", "http://h:1/b/k", "float64", shape=(2, 2), axis=(0,))
        >>> run("min", np.array([4.0, 1.0, 2.0, 3.0]).tobytes(), req).values.tolist()
        [2.0, 1.0]
    """
    arr = build_array(data, req)
    if consume and not arr.dtype.isnative and arr.flags.writeable:
        arr = arr.byteswap(inplace=True).view(arr.dtype.newbyteorder("="))
    return reduce_array(operation, arr, axis=req.axis, missing=req.missing, order=req.order,
                        skip_nan=req.skip_nan, sum_int64=req.sum_int64)
