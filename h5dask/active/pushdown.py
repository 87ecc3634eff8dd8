"""Pushing ordinary xarray/dask reductions down to an active-storage server.

Users write ``ds["tas"].mean()``. When the dataset was opened with an active-storage
server (``active_storage_url=`` or ``H5DASK_ACTIVE_STORAGE_URL``), h5dask's dask graph
optimisation (installed as dask's ``array_optimize``) finds, before fusion, each
reduction's per-block task whose input is one block of an h5dask variable (possibly
sliced by ``isel``/``sel``, and through xarray's CF decoding) and replaces it by a task
that asks the server to reduce each chunk object of the block, one request per chunk
object, and combines the answers into exactly the partial result the original task
would have produced. dask then aggregates as usual.

Recognised per-block reductions (what xarray's ``sum``, ``min``, ``max``, ``mean`` and
``count`` become for floating-point data with ``skipna``, and for integers):
``mean_chunk`` (nanmean), ``_nanmin_skip``/``_nanmax_skip``, ``sum`` of
``where(isnan(x), 0, x)`` (nansum), ``sum`` of ``~isnan(x)`` (count), and plain
``sum``, ``chunk_min``/``chunk_max`` (min/max) and ``mean_chunk`` with its default
``sum``/``numel`` (mean) of unmasked integers: extremes are combined in their own
dtype, exactly; a mean's sums of 32-bit integers accumulate in int64 on the server
(``sum_int64``: no chunk wraps), the number dask's float64 sum gives as long as a block's
sum stays within 2**53 (blocks of up to 2**22 int32 values: larger ones, 64-bit integers
and a ``mean(dtype=...)`` other than float64 are left to dask).
The same holds for the sums and means of masked integers (decoded to floats because of
a ``_FillValue``); packed ones (``scale_factor``/``add_offset``) are pushed down only
where no decoded value or partial sum rounds: a power-of-two scale and an offset that
is a whole multiple of it (not a scale of 0.1: dask's sum of the rounded decoded values
is another number than the server's ``s * sum + o * n``; see
:func:`decoded_sum_is_exact`). Anything else is left to dask.

CF decoding is applied to the server's answers: fill values (``_FillValue``,
``missing_value``) are sent as ``missing_values``, NaN is skipped (the ``skip_nan``
extension), and ``scale_factor``/``add_offset`` are applied to sums (``s * sum + o * n``)
and extremes. Integer sums below 64 bits ask the server to accumulate in 64 bits (the
``sum_int64`` extension): a strict Reductionist refuses it (a 400 naming the field),
and such sums are then reduced locally, never wrapped around, without an error or a
warning even with ``active_storage="require"`` (this server cannot push them down
exactly; the process remembers it and does not ask it again). A chunk object that does
not exist is reduced locally (from its fill value); when the server cannot reduce a
chunk (unreachable, unsupported compression or dtype), the block is reduced locally
and one warning says why, or with ``active_storage="require"`` an error is raised
instead.
"""

from __future__ import annotations

import asyncio
import functools
import math
import threading
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import private_api
from ..chunkio import ArraySource
from ..errors import H5DaskError
from ..format.chunks import slice_origin
from ..storage.sync import sync
from .client import ActiveStorageUnavailable, ChunkRequest, check_server, reduce_remote
from .config import ActiveConfig

REDUCTIONIST_DTYPES = ("int32", "int64", "uint32", "uint64", "float32", "float64")


class ActiveStorageError(H5DaskError, RuntimeError):
    """Raised with ``active_storage="require"`` when a chunk cannot be reduced remotely."""


class ActiveStorageWarning(UserWarning):
    """A reduction (or part of it) was computed locally instead of on the server."""


# -- recognising h5dask variables through xarray's lazy wrappers --------------------------
@dataclass(frozen=True)
class Decoding:
    """What xarray's CF decoding does to the stored values of a variable."""

    fill_values: tuple = ()
    scale: float | None = None
    offset: float | None = None
    dtype: Any = None


@dataclass(frozen=True)
class SourceInfo:
    """An h5dask variable found under an array object of a dask graph."""

    array: Any  # an h5dask.xarray.array.H5CloudArray
    origin: tuple[int, ...]  # where xarray's lazy key starts in the stored array
    decoding: Decoding


