"""The Reductionist v2 request body: a frozen dataclass parsed and validated from JSON.

Every problem raises :class:`~h5dask.active.errors.FieldError` (HTTP 400) naming the
field, so a client learns exactly which part of its request is wrong.

Example::

    >>> req = ReductionRequest.from_json(
    ...     b'{"interface_type": "s3", "url": "http://127.0.0.1:9000/bucket/key",'
    ...     b' "dtype": "int32", "shape": [2, 3], "axis": 1}'
    ... )
    >>> req.shape, req.axis, req.order
    ((2, 3), (1,), 'C')
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from h5dask.active.errors import ActiveStorageError, FieldError
from h5dask.format import codecs

__all__ = [
    "COMPRESSIONS",
    "compressions",
    "DTYPES",
    "FILTERS",
    "INTERFACE_TYPES",
    "MISSING_KINDS",
    "NATIVE_BYTE_ORDER",
    "OPERATIONS",
    "Filter",
    "Missing",
    "ReductionRequest",
    "Slice",
    "parse_json_body",
]

OPERATIONS = ("count", "max", "min", "select", "sum")
DTYPES = ("int32", "int64", "uint32", "uint64", "float32", "float64")
INTERFACE_TYPES = ("s3", "http", "https")
# "blosc" is our extension (numcodecs' Blosc codec id, what PyActiveStorage sends for it).
# The ids come from the codec registry (each codec's ``reductionist``); this tuple is the
# built-in ones, :func:`compressions` the current ones (tests may register more).
def compressions() -> tuple[str, ...]:
    """The compression ids the server accepts, sorted."""
    return tuple(sorted({cid for c in codecs.all_codecs() for cid in c.reductionist}))


COMPRESSIONS = compressions()
FILTERS = ("shuffle", "shuffle_simd")
MISSING_KINDS = ("missing_value", "missing_values", "valid_min", "valid_max", "valid_range")
NATIVE_BYTE_ORDER: str = sys.byteorder
MAX_NDIM = 32
MAX_URL_LENGTH = 8192

_REQUIRED = ("interface_type", "url", "dtype")
_OPTIONAL = (
    "byte_order",
    "offset",
    "size",
    "shape",
    "axis",
    "order",
    "selection",
    "compression",
    "filters",
    "missing",
    "option_disable_chunk_cache",
    "option_shape_as_bytes",
    "option_count_as_bytes",
    # h5dask extension: NaN elements of float data are missing too (xarray's skipna);
    # strict Reductionist servers reject the field, and h5dask then reduces locally
    "skip_nan",
    # h5dask extension: sums of 8-, 16- and 32-bit integers accumulate in 64 bits (the
    # reply's dtype is int64/uint64) instead of wrapping around in the stored dtype
    "sum_int64",
)
_FIELDS = frozenset(_REQUIRED + _OPTIONAL)


@dataclass(frozen=True)
class Slice:
    """One ``[start, end, stride]`` of a selection, with NumPy slice semantics (negative
    indices count from the end, out-of-range ones are clamped, as Reductionist does)."""

    start: int
    end: int
    stride: int

    def to_slice(self) -> slice:
        """The Python slice, e.g. ``Slice(5, 0, -2).to_slice() == slice(5, 0, -2)``."""
        return slice(self.start, self.end, self.stride)


@dataclass(frozen=True)
class Filter:
    """A filter to undo after decompression, e.g. ``Filter("shuffle", 4)``."""

    id: str
    element_size: int


@dataclass(frozen=True)
class Missing:
    """Missing-data description: ``kind`` is one of :data:`MISSING_KINDS`.

    ``values`` holds the value(s) already converted to the request's dtype (as Python
    numbers); ``valid_range`` has two, ``missing_values`` any number, the others one.
    """

    kind: str
    values: tuple[int | float, ...]


@dataclass(frozen=True)
class ReductionRequest:
    """A validated Reductionist v2 request (the JSON body of ``POST /v2/{operation}/``).

    ``axis`` is None to reduce over all axes, else a sorted tuple (``()`` reduces over
    no axis). ``size`` None means "to the end of the object".
    """

    interface_type: str
    url: str
    dtype: str
    byte_order: str = NATIVE_BYTE_ORDER
    offset: int = 0
    size: int | None = None
    shape: tuple[int, ...] | None = None
    order: str = "C"
    selection: tuple[Slice, ...] | None = None
    axis: tuple[int, ...] | None = None
    compression: str | None = None
    filters: tuple[Filter, ...] = field(default=())
    missing: Missing | None = None
    option_disable_chunk_cache: bool = False
    option_shape_as_bytes: bool = False
    option_count_as_bytes: bool = False
    skip_nan: bool = False
    sum_int64: bool = False

    # -- derived ---------------------------------------------------------------------

    @property
    def itemsize(self) -> int:
        """Bytes per element of ``dtype``."""
        return np.dtype(self.dtype).itemsize

    @property
    def stored_dtype(self) -> np.dtype:
        """The NumPy dtype of the stored bytes, with the request's byte order."""
        return np.dtype(self.dtype).newbyteorder("<" if self.byte_order == "little" else ">")

    def check_data_size(self, nbytes: int, what: str = "data") -> None:
        """Raise a 400 :class:`FieldError` unless ``nbytes`` of decoded data fit dtype/shape.

        Example::

            >>> req = ReductionRequest("s3", "http://h:1/b/k", "int32", shape=(2,))
            >>> req.check_data_size(8)
        """
        if self.shape is not None:
            expected = math.prod(self.shape) * self.itemsize
            if nbytes != expected:
                raise FieldError(
                    "shape",
                    f"shape {list(self.shape)} of {self.dtype} needs {expected} bytes "
                    f"but the {what} has {nbytes} bytes",
                )
        elif nbytes % self.itemsize:
            raise FieldError(
                "size",
                f"the {what} has {nbytes} bytes, not a multiple of the {self.dtype} "
                f"size {self.itemsize}",
            )

    # -- parsing ---------------------------------------------------------------------

    @classmethod
    def from_json(cls, body: bytes | str) -> ReductionRequest:
        """Parse and validate a JSON request body (see the module example)."""
        return cls.from_dict(parse_json_body(body))

    @classmethod
    def from_dict(cls, data: Any) -> ReductionRequest:
        """Validate a decoded JSON object; raise :class:`FieldError` naming the bad field.

        Example::

            >>> ReductionRequest.from_dict(
            ...     {"interface_type": "http", "url": "http://h:1/x", "dtype": "float64"}
            ... ).dtype
            'float64'
        """
        if not isinstance(data, Mapping):
            raise ActiveStorageError(400, "request data is not valid: body must be a JSON object")
        for key in data:
            if key not in _FIELDS:
                raise FieldError(
                    str(key), f"unknown field; expected one of {', '.join(sorted(_FIELDS))}"
                )
        # null is the same as absent, as in Reductionist (serde's Option).
        d = {k: v for k, v in data.items() if v is not None}
        for key in _REQUIRED:
            if key not in d:
                raise FieldError(key, "missing required field")

        interface_type = _choice(d, "interface_type", INTERFACE_TYPES)
        url = _url(d["url"])
        dtype = _choice(d, "dtype", DTYPES)
        byte_order = _choice(d, "byte_order", ("big", "little"), NATIVE_BYTE_ORDER)
        offset = _int(d, "offset", minimum=0, default=0)
        size = _int(d, "size", minimum=1, default=None)
        shape = _shape(d.get("shape"))
        order = _choice(d, "order", ("C", "F"), "C")
        selection = _selection(d.get("selection"), shape)
        axis = _axis(d.get("axis"), shape)
        compression = _compression(d.get("compression"))
        filters = _filters(d.get("filters"))
        missing = _missing(d.get("missing"), dtype)
        options = {
            name: _bool(d, name)
            for name in (
                "option_disable_chunk_cache",
                "option_shape_as_bytes",
                "option_count_as_bytes",
                "skip_nan",
                "sum_int64",
            )
        }
        req = cls(
            interface_type=interface_type,
            url=url,
            dtype=dtype,
            byte_order=byte_order,
            offset=offset,
            size=size,
            shape=shape,
            order=order,
            selection=selection,
            axis=axis,
            compression=compression,
            filters=filters,
            missing=missing,
            **options,
        )
        if size is not None and compression is None:
            # Compressed sizes can only be checked after decompression.
            req.check_data_size(size, what="requested size")
        return req


