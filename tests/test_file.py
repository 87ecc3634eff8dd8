"""Round trips through ``h5dask.File`` on memory://, file:// and real S3 (SeaweedFS): every
type, dataspace, attribute kind, filter and link kind, fill values, partial and edge
chunks, selections, modes, and the ordering that keeps a new domain invisible."""

from __future__ import annotations

import json
import os
import uuid

import h5py
import numpy as np
import pytest
from storage_backends import BACKENDS, Backend, make_backend

import h5dask
from h5dask.errors import (
    DomainExistsError,
    IncompatibleDatasetError,
    ReadOnlyError,
    ValueOutOfRangeError,
)
from h5dask.format.ids import is_root_id, object_prefix
from h5dask.storage import sync


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path) -> Backend:
    return make_backend(request, tmp_path)


def assert_same(got: object, expected: object, what: str = "") -> None:
    """Equal values, dtypes and shapes; object arrays compared element by element."""
    got_a, exp_a = np.asarray(got), np.asarray(expected)
    assert got_a.shape == exp_a.shape, what
    assert got_a.dtype == exp_a.dtype, f"{what}: {got_a.dtype} != {exp_a.dtype}"
    if exp_a.dtype.kind == "O":
        for g, e in zip(got_a.reshape(-1), exp_a.reshape(-1)):
            if isinstance(e, np.ndarray):
                assert isinstance(g, np.ndarray) and g.dtype == e.dtype, what
                np.testing.assert_array_equal(g, e, err_msg=what)
            else:
                assert type(g) is type(e) and g == e, f"{what}: {g!r} != {e!r}"
    else:
        np.testing.assert_array_equal(got_a, exp_a, err_msg=what)


def _two_rows(arr: np.ndarray) -> np.ndarray:
    """``[arr, arr[::-1]]`` keeping the dtype's metadata (np.stack drops it)."""
    out = np.empty((2, *arr.shape), dtype=arr.dtype)
    for i, row in enumerate((arr, arr[::-1])):
        for j in range(len(row)):
            out[i, j] = row[j]
    return out


def _vlen(dtype: np.dtype, items: list) -> np.ndarray:
    out = np.empty(len(items), dtype=dtype)
    for i, item in enumerate(items):
        out[i] = item
    return out


