"""HSDS type JSON <-> numpy dtypes, in both directions, for every supported type."""

from __future__ import annotations

import numpy as np
import pytest

import h5dask
from h5dask.errors import UnsupportedTypeError
from h5dask.format.types import (
    OBJ_REF,
    VLEN_BYTES,
    VLEN_STR,
    dtype_from_json,
    has_vlen,
    type_json_from_dtype,
)

INT_NAMES = [f"H5T_STD_{s}{b}{o}" for s in "IU" for b in (8, 16, 32, 64) for o in ("LE", "BE")]
FLOAT_NAMES = [f"H5T_IEEE_F{b}{o}" for b in (16, 32, 64) for o in ("LE", "BE")]


@pytest.mark.parametrize("name", INT_NAMES + FLOAT_NAMES)
def test_predefined_numeric(name: str) -> None:
    cls = "H5T_FLOAT" if "IEEE" in name else "H5T_INTEGER"
    dt = dtype_from_json({"class": cls, "base": name})
    bits = int("".join(c for c in name.split("_")[-1] if c.isdigit()))
    assert dt.itemsize * 8 == bits
    assert dt.kind == ("f" if cls == "H5T_FLOAT" else "i" if "_I" in name else "u")
    order = ">" if name.endswith("BE") else "<"
    assert dt.byteorder in (order, "|") if dt.itemsize == 1 else dt.str[0] == order
    assert type_json_from_dtype(dt) == {"class": cls, "base": name} or dt.itemsize == 1
    assert dtype_from_json(name) == dt  # a bare predefined name works too


@pytest.mark.parametrize("code", ["<i1", "<i2", ">i2", "<i4", ">i4", "<i8", ">i8", "<u1",
                                  "<u2", ">u2", "<u4", ">u4", "<u8", ">u8", "<f2", ">f2",
                                  "<f4", ">f4", "<f8", ">f8", "=f8", "=i4"])
def test_numeric_dtype_roundtrip(code: str) -> None:
    dt = np.dtype(code)
    back = dtype_from_json(type_json_from_dtype(dt))
    assert back == dt and back.str == dt.str


def test_native_names() -> None:
    assert dtype_from_json("H5T_NATIVE_DOUBLE") == np.dtype("<f8")
    assert dtype_from_json("H5T_NATIVE_INT") == np.dtype("<i4")


def test_bool_and_enum() -> None:
    tj = type_json_from_dtype(np.dtype(bool))
    assert tj == {"class": "H5T_ENUM",  # HSDS writes enum members as a list
                  "base": {"class": "H5T_INTEGER", "base": "H5T_STD_I8LE"},
                  "members": [{"name": "FALSE", "value": 0}, {"name": "TRUE", "value": 1}]}
    assert dtype_from_json(tj) == np.dtype(bool)
    # the schema document's "mapping" form reads too
    assert dtype_from_json({"class": "H5T_ENUM", "base": "H5T_STD_I8LE",
                            "mapping": {"FALSE": 0, "TRUE": 1}}) == np.dtype(bool)
    colors = h5dask.enum_dtype({"RED": 0, "GREEN": 1, "BLUE": 42}, basetype=">u2")
    tj = type_json_from_dtype(colors)
    assert tj["class"] == "H5T_ENUM" and tj["base"]["base"] == "H5T_STD_U16BE"
    assert {m["name"]: m["value"] for m in tj["members"]} == {"RED": 0, "GREEN": 1, "BLUE": 42}
    back = dtype_from_json(tj)
    assert back == np.dtype(">u2") and back.metadata["enum"] == {"RED": 0, "GREEN": 1,
                                                                  "BLUE": 42}
    # a {FALSE, TRUE} enum over a wider integer stays an enum, as in h5py
    wide = dtype_from_json({"class": "H5T_ENUM", "base": "H5T_STD_I32LE",
                            "mapping": {"FALSE": 0, "TRUE": 1}})
    assert wide.kind == "i" and wide.metadata["enum"] == {"FALSE": 0, "TRUE": 1}


def test_strings() -> None:
    fixed = {"class": "H5T_STRING", "charSet": "H5T_CSET_ASCII", "strPad": "H5T_STR_NULLPAD",
             "length": 7}
    assert dtype_from_json(fixed) == np.dtype("S7")
    assert type_json_from_dtype(np.dtype("S7")) == fixed
    utf8 = type_json_from_dtype(h5dask.string_dtype())
    assert utf8["length"] == "H5T_VARIABLE" and utf8["charSet"] == "H5T_CSET_UTF8"
    assert dtype_from_json(utf8).metadata == {"vlen": str}
    ascii_ = type_json_from_dtype(h5dask.string_dtype("ascii"))
    assert ascii_["charSet"] == "H5T_CSET_ASCII" and ascii_["length"] == "H5T_VARIABLE"
    assert dtype_from_json(ascii_).metadata == {"vlen": bytes}
    assert h5dask.string_dtype(length=3) == np.dtype("S3")
    # what HSDS writes for a variable-length string attribute, without a charSet
    assert dtype_from_json({"class": "H5T_STRING", "length": "H5T_VARIABLE"}) is VLEN_BYTES
    with pytest.raises(UnsupportedTypeError, match="length"):
        dtype_from_json({"class": "H5T_STRING", "length": 0})


