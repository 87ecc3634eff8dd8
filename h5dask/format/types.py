"""HSDS type JSON <-> numpy dtypes.

Special types follow h5py's conventions (dtype metadata), so users and h5py-aware
code see familiar dtypes:

- variable-length string: ``object`` dtype with ``metadata={"vlen": str}`` (UTF-8) or
  ``{"vlen": bytes}`` (ASCII); fixed-length strings are ``S<n>``
- variable-length sequence: ``object`` dtype with ``metadata={"vlen": <base dtype>}``
- enum: the integer base dtype with ``metadata={"enum": {name: value}}``; the enum
  ``{FALSE: 0, TRUE: 1}`` over int8 is numpy ``bool``, as in h5py
- object reference: ``object`` dtype with ``metadata={"ref": "object"}`` (values are ids;
  a null reference is ``""``)
- array members: numpy sub-array dtypes; compounds: structured dtypes, packed (HSDS's
  compound JSON has no member offsets, so a padded HDF5 compound reads back packed)
- complex: a compound of two floats of one type named ``r`` and ``i`` is numpy complex
- opaque: ``V<n>``; one tagged ``NUMPY:<dtype>`` (``h5py.opaque_dtype``, e.g. datetime64)
  is that dtype with ``metadata={"h5py_opaque": True}``
- fixed-length UTF-8 strings: ``S<n>`` with ``metadata={"h5py_encoding": "utf-8"}``

>>> dtype_from_json({"class": "H5T_FLOAT", "base": "H5T_IEEE_F32BE"})
dtype('>f4')
>>> type_json_from_dtype(np.dtype("<i2"))
{'class': 'H5T_INTEGER', 'base': 'H5T_STD_I16LE'}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import UnsupportedTypeError

_INT_RE = re.compile(r"^H5T_STD_([IU])(8|16|32|64)(LE|BE)$")
_FLOAT_RE = re.compile(r"^H5T_IEEE_F(16|32|64)(LE|BE)$")
_NATIVE = {
    "H5T_NATIVE_INT8": "<i1", "H5T_NATIVE_UINT8": "<u1", "H5T_NATIVE_INT16": "<i2",
    "H5T_NATIVE_UINT16": "<u2", "H5T_NATIVE_INT32": "<i4", "H5T_NATIVE_UINT32": "<u4",
    "H5T_NATIVE_INT64": "<i8", "H5T_NATIVE_UINT64": "<u8", "H5T_NATIVE_FLOAT": "<f4",
    "H5T_NATIVE_DOUBLE": "<f8", "H5T_NATIVE_INT": "<i4", "H5T_NATIVE_CHAR": "<i1",
}
BOOL_MAPPING = {"FALSE": 0, "TRUE": 1}

VLEN_STR = np.dtype("O", metadata={"vlen": str})
VLEN_BYTES = np.dtype("O", metadata={"vlen": bytes})
OBJ_REF = np.dtype("O", metadata={"ref": "object"})
COMPLEX_FIELDS = ("r", "i")  # h5py's names of a complex number's compound members
OPAQUE_TAG_PREFIX = "NUMPY:"  # h5py.opaque_dtype's tag: "NUMPY:" + numpy dtype string

TypeResolver = Callable[[str], dict]


def _order(suffix: str) -> str:
    return "<" if suffix == "LE" else ">"


def _predefined(name: str) -> np.dtype:
    if name in _NATIVE:
        return np.dtype(_NATIVE[name])
    m = _INT_RE.match(name)
    if m:
        kind, bits, order = m.groups()
        return np.dtype(f"{_order(order)}{kind.lower()}{int(bits) // 8}")
    m = _FLOAT_RE.match(name)
    if m:
        bits, order = m.groups()
        return np.dtype(f"{_order(order)}f{int(bits) // 8}")
    if name in ("H5T_STD_REF_OBJ", "H5T_STD_REF_DSETREG"):
        return OBJ_REF
    raise UnsupportedTypeError(f"unknown predefined HDF5 type {name!r}")


def dtype_from_json(type_json: Any, resolve: TypeResolver | None = None) -> np.dtype:
    """The numpy dtype for an HSDS type (a JSON object, a predefined name, or the id of
    a committed type, looked up with ``resolve(id) -> type JSON``)."""
    if isinstance(type_json, str):
        if type_json.startswith("t-"):
            if resolve is None:
                raise UnsupportedTypeError(f"committed type {type_json} cannot be resolved here")
            return dtype_from_json(resolve(type_json), resolve)
        return _predefined(type_json)
    if not isinstance(type_json, dict) or "class" not in type_json:
        raise UnsupportedTypeError(f"type must be an object with a 'class', got {type_json!r}")
    cls = type_json["class"]
    if cls in ("H5T_INTEGER", "H5T_FLOAT"):
        base = type_json.get("base")
        dt = _predefined(base) if isinstance(base, str) else None
        if dt is None or dt.kind not in ("iu" if cls == "H5T_INTEGER" else "f"):
            raise UnsupportedTypeError(f"{cls} with base {base!r}")
        return dt
    if cls == "H5T_STRING":
        length = type_json.get("length")
        utf8 = type_json.get("charSet", "H5T_CSET_ASCII") == "H5T_CSET_UTF8"
        if length == "H5T_VARIABLE":
            return VLEN_STR if utf8 else VLEN_BYTES
        if not isinstance(length, int) or length < 1:
            raise UnsupportedTypeError(f"string length must be >= 1 or H5T_VARIABLE: {length!r}")
        if utf8:
            return np.dtype(f"S{length}", metadata={"h5py_encoding": "utf-8"})
        return np.dtype(f"S{length}")
    if cls == "H5T_ENUM":
        base = dtype_from_json(type_json.get("base"), resolve)
        mapping = _enum_mapping(type_json)
        if not isinstance(mapping, dict) or base.kind not in "iu":
            raise UnsupportedTypeError(f"enum needs an integer base and a mapping: {type_json}")
        if mapping == BOOL_MAPPING and base.itemsize == 1:
            return np.dtype(np.bool_)
        return np.dtype(base.str, metadata={"enum": dict(mapping)})
    if cls == "H5T_COMPOUND":
        fields = type_json.get("fields")
        if not isinstance(fields, list) or not fields:
            raise UnsupportedTypeError("compound type without fields")
        dt = np.dtype([(f["name"], dtype_from_json(f["type"], resolve)) for f in fields])
        return _as_complex(dt) or dt
    if cls == "H5T_ARRAY":
        dims = type_json.get("dims")
        if not isinstance(dims, list) or not all(isinstance(d, int) and d > 0 for d in dims):
            raise UnsupportedTypeError(f"array type with bad dims {dims!r}")
        return np.dtype((dtype_from_json(type_json.get("base"), resolve), tuple(dims)))
    if cls == "H5T_VLEN":
        base = dtype_from_json(type_json.get("base"), resolve)
        return np.dtype("O", metadata={"vlen": base})
    if cls == "H5T_REFERENCE":
        return OBJ_REF
    if cls == "H5T_OPAQUE":
        size = type_json.get("size")
        if not isinstance(size, int) or size < 1:
            raise UnsupportedTypeError(f"opaque type with bad size {size!r}")
        return _tagged_opaque(type_json.get("tag"), size) or np.dtype(f"V{size}")
    raise UnsupportedTypeError(f"unsupported HDF5 type class {cls!r}")


def _as_complex(dt: np.dtype) -> np.dtype | None:
    """A compound of two floats named ``r`` and ``i`` is a complex number, as h5py (and
    so h5netcdf) writes and reads complex values: the bytes are numpy's complex layout."""
    if dt.names != ("r", "i"):
        return None
    real, imag = dt.fields["r"][0], dt.fields["i"][0]
    if real != imag or real.kind != "f" or real.itemsize not in (4, 8) or dt.fields["i"][1] != (
            real.itemsize) or dt.itemsize != 2 * real.itemsize:
        return None
    return np.dtype(f"{real.byteorder if real.byteorder != '=' else '<'}c{2 * real.itemsize}")


