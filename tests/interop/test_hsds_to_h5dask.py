"""Interop, HSDS -> h5dask: a domain written through h5pyd by the real HSDS 1.0.2 server
reads through ``h5dask.File`` straight from storage (POSIX directory and SeaweedFS S3)
with the same values, dtypes, shapes, chunks and attributes as h5pyd reads."""

from __future__ import annotations

import numpy as np
import pytest
from interop_compare import assert_trees_equal, fresh_name

import h5dask

h5pyd = pytest.importorskip("h5pyd")

pytestmark = pytest.mark.hsds

GZIP = np.arange(40 * 30, dtype="<f4").reshape(40, 30) / 7
SHUFFLED = np.arange(50 * 20, dtype="<i4").reshape(50, 20) * 1000 - 3
COMPOUND = np.dtype([("id", "<i4"), ("x", "<f8"), ("tag", "S4")])
ENUM = h5pyd.enum_dtype({"RED": 0, "GREEN": 1, "BLUE": 7}, basetype="u1")


def _write_with_h5pyd(domain: str, kwargs: dict) -> None:
    with h5pyd.File(domain, "w", **kwargs) as f:
        # attributes of numeric, string (fixed and vlen) and array types on the root
        f.attrs["title"] = "written by HSDS"  # vlen UTF-8 string
        f.attrs.create("fixed", np.bytes_("abcde"), dtype="S5")
        f.attrs.create("i32", 42, dtype="<i4")
        f.attrs["i64"] = np.int64(-(2**40))
        f.attrs["f64"] = 2.5
        f.attrs.create("f32", 0.25, dtype="<f4")
        f.attrs.create("u8_be", 7, dtype=">u8")
        f.attrs["flag"] = np.bool_(True)
        f.attrs["vector"] = np.array([1, -2, 3], dtype="<i2")
        f.attrs["matrix"] = np.arange(6, dtype="<f8").reshape(2, 3)
        f.attrs.create("h5t_array", np.array((4, 5, 6), dtype="<i2"), dtype=np.dtype(("<i2", 3)))
        f.attrs.create("names", ["a", "bb", "ccc"], dtype=h5pyd.string_dtype())
        f.attrs.create("fixed_names", [b"ab", b"cd"], dtype="S2")

        # nested groups with their own attributes
        g3 = f.create_group("g1/g2/g3")
        f["g1"].attrs["level"] = 1
        f["g1/g2"].attrs["level"] = np.int16(2)
        g3.attrs["level"] = np.uint32(3)
        g3.attrs["note"] = "deep"

        gz = f.create_dataset("gzip", data=GZIP, chunks=(20, 15), compression="gzip")
        gz.attrs["units"] = "K"
        gz.attrs["valid_range"] = np.array([-1.0, 1000.0], dtype="<f4")
        f.create_dataset("g1/gzip_shuffle", data=SHUFFLED, chunks=(25, 10),
                         compression="gzip", compression_opts=6, shuffle=True)
        # unwritten chunks: only the first of 3 x 3 chunks is written
        sparse = f.create_dataset("sparse", shape=(30, 30), dtype="<i2", chunks=(10, 10),
                                  fillvalue=-1)
        sparse[2:8, 3:9] = 5
        f.create_dataset("sparse_f8", shape=(12,), dtype="<f8", chunks=(4,), fillvalue=np.nan)
        f.create_dataset("fixed_str", data=np.array([b"alpha", b"be", b"gamma!"], dtype="S6"),
                         chunks=(2,))
        vlen = f.create_dataset("vlen_str", shape=(5,), dtype=h5pyd.string_dtype(), chunks=(3,))
        vlen[...] = ["x", "", "héllo", "wörld", "longer text"]
        records = np.array([(1, 0.5, b"ab"), (2, -1.5, b"cdef"), (3, 1e10, b"")], COMPOUND)
        f.create_dataset("compound", data=records, chunks=(2,))
        f.create_dataset("scalar", data=np.float64(3.25))
        f.create_dataset("big_endian_i4", data=np.arange(-5, 5, dtype=">i4"), chunks=(4,))
        f.create_dataset("big_endian_f8", data=np.linspace(0, 1, 7).astype(">f8"))
        f.create_dataset("enum", data=np.array([0, 1, 7, 7, 0], dtype="u1"), dtype=ENUM)
        f.create_dataset("bool", data=np.array([True, False, True]))
        ext = f.create_dataset("g1/g2/extensible", shape=(4, 3), maxshape=(None, 3),
                               dtype="<f4", chunks=(4, 3), fillvalue=9.5)
        ext[...] = np.ones((4, 3), "<f4")
        ext.resize((10, 3))
        ext[8:10] = 2.0
        f["g1/alias"] = h5pyd.SoftLink("/gzip")


