"""Interop cases found by running h5pyd's own test suite (HDFGroup/h5pyd ``test/hl``)
against our HSDS and comparing every domain it left with what ``h5dask.File`` reads
straight from storage. Each case is rebuilt here with our own small data: h5pyd writes
it through the real HSDS server and h5dask must read what h5pyd reads; where h5dask can
write the feature, HSDS must serve what h5dask wrote.

- a sequence of compounds whose members are sequences themselves (h5pyd's
  ``test_nested_compound_vlen``): h5dask took a valid chunk for corrupt, and wrote the
  records' object pointers instead of their values;
- strings inside compound attributes (``test_vlen_compound_with_vlen_string``): bytes,
  as h5py and h5pyd read them, not str;
- external links with a relative file name (``test_external_links``): from the folder
  of the linking domain, as h5pyd resolves them, not from the bucket's root.
"""

from __future__ import annotations

import numpy as np
import pytest
import requests
from interop_compare import assert_values_equal, fresh_name

import h5dask
from h5dask.format.types import OBJ_REF

h5pyd = pytest.importorskip("h5pyd")

pytestmark = [pytest.mark.hsds, pytest.mark.timeout(600)]


def _nested_dtypes(lib):
    """(records of two int sequences, records holding a sequence of those and an int)."""
    inner = np.dtype([("a", lib.vlen_dtype(np.dtype("<i4"))),
                      ("b", lib.vlen_dtype(np.dtype("<i4")))])
    return inner, np.dtype([("f1", lib.vlen_dtype(inner)), ("f2", "<i8")])


def _nested_values(lib, empty: bool = False) -> np.ndarray:
    """``empty``: with empty sequences (which h5pyd reads as 0, h5py and h5dask as empty
    arrays), else without."""
    inner, outer = _nested_dtypes(lib)
    one = (np.array([1, 2], "<i4"), np.array([6, 7, 8], "<i4"))
    two = (np.array([10, 11, 12, 13], "<i4"), np.array([] if empty else [5], "<i4"))
    last = np.array([] if empty else [one], inner)
    return np.array([(np.array([one, two], inner), 2), (np.array([one], inner), -3),
                     (last, 40)], outer)


def _pairs_dtype(lib) -> np.dtype:
    return np.dtype([("name", lib.string_dtype()), ("note", lib.string_dtype())])


PAIRS = [("apples", "bananas"), ("péaches", "")]


def _storage_url(server, domain: str) -> str:
    return f"file://{server.root_dir}/{server.bucket}{domain}"


@pytest.fixture(scope="module")
def written_by_h5pyd(hsds_posix) -> tuple[str, str]:
    server = hsds_posix
    domain = f"/home/{server.username}/{fresh_name('h5pyd-suite')}"
    pairs_dt = _pairs_dtype(h5pyd)
    with h5pyd.File(domain, "w", **server.h5pyd_kwargs()) as f:
        f.create_dataset("nested", data=_nested_values(h5pyd))
        f.create_dataset("nested_chunked", data=_nested_values(h5pyd), chunks=(2,))
        f.create_dataset("with_empty", data=_nested_values(h5pyd, empty=True), chunks=(2,))
        f.attrs.create("nested", _nested_values(h5pyd))
        f.attrs.create("pairs", np.array(PAIRS, pairs_dt))
        vlen_pairs = np.dtype([("f", h5pyd.vlen_dtype(pairs_dt))])
        f.attrs.create("vlen_pairs", np.array((np.array(PAIRS, pairs_dt),), vlen_pairs))
    server.wait_for_keys([domain.lstrip("/") + "/.domain.json", "db/*/d/*/0"],
                         domain=domain, quiet=1.0)
    return domain, _storage_url(server, domain)


@pytest.mark.parametrize("name", ["nested", "nested_chunked"])
def test_sequence_of_records_with_sequences_reads_as_h5pyd(name, written_by_h5pyd,
                                                           hsds_posix) -> None:
    path, url = written_by_h5pyd
    with h5pyd.File(path, "r", **hsds_posix.h5pyd_kwargs()) as want_f, \
            h5dask.File(url) as got_f:
        want, got = want_f[name][()], got_f[name][()]
    assert_values_equal(got, want, name)
    assert_values_equal(got, _nested_values(h5dask), name)  # h5pyd agrees with the data
    assert got[0]["f1"][1]["a"].tolist() == [10, 11, 12, 13]
    with h5dask.File(url) as got_f:
        assert_values_equal(got_f["with_empty"][()], _nested_values(h5dask, empty=True), name)


def test_compound_attributes_read_as_h5pyd(written_by_h5pyd, hsds_posix) -> None:
    path, url = written_by_h5pyd
    with h5pyd.File(path, "r", **hsds_posix.h5pyd_kwargs()) as want_f, \
            h5dask.File(url) as got_f:
        for name in ("nested", "pairs", "vlen_pairs"):
            assert_values_equal(got_f.attrs[name], want_f.attrs[name], f"attribute {name}")
        # strings inside a compound are bytes, as in h5py (top-level ones are str)
        assert got_f.attrs["pairs"].tolist() == [(b"apples", b"bananas"),
                                                 ("péaches".encode(), b"")]
        assert got_f.attrs["vlen_pairs"]["f"][1]["name"] == "péaches".encode()