def _int_cases() -> dict[str, np.ndarray]:
    cases = {}
    for kind in "iu":
        for size in (1, 2, 4, 8):
            for order in "<>":
                dt = np.dtype(f"{order}{kind}{size}")
                info = np.iinfo(dt)
                cases[dt.str.replace("<", "le_").replace(">", "be_").replace("|", "")] = \
                    np.array([info.min, info.max, 0, 1, info.max // 3, info.min // 2, 7],
                             dtype=dt)
    return cases


def _float_cases() -> dict[str, np.ndarray]:
    cases = {}
    for size in (2, 4, 8):
        for order in "<>":
            dt = np.dtype(f"{order}f{size}")
            info = np.finfo(dt)
            cases[dt.str.replace("<", "le_").replace(">", "be_")] = np.array(
                [0.0, -0.0, 1.5, info.max, info.min, info.tiny, np.nan, np.inf, -np.inf],
                dtype=dt)
    return cases


COLORS = h5dask.enum_dtype({"RED": 0, "GREEN": 1, "BLUE": -7}, basetype=">i2")
POINT = np.dtype([("x", "<f4"), ("y", ">f8")])
NESTED = np.dtype([("id", ">u8"), ("pos", POINT), ("m", "<i2", (2, 3)), ("tag", "S4"),
                   ("flag", "?"), ("grid", POINT, (2,))])
VSTR = h5dask.string_dtype()
VBYTES = h5dask.string_dtype("ascii")
VSEQ = h5dask.vlen_dtype("<f4")
WITH_VSTR = np.dtype([("n", "<i4"), ("s", VSTR)])


def _type_cases() -> dict[str, np.ndarray]:
    cases = {**_int_cases(), **_float_cases()}
    cases["bool"] = np.array([True, False, True, True, False, False, True])
    cases["enum"] = np.array([0, 1, -7, -7, 0], dtype=COLORS)
    cases["fixed_string"] = np.array([b"", b"abc", b"12345678", b"\xff\x01"], dtype="S8")
    cases["vlen_utf8"] = _vlen(VSTR, ["", "ascii", "héllo wörld ✓", "x" * 3000, "日本"])
    cases["vlen_ascii"] = _vlen(VBYTES, [b"a", b"", b"xyz", b"\x00mid"])
    cases["vlen_seq"] = _vlen(VSEQ, [np.arange(3, dtype="<f4"), np.zeros(0, "<f4"),
                                     np.ones(100, "<f4"), np.array([np.nan], "<f4")])
    cases["vlen_seq_same_len"] = _vlen(VSEQ, [np.arange(2, dtype="<f4")] * 3)
    nested = np.zeros(5, dtype=NESTED)
    nested["id"] = [1, 2**63, 3, 4, 5]
    nested["pos"]["x"] = [0.5, -1, 2, 3, 4]
    nested["pos"]["y"] = [np.pi, 0, -2, 1e300, 5]
    nested["m"] = np.arange(30).reshape(5, 2, 3)
    nested["tag"] = [b"a", b"bb", b"", b"dddd", b"e"]
    nested["flag"] = [True, False, True, False, True]
    nested["grid"]["x"] = np.arange(10).reshape(5, 2)
    cases["compound_nested_array"] = nested
    cases["compound_vlen_member"] = np.array([(1, "one"), (-2, ""), (3, "drei ✓")],
                                             dtype=WITH_VSTR)
    return cases


TYPE_CASES = _type_cases()


def _bytes(arr: np.ndarray) -> np.ndarray:
    """A UTF-8 string array as h5py reads a dataset of it: the same dtype, bytes."""
    out = np.empty(arr.shape, dtype=arr.dtype)
    out.reshape(-1)[:] = [s.encode() for s in arr.reshape(-1)]
    return out


def _as_read(name: str, arr: np.ndarray) -> np.ndarray:
    """What reading gives back: variable-length strings of datasets, top-level and
    members of a compound, as bytes (as in h5py)."""
    if name == "vlen_utf8":
        return _bytes(arr)
    if name != "compound_vlen_member":
        return arr
    out = arr.copy()
    flat = out.reshape(-1)
    flat["s"] = [s.encode() for s in arr.reshape(-1)["s"]]
    return out


def test_types_roundtrip(backend: Backend) -> None:
    url = backend.url("types.h5")
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        for name, arr in TYPE_CASES.items():
            f.create_dataset(f"1d/{name}", data=arr, chunks=(3,))  # edge chunk of 1-2
            f.create_dataset(f"2d/{name}", data=_two_rows(arr), chunks=(1, 2))
    with h5dask.File(url, storage_options=backend.options) as f:
        assert sorted(f["1d"]) == sorted(TYPE_CASES)
        for name, arr in TYPE_CASES.items():
            ds = f[f"1d/{name}"]
            assert ds.dtype == arr.dtype and ds.shape == arr.shape and ds.chunks == (3,), name
            assert (ds.dtype.metadata or {}) == (arr.dtype.metadata or {}), name
            assert_same(ds[...], _as_read(name, arr), name)
            assert_same(ds[1:4], _as_read(name, arr[1:4]), name)
            assert_same(f[f"2d/{name}"][...], _as_read(name, _two_rows(arr)), name)
            assert_same(f[f"2d/{name}"][1, ::2], _as_read(name, arr[::-1][::2]), name)


def test_committed_types(backend: Backend) -> None:
    url = backend.url("committed.h5")
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        f["types/point"] = POINT
        f["types/nested"] = np.dtype(NESTED)
        f["types/point"].attrs["doc"] = "a 2-d point"
        f.create_dataset("pts", data=np.array([(1, 2), (3, 4)], dtype=POINT),
                         dtype=f["types/point"], chunks=(1,))
        ds = f.create_dataset("nested", shape=(3,), dtype=f["types/nested"], chunks=(2,))
        ds[1] = TYPE_CASES["compound_nested_array"][0]
        f.attrs.create("point_attr", np.array((5, 6), dtype=POINT))
    with h5dask.File(url, storage_options=backend.options) as f:
        t = f["types/point"]
        assert isinstance(t, h5dask.Datatype) and t.dtype == POINT
        assert t.attrs["doc"] == "a 2-d point"
        assert f["types/nested"].dtype == NESTED
        assert_same(f["pts"][...], np.array([(1, 2), (3, 4)], dtype=POINT))
        nested = f["nested"][...]
        assert nested.dtype == NESTED
        assert_same(nested[1], TYPE_CASES["compound_nested_array"][0])
        assert_same(nested[0], np.zeros((), NESTED)[()])  # never written: zeros
        assert f.attrs["point_attr"].tolist() == (5.0, 6.0)
    # the dataset's type refers to the committed type's id, as HSDS writes it
    store = backend.store()
    with h5dask.File(url, storage_options=backend.options) as f:
        key = f["pts"]._meta.key
        tid = f["types/point"].id
    stored = json.loads(sync(store.get(key, kind="metadata")))
    assert tid in json.dumps(stored["type"])


def test_dataspaces(backend: Backend) -> None:
    url = backend.url("spaces.h5")
    a3 = np.arange(4 * 5 * 6, dtype="<i8").reshape(4, 5, 6)
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        f.create_dataset("scalar_f", data=np.float64(2.5))
        f.create_dataset("scalar_str", data="just text")
        f.create_dataset("scalar_cmpd", data=np.array((1.5, -2.0), dtype=POINT))
        f.create_dataset("empty", shape=(0,), dtype="<f4")
        f.create_dataset("empty2d", shape=(3, 0), dtype="<i2", chunks=(2, 4))
        f.create_dataset("three_d", data=a3, chunks=(3, 2, 4))
        f.create_dataset("one_chunk", data=a3, chunks=None)
        ds = f.create_dataset("grow", shape=(4, 3), maxshape=(None, 3), chunks=(3, 3),
                              dtype="<i4", fillvalue=-1)
        ds[...] = np.arange(12).reshape(4, 3)
        f.create_dataset("bounded", shape=(2,), maxshape=(5,), dtype="<u1", chunks=(2,))
    with h5dask.File(url, "r+", storage_options=backend.options) as f:
        s = f["scalar_f"]
        assert s.shape == () and s.ndim == 0 and s.chunks is None
        assert s[()] == 2.5 and isinstance(s[()], np.float64)
        assert s[...].shape == ()
        assert f["scalar_str"][()] == b"just text"  # bytes, as h5py reads a dataset
        assert f["scalar_str"].asstr()[()] == "just text"
        assert f["scalar_cmpd"][()].tolist() == (1.5, -2.0)
        with pytest.raises(IndexError):
            s[0]
        assert f["empty"].shape == (0,) and f["empty"][...].shape == (0,)
        assert f["empty2d"][...].shape == (3, 0)
        assert_same(f["three_d"][...], a3)
        assert f["one_chunk"].chunks == a3.shape
        assert_same(f["one_chunk"][1:3, ::2, -1], a3[1:3, ::2, -1])
        g = f["grow"]
        assert g.maxshape == (None, 3) and g.shape == (4, 3)
        g.resize((10, 3))
        g[7:] = 100
        g.resize(11, axis=0)
        with pytest.raises(ValueError, match="maxshape"):
            g.resize((11, 4))
        with pytest.raises(ValueError, match="maxshape"):
            f["bounded"].resize((6,))
        f["bounded"].resize((5,))
        with pytest.raises(ValueError):
            f["three_d"].resize((5, 5, 6))  # not extensible
    expected = np.full((11, 3), -1, dtype="<i4")
    expected[:4] = np.arange(12).reshape(4, 3)
    expected[7:10] = 100
    with h5dask.File(url, storage_options=backend.options) as f:
        assert f["grow"].shape == (11, 3) and f["grow"].maxshape == (None, 3)
        assert_same(f["grow"][...], expected)
        assert f["bounded"].shape == (5,) and f["bounded"].maxshape == (5,)
        with pytest.raises(ReadOnlyError):
            f["grow"].resize((12, 3))


def test_shrink_then_grow_shows_fill(backend: Backend) -> None:
    url = backend.url("shrink.h5")
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        ds = f.create_dataset("x", data=np.arange(10, dtype="<i4"), maxshape=(None,),
                              chunks=(4,), fillvalue=-5)
        ds.resize((3,))  # chunk 0 becomes an edge chunk, chunks 1 and 2 fall outside
        assert_same(ds[...], np.arange(3, dtype="<i4"))
        ds.resize((10,))
        assert_same(ds[...], np.array([0, 1, 2] + [-5] * 7, dtype="<i4"))
    with h5dask.File(url, storage_options=backend.options) as f:
        assert_same(f["x"][...], np.array([0, 1, 2] + [-5] * 7, dtype="<i4"))
        prefix = f["x"]._meta.key.rsplit("/", 1)[0] + "/"
    assert sync(backend.store().list(prefix)) == [prefix + ".dataset.json", prefix + "0"]


def test_contiguous_datasets_are_not_resizable_as_in_h5py(tmp_path) -> None:
    """A contiguous dataset is one object holding exactly its shape: resizing it made
    the object read as corrupt (1-D), or silently reshaped the values (2-D, same count).
    h5py refuses both an extendible contiguous dataset and resizing one."""
    url = f"memory://contig-{uuid.uuid4().hex}/home/c.h5"
    with h5py.File(tmp_path / "c.h5", "w") as h5:
        with pytest.raises(ValueError):
            h5.create_dataset("c", data=np.arange(4.0), chunks=False, maxshape=(10,))
        with pytest.raises(TypeError, match="(?i)only chunked datasets can be resized"):
            h5.create_dataset("d", data=np.arange(4.0)).resize((2,))  # contiguous
    with h5dask.File(url, "w") as f:
        with pytest.raises(ValueError, match="'c'.*contiguous.*only chunked datasets can be "
                                             "resized"):
            f.create_dataset("c", data=np.arange(4.0), chunks=False, maxshape=(10,))
        with pytest.raises(ValueError, match="'m'"):
            f.create_dataset("m", shape=(2, 3), chunks=False, maxshape=(None, 3))
        assert "c" not in f and "m" not in f
        f.create_dataset("one", data=np.arange(4.0), chunks=False)
        f.create_dataset("two", data=np.arange(6.0).reshape(2, 3), chunks=False)
        f.create_dataset("same", data=np.arange(4.0), chunks=False, maxshape=(4,))
    with h5dask.File(url, "a") as f:
        for name, shape in (("one", (2,)), ("two", (2, 2)), ("same", (3,))):
            with pytest.raises(TypeError, match=f"'/{name}': only chunked datasets can be "
                                                "resized.*H5D_CONTIGUOUS"):
                f[name].resize(shape)
        with pytest.raises(TypeError, match="only chunked"):
            f["two"].resize(3, axis=1)
    with h5dask.File(url) as f:
        assert_same(f["one"][...], np.arange(4.0))
        assert_same(f["two"][...], np.arange(6.0).reshape(2, 3))
        assert f["two"].shape == (2, 3)


def test_contiguous_xarray_variable_is_not_resized(tmp_path) -> None:
    """A variable to_h5cloud wrote contiguous: File 'a' refuses resizing it, and an append
    along its dimension is refused naming it (not written into a corrupted object)."""
    import xarray as xr

    url = f"memory://contig-{uuid.uuid4().hex}/home/x.h5"
    ds = xr.Dataset({"v": (("t",), np.arange(6.0))})
    h5dask.to_h5cloud(ds, url, encoding={"v": {"contiguous": True}})
    with h5dask.File(url, "a") as f:
        assert f["v"].layout == "H5D_CONTIGUOUS" and f["v"].chunks is None
        with pytest.raises(TypeError, match="'/v': only chunked datasets can be resized"):
            f["v"].resize((3,))
    with pytest.raises(ValueError, match="cannot append along 't'.*'/v'.*unlimited_dims"):
        h5dask.to_h5cloud(xr.Dataset({"v": (("t",), np.arange(2.0))}), url, append_dim="t")
    back = xr.open_dataset(url, engine="h5cloud")
    assert_same(back.v.values, np.arange(6.0))


def test_attributes_of_every_kind(backend: Backend) -> None:
    url = backend.url("attrs.h5")
    cases = {
        **{f"int_{k}": v for k, v in _int_cases().items()},
        **{f"float_{k}": v for k, v in _float_cases().items()},
        "bool": np.array([True, False]), "enum": np.array([1, -7], dtype=COLORS),
        "fixed_string": np.array([b"ab", b"\xfe"], dtype="S3"),
        "vlen_utf8": TYPE_CASES["vlen_utf8"], "vlen_ascii": TYPE_CASES["vlen_ascii"],
        "vlen_seq": _vlen(h5dask.vlen_dtype(">i2"), [np.arange(3, dtype=">i2"),
                                                     np.zeros(0, ">i2")]),
        "compound": TYPE_CASES["compound_nested_array"][:2],
        "array_2d": np.arange(6, dtype=">f4").reshape(2, 3),
        "scalar_int": np.array(-3, dtype=">i8"), "scalar_float": np.array(0.25, dtype="<f2"),
        "scalar_bool": np.array(True),
    }
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        grp = f.create_group("g")
        ds = f.create_dataset("d", data=np.zeros(3))
        for holder in (f, grp, ds):
            for name, value in cases.items():
                holder.attrs[name] = value
            holder.attrs["str"] = "plain str"
            holder.attrs["py_int"] = 42
            holder.attrs["py_list"] = [1.5, 2.5]
            holder.attrs["str_list"] = ["a", "bé"]
            holder.attrs.create("null_f4", h5py.Empty(">f4"))
            holder.attrs.create("shaped", [1, 2, 3, 4], shape=(2, 2), dtype=">u2")
        ds.attrs["gone"] = 1
        del ds.attrs["gone"]
        grp.attrs["replaced"] = 1
        grp.attrs["replaced"] = "now a string"
    with h5dask.File(url, storage_options=backend.options) as f:
        for holder in (f, f["g"], f["d"]):
            for name, value in cases.items():
                got = holder.attrs[name]
                if value.ndim == 0:  # a numpy scalar, as h5py gives (always native order)
                    assert type(got) is type(value[()]) and got == value[()], name
                elif name == "vlen_ascii":  # str, as h5py reads string attributes
                    assert [type(v) for v in got] == [str] * len(value), name
                    assert list(got) == [v.decode() for v in value], name
                elif name == "vlen_seq":  # native byte order, as h5py reads sequences
                    assert [v.dtype for v in got] == [np.dtype("=i2")] * len(value), name
                    assert [v.tolist() for v in got] == [v.tolist() for v in value], name
                else:
                    assert_same(got, value, name)
                assert holder.attrs.dtype_of(name) == value.dtype, name
                assert holder.attrs.dtype_of(name).metadata == value.dtype.metadata, name
            assert holder.attrs["str"] == "plain str" and isinstance(holder.attrs["str"], str)
            assert holder.attrs["py_int"] == 42
            assert_same(holder.attrs["py_list"], np.array([1.5, 2.5]))
            assert holder.attrs["str_list"].tolist() == ["a", "bé"]
            assert holder.attrs["null_f4"] == h5py.Empty(">f4")  # as h5py reads it
            assert holder.attrs.shape_of("null_f4") is None
            assert holder.attrs.dtype_of("null_f4") == np.dtype(">f4")
            assert_same(holder.attrs["shaped"], np.array([[1, 2], [3, 4]], dtype=">u2"))
        assert "gone" not in f["d"].attrs
        assert f["g"].attrs["replaced"] == "now a string"
        assert set(f.attrs) == set(cases) | {"str", "py_int", "py_list", "str_list",
                                             "null_f4", "shaped"}
        with pytest.raises(KeyError):
            f.attrs["nope"]


FILTERS = {
    "gzip1": dict(compression="gzip", compression_opts=1),
    "gzip9": dict(compression="gzip", compression_opts=9),
    "gzip_int_level": dict(compression=6),
    "gzip_shuffle": dict(compression="gzip", shuffle=True),
    "shuffle": dict(shuffle=True),
    "lz4": dict(compression="lz4"),
    "zstd": dict(compression="zstd", compression_opts=3),
    "blosclz": dict(compression="blosclz"),
    "bitshuffle": dict(compression="bitshuffle"),
    "fletcher32": dict(fletcher32=True),
    "gzip_shuffle_fletcher32": dict(compression="gzip", shuffle=True, fletcher32=True),
}


def test_filters_roundtrip(backend: Backend) -> None:
    url = backend.url("filters.h5")
    data = {
        "f8": np.linspace(0, 1, 10 * 33).reshape(10, 33),
        "i2": (np.arange(10 * 33, dtype=">i2") % 17).reshape(10, 33),
        "str": _vlen(VSTR, [f"s{i}" * (i % 4) for i in range(10)]),
    }
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        for fname, kwargs in FILTERS.items():
            for dname, arr in data.items():
                if dname == "str" and fname in ("bitshuffle", "shuffle"):
                    continue
                chunks = (4, 8) if arr.ndim == 2 else (4,)
                f.create_dataset(f"{fname}/{dname}", data=arr, chunks=chunks, **kwargs)
    with h5dask.File(url, storage_options=backend.options) as f:
        for fname, kwargs in FILTERS.items():
            for dname, arr in data.items():
                if dname == "str" and fname in ("bitshuffle", "shuffle"):
                    continue
                ds = f[f"{fname}/{dname}"]
                what = f"{fname}/{dname}"
                if dname == "str":
                    arr = _bytes(arr)  # read as bytes, as in h5py
                assert_same(ds[...], arr, what)
                assert_same(ds[3:7, 5:20] if arr.ndim == 2 else ds[3:7],
                            arr[3:7, 5:20] if arr.ndim == 2 else arr[3:7], what)
                comp = kwargs.get("compression")
                expected = "gzip" if comp in ("gzip", 6) else (
                    None if comp == "bitshuffle" else comp)
                assert ds.compression == expected, what
                assert ds.shuffle == bool(kwargs.get("shuffle")), what
                assert ds.fletcher32 == bool(kwargs.get("fletcher32")), what
                if "compression_opts" in kwargs:
                    assert ds.compression_opts == kwargs["compression_opts"], what
        assert f["gzip_int_level/f8"].compression_opts == 6
        assert any("bitshuffle" in json.dumps(x) for x in f["bitshuffle/f8"].filters)
    # compressed chunks are really compressed: much smaller than the raw bytes
    with h5dask.File(url, "r+", storage_options=backend.options) as f:
        for comp in ("gzip", "lz4", "zstd", "blosclz"):
            ds = f.create_dataset(f"zeros_{comp}", data=np.zeros(4096), compression=comp)
            raw = sync(backend.store().get(ds.source().chunk_key((0,))))
            assert len(raw) < 4096 * 8 / 20, comp
            assert_same(ds[...], np.zeros(4096))


def test_bad_compression_arguments() -> None:
    with h5dask.File(f"memory://{uuid.uuid4().hex}/bad.h5", "w") as f:
        with pytest.raises(ValueError, match="compression"):
            f.create_dataset("a", shape=(4,), compression="rar")
        with pytest.raises(ValueError, match="level"):
            f.create_dataset("b", shape=(4,), compression="gzip", compression_opts=12)
        with pytest.raises(ValueError, match="chunks"):
            f.create_dataset("c", shape=(4, 4), chunks=(2,))
        with pytest.raises(ValueError, match="maxshape"):
            f.create_dataset("d", shape=(4,), maxshape=(2,))
        with pytest.raises(TypeError):
            f.create_dataset("e")


def test_links(backend: Backend) -> None:
    url = backend.url("links.h5")
    other = backend.url("other.h5")
    with h5dask.File(other, "w", storage_options=backend.options) as f:
        f.create_dataset("deep/data", data=np.arange(5, dtype="<i2"))
        f["deep"].attrs["where"] = "other"
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        a = f.create_group("a/b/c")
        ds = a.create_dataset("x", data=np.arange(6.0))
        f["hard_alias"] = ds  # a second hard link to the same dataset
        f["a/hard_group"] = f["a/b"]
        f["soft"] = h5dask.SoftLink("/a/b/c/x")
        f["soft_to_group"] = h5dask.SoftLink("/a/b")
        f["soft_chain"] = h5dask.SoftLink("/soft")
        f["dangling"] = h5dask.SoftLink("/no/such/thing")
        # a relative name is found from the linking domain's folder, as h5pyd (and HDF5,
        # from the linking file's directory) resolve it; an absolute one from the root
        f["ext"] = h5dask.ExternalLink("other.h5", "/deep/data")
        f["ext_group"] = h5dask.ExternalLink("/" + backend.domain("other.h5"), "/deep")
    with h5dask.File(url, storage_options=backend.options) as f:
        assert f["hard_alias"] == f["a/b/c/x"]
        assert_same(f["hard_alias"][...], np.arange(6.0))
        assert f["a/hard_group/c/x"] == f["a/b/c/x"]
        assert_same(f["soft"][...], np.arange(6.0))
        assert f["soft"] == f["a/b/c/x"]
        assert_same(f["soft_to_group/c/x"][2:4], np.arange(6.0)[2:4])
        assert_same(f["soft_chain"][...], np.arange(6.0))
        assert_same(f["ext"][...], np.arange(5, dtype="<i2"))
        assert f["ext_group"].attrs["where"] == "other"
        assert isinstance(f.get("soft", getlink=True), h5dask.SoftLink)
        assert f.get("soft", getlink=True).path == "/a/b/c/x"
        ext = f.get("ext", getlink=True)
        assert isinstance(ext, h5dask.ExternalLink) and ext.path == "/deep/data"
        assert isinstance(f.get("hard_alias", getlink=True), h5dask.HardLink)
        assert f.get("dangling") is None and "dangling" not in f
        with pytest.raises(KeyError):
            f["dangling"]
        assert "a/b/c/x" in f and "a/b/nope" not in f
        assert sorted(f) == ["a", "dangling", "ext", "ext_group", "hard_alias", "soft",
                             "soft_chain", "soft_to_group"]
        seen = []
        f.visititems(lambda name, obj: seen.append((name, type(obj).__name__)))
        # every object once (the dataset under one of its two names), links not followed
        # in h5py's order: depth-first by name, the dataset under its first name
        assert seen == [("a", "Group"), ("a/b", "Group"), ("a/b/c", "Group"),
                        ("a/b/c/x", "Dataset")]


def test_link_errors() -> None:
    with h5dask.File(f"memory://{uuid.uuid4().hex}/le.h5", "w") as f:
        f.create_group("g")
        with pytest.raises(ValueError, match="already exists"):
            f.create_group("g")
        f["loop1"] = h5dask.SoftLink("/loop2")
        f["loop2"] = h5dask.SoftLink("/loop1")
        with pytest.raises(KeyError, match="soft links"):
            f["loop1"]
        f.create_dataset("d", data=[1, 2])
        with pytest.raises(ValueError, match="not a group"):
            f.create_group("d/sub")
        del f["g"]
        assert "g" not in f
        with pytest.raises(KeyError):
            del f["g"]


def test_fill_values_and_unwritten_chunks(backend: Backend) -> None:
    url = backend.url("fill.h5")
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        f.create_dataset("neg", shape=(10, 10), chunks=(4, 4), dtype=">i4", fillvalue=-9)
        f.create_dataset("nan", shape=(7,), chunks=(3,), dtype="<f4", fillvalue=np.nan)
        f.create_dataset("zero", shape=(5,), chunks=(2,), dtype="<u2")
        f.create_dataset("cmpd", shape=(3,), chunks=(2,), dtype=POINT,
                         fillvalue=np.array((1.0, -1.0), dtype=POINT))
        f.create_dataset("vstr", shape=(4,), chunks=(2,), dtype=VSTR)
        f.create_dataset("vseq", shape=(4,), chunks=(2,), dtype=VSEQ)
        f.create_dataset("vcmpd", shape=(2,), chunks=(2,), dtype=WITH_VSTR)
        f.create_dataset("sfill", shape=(3,), chunks=(2,), dtype="S3", fillvalue=b"ab")
        f["neg"][5, 5] = 1
        f["vstr"][3] = "set"
        f["vseq"][0] = np.arange(3, dtype="<f4")
    h5dask.reset_stats()
    with h5dask.File(url, storage_options=backend.options) as f:
        neg = f["neg"]
        assert neg.fillvalue == -9 and isinstance(neg.fillvalue, np.int32)
        expected = np.full((10, 10), -9, dtype=">i4")
        expected[5, 5] = 1
        assert_same(neg[...], expected)
        assert_same(neg[0:4, 0:4], np.full((4, 4), -9, dtype=">i4"))
        assert neg[9, 9] == -9 and neg[5, 5] == 1
        assert neg.read_direct_chunk((0, 0)) is None
        assert neg.read_direct_chunk((1, 1))[1, 1] == 1
        assert np.isnan(f["nan"][...]).all() and np.isnan(f["nan"].fillvalue)
        assert_same(f["zero"][...], np.zeros(5, dtype="<u2"))
        assert f["cmpd"][...].tolist() == [(1.0, -1.0)] * 3
        assert f["vstr"][...].tolist() == [b"", b"", b"", b"set"]  # bytes, as in h5py
        seqs = f["vseq"][...]
        assert [s.tolist() for s in seqs] == [[0, 1, 2], [], [], []]
        assert all(s.dtype == np.dtype("<f4") for s in seqs)
        # strings inside compounds read as bytes (h5py; and written chunks decode so)
        assert f["vcmpd"][...].tolist() == [(0, b""), (0, b"")]
        assert f["sfill"][...].tolist() == [b"ab"] * 3
    s = h5dask.stats()
    assert s["total"]["errors"] == 0 and s["total"]["retries"] == 0
    assert s["chunk"]["read_missing"] > 0


def test_partial_chunk_writes_and_edges(backend: Backend) -> None:
    url = backend.url("partial.h5")
    expected = np.full((11, 9), 7, dtype="<i8")
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        ds = f.create_dataset("x", shape=(11, 9), chunks=(4, 4), dtype="<i8", fillvalue=7,
                              compression="gzip")
        writes = [
            ((slice(1, 3), slice(1, 3)), 1),  # inside one chunk: read-modify-write
            ((slice(0, 11), 8), np.arange(11)),  # the edge column of edge chunks
            ((slice(2, 10), slice(3, 6)), np.arange(24).reshape(8, 3)),  # across chunks
            ((slice(None, None, 3), slice(1, None, 4)), -1),  # strided
            ((10, slice(None)), np.arange(100, 109)),  # the last (edge) row
            ((slice(8, 11), slice(8, 9)), 55),  # the corner chunk, clipped in both dims
            ((0, 0), 99),  # one element
            ((slice(4, 8), slice(4, 8)), np.arange(16).reshape(4, 4)),  # a whole chunk
        ]
        for sel, value in writes:
            ds[sel] = value
            expected[sel] = value
        assert_same(ds[...], expected)
    with h5dask.File(url, storage_options=backend.options) as f:
        ds = f["x"]
        assert_same(ds[...], expected)
        for sel in [(slice(None), slice(None)), (slice(3, 10, 2), slice(None, None, 3)),
                    (5,), (-1, -1), (slice(None), 0), (Ellipsis, 8), (slice(9, 100),),
                    (slice(2, 2),), (np.int64(3), slice(1, 8, 3))]:
            assert_same(ds[sel], expected[sel], repr(sel))
        assert isinstance(ds[2, 3], np.int64)
        assert_same(np.asarray(ds), expected)
        with pytest.raises(IndexError):
            ds[11]
        with pytest.raises(IndexError):
            ds[::-1]
        with pytest.raises(TypeError):
            ds[[1, 2]]
    # every stored chunk object has the full chunk shape, edge chunks padded
    with h5dask.File(url, storage_options=backend.options) as f:
        src = f["x"].source()
        for index in src.grid.indices():
            chunk = f["x"].read_direct_chunk(index)
            assert chunk is not None and chunk.shape == (4, 4)


def test_write_broadcast_and_dtype_conversion() -> None:
    with h5dask.File(f"memory://{uuid.uuid4().hex}/conv.h5", "w") as f:
        ds = f.create_dataset("x", shape=(3, 4), dtype=">f4", chunks=(2, 2))
        ds[...] = np.arange(4)  # broadcast a row
        assert_same(ds[...], np.tile(np.arange(4, dtype=">f4"), (3, 1)))
        ds[1] = [9, 9, 9, 9]
        assert ds[1, 3] == 9
        with pytest.raises(ValueError):
            ds[0] = np.arange(3)
        vs = f.create_dataset("vs", shape=(3,), dtype=VSEQ, chunks=(2,))
        vs[...] = [[1, 2], [3, 4], [5, 6]]  # equal lengths: three sequences, not a 2-d array
        assert [v.tolist() for v in vs[...]] == [[1, 2], [3, 4], [5, 6]]


def test_modes(backend: Backend) -> None:
    url = backend.url("modes.h5")
    opts = backend.options
    with pytest.raises(FileNotFoundError):
        h5dask.File(url, "r", storage_options=opts)
    with pytest.raises(FileNotFoundError):
        h5dask.File(url, "r+", storage_options=opts)
    with h5dask.File(url, "x", storage_options=opts) as f:
        f.attrs["v"] = 1
    for mode in ("x", "w-"):
        with pytest.raises(DomainExistsError, match="already exists.*mode 'w' to replace"):
            h5dask.File(url, mode, storage_options=opts)
    with h5dask.File(url, "r", storage_options=opts) as f:
        assert f.mode == "r" and f.attrs["v"] == 1
        with pytest.raises(ReadOnlyError):
            f.attrs["v"] = 2
        with pytest.raises(PermissionError):
            f.create_group("g")
    with h5dask.File(url, "r+", storage_options=opts) as f:
        assert f.mode == "r+"
        f.attrs["v"] = 2
        f.create_dataset("d", data=np.arange(3))
    with h5dask.File(url, "a", storage_options=opts) as f:
        assert f.attrs["v"] == 2 and "d" in f
        f.attrs["a"] = "appended"
    with h5dask.File(backend.url("new_by_a.h5"), "a", storage_options=opts) as f:
        f.attrs["fresh"] = True
    with h5dask.File(backend.url("new_by_a.h5"), storage_options=opts) as f:
        assert f.attrs["fresh"]
    with h5dask.File(url, "r", storage_options=opts) as f:
        assert (f.attrs["v"], f.attrs["a"]) == (2, "appended")
    with pytest.raises(ValueError, match="mode"):
        h5dask.File(url, "rw", storage_options=opts)


def test_mode_w_replaces_atomically(backend: Backend) -> None:
    url = backend.url("replace.h5")
    opts = backend.options
    with h5dask.File(url, "w", storage_options=opts) as f:
        f.create_dataset("old", data=np.arange(4))
        f.attrs["version"] = 1
    writer = h5dask.File(url, "w", storage_options=opts)
    writer.create_dataset("new", data=np.arange(8), chunks=(2,))
    writer.attrs["version"] = 2
    with h5dask.File(url, storage_options=opts) as f:  # the old domain, whole, until close
        assert f.attrs["version"] == 1 and sorted(f) == ["old"]
        assert_same(f["old"][...], np.arange(4))
    writer.close()
    with h5dask.File(url, storage_options=opts) as f:
        assert f.attrs["version"] == 2 and sorted(f) == ["new"]
        assert_same(f["new"][...], np.arange(8))
    # an exception while replacing leaves the previous domain as it was
    with pytest.raises(RuntimeError):
        with h5dask.File(url, "w", storage_options=opts) as f:
            f.attrs["version"] = 3
            raise RuntimeError("boom")
    with h5dask.File(url, storage_options=opts) as f:
        assert f.attrs["version"] == 2


def test_new_domain_invisible_until_close(backend: Backend, monkeypatch) -> None:
    url = backend.url("fresh.h5")
    store = backend.store()
    domain_key = f"{backend.domain('fresh.h5')}/.domain.json"
    puts: list[str] = []
    real_put = store._put

    async def recording_put(key: str, data: bytes) -> None:  # records, then writes
        await real_put(key, data)
        puts.append(key)

    monkeypatch.setattr(store, "_put", recording_put)
    f = h5dask.File(url, "w", storage_options=backend.options)
    f.create_group("g1/g2").create_dataset("x", data=np.arange(20), chunks=(5,))
    f["t"] = np.dtype("<f4")
    f.create_dataset("y", shape=(3,), dtype=f["t"])
    db_prefix = object_prefix(f.id) + "/"  # everything of this domain is under it
    before = sync(store.list(db_prefix)) + sync(store.list(domain_key.rsplit("/", 1)[0] + "/"))
    # chunks may already be there; no metadata object and no .domain.json
    assert not [k for k in before if k.endswith(".json")], before
    assert len([k for k in before if k.rsplit("/", 1)[-1].isdigit()]) == 4
    with pytest.raises(FileNotFoundError):
        h5dask.File(url, storage_options=backend.options)
    f.close()
    after = sync(store.list(db_prefix))
    assert sync(store.get(domain_key)) is not None
    summary_key = domain_key.rsplit("/", 1)[0] + "/.h5dask-consolidated.json"
    assert set(puts) == set(after) | {domain_key, summary_key}
    assert puts[-1] == domain_key, puts  # the domain object is written last
    assert puts[-3] == summary_key, puts  # the consolidated metadata before the root group
    root_key = [k for k in puts if k.endswith(".group.json") and k.count("/") == 2]
    assert len(root_key) == 1 and puts.index(root_key[0]) == len(puts) - 2
    meta = [k for k in puts if k.endswith(".json")]
    kinds = [k.rsplit("/", 1)[-1] for k in meta]
    # datatypes, then datasets, then groups, then the root group, then the domain
    order = {".datatype.json": 0, ".dataset.json": 1, ".group.json": 2,
             ".h5dask-consolidated.json": 2.5, ".domain.json": 4}
    ranks = [3 if k == root_key[0] else order[n] for k, n in zip(meta, kinds)]
    assert ranks == sorted(ranks), meta
    assert puts.index(meta[0]) > max(i for i, k in enumerate(puts) if not k.endswith(".json"))
    with h5dask.File(url, storage_options=backend.options) as g:
        assert_same(g["g1/g2/x"][...], np.arange(20))
        assert is_root_id(g.id)
    # flush() publishes too, and later changes go out on the next flush
    f2 = h5dask.File(backend.url("flushed.h5"), "w", storage_options=backend.options)
    f2.attrs["n"] = 1
    f2.flush()
    with h5dask.File(backend.url("flushed.h5"), storage_options=backend.options) as g:
        assert g.attrs["n"] == 1
    f2.attrs["n"] = 2
    f2.close()
    with h5dask.File(backend.url("flushed.h5"), storage_options=backend.options) as g:
        assert g.attrs["n"] == 2


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_layout_as_hsds_writes_it(request, tmp_path, kind: str) -> None:
    """The objects are where HSDS puts them: .domain.json under the domain path, db/ at
    the bucket root, the root group at db/<root>/.group.json, chunks named i_j."""
    backend = make_backend(request, tmp_path, kind)
    if backend.kind == "file":  # an HSDS POSIX bucket: the directory that holds db/
        os.makedirs(backend.base.removeprefix("file://") + "/db")
    url = backend.url("sub/dir/layout.h5")
    with h5dask.File(url, "w", storage_options=backend.options) as f:
        f.create_dataset("g/x", data=np.ones((4, 4)), chunks=(2, 2))
        root, did = f.id, f["g/x"].id
    keys = sync(backend.store().list(""))
    domain = backend.domain("sub/dir/layout.h5")
    assert domain.endswith("sub/dir/layout.h5")
    h = root[2:].replace("-", "")
    assert f"{domain}/.domain.json" in keys
    assert f"db/{h[:8]}-{h[8:16]}/.group.json" in keys
    d = did[2:].replace("-", "")
    dprefix = f"db/{h[:8]}-{h[8:16]}/d/{d[16:20]}-{d[20:26]}-{d[26:32]}"
    assert sorted(k for k in keys if k.startswith(dprefix)) == [
        f"{dprefix}/.dataset.json", f"{dprefix}/0_0", f"{dprefix}/0_1", f"{dprefix}/1_0",
        f"{dprefix}/1_1"]
    dom = json.loads(sync(backend.store().get(f"{domain}/.domain.json")))
    assert dom["root"] == root and "owner" in dom and "acls" in dom
    dset = json.loads(sync(backend.store().get(f"{dprefix}/.dataset.json")))
    assert dset["creationProperties"]["layout"] == {"class": "H5D_CHUNKED", "dims": [2, 2]}
    assert dset["id"] == did and dset["root"] == root


def test_group_api() -> None:
    url = f"memory://{uuid.uuid4().hex}/api.h5"
    with h5dask.File(url, "w") as f:
        g = f.require_group("a/b")
        assert f.require_group("a/b") == g and g.name == "/a/b"
        f["a/arr"] = np.arange(3)  # assigning data creates a dataset
        ds = f.require_dataset("a/arr", shape=(3,), dtype="<i8")
        assert_same(ds[...], np.arange(3))
        with pytest.raises(TypeError):
            f.require_dataset("a/arr", shape=(4,), dtype="<i8")
        with pytest.raises(TypeError):
            f.require_group("a/arr")
        # as h5py: floats meant for it would be cut to the stored integers
        assert f.require_dataset("a/arr", shape=3, dtype="<i2") == ds
        with pytest.raises(IncompatibleDatasetError, match="'/a/arr' exists with dtype int64"):
            f.require_dataset("a/arr", shape=(3,), dtype="<f8")
        with pytest.raises(IncompatibleDatasetError, match="is not"):
            f.require_dataset("a/arr", shape=(3,), dtype="<i2", exact=True)
        assert len(f["a"]) == 2 and sorted(f["a"]) == ["arr", "b"] and len(ds) == 3
        assert f["a"]["b"] == g and f["/a/b"] == g and g["/a/arr"] == ds
        assert f["a"].file.url == f.url and f.filename == f.url
        names: list[str] = []
        f.visit(names.append)
        assert sorted(names) == ["a", "a/arr", "a/b"]
        assert "Dataset" in repr(ds) and "Group" in repr(g) and url.split("/")[-1] in repr(f)
    with h5dask.File(url) as f:
        assert f.get("a/missing") is None and f.get("a/missing", 5) == 5
        assert f.get("a/missing", getlink=True) is None
        assert f["/"] == f


def test_dataset_naming_a_committed_type_by_bare_id_opens_cold(tmp_path) -> None:
    """A dataset whose type is just a committed type's id (as other writers may store it),
    opened in a fresh session where that type is not cached: it is fetched on the I/O
    loop with the dataset instead of a blocking call from the loop (a RuntimeError)."""
    url = f"file://{tmp_path}/bare.h5"
    pts = np.array([(1, 2), (3, 4)], dtype=POINT)
    with h5dask.File(url, "w") as f:
        f["types/point"] = POINT  # in a subgroup: not loaded with the dataset
        f.create_dataset("pts", data=pts, dtype=f["types/point"], chunks=(1,))
        key, tid = f["pts"]._meta.key, f["types/point"].id
        store = f._session.store
    obj = json.loads(sync(store.get(key, kind="metadata")))
    obj["type"] = tid  # the bare id
    sync(store.put(key, json.dumps(obj).encode(), kind="metadata"))
    with h5dask.File(url) as f:
        f.visititems(lambda name, obj: None)  # loads every object through load_many
        assert_same(f["pts"][...], pts)


def _string_cases(h5: h5py.File) -> None:
    h5.create_dataset("utf8", data=["", "ascii", "héllo ✓", "日本"],
                      dtype=h5py.string_dtype(), chunks=(2,))
    h5.create_dataset("ascii", data=[b"a", b"", b"mid", b"xyz"],
                      dtype=h5py.string_dtype("ascii"))
    h5.create_dataset("utf8_2d", data=np.array([["a", "é"], ["", "✓"]], dtype=object),
                      dtype=h5py.string_dtype())
    h5.create_dataset("scalar", data="just text", dtype=h5py.string_dtype())
    h5.create_dataset("unwritten", shape=(3,), chunks=(2,), dtype=h5py.string_dtype())
    h5.create_dataset("fixed", data=np.array([b"ab", b"\xc3\xa9"], dtype="S2"))
    h5.create_dataset("fixed_utf8", data=np.array([b"ab", b"\xc3\xa9"],
                                                  dtype=h5py.string_dtype("utf-8", 2)))


def _same_element_types(got: object, want: object, what: str) -> None:
    g, w = np.asarray(got), np.asarray(want)
    assert g.shape == w.shape, what
    assert [type(v) for v in g.reshape(-1)] == [type(v) for v in w.reshape(-1)], what
    assert g.reshape(-1).tolist() == w.reshape(-1).tolist(), what


@pytest.mark.parametrize("writer", ["h5py+ingest", "h5dask"])
def test_vlen_string_datasets_read_as_h5py_reads_them(writer: str, tmp_path) -> None:
    """bytes by default (UTF-8 and ASCII), str through ``asstr()``, as in h5py."""
    from h5dask.ingest import load_file
    path = tmp_path / "strings.h5"
    with h5py.File(path, "w") as h5:
        _string_cases(h5)
    (tmp_path / "bucket" / "db").mkdir(parents=True)
    url = (tmp_path / "bucket" / "home" / "strings.h5").as_uri()
    if writer == "h5dask":
        with h5dask.File(url, "w") as f, h5py.File(path) as h5:
            for name, d in h5.items():
                ds = f.create_dataset(name, shape=d.shape, dtype=d.dtype, chunks=d.chunks)
                if name != "unwritten":
                    ds[...] = d.asstr()[...] if name == "utf8" else d[...]  # str or bytes
    else:
        load_file(str(path), url, progress=False)
    with h5dask.File(url) as f, h5py.File(path) as h5:
        for name, want in h5.items():
            got = f[name]
            assert got.dtype == want.dtype, name
            assert h5py.check_string_dtype(got.dtype) == h5py.check_string_dtype(want.dtype)
            _same_element_types(got[()], want[()], name)
            _same_element_types(got[...], want[...], name)
            if want.shape != ():
                _same_element_types(got[1:], want[1:], name)
                _same_element_types(got[1], want[1], name)
                assert len(got.asstr()) == len(want.asstr()) == want.shape[0]
            if name != "fixed":  # h5py: ASCII asstr() refuses the é bytes, as h5dask
                _same_element_types(got.asstr()[()], want.asstr()[()], name)
                _same_element_types(got.asstr()[...], want.asstr()[...], name)
            with pytest.raises(UnicodeDecodeError):
                h5["fixed"].asstr()[()]
            with pytest.raises(UnicodeDecodeError):
                f["fixed"].asstr()[()]
            assert got.asstr().shape == want.asstr().shape
            assert got.asstr().dtype == want.asstr().dtype
        assert f["utf8"].asstr("latin-1")[2] == h5["utf8"].asstr("latin-1")[2]
        assert f["ascii"].asstr(errors="replace")[...].tolist() == ["a", "", "mid", "xyz"]
        assert f["utf8"][2] == "héllo ✓".encode() and isinstance(f["utf8"][2], bytes)
        for name in ("utf8", "ascii", "unwritten"):  # b"", as h5py gives
            assert type(f[name].fillvalue) is bytes and f[name].fillvalue == b"", name
            assert h5[name].fillvalue == b"", name
        assert np.asarray(f["utf8"].asstr()).tolist() == ["", "ascii", "héllo ✓", "日本"]


def test_asstr_refuses_non_string_datasets(tmp_path) -> None:
    url = (tmp_path / "bucket" / "home" / "n.h5").as_uri()
    (tmp_path / "bucket" / "db").mkdir(parents=True)
    with h5dask.File(url, "w") as f:
        ds = f.create_dataset("x", data=np.arange(3))
        with pytest.raises(TypeError, match="string datatype"):
            ds.asstr()
        mixed = f.create_dataset("mixed", shape=(3,), dtype=h5dask.string_dtype())
        mixed[...] = np.array([b"a", "\u00e9", "z"], dtype=object)  # str and bytes written
        mixed[2] = "\u00e9".encode()
        f.attrs["s"] = "text"
        f.attrs["a"] = np.array([b"x"], dtype=h5dask.string_dtype("ascii"))
    with h5dask.File(url) as f:  # attributes stay str, as h5py reads them
        assert f.attrs["s"] == "text" and isinstance(f.attrs["s"], str)
        assert f.attrs["a"].tolist() == ["x"]
        assert f["mixed"][...].tolist() == [b"a", "\u00e9".encode(), "\u00e9".encode()]


def test_xarray_engine_still_reads_vlen_strings_as_str(tmp_path) -> None:
    xr = pytest.importorskip("xarray")
    url = (tmp_path / "bucket" / "home" / "x.h5").as_uri()
    (tmp_path / "bucket" / "db").mkdir(parents=True)
    with h5dask.File(url, "w") as f:
        f.create_dataset("s", data=["a", "é"], dtype=h5dask.string_dtype())
    ds = xr.open_dataset(url, engine="h5cloud", phony_dims="sort")
    assert ds["s"].values.tolist() == ["a", "é"]
    with h5dask.File(url) as f:
        assert f["s"][...].tolist() == [b"a", "é".encode()]


def test_values_an_integer_dataset_cannot_hold_are_refused() -> None:
    # numpy's cast wrapped 300 to 44 in a uint8 dataset (h5py saturates to 255)
    with h5dask.File(f"memory://{uuid.uuid4().hex}/range.h5", "w") as f:
        ds = f.create_dataset("u8", data=np.zeros(3, "u1"))
        for bad in (np.array([300, 1, 2]), np.array([1.0, np.nan, 2.0]), np.array([-1, 0, 1])):
            with pytest.raises(ValueOutOfRangeError, match="'/u8'.*uint8"):
                ds[...] = bad
        assert ds[...].tolist() == [0, 0, 0]
        ds[...] = np.array([255, 0, 7])  # in range: written as given
        assert ds[...].tolist() == [255, 0, 7]
        big = f.create_dataset("i8", data=np.zeros(2, "i8"))
        with pytest.raises(ValueOutOfRangeError, match="'/i8'.*int64"):
            big[...] = np.array([1.0, 2.0**63])  # float(2**63 - 1) is 2**63: no int64
        big[...] = np.array([1.0, -2.0**63])
        assert big[...].tolist() == [1, -2**63]


def _write_tree(url: str, options: dict, groups: int) -> None:
    with h5dask.File(url, "w", storage_options=options) as f:
        for g in range(groups):
            grp = f.create_group(f"g{g}/sub")
            for v in range(3):
                grp.create_dataset(f"v{v}", data=np.arange(10.0) + g)
            grp.attrs["n"] = g


def test_walking_a_tree_costs_the_same_requests_for_2_or_24_groups(s3_bucket_url,
                                                                   storage_options):
    """User ask 2 (h5pyd: one GET per object, 20 s for a small tree): visititems of a
    domain with a consolidated object fetches every object at once, so its cost does not
    grow with the tree (before: a GET per object, a round trip per group)."""
    from h5dask.domain import forget_opened_domains

    requests = {}
    for groups in (2, 24):
        url = f"{s3_bucket_url}/tree{groups}.h5"
        _write_tree(url, storage_options, groups)
        forget_opened_domains()
        h5dask.reset_stats()
        with h5dask.File(url, storage_options=storage_options) as f:
            names = []
            f.visititems(lambda name, obj, names=names: names.append(name))
            assert f[f"g{groups - 1}/sub"].attrs["n"] == groups - 1
            np.testing.assert_array_equal(f["g1/sub/v2"][...], np.arange(10.0) + 1)
        assert len(names) == groups * 5
        meta = h5dask.stats()["metadata"]
        requests[groups] = (meta["read_requests"], meta["list_requests"])
    assert requests[2] == requests[24], requests
    assert sum(requests[24]) <= 4, requests  # .domain.json, root, consolidated, one LIST


def test_object_references_are_checked_and_normalised_on_write() -> None:
    """A reference written as bytes (as h5pyd reads it) or with HSDS's ``datasets/``
    prefix is stored as that id, not as the text "b'd-...'"; what is not an id is
    refused naming the dataset or attribute, not stored."""
    from h5dask.errors import InvalidReferenceError
    from h5dask.format.types import OBJ_REF

    url = f"memory://refs-{uuid.uuid4().hex}/home/r.h5"
    with h5dask.File(url, "w") as f:
        ds = f.create_dataset("ds", data=np.arange(4))
        refs = f.create_dataset("refs", shape=(4,), dtype=OBJ_REF, chunks=(4,))
        refs[...] = np.array([ds.id.encode(), f"datasets/{ds.id}", ds, None], dtype=object)
        rec = np.dtype([("n", "<i4"), ("r", OBJ_REF)])
        f.create_dataset("rec", data=np.array([(1, ds.id.encode())], dtype=rec), chunks=(1,))
        f.attrs.create("ref", np.array([ds.id.encode()], dtype=object), dtype=OBJ_REF)
        with pytest.raises(InvalidReferenceError, match="'/refs'.*'not-an-id'"):
            refs[...] = np.array(["not-an-id"] * 4, dtype=object)
        with pytest.raises(InvalidReferenceError, match="'/rec'.*not ASCII"):
            f["rec"][...] = np.array([(2, "é".encode())], dtype=rec)
        with pytest.raises(InvalidReferenceError, match="attribute 'bad'.*not an HSDS"):
            f.attrs.create("bad", np.array(["not-an-id"], dtype=object), dtype=OBJ_REF)
    with h5dask.File(url) as f:
        assert f["refs"][()].tolist() == [ds.id, ds.id, ds.id, ""]
        assert f["rec"][0]["r"] == ds.id and f["rec"][0]["n"] == 1
        assert f.attrs["ref"].tolist() == [ds.id] and "bad" not in f.attrs


def test_relative_external_links_resolve_from_the_linking_folder(tmp_path) -> None:
    """h5pyd's rule: a relative file name is found from the folder of the domain holding
    the link. A link h5dask wrote before (root-relative, no leading '/') is not followed
    to the root: the error says the domain exists there and what to write instead."""
    from h5dask.errors import DomainNotFoundError

    opts = {"bucket_root": str(tmp_path / "bucket")}
    base = f"file://{tmp_path}/bucket"
    with h5dask.File(f"{base}/home/me/other.h5", "w", storage_options=opts) as f:
        f.create_dataset("deep/data", data=np.arange(3))
    with h5dask.File(f"{base}/home/me/run.h5", "w", storage_options=opts) as f:
        f["folder_relative"] = h5dask.ExternalLink("other.h5", "/deep/data")
        f["absolute"] = h5dask.ExternalLink("/home/me/other.h5", "/deep/data")
        f["old_style"] = h5dask.ExternalLink("home/me/other.h5", "/deep/data")
        f["missing"] = h5dask.ExternalLink("home/me/none.h5", "/deep/data")
    with h5dask.File(f"{base}/home/me/run.h5", storage_options=opts) as f:
        assert f["folder_relative"][()].tolist() == [0, 1, 2]
        assert f["absolute"][()].tolist() == [0, 1, 2]
        with pytest.raises(DomainNotFoundError, match="home/me/home/me/other.h5") as info:
            f["old_style"]
        assert "write the link as '/home/me/other.h5'" in str(info.value)
        with pytest.raises(DomainNotFoundError, match="home/me/home/me/none.h5") as info:
            f["missing"]
        assert "write the link as" not in str(info.value)


def test_strings_in_sequences_read_as_h5py_reads_them(tmp_path) -> None:
    """A sequence of variable-length strings: h5py gives its strings as bytes, in an
    attribute as in a dataset (a top-level string attribute is str); h5dask did give
    str through attributes and bytes through datasets."""
    seq_of_str = h5py.vlen_dtype(h5py.string_dtype())
    value = np.empty(2, dtype=seq_of_str)
    value[0], value[1] = np.array(["ab", "c"], dtype=object), np.array(["é"], dtype=object)

    def read(f) -> tuple:
        return ([list(v) for v in f["d"][()]], [list(v) for v in f.attrs["a"]], f.attrs["s"])

    with h5py.File(tmp_path / "ref.h5", "w") as f:
        f.create_dataset("d", data=value)
        f.attrs.create("a", value, dtype=seq_of_str)
        f.attrs["s"] = "top"
    with h5py.File(tmp_path / "ref.h5") as f:
        want = read(f)
    url = f"memory://nest-{uuid.uuid4().hex}/home/n.h5"
    with h5dask.File(url, "w") as f:
        f.create_dataset("d", data=value, dtype=seq_of_str)
        f.attrs.create("a", value, dtype=seq_of_str)
        f.attrs["s"] = "top"
    with h5dask.File(url) as f:
        got = read(f)
    assert want == ([[b"ab", b"c"], ["é".encode()]], [[b"ab", b"c"], ["é".encode()]], "top")
    assert got == want


def test_sequences_of_sequences_write_and_read_as_h5py_with_a_warning_for_hsds() -> None:
    """A vlen of vlen (and a compound member of that type) round-trips exactly as h5py
    holds it; HSDS 1.0.2 cannot store or serve it (h5pyd's write fails, its REST API
    answers 500), so creating one warns once, naming the dataset and the type."""
    from h5dask.errors import HSDSUnreadableWarning

    vv = h5dask.vlen_dtype(h5dask.vlen_dtype("<i4"))
    first = np.empty(2, dtype=object)
    first[0], first[1] = np.array([1, 2], "<i4"), np.array([], "<i4")
    values = np.empty(2, dtype=object)
    values[0], values[1] = first, first[:0]
    rec = np.dtype([("n", "<i2"), ("s", vv)])
    with h5dask.File("memory://vv/home/vv.h5", "w") as f:
        with pytest.warns(HSDSUnreadableWarning, match=r"'/g/vv'.*sequence of variable-len"):
            f.create_dataset("g/vv", data=values, dtype=vv, chunks=(1,))
        with pytest.warns(HSDSUnreadableWarning, match="'/rec'"):
            f.create_dataset("rec", data=np.array([(3, first)], dtype=rec))
    with h5dask.File("memory://vv/home/vv.h5") as f:
        got = f["g/vv"][()]
        assert [[x.tolist() for x in seq] for seq in got] == [[[1, 2], []], []]
        assert f["g/vv"].dtype.metadata["vlen"].metadata["vlen"] == np.dtype("<i4")
        assert [x.tolist() for x in f["rec"][0]["s"]] == [[1, 2], []]


def test_a_failed_metadata_put_raises_only_after_every_put_of_the_flush_ended(
        tmp_path) -> None:
    """One metadata PUT of a session flush fails (a directory where its .group.json
    goes): the flush used to raise at once while the other PUTs of its level were still
    running, so whatever ran next (a retried flush of the same objects, a lease's
    release, the process's exit) raced them. Now it raises once all ended."""
    from h5dask.format.ids import object_key

    n = 300
    root = tmp_path / "home"
    with h5dask.File(f"file://{root}/flush.h5", "w") as f:
        f.flush()  # the domain is published: what follows is one level of new groups
        groups = [f.create_group(f"g{i}") for i in range(n)]
        blocker = root / object_key(groups[0].id)
        os.makedirs(blocker / "x")
        with pytest.raises(IsADirectoryError):
            f.flush()
        # every other group's PUT ended before the error reached the caller
        assert all((root / object_key(g.id)).is_file() for g in groups[1:])
        os.rmdir(blocker / "x")
        os.rmdir(blocker)
        # the failed flush lost nothing: a second one writes the rest
    with h5dask.File(f"file://{root}/flush.h5") as f:
        assert sorted(f) == sorted(f"g{i}" for i in range(n))
