"""Parsing and validation of metadata JSON: every error names the key and the problem."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from h5dask.errors import MetadataError, UnsupportedFilterError, UnsupportedTypeError
from h5dask.format.dataspace import Dataspace
from h5dask.format.metadata import (
    attribute_json,
    chunked_layout,
    chunked_ref_indirect_layout,
    chunked_ref_layout,
    contiguous_layout,
    contiguous_ref_layout,
    dataset_json,
    datatype_json,
    domain_json,
    dump_json,
    group_json,
    load_json,
    object_json,
    parse_dataset,
    parse_datatype,
    parse_domain,
    parse_group,
)

KEY = "db/01234567-89abcdef/d/0000-1a2b3c-4d5e6f/.dataset.json"
DID = "d-01234567-89abcdef-0000-1a2b3c-4d5e6f"
GID = "g-01234567-89abcdef-0000-aaaaaa-bbbbbb"
ROOT = "g-01234567-89abcdef-89ab-cdef01-234567"
F4 = {"class": "H5T_FLOAT", "base": "H5T_IEEE_F32LE"}


def dataset(**changes: object) -> dict:
    obj = {"id": DID, "root": ROOT, "type": F4,
           "shape": {"class": "H5S_SIMPLE", "dims": [10, 20], "maxdims": [0, 20]},
           "creationProperties": {"layout": {"class": "H5D_CHUNKED", "dims": [5, 20]},
                                  "filters": [], "fillValue": 1.5}}
    obj.update(changes)
    return {k: v for k, v in obj.items() if v is not None}


def test_dataset_layout_sources() -> None:
    meta = parse_dataset(KEY, dataset())
    assert meta.chunk_shape == (5, 20) and meta.shape == (10, 20)
    assert meta.space.maxshape == (None, 20) and meta.fill_value() == np.float32(1.5)
    # the schema document's top-level "layout" (what HSDS does not write, but may be found)
    top = dataset(creationProperties={"filters": []},
                  layout={"class": "H5D_CHUNKED", "dims": [2, 4]})
    assert parse_dataset(KEY, top).chunk_shape == (2, 4)
    # creationProperties.layout wins when both are present (it is what HSDS reads)
    both = dataset(layout={"class": "H5D_CHUNKED", "dims": [2, 4]})
    assert parse_dataset(KEY, both).chunk_shape == (5, 20)
    # no layout: one chunk of the whole shape; scalar: one element
    assert parse_dataset(KEY, dataset(creationProperties=None)).chunk_shape == (10, 20)
    scalar = parse_dataset(KEY, dataset(shape={"class": "H5S_SCALAR"}, creationProperties=None))
    assert scalar.shape == () and scalar.chunk_shape == (1,)
    null = parse_dataset(KEY, dataset(shape={"class": "H5S_NULL"}, creationProperties=None))
    assert null.shape is None and null.space.is_null


def test_fill_values() -> None:
    assert parse_dataset(KEY, dataset(creationProperties={})).fill_value() == 0
    nan = parse_dataset(KEY, dataset(creationProperties={"fillValue": "NaN"})).fill_value()
    assert np.isnan(nan)
    raw = base64.b64encode(np.float32(-2.25).tobytes()).decode()
    cp = {"fillValue": raw, "fillValue_encoding": "base64"}
    assert parse_dataset(KEY, dataset(creationProperties=cp)).fill_value() == -2.25
    cmpd = {"class": "H5T_COMPOUND", "fields": [{"name": "a", "type": "H5T_STD_I16BE"},
                                                {"name": "b", "type": F4}]}
    fv = parse_dataset(KEY, dataset(type=cmpd, creationProperties={"fillValue": [3, 0.5]}))
    assert fv.fill_value().tolist() == (3, 0.5)
    vlen_str = {"class": "H5T_STRING", "charSet": "H5T_CSET_ASCII", "strPad": "H5T_STR_NULLTERM",
                "length": "H5T_VARIABLE"}
    cmpd_vlen = {"class": "H5T_COMPOUND", "fields": [
        {"name": "a", "type": "H5T_STD_I16BE"},
        {"name": "s", "type": {"class": "H5T_ARRAY", "dims": [2], "base": vlen_str}}]}
    unset = parse_dataset(KEY, dataset(type=cmpd_vlen, creationProperties={})).fill_value()
    assert unset["a"] == 0 and unset["s"].tolist() == [b"", b""]  # as h5py, not None
    bad = parse_dataset(KEY, dataset(creationProperties={"fillValue": "lots"}))
    with pytest.raises(MetadataError, match="fillValue") as err:
        bad.fill_value()
    assert err.value.key == KEY


@pytest.mark.parametrize("obj, problem", [
    (dataset(id=None), "'id' is not a valid dataset id"),
    (dataset(id=GID), "'id' is not a valid dataset id"),
    (dataset(id="d-123"), "'id' is not a valid dataset id"),
    (dataset(type=None), "no 'type'"),
    (dataset(shape=None), "shape"),
    (dataset(shape={"class": "H5S_SIMPLE", "dims": "ten"}), "dims"),
    (dataset(shape={"class": "H5S_SIMPLE", "dims": [10, -1]}), "dims"),
    (dataset(shape={"class": "H5S_SIMPLE", "dims": [10, 20], "maxdims": [5, 20]}), "maxdims"),
    (dataset(shape={"class": "H5S_SIMPLE", "dims": [10, 20], "maxdims": [0]}), "maxdims"),
    (dataset(shape={"class": "H5S_WHATEVER"}), "dataspace class"),
    (dataset(creationProperties={"layout": {"class": "H5D_CHUNKED", "dims": [5]}}),
     "layout dims"),
    (dataset(creationProperties={"layout": {"class": "H5D_CHUNKED", "dims": [5, 0]}}),
     "layout dims"),
    (dataset(creationProperties={"layout": {"class": "H5D_CHUNKED"}}), "layout dims"),
    (dataset(creationProperties={"layout": {"class": "H5D_SPIRAL"}}), "layout"),
    (dataset(creationProperties={"layout": "chunked"}), "layout"),
    (dataset(creationProperties={"layout": {"class": "H5D_CHUNKED_REF", "dims": [5, 20]}}),
     "file_uri"),
    (dataset(creationProperties={"layout": {"class": "H5D_CHUNKED_REF", "dims": [5, 20],
                                            "file_uri": "s3://b/f.h5",
                                            "chunks": {"0_0": [1]}}}), "chunk table"),
    (dataset(creationProperties=["x"]), "creationProperties"),
    (dataset(creationProperties={"filters": {"class": "x"}}), "filters"),
    (dataset(attributes={"a": {"value": 1}}), "attribute 'a' has no 'type'"),
    (dataset(attributes={"a": {"type": F4, "shape": {"class": "H5S_SIMPLE", "dims": [-2]}}}),
     "attribute 'a'"),
    (dataset(attributes=7), "'attributes' must be an object"),
])
def test_dataset_schema_violations(obj: dict, problem: str) -> None:
    with pytest.raises(MetadataError, match=problem) as err:
        parse_dataset(KEY, obj)
    assert err.value.key == KEY and KEY in str(err.value)


def test_unsupported_type_and_filter_name_the_dataset() -> None:
    with pytest.raises(UnsupportedTypeError, match=KEY):
        parse_dataset(KEY, dataset(type={"class": "H5T_TIME"}))
    with pytest.raises(UnsupportedFilterError, match="H5Z_FILTER_FANCY") as err:
        parse_dataset(KEY, dataset(creationProperties={
            "layout": {"class": "H5D_CHUNKED", "dims": [5, 20]},
            "filters": [{"class": "H5Z_FILTER_FANCY", "id": 40000}]}))
    assert KEY in str(err.value)


GKEY = "db/01234567-89abcdef/.group.json"


def test_group_links() -> None:
    meta = parse_group(GKEY, {"id": ROOT, "links": {
        "h": {"class": "H5L_TYPE_HARD", "id": DID, "title": "h"},
        "s": {"class": "H5L_TYPE_SOFT", "h5path": "/a/b"},
        "e": {"class": "H5L_TYPE_EXTERNAL", "h5path": "/x", "file": "home/o.h5"},
        "e2": {"class": "H5L_TYPE_EXTERNAL", "h5path": "/x", "h5domain": "/home/p.h5"}},
        "attributes": [{"name": "old", "type": F4, "value": 1}]})
    assert (meta.links["h"].kind, meta.links["h"].id) == ("hard", DID)
    assert (meta.links["s"].kind, meta.links["s"].h5path) == ("soft", "/a/b")
    assert (meta.links["e"].kind, meta.links["e"].file) == ("external", "home/o.h5")
    assert meta.links["e2"].file == "/home/p.h5"
    assert meta.attributes["old"].value(GKEY) == np.float32(1)  # list form, scalar default
    for link in meta.links.values():
        again = link.to_json(0.0)
        assert parse_group(GKEY, {"id": ROOT, "links": {link.name: again}}).links[
            link.name] == link


@pytest.mark.parametrize("obj, problem", [
    ({"links": {}}, "'id' is not a valid group id"),
    ({"id": DID}, "'id' is not a valid group id"),
    ({"id": ROOT, "links": []}, "'links' must be an object"),
    ({"id": ROOT, "links": {"x": {"class": "H5L_TYPE_HARD"}}}, "hard link 'x' has no valid"),
    ({"id": ROOT, "links": {"x": {"class": "H5L_TYPE_HARD", "id": "d-nope"}}}, "hard link"),
    ({"id": ROOT, "links": {"x": {"class": "H5L_TYPE_SOFT"}}}, "soft link 'x'"),
    ({"id": ROOT, "links": {"x": {"class": "H5L_TYPE_EXTERNAL", "h5path": "/a"}}},
     "external link 'x' has no 'file'"),
    ({"id": ROOT, "links": {"x": {"class": "H5L_TYPE_EXTERNAL", "file": "f"}}},
     "external link 'x' has no 'h5path'"),
    ({"id": ROOT, "links": {"x": {"class": "H5L_TYPE_UD"}}}, "unknown class"),
    ({"id": ROOT, "links": {"x": "g-..."}}, "link 'x' is not an object"),
])
def test_group_schema_violations(obj: dict, problem: str) -> None:
    with pytest.raises(MetadataError, match=problem) as err:
        parse_group(GKEY, obj)
    assert err.value.key == GKEY


def test_attribute_value_errors_name_key_and_attribute() -> None:
    meta = parse_group(GKEY, {"id": ROOT, "attributes": {
        "a": {"type": F4, "shape": {"class": "H5S_SIMPLE", "dims": [3]}, "value": [1, 2]},
        "n": {"type": F4, "shape": {"class": "H5S_NULL"}}}})
    with pytest.raises(MetadataError, match="attribute 'a'") as err:
        meta.attributes["a"].value(GKEY)
    assert err.value.key == GKEY
    assert meta.attributes["n"].value(GKEY) is None


def test_vlen_ascii_string_attributes_read_as_str() -> None:
    """h5py reads every variable-length string attribute as str, ASCII ones too
    (pyfive's dim_scales.hdf5 has DIMENSION_LABELS of three)."""
    ascii_ = {"class": "H5T_STRING", "charSet": "H5T_CSET_ASCII",
              "strPad": "H5T_STR_NULLTERM", "length": "H5T_VARIABLE"}
    meta = parse_group(GKEY, {"id": ROOT, "attributes": {
        "labels": {"type": ascii_, "shape": {"class": "H5S_SIMPLE", "dims": [3]},
                   "value": ["z", "y", "x"]},
        "one": {"type": ascii_, "shape": {"class": "H5S_SCALAR"}, "value": "t"}}})
    assert meta.attributes["labels"].value(GKEY).tolist() == ["z", "y", "x"]
    assert meta.attributes["one"].value(GKEY) == "t"


def test_domain_and_datatype() -> None:
    key = "home/u/x.h5/.domain.json"
    assert parse_domain(key, {"root": ROOT}).root == ROOT
    assert parse_domain(key, {"owner": "me"}).root is None  # a folder
    with pytest.raises(MetadataError, match="'root' is not a valid group id") as err:
        parse_domain(key, {"root": "g-bad"})
    assert err.value.key == key
    tid = "t-01234567-89abcdef-0000-1a2b3c-4d5e6f"
    tkey = "db/01234567-89abcdef/t/0000-1a2b3c-4d5e6f/.datatype.json"
    assert parse_datatype(tkey, {"id": tid, "type": F4}).type_json == F4
    with pytest.raises(MetadataError, match="no 'type'"):
        parse_datatype(tkey, {"id": tid})
    with pytest.raises(MetadataError, match="valid datatype id"):
        parse_datatype(tkey, {"id": DID, "type": F4})


@pytest.mark.parametrize("data, problem", [
    (b"{not json", "not valid JSON"), (b"\xff\xfe", "not valid JSON"), (b"", "not valid JSON"),
    (b"[1, 2]", "expected a JSON object, got list"), (b'"x"', "got str"),
])
def test_load_json(data: bytes, problem: str) -> None:
    with pytest.raises(MetadataError, match=problem) as err:
        load_json(KEY, data)
    assert err.value.key == KEY


def test_dump_json_roundtrip() -> None:
    obj = dataset()
    assert load_json(KEY, dump_json(obj)) == obj
    assert json.loads(dump_json({"v": float("nan")}))["v"] != 0  # NaN extension survives


def test_dataspace_json() -> None:
    for js in ({"class": "H5S_SIMPLE", "dims": [3, 4], "maxdims": ["H5S_UNLIMITED", 8]},
               {"class": "H5S_SIMPLE", "dims": [3]}, {"class": "H5S_SCALAR"},
               {"class": "H5S_NULL"}):
        assert Dataspace.from_json(js).to_json() == js
    assert Dataspace.from_json({"class": "H5S_SIMPLE", "dims": [2],
                                "maxdims": [0]}).maxshape == (None,)  # 0 is unlimited too
    assert Dataspace.from_json([4, 5]).shape == (4, 5)


# -- the builders of new objects' JSON: HSDS's shapes, parsed back by h5dask -----------------
def test_dataset_json_is_hsds_shaped_and_parses_back() -> None:
    body = dataset_json({"class": "H5T_FLOAT", "base": "H5T_IEEE_F32LE"},
                        Dataspace((10,), (None,)), chunked_layout((4,)),
                        [{"class": "H5Z_FILTER_DEFLATE", "id": 1, "level": 4}], 1.5)
    obj = object_json(DID, ROOT, 7.0, body)
    assert list(obj) == ["id", "root", "created", "lastModified", "type", "shape",
                         "creationProperties", "layout", "attributes"]
    assert list(obj["creationProperties"]) == ["layout", "filters", "fillValue"]
    assert obj["layout"] == obj["creationProperties"]["layout"]
    assert obj["layout"] is not obj["creationProperties"]["layout"]  # two JSON objects
    meta = parse_dataset(KEY, obj)
    assert (meta.shape, meta.space.maxshape, meta.chunk_shape) == ((10,), (None,), (4,))
    assert meta.codec.compressor == "gzip" and meta.fill_value() == 1.5


def test_dataset_json_of_a_null_dataspace_has_no_layout() -> None:
    body = dataset_json("H5T_STD_I8LE", Dataspace(None), None, [], 3)
    assert body == {"type": "H5T_STD_I8LE", "shape": {"class": "H5S_NULL"},
                    "creationProperties": {"fillValue": 3}, "attributes": {}}
    assert parse_dataset(KEY, object_json(DID, ROOT, 0.0, body)).space.is_null


def test_scalar_and_linked_layouts_parse_back() -> None:
    scalar = dataset_json("H5T_STD_I8LE", Dataspace((), ()), contiguous_layout(), [])
    assert parse_dataset(KEY, object_json(DID, ROOT, 0.0, scalar)).chunk_shape == (1,)
    uri = "s3://bucket/file.h5"
    for layout, cls in [
        (chunked_ref_layout((2,), uri, {"0": [10, 8], "1": [18, 8]}), "H5D_CHUNKED_REF"),
        (chunked_ref_indirect_layout((2,), uri, DID), "H5D_CHUNKED_REF_INDIRECT"),
        (contiguous_ref_layout(uri, 100, 32), "H5D_CONTIGUOUS_REF"),
    ]:
        body = dataset_json("H5T_STD_I32LE", Dataspace((4,), (4,)), layout, [])
        meta = parse_dataset(KEY, object_json(DID, ROOT, 0.0, body))
        assert (meta.layout.cls, meta.layout.is_linked, meta.layout.file_uri) == (cls, True, uri)


def test_group_datatype_attribute_and_domain_json() -> None:
    assert parse_group(KEY, object_json(GID, ROOT, 0.0, group_json())).links == {}
    assert parse_datatype(KEY, object_json("t-01234567-89abcdef-0000-aaaaaa-bbbbbb", ROOT, 0.0,
                                           datatype_json("H5T_STD_I8LE"))).type_json == (
        "H5T_STD_I8LE")
    assert attribute_json("H5T_STD_I8LE", (), 5, 1.0) == {
        "type": "H5T_STD_I8LE", "shape": {"class": "H5S_SCALAR"}, "value": 5, "created": 1.0}
    assert "value" not in attribute_json("H5T_STD_I8LE", None, None, 1.0)
    assert parse_domain(KEY, domain_json(ROOT, "me", {"me": {}}, 1.0, 2.0)).root == ROOT


def test_attribute_values_are_decoded_once_and_handed_out_as_copies():
    from h5dask.format.metadata import parse_attributes

    attrs = parse_attributes("k", {
        "r": {"type": {"class": "H5T_FLOAT", "base": "H5T_IEEE_F32LE"},
              "shape": {"class": "H5S_SIMPLE", "dims": [2]}, "value": [0.0, 1.0]},
        "seq": {"type": {"class": "H5T_VLEN", "base": "H5T_STD_I32LE"},
                "shape": {"class": "H5S_SIMPLE", "dims": [1]}, "value": [[1, 2]]},
    })
    first = attrs["r"].value("k")
    first[0] = 99.0  # the caller's own copy
    np.testing.assert_array_equal(attrs["r"].value("k"), [0.0, 1.0])
    seq = attrs["seq"].value("k")
    seq[0][0] = 99  # inside a sequence too
    assert list(attrs["seq"].value("k")[0]) == [1, 2]


def test_attribute_of_a_committed_type_is_decoded_with_the_current_type():
    from h5dask.format.metadata import parse_attributes

    attr = parse_attributes("k", {"a": {"type": "t-00000000-0000-0000-0000-000000000001",
                                        "shape": {"class": "H5S_SCALAR"}, "value": 7}})["a"]
    assert attr.value("k", lambda _: {"class": "H5T_INTEGER", "base": "H5T_STD_I8LE"}
                      ).dtype == np.int8
    # not kept: the committed type lives in another object, which may have changed
    assert attr.value("k", lambda _: {"class": "H5T_INTEGER", "base": "H5T_STD_I64LE"}
                      ).dtype == np.int64