def _tagged_opaque(tag: Any, size: int) -> np.dtype | None:
    """The numpy dtype named by an h5py opaque tag (``NUMPY:<M8[s]``), if it fits."""
    if not isinstance(tag, str) or not tag.startswith(OPAQUE_TAG_PREFIX):
        return None
    try:
        dt = np.dtype(tag[len(OPAQUE_TAG_PREFIX):])
    except TypeError:
        return None
    if dt.itemsize != size or dt.kind not in "Mm":
        return None
    return np.dtype(dt.str, metadata={"h5py_opaque": True})


def _enum_mapping(type_json: dict) -> dict | None:
    # HSDS writes "members": [{"name", "value"}]; the schema document shows "mapping"
    members = type_json.get("members")
    if isinstance(members, list):
        try:
            return {str(m["name"]): int(m["value"]) for m in members}
        except (KeyError, TypeError, ValueError):
            return None
    mapping = type_json.get("mapping")
    return mapping if isinstance(mapping, dict) else None


def _members(mapping: dict) -> list[dict]:
    return [{"name": str(k), "value": int(v)} for k, v in mapping.items()]


def _order_name(dt: np.dtype) -> str:
    bo = dt.byteorder
    if bo == "=":
        bo = "<" if np.little_endian else ">"
    return "BE" if bo == ">" else "LE"