def find_source(obj: Any) -> SourceInfo | None:
    """Unwrap xarray's lazy indexing/decoding wrappers down to an h5dask array.

    Returns None for anything this module cannot push down exactly.
    """
    adapter = private_api.load()
    funcs = []
    origin: tuple[int, ...] | None = None
    for _ in range(32):
        if isinstance(getattr(obj, "source", None), ArraySource):  # an H5CloudArray
            break
        if isinstance(obj, adapter.ElementwiseFunctionArray):
            funcs.append(obj.func)
            obj = obj.array
        elif isinstance(obj, adapter.LazilyIndexedArray):
            origin = slice_origin(obj.key.tuple, obj.array.shape)
            if origin is None:
                return None
            obj = obj.array
        elif isinstance(obj, adapter.passthrough_wrappers):
            obj = obj.array
        else:
            return None
    else:
        return None
    if getattr(obj, "active", None) is None:
        return None
    decoding = Decoding()
    for func in reversed(funcs):  # innermost first
        if not isinstance(func, functools.partial):
            return None
        kw = func.keywords
        if func.func is adapter.apply_mask and not decoding.fill_values \
                and decoding.scale is None:
            fills = stored_fill_values(list(kw.get("encoded_fill_values", ())), obj.dtype,
                                       np.dtype(kw.get("dtype") or obj.dtype))
            if fills is None:
                return None
            decoding = Decoding(fills, None, None, kw.get("dtype"))
        elif func.func is adapter.scale_offset_decoding and decoding.scale is None:
            decoding = Decoding(decoding.fill_values, kw.get("scale_factor"),
                                kw.get("add_offset"), kw.get("dtype"))
        else:
            return None
    return SourceInfo(obj, origin or (0,) * len(obj.shape), decoding)


def stored_fill_values(fills: list, stored: np.dtype, decoded: np.dtype) -> tuple | None:
    """The stored values xarray masks for ``fills``: it compares each value, converted to
    ``decoded``, with each fill (NumPy promotion), so a fill no stored value equals that
    way (a float64 0.1 on float32 data) masks nothing and is left out; None when values
    other than the fill itself would match (64-bit integers beyond 2**53 as float64).

    Example::

        >>> stored_fill_values([np.float64(0.1), np.float32(2.5)], np.dtype("f4"),
        ...                    np.dtype("f4"))
        (np.float32(2.5),)
    """
    out = []
    for fill in fills:
        if stored.kind in "iu" and stored.itemsize == 8 and decoded.kind == "f" \
                and abs(float(fill)) >= 2.0**53:
            return None  # neighbours of the fill convert to the same float64
        try:
            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                candidate = np.asarray(fill).astype(stored)
                masked = bool(candidate.astype(decoded) == fill)
        except (TypeError, ValueError):
            return None  # not a number of that dtype: leave the masking to xarray
        if masked:
            out.append(candidate[()])
    return tuple(out)


# -- recognising per-block reductions ---------------------------------------------------
@dataclass(frozen=True)
class BlockReduction:
    """What a per-block reduction task computes, in h5dask's terms."""

    kind: str  # "mean", "nansum", "count", "sum", "min", "max"
    axis: tuple[int, ...]
    keepdims: bool
    dtype: Any  # the partial result's dtype (for sums, counts, means)


def _func_name(func: Any) -> str:
    base = func.func if isinstance(func, functools.partial) else func
    return getattr(base, "__name__", type(base).__name__)


def _classify(task: Any, tasks: Mapping) -> tuple[BlockReduction, Any] | None:
    """(reduction, key of its input block X) if ``task`` is a recognised reduction."""
    TaskRef = private_api.load().TaskRef  # noqa: N806 - a class

    func = getattr(task, "func", None)
    if func is None or len(task.args) != 1 or not isinstance(task.args[0], TaskRef):
        return None
    kwargs = task.kwargs
    axis = kwargs.get("axis")
    if axis is None or not kwargs.get("keepdims", False):
        return None
    axis = tuple(axis) if isinstance(axis, tuple | list) else (axis,)
    name = _func_name(func)
    keywords = func.keywords if isinstance(func, functools.partial) else {}
    dtype = keywords.get("dtype")
    inner = task.args[0].key
    if name == "mean_chunk":
        sum_name = _func_name(keywords.get("sum"))
        numel_name = _func_name(keywords.get("numel"))
        if sum_name == "nansum" and numel_name == "nannumel":
            return BlockReduction("mean", axis, True, dtype or np.float64), inner
        # dask's mean of integers: mean_chunk's defaults (chunk.sum, numel), summing in
        # float64; a mean(dtype=...) of another dtype sums in that one: left to dask
        if sum_name in ("NoneType", "sum") and numel_name in ("NoneType", "numel") and \
                np.dtype(dtype or np.float64) == np.float64:
            return BlockReduction("imean", axis, True, np.dtype(np.float64)), inner
        return None
    if name in ("_nanmax_skip", "_nanmin_skip", "nanmax", "nanmin"):
        return BlockReduction("max" if "max" in name else "min", axis, True, None), inner
    if name in ("chunk_max", "chunk_min", "max", "min", "amax", "amin"):
        # dask's min/max of integers run chunk_min/chunk_max on each block (np.min/np.max
        # that skip empty blocks); older dask ran np.min/np.max themselves
        return BlockReduction("imax" if "max" in name else "imin", axis, True, None), inner
    if name == "sum":
        src = tasks.get(inner)
        sname = _func_name(getattr(src, "func", None)) if src is not None else ""
        if sname == "where" and len(src.args) == 3:
            cond, zero, x = src.args
            ctask = tasks.get(getattr(cond, "key", None))
            if (isinstance(x, TaskRef) and ctask is not None
                    and _func_name(ctask.func) == "isnan"
                    and getattr(ctask.args[0], "key", None) == x.key
                    and str(getattr(zero, "key", ("",))[0]).startswith("zeros_like")):
                return BlockReduction("nansum", axis, True, dtype), x.key
            return None
        if sname == "logical_not":
            ntask = tasks.get(getattr(src.args[0], "key", None))
            if ntask is not None and _func_name(ntask.func) == "isnan":
                return BlockReduction("count", axis, True, dtype or np.int64), ntask.args[0].key
            return None
        return BlockReduction("isum", axis, True, dtype), inner
    return None