def test_relative_external_links_resolve_from_the_linking_domains_folder(hsds_posix) -> None:
    server = hsds_posix
    folder = f"/home/{server.username}/{fresh_name('links')[:-3]}/"
    h5pyd.Folder(folder, mode="w", **server.h5pyd_kwargs())
    up = fresh_name("up")
    target_ids = []  # the target in the same folder, and one in the folder above
    for domain, value in ((f"{folder}target.h5", 1.5), (f"/home/{server.username}/{up}", 7.0)):
        with h5pyd.File(domain, "w", **server.h5pyd_kwargs()) as f:
            target_ids.append(f.create_dataset("g1/ds", data=np.full((2, 3), value)).id.id)
    links = f"{folder}links.h5"
    with h5pyd.File(links, "w", **server.h5pyd_kwargs()) as f:
        f["relative"] = h5pyd.ExternalLink("target.h5", "/g1/ds")
        f["parent"] = h5pyd.ExternalLink(f"../{up}", "g1/ds")
        f["absolute"] = h5pyd.ExternalLink(f"{folder}target.h5", "/g1/ds")
        f["hdf5_url"] = h5pyd.ExternalLink(f"hdf5:/{folder}target.h5", "/g1/ds")
    server.wait_for_keys([links.lstrip("/") + "/.domain.json"], domain=links, quiet=1.0)
    # h5pyd 1.0.0 follows an external link only in the session that made it (the link
    # JSON HSDS answers has no "file" key: KeyError), so the targets h5pyd made and
    # the file names h5pyd reads back are what h5dask is held to
    expected = {"relative": 0, "parent": 1, "absolute": 0, "hdf5_url": 0}
    with h5pyd.File(links, "r", **server.h5pyd_kwargs()) as want_f, \
            h5dask.File(_storage_url(server, links)) as got_f:
        for name, target in expected.items():
            want_link, got_link = want_f.get(name, getlink=True), got_f.get(name, getlink=True)
            assert (got_link.filename, got_link.path) == (want_link.filename, want_link.path)
            assert got_f[name].id == target_ids[target], name
            assert got_f[name][()].tolist() == [[(1.5, 7.0)[target]] * 3] * 2


def test_hsds_serves_sequences_of_records_h5dask_wrote(hsds_posix) -> None:
    server = hsds_posix
    domain = f"/home/{server.username}/{fresh_name('h5dask-nested')}"
    url = _storage_url(server, domain)
    pairs_dt = _pairs_dtype(h5dask)
    with h5dask.File(url, "w") as f:
        f.create_dataset("nested", data=_nested_values(h5dask))
        f.create_dataset("nested_chunked", data=_nested_values(h5dask), chunks=(2,))
        f.create_dataset("with_empty", data=_nested_values(h5dask, empty=True), chunks=(2,))
        f.attrs.create("nested", _nested_values(h5dask))
        f.attrs.create("pairs", np.array(PAIRS, pairs_dt))
    with h5dask.File(url) as got_f:  # first (fails fast): h5pyd retries HSDS's 500s
        for name in ("nested", "nested_chunked"):
            assert_values_equal(got_f[name][()], _nested_values(h5dask), name)
        assert_values_equal(got_f["with_empty"][()], _nested_values(h5dask, empty=True), "e")
    with h5pyd.File(domain, "r", **server.h5pyd_kwargs()) as want_f, h5dask.File(url) as got_f:
        for name in ("nested", "nested_chunked"):
            assert_values_equal(want_f[name][()], _nested_values(h5pyd), name)
            assert_values_equal(got_f[name][()], want_f[name][()], name)
        assert want_f["with_empty"][0]["f1"][1]["a"].tolist() == [10, 11, 12, 13]
        assert_values_equal(want_f.attrs["nested"], _nested_values(h5pyd), "nested attribute")
        assert_values_equal(got_f.attrs["pairs"], want_f.attrs["pairs"], "pairs attribute")


def test_hsds_serves_object_references_h5dask_wrote(hsds_posix) -> None:
    """h5pyd's ``test_dataset_objref`` domains, copied by h5dask: HSDS reads reference
    chunks only as fixed 48-byte ``collection/id`` fields; h5dask wrote length-prefixed
    ids, and HSDS answered 500 ("buffer size must be a multiple of element size")."""
    server = hsds_posix
    domain = f"/home/{server.username}/{fresh_name('h5dask-refs')}"
    url = _storage_url(server, domain)
    with h5dask.File(url, "w") as f:
        target_ids = [f.create_group("g1").id, f.create_dataset("ds", data=np.arange(4)).id]
        refs = f.create_dataset("refs", shape=(4,), dtype=OBJ_REF, chunks=(2,))
        refs[...] = np.array([*target_ids, None, target_ids[1]], dtype=object)
        refs_id = refs.id
    with h5dask.File(url) as f:
        assert f["refs"][()].tolist() == [*target_ids, "", target_ids[1]]
    # one request first, without h5pyd's minutes of retries of a 500
    rsp = requests.get(f"{server.endpoint}/datasets/{refs_id}/value", params={"domain": domain},
                       auth=(server.username, server.password), timeout=60)
    assert rsp.status_code == 200, rsp.text
    with h5pyd.File(domain, "r", **server.h5pyd_kwargs()) as f:
        got = [v.decode() for v in f["refs"][()].tolist()]
        assert got == [f"groups/{target_ids[0]}", f"datasets/{target_ids[1]}", "",
                       f"datasets/{target_ids[1]}"]
        assert f[f["refs"][1]].id.id == target_ids[1]  # h5pyd follows the reference