def type_json_from_dtype(dt: np.dtype) -> dict:
    """The HSDS type JSON for a numpy dtype (see the module doc for special types)."""
    dt = np.dtype(dt)
    meta = dt.metadata or {}
    if "enum" in meta:
        return {"class": "H5T_ENUM", "base": type_json_from_dtype(np.dtype(dt.str)),
                "members": _members(meta["enum"])}
    if dt.kind == "b":
        return {"class": "H5T_ENUM", "base": {"class": "H5T_INTEGER", "base": "H5T_STD_I8LE"},
                "members": _members(BOOL_MAPPING)}
    if dt.kind in "iu":
        sign = "I" if dt.kind == "i" else "U"
        return {"class": "H5T_INTEGER",
                "base": f"H5T_STD_{sign}{dt.itemsize * 8}{_order_name(dt)}"}
    if dt.kind == "f":
        if dt.itemsize not in (2, 4, 8):
            raise UnsupportedTypeError(f"float of {dt.itemsize} bytes has no HDF5 equivalent")
        return {"class": "H5T_FLOAT", "base": f"H5T_IEEE_F{dt.itemsize * 8}{_order_name(dt)}"}
    if dt.kind == "c":  # as h5py: a compound of the real and imaginary parts
        part = np.dtype(f"{dt.byteorder if dt.byteorder != '=' else '<'}f{dt.itemsize // 2}")
        return {"class": "H5T_COMPOUND", "fields": [
            {"name": n, "type": type_json_from_dtype(part)} for n in ("r", "i")]}
    if dt.kind in "Mm":
        return {"class": "H5T_OPAQUE", "size": dt.itemsize,
                "tag": OPAQUE_TAG_PREFIX + dt.str}
    if dt.kind == "S":
        utf8 = meta.get("h5py_encoding") == "utf-8"
        return {"class": "H5T_STRING", "charSet": "H5T_CSET_UTF8" if utf8 else "H5T_CSET_ASCII",
                "strPad": "H5T_STR_NULLPAD", "length": dt.itemsize}
    if dt.kind == "U":
        raise UnsupportedTypeError(
            "numpy unicode (U) arrays have no HDF5 equivalent; use a variable-length string "
            "dtype (h5dask.string_dtype()) or encode to bytes")
    if dt.kind == "O":
        if "ref" in meta:
            return {"class": "H5T_REFERENCE", "base": "H5T_STD_REF_OBJ"}
        vlen = meta.get("vlen")
        if vlen is str:
            return {"class": "H5T_STRING", "charSet": "H5T_CSET_UTF8",
                    "strPad": "H5T_STR_NULLTERM", "length": "H5T_VARIABLE"}
        if vlen is bytes:
            return {"class": "H5T_STRING", "charSet": "H5T_CSET_ASCII",
                    "strPad": "H5T_STR_NULLTERM", "length": "H5T_VARIABLE"}
        if vlen is not None and not isinstance(vlen, np.dtype):
            vlen = np.dtype(vlen)  # h5py.vlen_dtype("i4") keeps the "i4" it was given
        if isinstance(vlen, np.dtype):
            return {"class": "H5T_VLEN", "size": "H5T_VARIABLE",
                    "base": type_json_from_dtype(vlen)}
        raise UnsupportedTypeError("object dtype without h5py-style vlen/ref metadata")
    if dt.kind == "V" and dt.subdtype is not None:
        base, shape = dt.subdtype
        return {"class": "H5T_ARRAY", "base": type_json_from_dtype(base), "dims": list(shape)}
    if dt.kind == "V" and dt.names:
        return {"class": "H5T_COMPOUND", "fields": [
            {"name": n, "type": type_json_from_dtype(dt.fields[n][0])} for n in dt.names]}
    if dt.kind == "V":
        return {"class": "H5T_OPAQUE", "size": dt.itemsize}
    raise UnsupportedTypeError(f"numpy dtype {dt} has no HDF5 equivalent")