def _trace_block(key: Any, tasks: Mapping) -> tuple[Any, tuple, list[tuple]] | None:
    """Follow ``getitem`` tasks down to a ``getter``: (source key, getter slices, getitems)."""
    adapter = private_api.load()
    Alias, DataNode, TaskRef = adapter.Alias, adapter.DataNode, adapter.TaskRef  # noqa: N806
    getitems: list[tuple] = []
    for _ in range(16):
        task = tasks.get(key)
        if isinstance(task, Alias):  # a whole-block "slice" is an alias of the block
            key = task.target.key if isinstance(task.target, TaskRef) else task.target
            continue
        if task is None or not hasattr(task, "func"):
            return None
        name = _func_name(task.func)
        if name == "getitem" and len(task.args) == 2 and isinstance(task.args[0], TaskRef):
            index = task.args[1].value if isinstance(task.args[1], DataNode) else task.args[1]
            if not isinstance(index, tuple) or not all(isinstance(s, slice) for s in index):
                return None
            getitems.append(index)
            key = task.args[0].key
            continue
        if name == "getter" and isinstance(task.args[0], TaskRef):
            index = task.args[1].value if isinstance(task.args[1], DataNode) else task.args[1]
            if not isinstance(index, tuple) or not all(isinstance(s, slice) for s in index):
                return None
            return task.args[0].key, index, list(reversed(getitems))
        return None
    return None


# -- the replacement task -----------------------------------------------------------------
_warned: set[str] = set()
_warn_lock = threading.Lock()


def warn_once(reason: str) -> None:
    """One warning per distinct reason per process."""
    with _warn_lock:
        if reason in _warned:
            return
        _warned.add(reason)
    warnings.warn(f"h5dask active storage: {reason}; reducing locally instead",
                  ActiveStorageWarning, stacklevel=3)


def _compose(shape: tuple[int, ...], first: tuple, rest: list[tuple]) -> tuple[slice, ...]:
    """Compose the getter's slices and later getitems into slices of the stored array."""
    current = [slice(*s.indices(n)) for s, n in zip(first, shape)]
    for index in rest:
        new = []
        for cur, s in zip(current, index):
            length = len(range(cur.start, cur.stop, cur.step))
            start, stop, step = s.indices(length)
            new.append(slice(cur.start + start * cur.step, cur.start + stop * cur.step,
                             cur.step * step))
        current = new
    return tuple(current)


def _ascending(region: tuple[slice, ...]) -> tuple[tuple[slice, ...], tuple[int, ...]]:
    """``region`` with each negative-step slice (as :func:`_compose` gives it: a range,
    whose stop may be -1) turned into the ascending slice over the same elements, and the
    axes so turned. A reduction over a turned axis is the same; a kept one comes back
    in ascending order, to be flipped.

    Example::

        >>> _ascending((slice(10, -1, -3), slice(0, 4, 1)))
        ((slice(1, 11, 3), slice(0, 4, 1)), (0,))
    """
    out: list[slice] = []
    turned: list[int] = []
    for axis, s in enumerate(region):
        if s.step > 0:
            out.append(s)
            continue
        elements = range(s.start, s.stop, s.step)
        out.append(slice(elements[-1], elements[0] + 1, -s.step) if elements
                   else slice(0, 0, 1))
        turned.append(axis)
    return tuple(out), tuple(turned)


