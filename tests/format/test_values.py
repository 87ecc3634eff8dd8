"""JSON values (attribute and fill values) <-> numpy arrays."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest

import h5dask
from h5dask.format.values import array_from_json, json_from_array, text_as_str, unwritten_value

CMPD = np.dtype([("a", "<i4"), ("b", ">f8", (2,)), ("s", "S3"),
                 ("n", [("x", "u1"), ("y", "<f2")])])


@pytest.mark.parametrize("arr", [
    np.array([[1, -2, 3], [4, 5, -6]], dtype=">i2"),
    np.array([0, 2**64 - 1], dtype="<u8"),
    np.array([-(2**63), 2**63 - 1], dtype=">i8"),
    np.array([1.5, -0.25, 65504.0], dtype=">f2"),
    np.array([np.pi, -np.e, 1e-300], dtype="<f8"),
    np.array([True, False, True]),
    np.array([b"ab", b"", b"xyz"], dtype="S3"),
    np.array(7, dtype="<u4"),
    np.array(np.float32(2.5)),
    np.array([(1, (2.0, 3.0), b"abc", (4, 0.5)), (-1, (0.0, -1.0), b"", (255, -2.0))],
             dtype=CMPD),
    np.arange(24, dtype="<i4").reshape(2, 3, 4),
])
def test_roundtrip_plain(arr: np.ndarray) -> None:
    js = json_from_array(arr)
    json.dumps(js, allow_nan=False)  # plain JSON, no NaN extension needed
    back = array_from_json(json.loads(json.dumps(js)), arr.dtype, arr.shape)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_special_floats() -> None:
    arr = np.array([np.nan, np.inf, -np.inf, 1.0], dtype=">f4")
    text = json.dumps(json_from_array(arr))
    assert text == "[NaN, Infinity, -Infinity, 1.0]"  # the bare tokens, as HSDS writes them
    back = array_from_json(json.loads(text), arr.dtype, (4,))
    assert math.isnan(back[0]) and back[1] == np.inf and back[2] == -np.inf
    # the quoted words, as some writers give them, read too
    quoted = array_from_json(["NaN", "Infinity", "-Infinity", 1.0], arr.dtype, (4,))
    np.testing.assert_array_equal(quoted, back)
    # HSDS also writes the JSON extensions NaN/Infinity as bare tokens
    parsed = json.loads('[NaN, Infinity, -Infinity, 2]')
    np.testing.assert_array_equal(array_from_json(parsed, np.dtype("<f8"), (4,)),
                                  [np.nan, np.inf, -np.inf, 2.0])


def test_vlen_values() -> None:
    strs = np.empty(3, dtype=h5dask.string_dtype())
    strs[:] = ["a", "héllo wörld", ""]
    js = json_from_array(strs)
    assert js == ["a", "héllo wörld", ""]
    back = array_from_json(js, strs.dtype, (3,))
    assert back.tolist() == ["a", "héllo wörld", ""]
    ascii_ = array_from_json(["ab", "c"], h5dask.string_dtype("ascii"), (2,))
    assert ascii_.tolist() == [b"ab", b"c"]
    seq = array_from_json([[1, 2, 3], [], [4]], h5dask.vlen_dtype("<i2"), (3,))
    assert [s.tolist() for s in seq] == [[1, 2, 3], [], [4]]
    assert all(s.dtype == np.dtype("<i2") for s in seq)
    assert json_from_array(seq) == [[1, 2, 3], [], [4]]
    scalar = array_from_json("just one", h5dask.string_dtype(), ())
    assert scalar[()] == "just one"


def test_compound_from_dict_and_list() -> None:
    dt = np.dtype([("a", "<i4"), ("b", "<f4")])
    from_list = array_from_json([[1, 2.5], [3, 4.5]], dt, (2,))
    from_dict = array_from_json([{"a": 1, "b": 2.5}, {"b": 4.5, "a": 3}], dt, (2,))
    np.testing.assert_array_equal(from_list, from_dict)


def test_fixed_string_bytes_not_utf8() -> None:
    arr = np.array([b"\xff\x00z", b"ok"], dtype="S3")
    back = array_from_json(json.loads(json.dumps(json_from_array(arr))), arr.dtype, (2,))
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("value, dtype, shape, problem", [
    ([1, 2, 3], "<i4", (2,), "elements"),
    ([[1, 2], [3]], "<i4", (2, 2), "list|elements"),
    (["a", 1], "<f4", (2,), "not a number"),
    ([1.5], "<i4", (1,), "not an integer"),
    ([None], "<f8", (1,), "not a number"),
    ([300], "u1", (1,), "fit"),
    ([[1, 2, 3]], [("a", "i4"), ("b", "i4")], (1,), "compound"),
    (5, "<i4", (2,), "list"),
])
def test_bad_values(value: object, dtype: object, shape: tuple, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        array_from_json(value, np.dtype(dtype), shape)


def test_null_space_has_no_values() -> None:
    with pytest.raises(ValueError, match="null"):
        array_from_json(None, np.dtype("<i4"), None)


def test_vlen_sequences_read_in_native_byte_order() -> None:
    """h5py reads the elements of a sequence of big-endian numbers (pyfive's
    attr_datatypes.hdf5 has one) as native numbers of the same value."""
    seq = array_from_json([[1, 2], [3]], h5dask.vlen_dtype(">u8"), (2,))
    assert [s.dtype for s in seq] == [np.dtype("=u8")] * 2
    assert [s.tolist() for s in seq] == [[1, 2], [3]]


def test_unwritten_value_has_empty_vlen_parts() -> None:
    """What h5py reads where nothing was written and no fill value was set: 0, and for
    variable-length parts the empty value, never None (hdf5-json's
    compound_array_vlen_string.h5 has a compound with an array of vlen strings)."""
    dt = np.dtype([("n", ">u8"), ("s", h5dask.string_dtype("ascii"), (3,)),
                   ("u", h5dask.string_dtype()), ("q", h5dask.vlen_dtype(">i4"))])
    value = unwritten_value(dt)
    assert value["n"] == 0
    assert value["s"].tolist() == [b"", b"", b""]
    assert value["u"] == b""  # strings inside compounds read as bytes, UTF-8 ones too
    assert unwritten_value(h5dask.string_dtype()) == ""  # str in the format layer
    assert value["q"].tolist() == [] and value["q"].dtype == np.dtype("=i4")
    assert unwritten_value(h5dask.string_dtype("ascii")) == b""
    assert unwritten_value(np.dtype(">f4")) == 0


def test_text_as_str() -> None:
    arr = np.array([b"z", "y", b"\xff"], dtype=object)
    assert text_as_str(arr).tolist() == ["z", "y", "\udcff"]


def test_opaque_values_are_base64_as_hsds_writes_and_reads_them() -> None:
    """HSDS (h5json 2.0.1) writes and reads an opaque attribute or fill value as base64,
    "" for all zeros; h5dask wrote a list of byte values, on which h5pyd fails
    (TypeError: 'int' object is not iterable), and could not read HSDS's form."""
    v2 = np.dtype("V2")
    arr = np.array([b"\x00\xab", b"\x00\x00"], dtype=v2)
    assert json_from_array(arr) == ["AKs=", ""]
    assert array_from_json(["AKs=", ""], v2, (2,)).tobytes() == arr.tobytes()
    assert array_from_json([[0, 171], [0, 0]], v2, (2,)).tobytes() == arr.tobytes()  # older
    when = np.array(["2020-01-01T00:00:00"], dtype="M8[s]")
    assert json_from_array(when) == [base64.b64encode(when.tobytes()).decode()]
    assert array_from_json(json_from_array(when), when.dtype, (1,))[0] == when[0]
    assert array_from_json([int(when.view("i8")[0])], when.dtype, (1,))[0] == when[0]
    with pytest.raises(ValueError, match="base64"):
        array_from_json(["not base64!"], v2, (1,))


def test_attribute_references_read_as_dataset_references() -> None:
    """HSDS keeps a reference in an attribute's JSON as 'datasets/d-...'; h5dask gives
    the id alone there too, as it does for references in chunks."""
    from h5dask.format.types import OBJ_REF
    d_id = "d-6365dc28-b7187a80-6773-02f05a-9230d2"
    rec = np.dtype([("r", OBJ_REF), ("n", "<i4")])
    assert array_from_json([[f"datasets/{d_id}", 1], ["", 2]], rec, (2,)).tolist() == [
        (d_id, 1), ("", 2)]
    assert array_from_json([f"datasets/{d_id}", d_id], OBJ_REF, (2,)).tolist() == [d_id, d_id]
    with pytest.raises(h5dask.errors.InvalidReferenceError):
        array_from_json([["not a reference", 1]], rec, (1,))
