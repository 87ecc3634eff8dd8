"""The consolidated object's format: bodies are kept only when every one is well formed
(any doubt costs requests, never the summary or a value)."""

from __future__ import annotations

import json

import pytest

from h5dask.format import consolidated

BLOB = b'{"id":"g-1"}'


def _doc(**change):
    doc = consolidated.build("g-1", {"g-1": consolidated.digest(BLOB)}, [],
                             {"g-1": (consolidated.md5(BLOB), json.loads(BLOB))})
    doc.update(change)
    return json.dumps(doc).encode()


def test_bodies_and_md5s_round_trip():
    summary = consolidated.parse(_doc(), "g-1")
    assert summary.bodies == {"g-1": {"id": "g-1"}}
    assert summary.md5 == {"g-1": consolidated.md5(BLOB)}


@pytest.mark.parametrize("change", [
    {"md5": {"g-1": "not an md5"}},
    {"md5": {}},  # a body without its MD5
    {"bodies": {"g-1": [1, 2]}},
    {"bodies": {"g-1": {}, "g-2": {}}, "md5": {"g-1": "0" * 32, "g-2": "0" * 32}},  # unnamed
    {"bodies": "x"},
])
def test_malformed_bodies_are_dropped_and_the_summary_kept(change):
    summary = consolidated.parse(_doc(**change), "g-1")
    assert summary is not None and summary.objects
    assert summary.bodies == {} and summary.md5 == {}


def test_a_summary_without_bodies_is_read_as_before():
    doc = consolidated.build("g-1", {"g-1": consolidated.digest(BLOB)}, [("db/x/0", 8)])
    summary = consolidated.parse(consolidated.dump(doc), "g-1")
    assert "bodies" not in doc and summary.bodies == {}
    assert summary.coordinate_chunks == (("db/x/0", 8),)