def chunk_request_body(source: ArraySource, index: tuple[int, ...], chunk_sel: tuple,
                       axis: tuple[int, ...], fills: tuple, skip_nan: bool) -> dict | None:
    """The Reductionist request for one chunk object, or None when the chunk is not
    stored (a linked chunk the source file never wrote: it is reduced locally, from its
    fill value); raises ValueError saying why the chunk cannot be reduced remotely."""
    dtype = source.dtype
    if dtype.name not in REDUCTIONIST_DTYPES and np.dtype(dtype.str.replace(">", "<")).name \
            not in REDUCTIONIST_DTYPES:
        raise ValueError(f"dtype {dtype} is not one the Reductionist API supports")
    codec = source.codec
    if codec.bitshuffle or (codec.fletcher32 and codec.hdf5_native):
        raise ValueError("bitshuffle/fletcher32 chunks cannot be reduced remotely")
    if codec.hdf5_native and codec.compressor_codec is not None \
            and not codec.compressor_codec.linkable:
        # HDF5's LZ4/Zstd/Blosc2 plugin framings are not what the server decodes
        raise ValueError(f"{codec.compressor} chunks as HDF5 wrote them cannot be decoded "
                         "by the server")
    body: dict[str, Any] = {
        "interface_type": "s3",
        "dtype": np.dtype(dtype.str.replace(">", "<")).name,
        "byte_order": "big" if dtype.byteorder == ">" else "little",
        "shape": list(source.chunks),
        "selection": [[s.start, s.stop, s.step] for s in chunk_sel],
        "axis": list(axis),
    }
    if source.linked is not None:
        ref = source._linked_ref(index)
        if ref is None:
            return None
        store = ref.store
        key = ref.key
        body["offset"], body["size"] = ref.offset, ref.size
    else:
        store = source.store
        key = source.chunk_key(index)
    url = store.object_url(key)
    if url is None:
        raise ValueError(f"{store.root_url} is not an S3 endpoint the server can read")
    body["url"] = url
    compressor = codec.compressor_codec
    if compressor is not None:
        if not compressor.reductionist:
            raise ValueError(f"{compressor.name} chunks cannot be decoded by the server")
        body["compression"] = {"id": compressor.reductionist[0]}
    # a Blosc frame undoes its own shuffle: a shuffle filter sent with "blosc" would be
    # undone twice (HSDS stores gzip as a Blosc frame too; the server detects that case)
    shuffled_inside = "compression" in body and body["compression"]["id"] == "blosc"
    if codec.shuffle and not shuffled_inside:
        body["filters"] = [{"id": "shuffle", "element_size": dtype.itemsize}]
    if fills:
        body["missing"] = {"missing_values": [v.item() if hasattr(v, "item") else v
                                              for v in fills]}
    if skip_nan and dtype.kind == "f":
        body["skip_nan"] = True
    return body


def chunk_credentials(source: ArraySource, index: tuple[int, ...]) -> tuple[str, str] | None:
    """The credentials the server may use for one chunk: those of the store holding it.
    A linked chunk may live in a store opened with other settings than the domain's (a
    prefix the reader allowed); the domain's keys must never be sent along with a URL of
    another endpoint or account."""
    ref = source._linked_ref(index) if source.linked is not None else None
    return (ref.store if ref is not None else source.store).server_credentials()


#: servers that refused the ``sum_int64`` extension (a strict Reductionist): their
#: integer sums are reduced locally, without asking them again (for this process)
_refused_sum_int64: set[str] = set()


def _needs_sum_int64(dtype: np.dtype, op: str) -> bool:
    """Whether a sum of ``dtype`` asks the server to accumulate in 64 bits."""
    return op == "sum" and dtype.kind in "iu" and dtype.itemsize < 8