# -- JSON ----------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def parse_json_body(body: bytes | str) -> Any:
    """Decode strict JSON (no NaN/Infinity, no duplicate keys); 400 error when malformed.

    Example::

        >>> parse_json_body(b'{"a": 1}')
        {'a': 1}
    """
    try:
        text = body.decode("utf-8") if isinstance(body, bytes | bytearray) else body
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ActiveStorageError(
            400, "request data is not valid: body is not valid JSON", [str(exc)[:200]]
        ) from None


# -- field validators ------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _choice(d: Mapping[str, Any], name: str, allowed: tuple[str, ...], default: Any = None) -> Any:
    if name not in d:
        return default
    value = d[name]
    if not isinstance(value, str) or value not in allowed:
        raise FieldError(name, f"got {_show(value)}; expected one of {', '.join(allowed)}")
    return value


def _int(d: Mapping[str, Any], name: str, minimum: int, default: int | None) -> int | None:
    if name not in d:
        return default
    value = d[name]
    if not _is_int(value):
        raise FieldError(name, f"must be an integer, got {_show(value)}")
    if value < minimum or value >= 2**63:
        raise FieldError(name, f"must be >= {minimum} (and < 2**63), got {value}")
    return value


def _bool(d: Mapping[str, Any], name: str) -> bool:
    value = d.get(name, False)
    if not isinstance(value, bool):
        raise FieldError(name, f"must be true or false, got {_show(value)}")
    return value


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _url(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise FieldError("url", "must be a non-empty string")
    if len(value) > MAX_URL_LENGTH:
        raise FieldError("url", f"longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in value):
        raise FieldError("url", "must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a bad port
    except ValueError as exc:
        raise FieldError("url", f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise FieldError("url", f"scheme must be http or https, got {parts.scheme!r}")
    if not parts.hostname:
        raise FieldError("url", "has no host")
    return value


def _shape(value: Any) -> tuple[int, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value:
        raise FieldError("shape", "must be a non-empty list of positive integers")
    if len(value) > MAX_NDIM:
        raise FieldError("shape", f"has {len(value)} dimensions, more than {MAX_NDIM}")
    for n in value:
        if not _is_int(n) or n < 1 or n >= 2**63:
            raise FieldError("shape", f"entries must be positive integers, got {_show(n)}")
    return tuple(value)


def _selection(value: Any, shape: tuple[int, ...] | None) -> tuple[Slice, ...] | None:
    if value is None:
        return None
    if shape is None:
        raise FieldError("selection", "requires 'shape' to be given")
    if not isinstance(value, list) or len(value) != len(shape):
        raise FieldError(
            "selection", f"must be a list of {len(shape)} [start, end, stride] (one per dimension)"
        )
    out = []
    for dim, item in enumerate(value):
        if isinstance(item, Mapping) and set(item) == {"start", "end", "stride"}:
            item = [item["start"], item["end"], item["stride"]]
        if not isinstance(item, list) or len(item) != 3 or not all(_is_int(v) for v in item):
            raise FieldError(
                "selection", f"dimension {dim}: expected [start, end, stride] integers"
            )
        start, end, stride = item
        if stride == 0:
            raise FieldError("selection", f"dimension {dim}: stride must not be zero")
        # Reductionist's indices are 64-bit (isize); within that, out-of-range starts and
        # ends are clamped to the dimension as NumPy does (Reductionist's documented
        # semantics: [0, 10, 1] of a length-4 dimension selects its 4 elements)
        if not all(-(2**63) <= v < 2**63 for v in item):
            raise FieldError(
                "selection", f"dimension {dim}: [{start}, {end}, {stride}] exceeds 64 bits"
            )
        out.append(Slice(start, end, stride))
    return tuple(out)


def _axis(value: Any, shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    axes = [value] if _is_int(value) else value
    if not isinstance(axes, list) or not all(_is_int(a) for a in axes):
        raise FieldError("axis", f"must be an integer or a list of integers, got {_show(value)}")
    if shape is None:
        raise FieldError("axis", "requires 'shape' to be given")
    for a in axes:
        if not 0 <= a < len(shape):
            raise FieldError("axis", f"axis {a} is out of range for {len(shape)} dimensions")
    if len(set(axes)) != len(axes):
        raise FieldError("axis", f"contains duplicates: {axes}")
    if axes != sorted(axes):
        raise FieldError("axis", f"axes must be in ascending order: {axes}")
    return tuple(axes)


def _compression(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or set(value) != {"id"}:
        raise FieldError("compression", 'must be an object {"id": ...}')
    cid = value["id"]
    if not isinstance(cid, str) or codecs.by_reductionist(cid) is None:
        raise FieldError(
            "compression", f"unknown id {_show(cid)}; expected one of {', '.join(compressions())}"
        )
    return cid


def _filters(value: Any) -> tuple[Filter, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise FieldError("filters", "must be a list")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, Mapping) or "id" not in item:
            raise FieldError("filters", f"item {i}: must be an object with an 'id'")
        fid = item["id"]
        if fid not in FILTERS:
            expected = ", ".join(FILTERS)
            raise FieldError("filters", f"item {i}: unknown id {_show(fid)}; expected {expected}")
        if set(item) != {"id", "element_size"}:
            raise FieldError("filters", f"item {i}: {fid} takes exactly 'id' and 'element_size'")
        size = item["element_size"]
        if not _is_int(size) or not 1 <= size <= 255:
            raise FieldError("filters", f"item {i}: element_size must be an integer in 1..255")
        out.append(Filter(fid, size))
    return tuple(out)


def _missing(value: Any, dtype: str) -> Missing | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or len(value) != 1:
        raise FieldError(
            "missing", f"must be an object with exactly one of {', '.join(MISSING_KINDS)}"
        )
    ((kind, raw),) = value.items()
    if kind not in MISSING_KINDS:
        raise FieldError(
            "missing", f"unknown kind {kind!r}; expected one of {', '.join(MISSING_KINDS)}"
        )
    if kind == "missing_values":
        if not isinstance(raw, list):
            raise FieldError("missing", "missing_values must be a list")
        return Missing(kind, tuple(_typed_value(v, dtype, kind) for v in raw))
    if kind == "valid_range":
        if not isinstance(raw, list) or len(raw) != 2:
            raise FieldError("missing", "valid_range must be a list [min, max]")
        lo, hi = (_typed_value(v, dtype, kind) for v in raw)
        if not lo < hi:
            raise FieldError("missing", f"valid_range min must be less than max, got {raw}")
        return Missing(kind, (lo, hi))
    return Missing(kind, (_typed_value(raw, dtype, kind),))


def _typed_value(v: Any, dtype: str, kind: str) -> int | float:
    """``v`` as a value of ``dtype`` (as Reductionist: no floats for integer types)."""
    bad = FieldError("missing", f"{kind}: value {_show(v)} is incompatible with dtype {dtype}")
    if dtype.startswith(("int", "uint")):
        info = np.iinfo(dtype)
        if not _is_int(v) or not info.min <= v <= info.max:
            raise bad
        return v
    if not (_is_int(v) or isinstance(v, float)):
        raise bad
    try:
        f = float(v)
    except OverflowError:
        raise bad from None
    if dtype == "float32":
        with np.errstate(over="ignore"):
            f = float(np.float32(f))
    if not math.isfinite(f):
        raise bad
    return f
