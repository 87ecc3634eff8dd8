"""Compounds with object-reference members, both ways through the real HSDS server.

HSDS (h5json) stores a reference as a fixed 48-byte NUL-padded ``collection/id`` field
wherever it sits, so a record of a reference and an int32 is 52 bytes. h5dask read such
chunks as corrupt (CorruptChunkError) and wrote length-prefixed ids that HSDS cannot read.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import requests
from interop_compare import fresh_name

import h5dask
from h5dask.format import ids, vlen
from h5dask.format.types import OBJ_REF

h5pyd = pytest.importorskip("h5pyd")

pytestmark = [pytest.mark.hsds, pytest.mark.timeout(600)]


def _ids(values: object) -> list:
    """Records with their references as bare ids (h5pyd gives bytes, with or without
    HSDS's ``datasets/`` prefix; h5dask the id; null is empty either way)."""
    def one(v: object) -> object:
        if isinstance(v, bytes | str):
            return (v.decode() if isinstance(v, bytes) else v).split("/")[-1]
        if isinstance(v, np.ndarray):
            return [one(x) for x in v.tolist()]
        return v
    return [tuple(one(x) for x in rec) for rec in np.asarray(values).tolist()]


def _url(server, domain: str) -> str:
    return f"file://{server.root_dir}/{server.bucket}{domain}"


def test_compound_references_hsds_wrote_read_as_h5pyd_reads(hsds_posix) -> None:
    server = hsds_posix
    domain = f"/home/{server.username}/{fresh_name('cmp-refs')}"
    rec = np.dtype([("r", h5pyd.special_dtype(ref=h5pyd.Reference)), ("n", "<i4")])
    with h5pyd.File(domain, "w", **server.h5pyd_kwargs()) as f:
        target, group = f.create_dataset("t", data=np.arange(3)), f.create_group("g")
        d = f.create_dataset("recs", shape=(5,), dtype=rec, chunks=(2,))
        d[0], d[1], d[3] = (target.ref, 5), (group.ref, 6), (f.ref, -1)  # 2, 4: null
        f.attrs.create("rec", np.array([(target.ref, 1), (group.ref, 2)], dtype=rec))
        ids = {"t": target.id.id, "g": group.id.id, "/": f.id.id}
    server.wait_for_keys([domain.lstrip("/") + "/.domain.json", "db/*/d/*/0"],
                         domain=domain, quiet=1.0)
    with h5pyd.File(domain, "r", **server.h5pyd_kwargs()) as want_f, \
            h5dask.File(_url(server, domain)) as got_f:
        got, want = got_f["recs"][()], want_f["recs"][()]
        assert got.dtype.names == ("r", "n") and "ref" in got.dtype["r"].metadata
        assert _ids(got) == _ids(want) == [(ids["t"], 5), (ids["g"], 6), ("", 0),
                                           (ids["/"], -1), ("", 0)]
        assert _ids(got_f.attrs["rec"]) == _ids(want_f.attrs["rec"]) == [(ids["t"], 1),
                                                                          (ids["g"], 2)]


def test_hsds_serves_compound_references_h5dask_wrote(hsds_posix) -> None:
    server = hsds_posix
    domain = f"/home/{server.username}/{fresh_name('h5dask-cmp-refs')}"
    # (HSDS 1.0.2 refuses an array type of references at all: "Array Type base type
    # must be integer, float, string, compound or array", so no such member here)
    rec = np.dtype([("r", OBJ_REF), ("n", "<i4")])
    with h5dask.File(_url(server, domain), "w") as f:
        t, g = f.create_dataset("t", data=np.arange(3)), f.create_group("g")
        values = np.zeros(3, rec)
        values[0], values[1], values[2] = (t.id, 5), (g, 6), (None, -1)
        d = f.create_dataset("recs", data=values, chunks=(2,))
        f.attrs.create("rec", values[:2])
        recs_id, want = d.id, [(t.id, 5), (g.id, 6), ("", -1)]
    with h5dask.File(_url(server, domain)) as f:
        assert _ids(f["recs"][()]) == want
        assert _ids(f.attrs["rec"]) == want[:2]
    # one request first, without h5pyd's minutes of retries of a 500
    rsp = requests.get(f"{server.endpoint}/datasets/{recs_id}/value",
                       params={"domain": domain}, auth=(server.username, server.password),
                       timeout=60)
    assert rsp.status_code == 200, rsp.text
    with h5pyd.File(domain, "r", **server.h5pyd_kwargs()) as f:
        assert _ids(f["recs"][()]) == want
        assert _ids(f.attrs["rec"]) == want[:2]
    # HSDS ignores the layout marker h5dask writes for types with references, and keeps
    # it when it rewrites the dataset's JSON (here: h5pyd adds an attribute)
    with h5pyd.File(domain, "r+", **server.h5pyd_kwargs()) as f:
        f["recs"].attrs["note"] = 1
    server.wait_for_keys(domain=domain, quiet=1.0)
    stored = json.loads((Path(server.root_dir) / server.bucket / ids.object_key(recs_id))
                        .read_text())
    assert "note" in stored["attributes"]
    assert stored[vlen.REF_LAYOUT_KEY] == vlen.REF_LAYOUT_HSDS
    with h5dask.File(_url(server, domain)) as f:
        assert _ids(f["recs"][()]) == want


def test_sequences_of_null_references_hsds_wrote(hsds_posix) -> None:
    """k null references in a sequence are 48k zero bytes, which the layout of earlier
    h5dask reads as 12k nulls; a dataset HSDS wrote (no layout at the top of its JSON,
    which h5dask always writes) reads as HSDS's layout, as h5pyd reads it."""
    server = hsds_posix
    domain = f"/home/{server.username}/{fresh_name('seq-null-refs')}"
    seq_dt = h5pyd.vlen_dtype(h5pyd.special_dtype(ref=h5pyd.Reference))
    with h5pyd.File(domain, "w", **server.h5pyd_kwargs()) as f:
        d = f.create_dataset("seq", shape=(2,), dtype=seq_dt, chunks=(1,))  # nulls alone in chunk 0
        d[0] = np.array([b"", b""], dtype=object)
        d[1] = np.array([f.ref], dtype=object)
        root_id = f.id.id
    server.wait_for_keys([domain.lstrip("/") + "/.domain.json", "db/*/d/*/0"],
                         domain=domain, quiet=1.0)
    with h5pyd.File(domain, "r", **server.h5pyd_kwargs()) as want_f, \
            h5dask.File(_url(server, domain)) as got_f:
        want = [[v.decode().split("/")[-1] for v in s] for s in want_f["seq"][()]]
        got = [s.tolist() for s in got_f["seq"][()]]
        assert got == want == [["", ""], [root_id]]