async def _remote_block(source: ArraySource, region: tuple[slice, ...], red: BlockReduction,
                        fills: tuple, server: str, op: str
                        ) -> tuple[np.ndarray, np.ndarray] | None:
    """Reduced values and counts of one block (keepdims shape), or None if a chunk of it
    does not exist, or the server cannot sum it in 64 bits (then the block is reduced
    locally)."""
    sum_int64 = _needs_sum_int64(source.dtype, op)
    if sum_int64 and server in _refused_sum_int64:
        return None
    plan = source.grid.plan(region)
    block_shape = tuple(len(range(s.start, s.stop, s.step)) for s in region)
    if red.kind in ("mean", "imean", "nansum") and source.dtype.kind in "iu" and \
            not mean_sum_is_exact(source.dtype, math.prod(block_shape)):
        # rewrite_graph leaves such blocks to dask: this guards the int64 sum regardless
        raise ValueError(f"the sum of a block of {math.prod(block_shape)} {source.dtype} "
                         "values could leave the range where it is exact")
    out_shape = tuple(1 if i in red.axis else n for i, n in enumerate(block_shape))
    requests = []
    for piece in plan:
        body = chunk_request_body(source, piece.index, piece.chunk_sel, red.axis, fills,
                                  skip_nan=True)
        if body is None:
            return None  # an unstored chunk: the block is reduced locally
        if sum_int64:
            body["sum_int64"] = True  # a chunk's sum in the stored dtype could wrap around
        requests.append(reduce_remote(server, ChunkRequest(op, body),
                                      chunk_credentials(source, piece.index)))
    answers = await asyncio.gather(*requests, return_exceptions=True)
    errors = [a for a in answers if isinstance(a, BaseException)]
    if sum_int64 and any(isinstance(e, ActiveStorageUnavailable)
                         and e.refuses_field("sum_int64") for e in errors):
        # not a failure: this server cannot sum these integers without wrapping around
        # (Reductionist has no such field), so they are not pushed down to it
        _refused_sum_int64.add(server)
        return None
    if errors:
        raise errors[0]
    replies = [a for a in answers if not isinstance(a, BaseException)]
    if any(r is None for r in replies):
        return None
    if op in ("min", "max") and source.dtype.kind == "f":
        # Reductionist folds from the largest finite value (min) / the lowest (max): a
        # chunk of infinities answers that bound, indistinguishable from a stored one
        info = np.finfo(source.dtype)
        bound = info.max if op == "min" else info.min
        if any(np.any((r.counts > 0) & (r.values == bound)) for r in replies):
            return None  # reduced locally, where an infinity stays one
    if op in ("min", "max"):
        # integers are combined in their own dtype: through float64 an int64 beyond 2**53
        # would come back as a neighbour
        acc, start = _extreme_accumulator(source.dtype, op)
    else:
        acc = np.dtype(np.float64 if source.dtype.kind == "f" else np.int64)
        start = 0
    values = np.full(out_shape, start, dtype=acc)
    counts = np.zeros(out_shape, dtype=np.int64)
    for piece, reply in zip(plan, replies):
        sel = tuple(slice(0, 1) if i in red.axis else s for i, s in enumerate(piece.out_sel))
        piece_shape = tuple(1 if i in red.axis else s.stop - s.start
                            for i, s in enumerate(piece.out_sel))
        v = reply.values.astype(acc).reshape(piece_shape)
        c = reply.counts.reshape(piece_shape)
        if op in ("min", "max"):
            v = np.where(c > 0, v, start)
            combine = np.minimum if op == "min" else np.maximum
            values[sel] = combine(values[sel], v)
        elif op == "sum":
            values[sel] += v
        counts[sel] += c
    return values, counts


def mean_sum_is_exact(dtype: np.dtype, n: int) -> bool:
    """Whether a pushed-down mean of ``n`` values of integer ``dtype`` is the number
    dask computes: the server's int64 sum cannot overflow, and dask's float64 sum (of
    any of its partial sums) stays within 2**53, where every integer is a float64, so
    no addition of it rounds. Larger blocks are left to dask.

    Example::

        >>> mean_sum_is_exact(np.dtype("i4"), 2**22), mean_sum_is_exact(np.dtype("i4"),
        ...     2**22 + 1), mean_sum_is_exact(np.dtype("i8"), 1)
        (True, False, False)
    """
    return decoded_sum_is_exact(dtype, n)


def decoded_sum_is_exact(dtype: np.dtype, n: int, scale: Any = None, offset: Any = None,
                         float_dtype: Any = np.float64) -> bool:
    """Whether the server's answer for the sum of ``n`` values of integer ``dtype``
    decoded as ``scale * v + offset`` (``s * sum + o * n``, from its exact int64 sum) is
    the number dask gives, summing the decoded values in ``float_dtype``.

    dask rounds each decoded value and each partial sum, in an order the server does not
    follow; the two agree when nothing rounds: ``s`` a power of two, ``o`` a whole
    multiple of it, and ``n * (max |v| + |o / s|)`` within ``2**(mantissa bits + 1)``
    (2**53 for float64), so every decoded value and every partial sum is a whole
    multiple of ``s`` that ``float_dtype`` holds. Other scales (0.1) and larger blocks
    are left to dask.

    Example::

        >>> i4 = np.dtype("i4")
        >>> decoded_sum_is_exact(i4, 1000, 0.5, 1.0), decoded_sum_is_exact(i4, 1000, 0.1)
        (True, False)
        >>> decoded_sum_is_exact(i4, 2**22), decoded_sum_is_exact(i4, 2**22, 1.0, 1.0)
        (True, False)
    """
    info = np.iinfo(dtype)
    fl = np.finfo(float_dtype)
    s = 1.0 if scale is None else float(scale)
    o = 0.0 if offset is None else float(offset)
    if not (math.isfinite(s) and math.isfinite(o)) or s == 0 or \
            math.frexp(abs(s))[0] != 0.5 or not abs(s) >= float(fl.tiny):
        return False  # not a (normal) power of two: s * v rounds
    k = o / s  # exact: s is a power of two
    if not k.is_integer():
        return False  # v + o / s is no whole number: s * v + o rounds
    limit = 2 ** (fl.nmant + 1)
    if n * (max(abs(int(info.min)), int(info.max)) + abs(int(k))) > limit:
        return False
    return abs(s) * limit <= float(fl.max)