def test_compound_nested_with_array_member() -> None:
    inner = np.dtype([("x", "<i2"), ("y", ">f4", (2, 3))])
    dt = np.dtype([("id", ">u8"), ("pos", inner), ("name", "S4"), ("ok", bool),
                   ("v", "<f8", (3,))])
    tj = type_json_from_dtype(dt)
    assert tj["class"] == "H5T_COMPOUND"
    assert [f["name"] for f in tj["fields"]] == ["id", "pos", "name", "ok", "v"]
    assert tj["fields"][1]["type"]["class"] == "H5T_COMPOUND"
    assert tj["fields"][4]["type"] == {"class": "H5T_ARRAY", "dims": [3], "base": {
        "class": "H5T_FLOAT", "base": "H5T_IEEE_F64LE"}}
    assert dtype_from_json(tj) == dt


def test_vlen_sequences_references_opaque() -> None:
    seq = h5dask.vlen_dtype(">i4")
    tj = type_json_from_dtype(seq)
    assert tj["class"] == "H5T_VLEN" and tj["base"] == {"class": "H5T_INTEGER",
                                                         "base": "H5T_STD_I32BE"}
    assert dtype_from_json(tj).metadata["vlen"] == np.dtype(">i4")
    ref = dtype_from_json({"class": "H5T_REFERENCE", "base": "H5T_STD_REF_OBJ"})
    assert ref is OBJ_REF and type_json_from_dtype(ref)["class"] == "H5T_REFERENCE"
    assert dtype_from_json({"class": "H5T_OPAQUE", "size": 5}) == np.dtype("V5")
    assert type_json_from_dtype(np.dtype("V5")) == {"class": "H5T_OPAQUE", "size": 5}


def test_committed_type_resolution() -> None:
    tid = "t-01234567-89abcdef-0000-1a2b3c-4d5e6f"
    table = {tid: {"class": "H5T_FLOAT", "base": "H5T_IEEE_F32BE"}}
    assert dtype_from_json(tid, table.__getitem__) == np.dtype(">f4")
    compound = {"class": "H5T_COMPOUND", "fields": [{"name": "a", "type": tid}]}
    assert dtype_from_json(compound, table.__getitem__) == np.dtype([("a", ">f4")])
    with pytest.raises(UnsupportedTypeError, match="committed type"):
        dtype_from_json(tid)


def test_has_vlen() -> None:
    assert has_vlen(VLEN_STR) and has_vlen(h5dask.vlen_dtype("i4"))
    assert has_vlen(np.dtype([("a", "i4"), ("s", VLEN_STR)]))
    assert not has_vlen(np.dtype([("a", "i4"), ("b", "f8", (2,))]))
    assert not has_vlen(np.dtype("S3"))


@pytest.mark.parametrize("bad", [
    {"class": "H5T_BITFIELD"}, {"class": "H5T_INTEGER", "base": "H5T_IEEE_F32LE"},
    {"class": "H5T_FLOAT", "base": "H5T_STD_I8LE"}, {"class": "H5T_INTEGER"},
    {"class": "H5T_COMPOUND", "fields": []}, {"class": "H5T_ARRAY", "base": "H5T_STD_I8LE",
                                              "dims": [0]},
    {"class": "H5T_ENUM", "base": "H5T_IEEE_F32LE", "mapping": {"A": 1}}, "H5T_STD_I128LE",
    {"class": "H5T_ENUM", "base": "H5T_STD_I8LE", "members": [{"name": "A"}]},
    ["H5T_STD_I8LE"], {"base": "H5T_STD_I8LE"},
])
def test_unsupported_type_json(bad: object) -> None:
    with pytest.raises(UnsupportedTypeError):
        dtype_from_json(bad)


@pytest.mark.parametrize("bad", [np.dtype("U3"), np.dtype("O"), np.dtype("f16"),
                                 np.dtype("c32")])
def test_unsupported_dtypes(bad: np.dtype) -> None:
    with pytest.raises(UnsupportedTypeError):
        type_json_from_dtype(bad)


@pytest.mark.parametrize("dt", ["<c8", "<c16", ">c16"])
def test_complex_is_h5pys_real_imaginary_compound(dt: str) -> None:
    type_json = type_json_from_dtype(np.dtype(dt))
    assert type_json["class"] == "H5T_COMPOUND"
    assert [f["name"] for f in type_json["fields"]] == ["r", "i"]
    assert dtype_from_json(type_json) == np.dtype(dt)
    # other compounds of two floats stay compounds
    other = {**type_json, "fields": [{**f, "name": n} for f, n in zip(
        type_json["fields"], ("re", "im"))]}
    assert dtype_from_json(other).names == ("re", "im")


def test_h5py_vlen_dtype_of_a_type_name() -> None:
    # h5py.vlen_dtype("i4") keeps the string "i4" in the dtype's metadata
    h5py = pytest.importorskip("h5py")
    assert type_json_from_dtype(h5py.vlen_dtype("i4")) == type_json_from_dtype(
        h5dask.vlen_dtype("<i4"))