@pytest.fixture(params=["hsds_posix", "hsds_s3"])
def hsds_domain(request):
    """(server, domain path, h5dask URL, storage_options) for a fresh domain per test."""
    server = request.getfixturevalue(request.param)
    name = fresh_name("from-hsds")
    domain = f"/home/{server.username}/{name}"
    if server.storage == "posix":
        url = f"file://{server.root_dir}/{server.bucket}{domain}"
        options = None
    else:
        url = f"s3://{server.bucket}{domain}"
        options = request.getfixturevalue("storage_options")
    return server, domain, url, options


def test_domain_written_by_hsds_reads_through_h5dask(hsds_domain):
    server, domain, url, options = hsds_domain
    _write_with_h5pyd(domain, server.h5pyd_kwargs())
    # flush (HSDS writes lazily; the flush request returns when storage is written), then
    # check that storage stays quiet
    server.wait_for_keys([domain.lstrip("/") + "/.domain.json", "db/*/d/*/0_0"],
                         domain=domain, quiet=1.0)

    with h5pyd.File(domain, "r", **server.h5pyd_kwargs()) as want, \
            h5dask.File(url, storage_options=options) as got:
        counts = assert_trees_equal(got, want)
        assert counts == {"groups": 4, "datasets": 13, "attributes": 19, "soft links": 1}

        # and the values are the ones written (not only the same in both readers)
        np.testing.assert_array_equal(got["gzip"][...], GZIP)
        np.testing.assert_array_equal(got["g1/gzip_shuffle"][...], SHUFFLED)
        assert got["g1/gzip_shuffle"].compression == "gzip" and got["g1/gzip_shuffle"].shuffle
        sparse = np.full((30, 30), -1, "<i2")
        sparse[2:8, 3:9] = 5
        np.testing.assert_array_equal(got["sparse"][...], sparse)
        assert got["sparse"].read_direct_chunk((1, 1)) is None  # never written
        assert np.isnan(got["sparse_f8"][...]).all()
        texts = ["x", "", "héllo", "wörld", "longer text"]
        assert got["vlen_str"][...].tolist() == [t.encode() for t in texts]  # as h5py
        assert got["vlen_str"].asstr()[...].tolist() == texts
        assert got["scalar"][()] == 3.25 and got["scalar"].shape == ()
        assert got["big_endian_i4"].dtype.str == ">i4"
        assert got["bool"].dtype == np.bool_
        assert h5dask.enum_dtype({"RED": 0, "GREEN": 1, "BLUE": 7}, "u1").metadata == (
            got["enum"].dtype.metadata)
        ext = got["g1/g2/extensible"]
        assert ext.shape == (10, 3) and ext.maxshape == (None, 3)
        np.testing.assert_array_equal(ext[:, 0], [1] * 4 + [9.5] * 4 + [2] * 2)
        np.testing.assert_array_equal(got["g1/alias"][...], GZIP)
        assert got.attrs["fixed"] == b"abcde" and got.attrs["title"] == "written by HSDS"
