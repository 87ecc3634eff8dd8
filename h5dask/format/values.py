"""JSON values (attribute values, fill values) <-> numpy arrays.

HSDS writes values as nested JSON lists in C order; a compound element is a list of
its field values; strings are JSON strings; NaN and infinities appear as the JSON
extensions ``NaN``/``Infinity`` (or as those words in strings).

>>> array_from_json([[1, 2], [3, 4]], np.dtype("<i4"), (2, 2)).sum()
np.int64(10)
>>> json_from_array(np.array([1.5, np.inf]))
[1.5, inf]
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np

from .ids import reference_id
from .types import VLEN_STR

_SPECIAL = {"NaN": math.nan, "nan": math.nan, "Infinity": math.inf, "inf": math.inf,
            "-Infinity": -math.inf, "-inf": -math.inf}


def _element(value: Any, dt: np.dtype, member: bool = False) -> Any:
    """One element converted to what numpy accepts for ``dt``; ``member``: inside a
    compound or a sequence, where variable-length strings are bytes (as h5py reads them)."""
    meta = dt.metadata or {}
    if dt.names:
        if isinstance(value, dict):
            value = [value[n] for n in dt.names]
        if not isinstance(value, list | tuple) or len(value) != len(dt.names):
            raise ValueError(f"compound value {value!r} does not match fields {dt.names}")
        return tuple(_element(v, dt.fields[n][0], member=True) for v, n in zip(value, dt.names))
    if dt.subdtype is not None:
        base, shape = dt.subdtype
        return _array(value, base, shape, member)
    if dt.kind == "O":
        vlen = meta.get("vlen")
        if vlen is str and member:
            return _to_bytes(value) if isinstance(value, str) else bytes(value)
        if vlen is str:
            return value if isinstance(value, str) else _to_str(value)
        if vlen is bytes:
            return _to_bytes(value) if isinstance(value, str) else bytes(value)
        if isinstance(vlen, np.dtype):  # in native byte order, as h5py reads sequences,
            # and strings inside them bytes (h5py's, in attributes as in datasets)
            return _array(value, vlen.newbyteorder("="), None, member=True)
        if "ref" in meta:  # the id alone, as chunks read ("datasets/d-..." -> "d-...")
            return reference_id(value)
        return value
    if dt.kind == "S":
        return _to_bytes(value) if isinstance(value, str) else value
    if dt.kind == "c":
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise ValueError(f"complex value {value!r} is not [real, imaginary]")
        real, imag = (_element(v, np.dtype(f"f{dt.itemsize // 2}")) for v in value)
        return complex(real, imag)
    if dt.kind == "V":  # opaque: base64 (HSDS), or a list of byte values (h5dask < 12/2026)
        return _opaque_bytes(value, dt)
    if dt.kind in "Mm":  # tagged opaque datetime64/timedelta64: base64, or the int64 count
        if isinstance(value, str):
            return np.frombuffer(_opaque_bytes(value, dt), dtype=dt)[0]
        if not isinstance(value, int):
            raise ValueError(f"{value!r} is not an integer count of {dt}")
        return np.array(value, dtype="i8").view(dt)[()]
    if dt.kind == "f" and isinstance(value, str):
        if value in _SPECIAL:
            return _SPECIAL[value]
        raise ValueError(f"{value!r} is not a number")
    if dt.kind in "iub" and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{value!r} is not an integer")
    if dt.kind in "iuf" and (isinstance(value, str) or value is None):
        raise ValueError(f"{value!r} is not a number")
    return value


def _opaque_bytes(value: Any, dt: np.dtype) -> bytes:
    """The bytes of one opaque element: HSDS (h5json) writes base64, ``""`` for all
    zeros; earlier h5dask versions wrote a list of byte values."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"opaque value {value[:40]!r} is not base64") from exc
        if raw and len(raw) != dt.itemsize:
            raise ValueError(f"opaque value of {len(raw)} bytes, its type has {dt.itemsize}")
        return raw.ljust(dt.itemsize, b"\0")
    if not isinstance(value, list) or len(value) != dt.itemsize:
        raise ValueError(f"opaque value {value!r} is not base64 or {dt.itemsize} byte values")
    return bytes(value)


def opaque_json(raw: bytes) -> str:
    """One opaque element as HSDS (h5json) writes opaque values, and the only form it
    reads: base64, ``""`` for all zeros."""
    return base64.b64encode(raw).decode("ascii") if any(raw) else ""


def _to_bytes(value: str) -> bytes:
    # surrogateescape undoes what json_from_array does to bytes that are not UTF-8
    return value.encode("utf-8", errors="surrogateescape")


