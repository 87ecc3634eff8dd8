"""Shared helpers of the ingest tests: the synthetic HDF5 file and an h5pyd-vs-h5py
comparison (a module with a unique name, importable from the tests and conftest)."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

MANY_SHAPE = (60, 70)  # chunks (2, 2): 1050 chunks, 1015 stored (> 1000: INDIRECT)
BIG_CONTIG_SHAPE = (2, 1040, 1000)  # float32, 8.3 MB: two HSDS virtual chunks
COMPOUND = np.dtype([("a", "<i4"), ("b", "<f8"), ("s", "S3")])
COLOURS = h5py.enum_dtype({"RED": 0, "GREEN": 1, "BLUE": 7}, basetype="u1")


def write_synthetic(path: Path) -> Path:
    """The synthetic HDF5 file (deterministic values)."""
    rng = np.random.default_rng(42)
    with h5py.File(path, "w") as f:
        many = f.create_dataset("many", shape=MANY_SHAPE, dtype="<f4", chunks=(2, 2),
                                compression="gzip", fillvalue=-1.0)
        many[:58] = rng.normal(size=(58, 70)).astype("<f4")  # the last chunk row: unstored
        f.create_dataset("contig", data=np.arange(3000, dtype=">i8").reshape(1000, 3))
        f.create_dataset("bigcontig", data=np.arange(np.prod(BIG_CONTIG_SHAPE),
                                                     dtype="<f4").reshape(BIG_CONTIG_SHAPE))
        f.create_dataset("f32", data=np.arange(500, dtype="<i2") - 250, chunks=(64,),
                         fletcher32=True)
        f.create_dataset("gzf32", data=np.arange(500, dtype="<i4") * 3, chunks=(64,),
                         compression="gzip", fletcher32=True)
        f.create_dataset("shgz", data=np.sin(np.arange(500.0)), chunks=(64,), shuffle=True,
                         compression="gzip", compression_opts=9)
        f.create_dataset("shgzf32", data=rng.integers(0, 1000, (40, 30)).astype("<u2"),
                         chunks=(7, 11), shuffle=True, compression="gzip", fletcher32=True)
        f.create_dataset("sh", data=np.arange(500.0) / 7, chunks=(64,), shuffle=True)
        f.create_dataset("be", data=np.arange(300, dtype=">f4").reshape(20, 15), chunks=(8, 8),
                         compression="gzip", compression_opts=2)
        f.create_dataset("scalar", data=3.5)
        sparse = f.create_dataset("sparse", shape=(100,), dtype="<i4", chunks=(10,),
                                  fillvalue=-7)
        sparse[20:35] = 5
        g = f.create_group("grp")
        g.create_dataset("vstr", data=np.array(["a", "bb", "héllo"], dtype=h5py.string_dtype()))
        g.create_dataset("compound", data=np.array([(1, 0.5, b"ab"), (2, -1.5, b"xyz")],
                                                   dtype=COMPOUND), chunks=(1,))
        g.create_dataset("enum", data=np.array([0, 1, 7, 7], dtype="u1"), dtype=COLOURS)
        refs = g.create_dataset("refs", shape=(2,), dtype=h5py.ref_dtype)
        refs[0] = f["many"].ref
        refs[1] = g.ref
        g.create_dataset("empty", shape=(0,), dtype="<f8", chunks=(16,), maxshape=(None,))
        g.create_dataset("null", data=h5py.Empty("<f4"))
        f["mytype"] = np.dtype("<i2")
        g.create_dataset("typed", data=np.arange(4, dtype="<i2"), dtype=f["mytype"])
        g["soft"] = h5py.SoftLink("/many")
        g["hard"] = f["f32"]
        g["ext"] = h5py.ExternalLink("other.h5", "/x")
        a = f.attrs
        a["title"] = "synthetic"
        a.create("fixed", np.bytes_("abc"), dtype="S3")
        a["ints"] = np.array([1, -2, 3], dtype="<i2")
        a["f64"] = 2.5
        a["flag"] = np.bool_(True)
        a["names"] = np.array(["x", "yy"], dtype=h5py.string_dtype())
        a["nothing"] = h5py.Empty("f4")
        a["ref"] = f["many"].ref
        a.create("record", np.array((7, 1.25, b"r"), dtype=COMPOUND))
        f["many"].attrs["units"] = "K"
        f["many"].attrs["valid_range"] = np.array([-5.0, 5.0], dtype="<f4")
    return path


def _has_reference(dt: np.dtype) -> bool:
    if dt.names:
        return any(_has_reference(dt.fields[n][0]) for n in dt.names)
    meta = dt.metadata or {}
    vlen = meta.get("vlen")
    return "ref" in meta or h5py.check_ref_dtype(dt) is not None or (
        isinstance(vlen, np.dtype) and _has_reference(vlen))


def _plain(value):
    """Attribute values as comparable Python values (text as str, arrays as lists)."""
    if isinstance(value, bytes | np.bytes_):
        return bytes(value).decode("utf-8")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value[()])
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def assert_h5pyd_equals_h5py(remote, local) -> int:
    """Every dataset (values, shape, dtype) and attribute (all but reference-valued ones)
    of the h5py file, through h5pyd. Returns how many things were compared."""
    compared = 0

    def attrs(path, r_obj, l_obj):
        nonlocal compared
        assert sorted(r_obj.attrs) == sorted(l_obj.attrs), path
        for name in l_obj.attrs:
            dt = l_obj.attrs.get_id(name).dtype
            if _has_reference(dt):
                continue
            got, want = r_obj.attrs[name], l_obj.attrs[name]
            assert np.shape(got) == np.shape(want), f"{path} attribute {name}"
            assert np.asarray(got).dtype.kind == np.asarray(want).dtype.kind or (
                isinstance(want, bytes | np.bytes_)), f"{path} attribute {name}: {got!r}"
            assert _plain(got) == _plain(want), f"{path} attribute {name}: {got!r} != {want!r}"
            compared += 1

    attrs("/", remote, local)

    def visit(name, obj):
        nonlocal compared
        r_obj = remote[name]
        attrs(name, r_obj, obj)
        if isinstance(obj, h5py.Dataset):
            assert r_obj.shape == obj.shape, name
            assert r_obj.dtype == obj.dtype and r_obj.dtype.str == obj.dtype.str, name
            np.testing.assert_array_equal(r_obj[()], obj[()], err_msg=name)
            compared += 1

    local.visititems(visit)
    return compared


def write_pair(path: Path, first: str = "a", second: str = "b", scale: float = 1.0) -> None:
    """Two datasets of the same shape and chunks (5 chunks each), written in the order
    given: ("a", "b") and ("b", "a") make files of the same size, each name at the
    other's offsets; another ``scale`` rewrites the values at the same offsets."""
    with h5py.File(path, "w") as f:
        for name in (first, second):
            value = {"a": 1.0, "b": 2.0}[name] * scale
            f.create_dataset(name, data=np.full(40, value), chunks=(8,))


def aged(path: Path) -> None:
    """Its times a minute back: not "racy" (a file written in the tick it was linked
    in is checked at every first open), so an open makes no layout check."""
    then = path.stat().st_mtime_ns - 60 * 10**9
    os.utime(path, ns=(then, then))


def pair_bucket(tmp_path: Path) -> tuple[Path, Path]:
    """A bucket folder (``db/``, ``files/``) under ``tmp_path`` holding an aged pair
    file at ``files/pair.h5``: the folder and the file."""
    root = tmp_path / "bucket"
    (root / "db").mkdir(parents=True)
    (root / "files").mkdir()
    local = root / "files" / "pair.h5"
    write_pair(local)
    aged(local)
    return root, local
