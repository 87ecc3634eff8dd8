"""Object ids and keys of the HSDS schema v2, checked against the rules and h5json's code."""

from __future__ import annotations

import re

import pytest

from h5dask.format import ids

ID_RE = re.compile(r"^[gdt]-[0-9a-f]{8}-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{6}-[0-9a-f]{6}$")
ROOT = "g-01234567-89abcdef-89ab-cdef01-234567"  # last 16 hex = first 16 rotated by 8
DSET = "d-01234567-89abcdef-0000-1a2b3c-4d5e6f"


def test_root_rule_by_hand() -> None:
    assert ids.is_root_id(ROOT)
    assert not ids.is_root_id("g-01234567-89abcdef-0000-000000-000000")
    assert not ids.is_root_id(DSET)  # only groups are roots
    assert ids.root_id_of(DSET) == ROOT
    assert ids.root_id_of(ROOT) == ROOT


def test_new_ids_follow_the_rules() -> None:
    for _ in range(50):
        root = ids.new_root_id()
        assert ID_RE.match(root) and ids.is_root_id(root)
        for kind in "gdt":
            obj = ids.new_object_id(kind, root)
            assert ID_RE.match(obj) and obj[0] == kind
            assert obj[2:19] == root[2:19]  # same first 16 hex digits as the root
            assert not ids.is_root_id(obj)
            assert ids.root_id_of(obj) == root
            assert ids.kind_of(obj) == kind
    assert len({ids.new_root_id() for _ in range(100)}) == 100


def test_keys() -> None:
    assert ids.object_key(ROOT) == "db/01234567-89abcdef/.group.json"
    assert ids.object_prefix(ROOT) == "db/01234567-89abcdef"
    grp = "g-01234567-89abcdef-0000-1a2b3c-4d5e6f"
    assert ids.object_key(grp) == "db/01234567-89abcdef/g/0000-1a2b3c-4d5e6f/.group.json"
    assert ids.object_key(DSET) == "db/01234567-89abcdef/d/0000-1a2b3c-4d5e6f/.dataset.json"
    typ = "t-01234567-89abcdef-0000-1a2b3c-4d5e6f"
    assert ids.object_key(typ) == "db/01234567-89abcdef/t/0000-1a2b3c-4d5e6f/.datatype.json"
    assert ids.chunk_key(DSET, (0, 1)) == "db/01234567-89abcdef/d/0000-1a2b3c-4d5e6f/0_1"
    assert ids.chunk_key(DSET, (3, 0, 12)).endswith("/3_0_12")
    assert ids.chunk_name(()) == "0"
    assert ids.domain_key("/home/user/run1.h5/") == "home/user/run1.h5/.domain.json"


@pytest.mark.parametrize("bad", [
    "", "g-0123", "x-01234567-89abcdef-0000-1a2b3c-4d5e6f",
    "g-01234567-89ABCDEF-0000-1a2b3c-4d5e6f", "g-01234567-89abcdef-0000-1a2b3c-4d5e6f0",
    "01234567-89abcdef-0000-1a2b3c-4d5e6f", None, 42,
])
def test_invalid_ids(bad: object) -> None:
    assert not ids.is_valid_id(bad)
    if isinstance(bad, str):
        with pytest.raises(ValueError, match="not an HSDS schema-v2 object id"):
            ids.object_key(bad)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="object kind"):
        ids.new_object_id("c", ROOT)
    with pytest.raises(ValueError, match="not a dataset id"):
        ids.chunk_key(ROOT, (0,))


def test_agrees_with_h5json() -> None:
    """h5json (what h5pyd and HSDS use) computes the same ids and keys."""
    objid = pytest.importorskip("h5json.objid")
    for _ in range(20):
        root = ids.new_root_id()
        assert objid.isRootObjId(root)
        assert objid.getS3Key(root) == ids.object_key(root)
        for kind, collection in (("g", "groups"), ("d", "datasets"), ("t", "datatypes")):
            mine = ids.new_object_id(kind, root)
            assert not objid.isRootObjId(mine)
            assert objid.getS3Key(mine) == ids.object_key(mine)
            assert objid.getRootObjId(mine) == root
            theirs = objid.createObjId(collection, root_id=root)
            assert ids.is_valid_id(theirs) and ids.root_id_of(theirs) == root
            assert ids.object_key(theirs) == objid.getS3Key(theirs)
        their_root = objid.createObjId("groups")
        assert ids.is_root_id(their_root)
        assert ids.object_key(their_root) == objid.getS3Key(their_root)
        dset = ids.new_object_id("d", root)
        chunk_id = "c" + dset[1:] + "_2_0_7"
        assert objid.getS3Key(chunk_id) == ids.chunk_key(dset, (2, 0, 7))


# a fixed id (one new_object_id gave): it is in the test ids, which must be the same at
# every collection (pytest-xdist's workers each collect and compare them)
_REF_ID = "d-e812cd2d-b8f94909-9bf5-c86b11-71578f"
assert ids.is_valid_id(_REF_ID)


@pytest.mark.parametrize("value, want", [
    (_REF_ID, _REF_ID),
    (_REF_ID.encode(), _REF_ID),  # as h5pyd reads references: bytes
    (f"datasets/{_REF_ID}".encode(), _REF_ID),  # ... with HSDS's collection
    (f"datasets/{_REF_ID}", _REF_ID),
    (None, ""), ("", ""), (b"", ""),
])
def test_reference_id_accepts_ids_as_h5pyd_and_hsds_give_them(value: object, want: str) -> None:
    assert ids.reference_id(value) == want


@pytest.mark.parametrize("value, says", [
    ("not-an-id", "not an HSDS object id"),
    (f"b'{_REF_ID}'", "not an HSDS object id"),  # what str(bytes) stored before
    ("é", "not an HSDS object id"),
    (b"\xc3\xa9", "not ASCII"),
    ("x" * 49, "not an HSDS object id"),
    (f"groups/{_REF_ID}", "only an id or"),  # a dataset's id in the groups collection
    (3, "cannot be int"),
])
def test_reference_id_refuses_what_is_not_a_reference(value: object, says: str) -> None:
    from h5dask.errors import H5DaskError, InvalidReferenceError

    with pytest.raises(InvalidReferenceError, match=says) as info:
        ids.reference_id(value)
    assert isinstance(info.value, H5DaskError) and isinstance(info.value, ValueError)
