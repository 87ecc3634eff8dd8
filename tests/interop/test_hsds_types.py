"""Interop, every type HSDS writes: datasets and attributes of each HDF5 type class,
dataspace and layout that HSDS 1.0.2 accepts through h5pyd read through ``h5dask.File``
straight from HSDS's storage with the dtype and values h5pyd reads (and through
``engine="h5cloud"`` where xarray applies)."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import xarray as xr
from interop_compare import assert_dtype_equal, assert_values_equal, fresh_name

import h5dask

h5pyd = pytest.importorskip("h5pyd")

pytestmark = [pytest.mark.hsds, pytest.mark.timeout(600)]

COMPLEX = np.array([1 + 2j, -0.5j, 3.25], dtype="<c16")
NESTED = np.dtype([("id", "<i4"), ("pos", [("x", "<f4"), ("y", "<f4")]),
                   ("tags", "S3", (2,))])
VLEN_I4 = h5pyd.vlen_dtype(np.dtype("<i4"))
ENUM = h5pyd.enum_dtype({"LOW": -1, "MID": 0, "HIGH": 5}, basetype="i2")
STRINGS = {  # name -> (dtype, values)
    "ascii_fixed": (h5pyd.string_dtype("ascii", 6), [b"alpha", b"be", b""]),
    "utf8_fixed": (h5pyd.string_dtype("utf-8", 8), ["héllo".encode(), b"x", b"wo"]),
    "ascii_vlen": (h5pyd.string_dtype("ascii"), [b"a", b"", b"longer text"]),
    "utf8_vlen": (h5pyd.string_dtype("utf-8"), ["x", "", "wörld"]),
}


def _write(domain: str, kwargs: dict) -> None:
    with h5pyd.File(domain, "w", **kwargs) as f:
        f.create_dataset("complex", data=COMPLEX)
        f.create_dataset("complex64", data=COMPLEX.astype("<c8"), chunks=(2,))
        f.create_dataset("enum", data=np.array([-1, 5, 0, 5], "i2"), dtype=ENUM)
        f.create_dataset("bool", data=np.array([True, False, True]))
        f.create_dataset("opaque", data=np.frombuffer(b"abcdefgh" * 3, "V8"))
        for name, (dt, values) in STRINGS.items():
            f.create_dataset(name, data=np.array(values, dtype=dt), dtype=dt)
        seq = f.create_dataset("vlen_i4", shape=(3,), dtype=VLEN_I4)
        seq[0], seq[1], seq[2] = np.arange(3, dtype="<i4"), np.arange(0, dtype="<i4"), \
            np.array([7], "<i4")
        nested = np.array([(1, (0.5, -1.0), (b"ab", b"c")), (2, (2.0, 3.5), (b"", b"xyz"))],
                          NESTED)
        f.create_dataset("nested", data=nested)
        f.create_dataset("array_member", data=np.array([((1, 2, 3),), ((4, 5, 6),)],
                                                        [("v", "<i2", (3,))]))
        f.create_dataset("scalar", data=np.float32(1.5))
        f.create_dataset("scalar_str", data="one string", dtype=h5pyd.string_dtype())
        f.create_dataset("null", shape=None, dtype="<f8")
        f.create_dataset("fill", shape=(6,), dtype="<i4", chunks=(3,), fillvalue=-7)
        f["fill"][0:2] = [1, 2]
        f.create_dataset("fill_nan", shape=(4, 4), dtype="<f8", fillvalue=np.nan)
        f.create_dataset("contiguous_like", data=np.arange(12, dtype=">u2").reshape(3, 4))
        refs = f.create_dataset("refs", shape=(3,), dtype=h5pyd.special_dtype(ref=h5pyd.Reference))
        refs[0], refs[1] = f["enum"].ref, f.ref
        g = f.create_group("g")
        g.attrs.create("complex", np.complex128(1 - 1j))
        g.attrs.create("enum", np.array([5, -1], "i2"), dtype=ENUM)
        g.attrs.create("bool", np.array([True, False]))
        g.attrs.create("nested", np.array([(3, (1.0, 2.0), (b"a", b"b"))], NESTED))
        g.attrs.create("empty", h5pyd.Empty("<f4"))
        g.attrs.create("scalar", np.int8(-3))
        g.attrs["ref"] = f["enum"].ref
        g.attrs.create("vlen_i4", np.array([np.arange(2, dtype="<i4")], dtype=object),
                       dtype=VLEN_I4)
        for name, (dt, values) in STRINGS.items():
            if name != "utf8_fixed":  # HSDS 1.0.2 answers 400 to a fixed UTF-8 attribute
                g.attrs.create(name, np.array(values, dtype=dt), dtype=dt)


#: datasets h5pyd cannot make from numpy dtypes, made through HSDS's REST API from
#: their type JSON: name -> (type JSON, layout or None, values as bytes of 3 elements)
RAW = {
    "spacepad": ({"class": "H5T_STRING", "charSet": "H5T_CSET_ASCII",
                  "strPad": "H5T_STR_SPACEPAD", "length": 6}, None, b"ab    abcdefa b   "),
    "nullterm": ({"class": "H5T_STRING", "charSet": "H5T_CSET_ASCII",
                  "strPad": "H5T_STR_NULLTERM", "length": 6}, None,
                 b"ab\0\0\0\0abcde\0" + bytes(6)),
    "utf8_nullpad": ({"class": "H5T_STRING", "charSet": "H5T_CSET_UTF8",
                      "strPad": "H5T_STR_NULLPAD", "length": 4}, None,
                     "hé".encode() + b"\0" + b"abcd" + bytes(4)),
    "array_type": ({"class": "H5T_ARRAY", "base": "H5T_STD_I16BE", "dims": [2]}, None,
                   np.array([[1, 2], [3, -4], [5, 6]], ">i2").tobytes()),
    "float16": ({"class": "H5T_FLOAT", "base": "H5T_IEEE_F16LE"}, None,
                np.array([0.5, -1, 65504], "<f2").tobytes()),
    "padded_compound": ({"class": "H5T_COMPOUND", "fields": [
        {"name": "a", "type": "H5T_STD_U8LE"}, {"name": "b", "type": "H5T_IEEE_F64BE"}]}, None,
        np.array([(1, 0.5), (2, -2.0), (3, 1e100)], [("a", "u1"), ("b", ">f8")]).tobytes()),
    "opaque_datetime": ({"class": "H5T_OPAQUE", "size": 8, "tag": "NUMPY:<M8[s]"}, None,
                        np.array([0, 86400, -1], "<M8[s]").tobytes()),
    "compact": ("H5T_STD_I32LE", {"class": "H5D_COMPACT"}, np.arange(3, dtype="<i4").tobytes()),
    "contiguous": ("H5T_STD_I64BE", {"class": "H5D_CONTIGUOUS"},
                   np.arange(3, dtype=">i8").tobytes()),
}


def _write_raw(server, domain: str) -> None:
    auth, params = (server.username, server.password), {"domain": domain}
    with h5pyd.File(domain, "r", **server.h5pyd_kwargs()) as f:
        root = f.id.uuid
    # an opaque attribute (h5pyd 1.0.0's own write of one gets a 400): HSDS keeps its
    # values as base64, "" for all zeros
    rsp = requests.put(f"{server.endpoint}/groups/{root}/attributes/opaque", params=params,
                       auth=auth, json={"type": {"class": "H5T_OPAQUE", "size": 4},
                                        "shape": [2], "value": ["YWIA/w==", ""]}, timeout=60)
    assert rsp.status_code < 300, rsp.text
    for name, (type_json, layout, values) in RAW.items():
        body: dict = {"type": type_json, "shape": [3]}
        if layout is not None:
            body["creationProperties"] = {"layout": layout}
        rsp = requests.post(f"{server.endpoint}/datasets", params=params, auth=auth,
                            json=body, timeout=60)
        assert rsp.status_code == 201, (name, rsp.text)
        dset_id = rsp.json()["id"]
        rsp = requests.put(f"{server.endpoint}/groups/{root}/links/{name}", params=params,
                           auth=auth, json={"id": dset_id}, timeout=60)
        assert rsp.status_code < 300, (name, rsp.text)
        rsp = requests.put(f"{server.endpoint}/datasets/{dset_id}/value", params=params,
                           auth=auth, data=values, timeout=60,
                           headers={"Content-Type": "application/octet-stream"})
        assert rsp.status_code < 300, (name, rsp.text)


@pytest.fixture(scope="module")
def domain(hsds_posix) -> tuple[str, str]:
    server = hsds_posix
    domain = f"/home/{server.username}/{fresh_name('types')}"
    _write(domain, server.h5pyd_kwargs())
    _write_raw(server, domain)
    server.wait_for_keys([domain.lstrip("/") + "/.domain.json", "db/*/d/*/0"],
                         domain=domain, quiet=1.0)
    return domain, f"file://{server.root_dir}/{server.bucket}{domain}"


def _names(domain: str, server) -> list[str]:
    with h5pyd.File(domain, "r", **server.h5pyd_kwargs()) as f:
        return sorted(f)


def _want_values(dset) -> object:
    if dset.shape is None:
        return None
    return dset[()]  # vlen strings as bytes, as h5py, h5pyd and h5dask read datasets


@pytest.mark.parametrize("name", ["complex", "complex64", "enum", "bool", "opaque",
                                  *STRINGS, "vlen_i4", "nested", "array_member", "scalar",
                                  "scalar_str", "null", "fill", "fill_nan",
                                  "contiguous_like", "refs", *RAW])
def test_dataset_reads_as_h5pyd_reads(name: str, domain, hsds_posix) -> None:
    path, url = domain
    with h5pyd.File(path, "r", **hsds_posix.h5pyd_kwargs()) as want_f, \
            h5dask.File(url) as got_f:
        want, got = want_f[name], got_f[name]
        assert got.shape == want.shape, name
        want_values = _want_values(want)
        got_values = None if want.shape is None else got[()]
        if name.startswith("complex"):  # h5pyd keeps the r/i compound; h5py (and h5dask)
            assert got.dtype.kind == "c"  # read it as complex
            assert got.dtype.itemsize == want.dtype.itemsize
            np.testing.assert_array_equal(got_values.real, want_values["r"])
            np.testing.assert_array_equal(got_values.imag, want_values["i"])
            return
        if name == "refs":  # h5pyd reads HSDS's fixed 48-byte strings; h5dask object refs
            assert h5dask.check_ref_dtype(got.dtype) is not None if hasattr(
                h5dask, "check_ref_dtype") else got.dtype.kind == "O"
            assert [str(v).split("/")[-1] for v in got_values.tolist()] == \
                [v.decode().split("/")[-1] for v in want_values.tolist()], name
            return
        if name == "opaque_datetime":  # h5pyd: raw |V8; h5py (and h5dask) read the tag
            assert got.dtype == np.dtype("<M8[s]") and want.dtype == np.dtype("V8")
            assert got_values.tobytes() == want_values.tobytes()
            assert got_values.tolist()[1].day == 2
            return
        if name == "vlen_i4":  # h5pyd gives 0 for an empty sequence
            assert [list(v) for v in got_values] == [[0, 1, 2], [], [7]]
            assert_dtype_equal(got.dtype, want.dtype, name)
            return
        if name == "utf8_vlen":  # h5pyd's dtype of a UTF-8 vlen dataset has no metadata
            assert (got.dtype.metadata or {}).get("vlen") is str
            assert got_values.tolist() == [b"x", b"", "wörld".encode()]  # as h5py
            assert got.asstr()[()].tolist() == ["x", "", "wörld"]
            return
        assert_dtype_equal(got.dtype, want.dtype, name)
        if want.shape is None:
            return
        assert_values_equal(np.asarray(got_values), np.asarray(want_values), name)
        if want.dtype.kind != "O":
            assert_values_equal(got.fillvalue, want.fillvalue, f"{name} fillvalue")


def test_attributes_read_as_h5pyd_reads(domain, hsds_posix) -> None:
    path, url = domain
    with h5pyd.File(path, "r", **hsds_posix.h5pyd_kwargs()) as want_f, \
            h5dask.File(url) as got_f:
        got, want = got_f["g"].attrs, want_f["g"].attrs
        assert sorted(got) == sorted(want)
        # h5pyd's own dtype of the ASCII vlen string attribute says bytes while its JSON
        # (which h5dask follows, as h5py follows the file) is UTF-8: values compared
        assert got["ascii_vlen"].tolist() == ["a", "", "longer text"] == \
            [v if isinstance(v, str) else v.decode() for v in want["ascii_vlen"].tolist()]
        got_c, want_c = got["complex"], want["complex"]  # complex, as h5py reads r/i
        assert complex(got_c) == (complex(want_c) if np.iscomplexobj(want_c)
                                  else complex(want_c["r"], want_c["i"])) == 1 - 1j
        # an empty attribute: h5py's Empty in h5dask, h5pyd's own Empty class in h5pyd
        assert type(got["empty"]).__name__ == type(want["empty"]).__name__ == "Empty"
        assert np.dtype(got["empty"].dtype) == np.dtype(want["empty"].dtype) == np.dtype("<f4")
        # an object reference: "datasets/<id>" in h5pyd, the target's id in h5dask
        assert str(got["ref"]).split("/")[-1] == str(want["ref"]).split("/")[-1] == \
            want_f["enum"].id.uuid
        for name in sorted(set(want) - {"ascii_vlen", "complex", "empty", "ref"}):
            assert_values_equal(got[name], want[name], f"/g attribute {name!r}")


def test_opaque_attribute_reads_as_h5pyd_reads(domain, hsds_posix) -> None:
    path, url = domain
    with h5pyd.File(path, "r", **hsds_posix.h5pyd_kwargs()) as want_f, \
            h5dask.File(url) as got_f:
        want, got = want_f.attrs["opaque"], got_f.attrs["opaque"]
        assert got.dtype == want.dtype == np.dtype("V4")
        assert got.tobytes() == want.tobytes() == b"ab\x00\xff" + bytes(4)


def test_xarray_reads_the_hsds_domain(domain, hsds_posix) -> None:
    path, url = domain
    # xarray's endianness decoding casts a compound with a big-endian member to raw
    # bytes and fails (as it does through h5netcdf): that variable is left out
    ds = xr.open_dataset(url, engine="h5cloud", phony_dims="sort", decode_cf=False,
                         drop_variables=["padded_compound"])
    # every variable xarray shows holds the values h5pyd reads (complex as h5py maps r/i)
    with h5pyd.File(path, "r", **hsds_posix.h5pyd_kwargs()) as want_f:
        for name in ds.variables:
            want = np.asarray(_want_values(want_f[name]))
            got = ds[name].values
            if got.dtype.kind == "c":
                want = want["r"] + 1j * want["i"]
            elif name in ("refs", "vlen_i4") or got.dtype.kind == "M" or want.dtype.kind == "V":
                continue  # compared by test_dataset_reads_as_h5pyd_reads
            elif got.dtype.kind in "OU" and got.size and isinstance(got.flat[0], str):
                # xarray (as h5netcdf) reads vlen strings as str; h5pyd as bytes
                want = np.vectorize(lambda v: v.decode() if isinstance(v, bytes) else v,
                                    otypes=[object])(want)
            np.testing.assert_array_equal(got, want, err_msg=name)
    np.testing.assert_array_equal(ds["complex"].values, COMPLEX)
    assert ds["complex"].dtype == np.dtype("<c16")
    np.testing.assert_array_equal(ds["bool"].values, [True, False, True])
    np.testing.assert_array_equal(ds["fill"].values, [1, 2, -7, -7, -7, -7])
    assert ds["utf8_vlen"].values.tolist() == ["x", "", "wörld"]