def _extreme_accumulator(dtype: np.dtype, op: str) -> tuple[np.dtype, Any]:
    """The dtype a block's min/max is combined in and the value it starts from: the
    integer dtype itself and its largest/lowest value, else float64 and +/-inf.

    Example::

        >>> _extreme_accumulator(np.dtype(">i8"), "min")
        (dtype('int64'), np.int64(9223372036854775807))
    """
    if dtype.kind in "iu":
        native = dtype.newbyteorder("=")
        info = np.iinfo(native)
        return native, native.type(info.max if op == "min" else info.min)
    return np.dtype(np.float64), np.float64(np.inf if op == "min" else -np.inf)


def _finish(red: BlockReduction, values: np.ndarray, counts: np.ndarray, dec: Decoding,
            out_dtype: Any) -> Any:
    scale = 1.0 if dec.scale is None else float(dec.scale)
    offset = 0.0 if dec.offset is None else float(dec.offset)
    decoded = dec.scale is not None or dec.offset is not None
    if red.kind in ("mean", "imean", "nansum", "isum"):
        total = values * scale + offset * counts if decoded else values
        if red.kind in ("mean", "imean"):
            dt = red.dtype
            return {"n": counts.astype(dt), "total": np.asarray(total, dtype=dt)}
        return np.asarray(total, dtype=red.dtype or total.dtype)
    if red.kind == "count":
        return counts.astype(red.dtype or np.int64)
    if red.kind in ("imin", "imax"):  # undecoded integers, every count positive (run_block)
        return values.astype(out_dtype)
    ext = values.astype(out_dtype) if decoded else values
    if decoded:  # as xarray decodes: convert, then scale and offset in the decoded dtype
        if dec.scale is not None:
            ext *= dec.scale
        if dec.offset is not None:
            ext += dec.offset
    ext = np.where(counts > 0, ext, np.nan)
    return ext.astype(out_dtype)


@dataclass(frozen=True)
class _BlockRequest:
    """What one replacement task asks the server: its chunks' reductions."""

    source: ArraySource
    region: tuple[slice, ...]
    red: BlockReduction
    fills: tuple
    url: str
    op: str
    #: axes the user's selection reverses: the server reduces their elements in
    #: ascending order, and the answer is flipped along those of them that are kept
    reversed_axes: tuple[int, ...] = ()

    def key(self) -> tuple:
        return (self.url, self.source.store.identity, self.source.dataset_id,
                tuple((s.start, s.stop, s.step) for s in self.region), self.red, self.op,
                repr(self.fills))


def _block_request(info: SourceInfo, getter_slices: tuple, getitems: list,
                   red: BlockReduction) -> _BlockRequest:
    array = info.array
    shifted = tuple(slice(s.start + o if s.start is not None else o,
                          s.stop + o if s.stop is not None else None, s.step)
                    for s, o in zip(getter_slices, info.origin))
    region, reversed_axes = _ascending(_compose(array.shape, shifted, getitems))
    dec = info.decoding
    op = {"mean": "sum", "imean": "sum", "nansum": "sum", "isum": "sum", "count": "count",
          "min": "min", "max": "max", "imin": "min", "imax": "max"}[red.kind]
    if dec.scale is not None and float(dec.scale) < 0 and op in ("min", "max"):
        op = "max" if op == "min" else "min"  # a negative scale swaps the extremes
    return _BlockRequest(array.source, region, red, dec.fill_values, array.active.url, op,
                         reversed_axes)


# replies of queued tasks' requests, sent ahead (see h5dask.readahead): key -> (future, owner)
_ahead: dict[tuple, tuple[Any, Any]] = {}
_ahead_lock = threading.Lock()
MAX_AHEAD = 64
ahead_counts = {"sent": 0, "used": 0}  # for tests and benchmarks


def send_ahead(task: Any, value_of: Any, owner: Any) -> bool:
    """If ``task`` is a replacement task, send its request now; False when enough are
    already waiting (the caller stops looking further ahead)."""
    from ..storage.sync import io_loop

    if getattr(task, "func", None) is not _run or len(task.args) != 6:
        return True
    adapter = private_api.load()

    def value(arg: Any) -> Any:
        if isinstance(arg, adapter.TaskRef):
            return value_of(arg.key)
        return arg.value if isinstance(arg, adapter.DataNode) else arg

    original, getter_slices, getitems, red = (value(a) for a in task.args[:4])
    info = find_source(original)
    if info is None:
        return True
    req = _block_request(info, getter_slices, getitems, red)
    key = req.key()
    with _ahead_lock:
        if key in _ahead:
            return True
        if len(_ahead) >= MAX_AHEAD:
            return False
        future = asyncio.run_coroutine_threadsafe(_remote_block(
            req.source, req.region, req.red, req.fills, req.url, req.op), io_loop())
        _ahead[key] = (future, owner)
        ahead_counts["sent"] += 1
    return True


def forget_ahead(owner: Any) -> None:
    """Drop the replies sent ahead for ``owner`` (a finished computation)."""
    with _ahead_lock:
        for key in [k for k, (_, o) in _ahead.items() if o is owner]:
            _ahead.pop(key)[0].cancel()