def has_vlen(dt: np.dtype) -> bool:
    """True if values of ``dt`` are (or contain) variable-length data."""
    if dt.kind == "O":
        return True
    if dt.names:
        return any(has_vlen(dt.fields[n][0]) for n in dt.names)
    if dt.subdtype is not None:
        return has_vlen(dt.subdtype[0])
    return False


def hsds_type_problem(dt: np.dtype) -> str | None:
    """Why HSDS (1.0.2, h5json 2.0.1) cannot serve values of ``dt`` that h5dask and h5py
    read and write, or None. Checked against the real server: a sequence of sequences
    cannot be written through h5pyd or HSDS's REST API (500) and a read of such chunks
    answers 500; an array type of references is refused ("Array Type base type must be
    integer, float, string, compound or array").

    >>> hsds_type_problem(vlen_dtype(vlen_dtype("i4")))
    'a variable-length sequence of variable-length sequences'
    >>> hsds_type_problem(np.dtype([("a", "i4"), ("s", VLEN_STR)])) is None
    True
    """
    if dt.names:
        for n in dt.names:
            problem = hsds_type_problem(dt.fields[n][0])
            if problem:
                return problem
        return None
    if dt.subdtype is not None:
        base = dt.subdtype[0]
        if base.kind == "O" and "ref" in (base.metadata or {}):
            return "an array type of object references"
        return hsds_type_problem(base)
    vlen = (dt.metadata or {}).get("vlen")
    if vlen is None or vlen in (str, bytes):
        return None
    vlen = np.dtype(vlen)
    if vlen.kind == "O" and "vlen" in (vlen.metadata or {}) and (
            vlen.metadata["vlen"] not in (str, bytes)):
        return "a variable-length sequence of variable-length sequences"
    return hsds_type_problem(vlen)


def string_dtype(encoding: str = "utf-8", length: int | None = None) -> np.dtype:
    """A string dtype: variable-length (default) or fixed ``length`` bytes.

    >>> string_dtype().metadata["vlen"]
    <class 'str'>
    """
    if length is not None:
        return np.dtype(f"S{length}")
    return VLEN_STR if encoding.lower().replace("-", "") == "utf8" else VLEN_BYTES


def enum_dtype(mapping: dict[str, int], basetype: Any = "i1") -> np.dtype:
    """An enum dtype over an integer base."""
    return np.dtype(np.dtype(basetype).str, metadata={"enum": dict(mapping)})


def vlen_dtype(base: Any) -> np.dtype:
    """A variable-length sequence dtype of ``base`` elements."""
    return np.dtype("O", metadata={"vlen": np.dtype(base)})


def outside_integer_range(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Where integer or float ``values`` do not fit the integer ``dtype`` (out of range,
    NaN, infinite). A float is compared with the largest float the dtype holds:
    float(2**63 - 1) is 2**63, which int64 does not hold (the cast gave -2**63).

    >>> outside_integer_range(np.array([2.0**63, -2.0**63, np.nan, 1e18]), np.dtype("i8"))
    array([ True, False,  True, False])
    >>> outside_integer_range(np.array([255, 256, -1]), np.dtype("u1"))
    array([False,  True,  True])
    """
    info = np.iinfo(dtype)
    if values.dtype.kind != "f":
        return (values < info.min) | (values > info.max)
    top = float(info.max)  # exact up to 53 bits; for 64-bit dtypes one past the maximum
    with np.errstate(invalid="ignore"):
        fits = (values >= float(info.min)) & (
            (values <= top) if int(top) == info.max else (values < top))
    return ~fits


def integer_range_problem(values: np.ndarray, dtype: np.dtype, described: str,
                          shown: np.ndarray | None = None) -> str | None:
    """None if ``values`` fit the integer ``dtype``, else what does not, for an error
    message: how many, the first (taken from ``shown``, e.g. the values before packing)
    and the range of ``described`` (the dtype as the caller names it).

    >>> integer_range_problem(np.array([1, 300]), np.dtype("u1"), "its dtype uint8")
    '1 values (the first 300) do not fit its dtype uint8 (0..255)'
    """
    bad = outside_integer_range(values, dtype)
    if not bad.any():
        return None
    info = np.iinfo(dtype)
    first = (values if shown is None else shown)[bad].flat[0]
    return (f"{int(bad.sum())} values (the first {first}) do not fit {described} "
            f"({info.min}..{info.max})")