def _to_str(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    raise ValueError(f"expected a string, got {value!r}")


def _array(value: Any, dt: np.dtype, shape: tuple[int, ...] | None,
           member: bool = False) -> np.ndarray:
    if shape is None:  # a variable-length sequence: one axis (its elements may be lists)
        nested = dt.kind == "O" or dt.names or dt.subdtype is not None
        shape = (len(value),) if nested and isinstance(value, list) else np.shape(value)
    if dt.subdtype is not None:
        # numpy turns a top-level sub-array dtype into trailing axes of its base type
        # (np.empty((), "(3,)i2").shape == (3,)), so read the value with those axes
        base, sub = dt.subdtype
        return _array(value, base, tuple(shape) + tuple(sub), member)
    count = math.prod(shape)
    if count == 0:
        return np.empty(shape, dtype=dt)
    # count the JSON value's elements before allocating: a dataspace may claim 2**40
    flat = _flatten(value, len(shape))
    if len(flat) != count:
        raise ValueError(f"value has {len(flat)} elements, shape {shape} needs {count}")
    out = np.empty(shape, dtype=dt)
    converted = [_element(v, dt, member) for v in flat]
    if dt.kind == "O":
        target = out.reshape(-1)
        for i, v in enumerate(converted):
            target[i] = v
        return out
    try:
        return np.array(converted, dtype=dt).reshape(shape)
    except (OverflowError, TypeError) as exc:
        raise ValueError(f"values do not fit dtype {dt}: {exc}") from exc


def _flatten(value: Any, ndim: int) -> list:
    if ndim == 0:
        return [value]
    if not isinstance(value, list | tuple):
        raise ValueError(f"expected a list for a {ndim}-d value, got {value!r}")
    out: list = []
    for v in value:
        out.extend(_flatten(v, ndim - 1))
    return out


def array_from_json(value: Any, dtype: np.dtype, shape: tuple[int, ...] | None) -> np.ndarray:
    """A numpy array of ``dtype`` and ``shape`` (``()`` scalar) from a JSON value.

    Raises ValueError saying what does not fit.
    """
    dtype = np.dtype(dtype)
    if shape is None:
        raise ValueError("a null dataspace has no values")
    return _array(value, dtype, tuple(shape))


def unwritten_value(dt: np.dtype) -> Any:
    """The value of an element nobody wrote in a dataset without a fill value, as h5py
    reads it: 0, and for variable-length parts an empty sequence or the empty string:
    ``""`` for a UTF-8 dataset (this layer and the xarray engine read those as str;
    ``h5dask.File`` gives bytes, as h5py), ``b""`` for ASCII and for
    every string inside a compound (h5py reads members as bytes); a null reference is
    None.

    >>> vs = np.dtype("O", metadata={"vlen": str})
    >>> unwritten_value(np.dtype([("n", "<i4"), ("s", vs, (2,))]))
    np.void((0, [b'', b'']), dtype=[('n', '<i4'), ('s', 'O', (2,))])
    """
    out = np.zeros((), dtype=dt)
    _blank_objects(out, member=False)
    return out[()]


def _blank_objects(arr: np.ndarray, member: bool) -> None:
    dt = arr.dtype
    if dt.names:
        for name in dt.names:
            _blank_objects(arr[name], member=True)  # a view: assignment reaches ``arr``
        return
    if dt.kind != "O":
        return
    vlen = (dt.metadata or {}).get("vlen")
    for idx in np.ndindex(arr.shape):  # each element its own (empty) sequence
        if isinstance(vlen, np.dtype):
            arr[idx] = np.array([], dtype=vlen.newbyteorder("="))
        elif vlen is str and not member:
            arr[idx] = ""
        else:
            arr[idx] = b"" if vlen in (str, bytes) else None


def text_as_str(arr: np.ndarray) -> np.ndarray:
    """An array of variable-length ASCII strings (bytes) as ``str`` objects, as h5py
    reads string attributes whatever their character set (datasets stay bytes).

    >>> text_as_str(np.array([b"z", b"y"], dtype=object)).tolist()
    ['z', 'y']
    """
    out = np.empty(arr.shape, dtype=VLEN_STR)
    out.reshape(-1)[:] = [v.decode("utf-8", "surrogateescape") if isinstance(v, bytes)
                          else v for v in arr.reshape(-1)]
    return out


def _json_element(x: Any, dt: np.dtype) -> Any:
    if dt.names:
        return [_json_element(x[n], dt.fields[n][0]) for n in dt.names]
    if dt.subdtype is not None:
        return json_from_array(np.asarray(x))
    if dt.kind == "c":
        return [float(x.real), float(x.imag)]
    if dt.kind in "Mm":
        return opaque_json(np.asarray(x, dtype=dt).tobytes())
    if dt.kind == "f":
        return float(x)  # NaN/inf are written as the bare NaN/Infinity tokens, as HSDS does
    if dt.kind in "iu":
        return int(x)
    if dt.kind == "b":
        return bool(x)
    if dt.kind == "S":
        return bytes(x).rstrip(b"\x00").decode("utf-8", errors="surrogateescape")
    if dt.kind == "O":
        if "ref" in (dt.metadata or {}):
            return reference_id(x)
        if isinstance(x, bytes):
            return x.decode("utf-8", errors="surrogateescape")
        if isinstance(x, np.ndarray):
            return json_from_array(x)
        return x
    if dt.kind == "V":
        return opaque_json(bytes(x))
    raise ValueError(f"cannot write values of dtype {dt} as JSON")


def json_from_array(arr: np.ndarray) -> Any:
    """Nested JSON lists (or one value, for a 0-d array) from a numpy array."""
    arr = np.asarray(arr)
    if arr.ndim == 0:
        return _json_element(arr[()], arr.dtype)
    return [json_from_array(a) if arr.ndim > 1 else _json_element(a, arr.dtype) for a in arr]