def _reply(req: _BlockRequest) -> Any:
    with _ahead_lock:
        found = _ahead.pop(req.key(), None)
    if found is not None:
        try:
            result = found[0].result()
            with _ahead_lock:
                ahead_counts["used"] += 1
            return result
        except (ActiveStorageUnavailable, ValueError):
            pass  # asked again below, where the error is reported
    return sync(_remote_block(req.source, req.region, req.red, req.fills, req.url, req.op))


def run_block(original: Any, getter_slices: tuple, getitems: list, red: BlockReduction,
              local: Any) -> Any:
    """The replacement task: reduce one block on the server, or locally as a fallback."""
    info = find_source(original)
    assert info is not None
    array = info.array
    cfg: ActiveConfig = array.active
    req = _block_request(info, getter_slices, getitems, red)
    dec = info.decoding
    out_dtype = dec.dtype or array.dtype
    try:
        result = _reply(req)
    except (ActiveStorageUnavailable, ValueError) as exc:
        if cfg.require:
            raise ActiveStorageError(
                f"variable {array.variable_name!r}: cannot reduce on {cfg.url}: {exc}") from exc
        warn_once(f"variable {array.variable_name!r}: {exc}")
        result = None
    if result is None or (red.kind in ("imin", "imax") and not result[1].all()):
        # an empty block: chunk_min/chunk_max answer an empty array there, not a number
        return local()
    kept_reversed = tuple(a for a in req.reversed_axes if a not in red.axis)
    if kept_reversed:  # the server answered those axes in ascending order
        result = tuple(np.flip(part, axis=kept_reversed) for part in result)
    return _finish(red, *result, dec, out_dtype)


class LocalBlock:
    """The original computation of a block, kept for the fallback (picklable)."""

    def __init__(self, original: Any, getter_slices: tuple, getitems: list, kind: str,
                 func: Any, kwargs: dict) -> None:
        self.original, self.getter_slices, self.getitems = original, getter_slices, getitems
        self.kind, self.func, self.kwargs = kind, func, kwargs

    def __call__(self) -> Any:
        from dask.array.core import getter

        x = getter(self.original, self.getter_slices)
        for index in self.getitems:
            x = x[index]
        if self.kind == "nansum":
            x = np.where(np.isnan(x), 0, x)
        elif self.kind == "count":
            x = np.logical_not(np.isnan(x))
        return self.func(x, **self.kwargs)


def _run(original: Any, getter_slices: tuple, getitems: list, red: BlockReduction,
         func: Any, kwargs: dict) -> Any:
    local = LocalBlock(original, getter_slices, getitems, red.kind, func, kwargs)
    return run_block(original, getter_slices, getitems, red, local)


# -- the graph optimisation ---------------------------------------------------------------
_health: dict[str, tuple[float, str | None]] = {}
#: any valid key: asks a store whether its objects have URLs the server can GET
_PROBE_KEY = "db/probe"


def _server_problem(url: str) -> str | None:
    cached = _health.get(url)
    if cached and time.monotonic() - cached[0] < 30:
        return cached[1]
    problem = sync(check_server(url))
    _health[url] = (time.monotonic(), problem)
    return problem


def _static_problem(info: SourceInfo) -> str | None:
    source: ArraySource = info.array.source
    dt = source.dtype
    if np.dtype(dt.str.replace(">", "<")).name not in REDUCTIONIST_DTYPES:
        return f"dtype {dt} of {info.array.variable_name!r} is not supported by Reductionist"
    store = source.linked[0][1].store if source.linked else source.store
    if store.object_url(_PROBE_KEY) is None:
        return f"{store.root_url} is not on an S3 endpoint the server reads"
    if source.codec.bitshuffle:
        return f"bitshuffle chunks of {info.array.variable_name!r}"
    return None


def rewrite_graph(tasks: dict) -> dict:
    """Replace recognised per-block reductions over active variables (see module doc)."""
    adapter = private_api.load()
    DataNode, Task, TaskRef = adapter.DataNode, adapter.Task, adapter.TaskRef  # noqa: N806
    sources: dict[Any, SourceInfo] = {}
    for key, value in tasks.items():
        obj = value.value if isinstance(value, DataNode) else value
        if isinstance(obj, adapter.lazy_wrappers):
            info = find_source(obj)
            if info is not None:
                sources[key] = info
    if not sources:
        return tasks
    with _warn_lock:
        _warned.clear()  # one warning per reason per computation
    problems: dict[Any, str | None] = {}
    for key, info in sources.items():
        problem = _static_problem(info) or _server_problem(info.array.active.url)
        if problem and info.array.active.require:
            raise ActiveStorageError(f"cannot push down: {problem}")
        if problem:
            warn_once(problem)
        problems[key] = problem
    out = dict(tasks)
    for key, task in tasks.items():
        if not isinstance(task, Task):
            continue
        found = _classify(task, tasks)
        if found is None:
            continue
        red, xkey = found
        traced = _trace_block(xkey, tasks)
        if traced is None:
            continue
        src_key, getter_slices, getitems = traced
        if src_key not in sources or problems.get(src_key):
            continue
        info = sources[src_key]
        is_float = np.dtype(info.decoding.dtype or info.array.dtype).kind == "f"
        if red.kind in ("imin", "imax", "isum", "imean") and (
                is_float or info.decoding.fill_values):
            continue  # NaN/fill semantics of the plain functions differ: leave to dask
        if info.array.active.url in _refused_sum_int64 and red.kind in (
                "mean", "imean", "nansum", "isum") and _needs_sum_int64(info.array.dtype,
                                                                       "sum"):
            continue  # this server refused to sum integers in 64 bits: left to dask
        if red.kind in ("mean", "imean", "nansum") and info.array.dtype.kind in "iu":
            # integers summed in floats by dask (plain, masked or packed ones): pushed
            # down only where its sum cannot round, so that the answer is its number
            # (this also keeps 64-bit integers, whose int64 sum could wrap, to dask)
            region = _block_request(info, getter_slices, getitems, red).region
            n = math.prod(len(range(s.start, s.stop, s.step)) for s in region)
            dec = info.decoding
            floats = [np.dtype(d) for d in (dec.dtype, red.dtype)
                      if d is not None and np.dtype(d).kind == "f"]
            narrowest = min(floats, key=lambda d: np.finfo(d).nmant,
                            default=np.dtype(np.float64))
            if not decoded_sum_is_exact(info.array.dtype, n, dec.scale, dec.offset,
                                        narrowest):
                continue
        elif red.kind == "isum" and red.dtype is not None and \
                np.dtype(red.dtype).kind == "f":
            # sum(dtype=float) of integers: dask sums in that float, rounding each value
            # and partial sum; pushed down only where nothing can round
            region = _block_request(info, getter_slices, getitems, red).region
            n = math.prod(len(range(s.start, s.stop, s.step)) for s in region)
            if not decoded_sum_is_exact(info.array.dtype, n, None, None, red.dtype):
                continue
        func = task.func
        out[key] = Task(key, _run, TaskRef(src_key), DataNode(None, getter_slices),
                        DataNode(None, getitems), DataNode(None, red), DataNode(None, func),
                        DataNode(None, dict(task.kwargs)))
    return out


_previous_optimize: list[Any] = []  # what array_optimize was before install()


def pushdown_optimize(dsk: Any, keys: Any, **kwargs: Any) -> Any:
    """dask's ``array_optimize``: the push-down rewrite, then the optimisation that was
    configured before (dask's own unless the user had set another)."""
    from dask.array.optimization import optimize
    from dask.utils import ensure_dict

    tasks = ensure_dict(dsk)
    try:
        rewritten = rewrite_graph(tasks)
    except private_api.PushdownUnsupportedError as exc:
        # "require" opens already failed on this; "auto" ones reduce locally, said once
        warn_once(str(exc))
        rewritten = tasks
    following = _previous_optimize[0] if _previous_optimize and _previous_optimize[0] else \
        optimize
    return following(rewritten if rewritten is not tasks else dsk, keys, **kwargs)


def install() -> None:
    """Make dask run :func:`pushdown_optimize` for arrays (idempotent, process-wide).

    dask has one array optimisation hook per process (``array_optimize``); the previous
    value is kept and run after the rewrite, and graphs without h5dask variables that
    have active storage are passed through unchanged. :func:`uninstall` restores it.
    """
    import dask

    current = dask.config.get("array_optimize", None)
    if current is not pushdown_optimize:
        _previous_optimize[:] = [current]
        dask.config.set({"array_optimize": pushdown_optimize})


def uninstall() -> None:
    """Restore the ``array_optimize`` that was configured before :func:`install`."""
    import dask

    if dask.config.get("array_optimize", None) is pushdown_optimize:
        dask.config.set({"array_optimize": _previous_optimize[0] if _previous_optimize
                         else None})
        _previous_optimize.clear()


def enable_pushdown(config: ActiveConfig) -> None:
    """Check that pushdown works with the installed dask and xarray, then install it.

    With ``active_storage="require"`` an incompatible dask/xarray raises
    :class:`~h5dask.private_api.PushdownUnsupportedError`; with ``"auto"`` one
    :class:`ActiveStorageWarning` says that reductions will be computed locally.
    """
    try:
        private_api.load()
    except private_api.PushdownUnsupportedError as exc:
        if config.require:
            raise
        warn_once(str(exc))
        return
    install()


__all__ = ["ActiveConfig", "ActiveStorageError", "ActiveStorageWarning", "enable_pushdown",
           "install", "pushdown_optimize", "rewrite_graph", "uninstall"]
