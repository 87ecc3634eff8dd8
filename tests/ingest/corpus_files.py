"""The fidelity corpus: small HDF5 and netCDF-4 files, one per feature, written with h5py
and netCDF4 (each ``make_<name>(path)`` writes one file), plus the real reference files
of other projects in ``tests/data/reference`` (see its README).

Every HDF5 type class and property the issue lists is here: integers and floats of every
size and byte order, float16, complex, enum and bool, opaque (plain and tagged datetime),
fixed strings (NULLTERM/NULLPAD/SPACEPAD; ASCII and UTF-8), vlen strings and sequences,
nested compounds with padding, arrays, object references (null included), null/scalar/
simple dataspaces, empty attributes, fill values, the three layouts and every filter that
h5py and hdf5plugin decode.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np

REFERENCE_DIR = Path(__file__).resolve().parents[1] / "data" / "reference"

MAKERS: dict[str, Callable[[Path], None]] = {}


def corpus(fn: Callable[[h5py.File], None]) -> Callable[[h5py.File], None]:
    """Register an h5py writer: ``fn(f)`` fills a new file."""
    def make(path: Path) -> None:
        with h5py.File(path, "w") as f:
            fn(f)

    MAKERS[fn.__name__] = make
    return fn


def nc_corpus(fn: Callable[[object], None]) -> Callable[[object], None]:
    """Register a netCDF4 writer: ``fn(ds)`` fills a new netCDF4.Dataset."""
    def make(path: Path) -> None:
        import netCDF4

        with netCDF4.Dataset(path, "w") as ds:
            fn(ds)

    MAKERS["nc_" + fn.__name__] = make
    return fn


def _fixed_string(f: h5py.File, name: str, values: list[bytes], length: int, pad: int,
                  utf8: bool) -> None:
    """A dataset and an attribute of a fixed-length string type with the given padding."""
    tid = h5py.h5t.C_S1.copy()
    tid.set_size(length)
    tid.set_strpad(pad)
    tid.set_cset(h5py.h5t.CSET_UTF8 if utf8 else h5py.h5t.CSET_ASCII)
    space = h5py.h5s.create_simple((len(values),))
    fill = b" " if pad == h5py.h5t.STR_SPACEPAD else b"\0"
    raw = np.array([v.ljust(length, fill)[:length] for v in values], dtype=f"S{length}")
    dset = h5py.h5d.create(f.id, name.encode(), tid, space)
    dset.write(h5py.h5s.ALL, h5py.h5s.ALL, raw, mtype=tid)
    attr = h5py.h5a.create(f.id, name.encode(), tid, h5py.h5s.create(h5py.h5s.SCALAR))
    attr.write(raw[:1].reshape(()), mtype=tid)


# -- numbers --------------------------------------------------------------------------------
@corpus
def integers(f: h5py.File) -> None:
    for kind in "iu":
        for size in (1, 2, 4, 8):
            for order in "<>":
                dt = np.dtype(f"{order}{kind}{size}")
                info = np.iinfo(dt)
                data = np.array([info.min, 0, 1, info.max, info.max // 3], dtype=dt)
                f.create_dataset(f"{kind}{size}{'le' if order == '<' else 'be'}", data=data)
                f.attrs[f"{kind}{size}{order}"] = data[:2]


@corpus
def floats(f: h5py.File) -> None:
    for size in (2, 4, 8):
        for order in "<>":
            dt = np.dtype(f"{order}f{size}")
            data = np.array([0.0, -1.5, np.inf, -np.inf, np.nan, np.finfo(dt).max], dtype=dt)
            f.create_dataset(f"f{size}{'le' if order == '<' else 'be'}", data=data,
                             chunks=(4,))
            f.attrs[f"f{size}{order}"] = data


@corpus
def float16(f: h5py.File) -> None:
    f.create_dataset("half", data=np.linspace(-2, 2, 37, dtype="<f2").reshape(37),
                     chunks=(10,), compression="gzip")
    f.attrs["half"] = np.float16(0.333)


@corpus
def complex_numbers(f: h5py.File) -> None:
    z = np.array([1 + 2j, -3.5 - 0.25j, 1e300j, 0], dtype="<c16")
    f.create_dataset("c16", data=z, chunks=(2,))
    f.create_dataset("c8", data=z.astype("<c8").reshape(2, 2))
    f.create_dataset("c16be", data=z.astype(">c16"))
    f.create_dataset("c8contig", data=z.astype("<c8"))
    f.create_dataset("cscalar", data=np.complex128(1.5 - 2j))
    f.attrs["z"] = np.complex64(0.5 + 0.25j)
    f.attrs["zs"] = z


@corpus
def enums_and_bool(f: h5py.File) -> None:
    colours = h5py.enum_dtype({"RED": 0, "GREEN": 1, "BLUE": 42}, basetype="u1")
    f.create_dataset("colour", data=np.array([0, 1, 42, 42], dtype="u1"), dtype=colours)
    big = h5py.enum_dtype({"LOW": -5, "HIGH": 30000}, basetype=">i2")
    f.create_dataset("level", data=np.array([-5, 30000], dtype=">i2"), dtype=big, chunks=(1,))
    f.create_dataset("flags", data=np.array([True, False, True]))
    f.attrs["flag"] = np.bool_(False)
    f.attrs.create("colour", 42, dtype=colours)


@corpus
def opaque(f: h5py.File) -> None:
    f.create_dataset("raw", data=np.array([b"\x01\x02\x03\x04", b"\xff\x00\xfe\x01"],
                                          dtype="V4"))
    f.attrs["raw"] = np.void(b"\x00\xab")


@corpus
def opaque_datetime(f: h5py.File) -> None:
    t = np.array(["2020-01-01T00:00:00", "1970-01-01T00:00:01", "2038-01-19T03:14:08"],
                 dtype="M8[s]")
    f.create_dataset("when", data=t.astype(h5py.opaque_dtype(t.dtype)))
    d = np.array([1, -2, 3_000_000], dtype="m8[ms]")
    f.create_dataset("span", data=d.astype(h5py.opaque_dtype(d.dtype)), chunks=(2,))
    f.attrs["t0"] = t[:1].astype(h5py.opaque_dtype(t.dtype))


# -- strings --------------------------------------------------------------------------------
_WORDS = [b"ab cd ef1", b"x", b"", b"full_width!"]
_UTF8 = ["h\u00e9llo".encode(), "\u00fc\u00df".encode(), b"plain"]


def _fixed_maker(pad: int, utf8: bool) -> Callable[[h5py.File], None]:
    def fill(f: h5py.File) -> None:
        _fixed_string(f, "s", _UTF8 if utf8 else _WORDS, 11, pad, utf8)
    return fill


for _pad_name, _pad in (("nullterm", h5py.h5t.STR_NULLTERM), ("nullpad", h5py.h5t.STR_NULLPAD),
                        ("spacepad", h5py.h5t.STR_SPACEPAD)):
    for _cs in ("ascii", "utf8"):
        _fill = _fixed_maker(_pad, _cs == "utf8")
        _fill.__name__ = f"fixed_{_pad_name}_{_cs}"
        corpus(_fill)


@corpus
def vlen_strings(f: h5py.File) -> None:
    f.create_dataset("utf8", data=np.array(["a", "", "h\u00e9llo w\u00f6rld"], dtype=object),
                     dtype=h5py.string_dtype("utf-8"))
    f.create_dataset("ascii", data=np.array([b"abc", b"", b"d e"], dtype=object),
                     dtype=h5py.string_dtype("ascii"), chunks=(2,))
    f.create_dataset("scalar", data="one", dtype=h5py.string_dtype())
    f.attrs["utf8"] = "\u00e9t\u00e9"
    f.attrs.create("ascii", b"bytes", dtype=h5py.string_dtype("ascii"))
    f.attrs["list"] = np.array(["x", "yy"], dtype=h5py.string_dtype())


@corpus
def vlen_sequences(f: h5py.File) -> None:
    dt = h5py.vlen_dtype("<i4")
    d = f.create_dataset("ragged", shape=(3,), dtype=dt)
    d[0] = np.array([1, 2, 3], dtype="<i4")
    d[1] = np.array([], dtype="<i4")
    d[2] = np.array([-7], dtype="<i4")
    g = f.create_dataset("floats", shape=(2,), dtype=h5py.vlen_dtype(">f8"), chunks=(1,))
    g[0] = np.array([0.5, 1.5], dtype=">f8")
    g[1] = np.array([np.nan], dtype=">f8")
    h = f.create_dataset("sparse", shape=(4,), dtype=h5py.vlen_dtype(">i2"), chunks=(2,))
    h[0] = np.array([5, -5], dtype=">i2")  # the second chunk is never written


@corpus
def vlen_of_vlen(f: h5py.File) -> None:
    """Sequences of sequences (h5py reads them; HSDS 1.0.2 can neither store nor serve
    them: h5pyd's write fails, a JSON write and a read of h5dask's chunks answer 500)."""
    def seqs(*items: list) -> np.ndarray:
        out = np.empty(len(items), dtype=object)
        for i, x in enumerate(items):
            out[i] = np.array(x, dtype="<i4")
        return out

    d = f.create_dataset("ragged2", shape=(3,), dtype=h5py.vlen_dtype(h5py.vlen_dtype("<i4")),
                         chunks=(2,))
    d[0] = seqs([1, 2], [3])
    d[1] = seqs([])  # d[2] never written
    rec = np.dtype([("n", "<i2"), ("s", h5py.vlen_dtype(h5py.vlen_dtype("<i4")))])
    r = np.zeros(1, rec)
    r[0] = (7, seqs([4], [5, 6, 7]))
    f.create_dataset("member", data=r)
    f.attrs.create("ragged2", _one(seqs([8, 9], [])),
                   dtype=h5py.vlen_dtype(h5py.vlen_dtype("<i4")))


def _one(x: object) -> np.ndarray:
    out = np.empty(1, dtype=object)
    out[0] = x
    return out


# -- compounds, arrays, references ------------------------------------------------------
@corpus
def compounds(f: h5py.File) -> None:
    inner = np.dtype([("lat", "<f4"), ("lon", "<f4")])
    packed = np.dtype([("id", "<i8"), ("pos", inner), ("name", "S5"), ("v", ">u2")])
    f.create_dataset("packed", data=np.array([(1, (2.5, 3.5), b"abc", 9),
                                              (-2, (0.0, -1.0), b"", 65535)], dtype=packed),
                     chunks=(1,))
    padded = np.dtype({"names": ["a", "b"], "formats": ["u1", "<f8"], "offsets": [0, 8],
                       "itemsize": 24})
    f.create_dataset("padded", data=np.array([(1, 0.5), (2, -0.5)], dtype=padded))
    f.attrs.create("rec", np.array((7, (1.0, 2.0), b"r", 3), dtype=packed))


@corpus
def compound_vlen_member(f: h5py.File) -> None:
    dt = np.dtype([("n", "<i4"), ("label", h5py.string_dtype()),
                   ("tag", h5py.string_dtype("ascii"))])
    f.create_dataset("table", data=np.array([(1, "one", b"a"), (2, "tw\u00f6", b"")],
                                            dtype=dt))
    f.create_dataset("unwritten", shape=(3,), dtype=dt, chunks=(2,))


@corpus
def array_type_dataset(f: h5py.File) -> None:
    vec3 = f.create_dataset("vec3", shape=(4,), dtype=np.dtype(("<f4", (3,))))
    vec3[...] = np.arange(12, dtype="<f4").reshape(4, 3)
    f.create_dataset("plain", data=np.arange(3))


@corpus
def arrays(f: h5py.File) -> None:
    dt = np.dtype([("m", "<i2", (2, 2)), ("s", "S2", (2,))])
    f.create_dataset("members", data=np.array([([[1, 2], [3, 4]], [b"a", b"bc"])], dtype=dt))
    f.attrs.create("a", np.arange(6, dtype="<i4").reshape(2, 3))


@corpus
def object_refs(f: h5py.File) -> None:
    g = f.create_group("g")
    d = g.create_dataset("target", data=np.arange(3))
    refs = f.create_dataset("refs", shape=(4,), dtype=h5py.ref_dtype)
    refs[0] = d.ref
    refs[1] = g.ref
    refs[3] = f.ref  # refs[2] stays a null reference
    f.create_dataset("null_ref", shape=(), dtype=h5py.ref_dtype)
    f.attrs["where"] = d.ref
    f.attrs.create("nothing", h5py.Reference(), dtype=h5py.ref_dtype)


@corpus
def region_refs(f: h5py.File) -> None:
    d = f.create_dataset("target", data=np.arange(10))
    r = f.create_dataset("regions", shape=(1,), dtype=h5py.regionref_dtype)
    r[0] = d.regionref[2:5]
    f.create_dataset("ok", data=np.arange(3))


# -- dataspaces and attributes --------------------------------------------------------------
@corpus
def dataspaces(f: h5py.File) -> None:
    f.create_dataset("null", data=h5py.Empty("<f4"))
    f.create_dataset("scalar", data=np.int16(-3))
    f.create_dataset("zero", shape=(0, 4), dtype="<f8")
    f.create_dataset("zero_chunked", shape=(0,), maxshape=(None,), dtype="<i4", chunks=(8,))
    f.create_dataset("simple", data=np.arange(24.0).reshape(2, 3, 4))


@corpus
def empty_attributes(f: h5py.File) -> None:
    f.attrs["empty_f"] = h5py.Empty("<f4")
    f.attrs["empty_i"] = h5py.Empty(">i8")
    f.attrs["empty_s"] = h5py.Empty("S1")
    f.attrs["empty_vs"] = h5py.Empty(h5py.string_dtype())
    d = f.create_dataset("x", data=np.arange(3))
    d.attrs["none"] = h5py.Empty("<u2")


@corpus
def fill_values(f: h5py.File) -> None:
    f.create_dataset("neg", shape=(20,), dtype="<i4", chunks=(5,), fillvalue=-99)[3:6] = 1
    f.create_dataset("nanfill", shape=(4, 4), dtype=">f8", chunks=(2, 2), fillvalue=np.nan)
    f.create_dataset("contig_unwritten", shape=(6,), dtype="<f4", fillvalue=2.5)
    rec = np.dtype([("a", "<i2"), ("b", "<f4")])
    f.create_dataset("compound_fill", shape=(3,), dtype=rec, chunks=(2,),
                     fillvalue=np.array((7, 0.5), dtype=rec))
    f.create_dataset("str_fill", shape=(3,), dtype="S4", chunks=(2,), fillvalue=b"zz")


@corpus
def layouts(f: h5py.File) -> None:
    data = np.arange(60, dtype="<i4").reshape(6, 10)
    f.create_dataset("chunked", data=data, chunks=(4, 3))
    f.create_dataset("contiguous", data=data)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_layout(h5py.h5d.COMPACT)
    space = h5py.h5s.create_simple((6, 10))
    sid = h5py.h5d.create(f.id, b"compact", h5py.h5t.STD_I32LE, space, dcpl=dcpl)
    sid.write(h5py.h5s.ALL, h5py.h5s.ALL, data.astype("<i4"))
    f.create_dataset("resizable", data=np.arange(5.0), maxshape=(None,), chunks=(2,))


@corpus
def nested_groups(f: h5py.File) -> None:
    for path in ("b/z/deep", "b/a", "a/y", "a/x/leaf", "c"):
        f.require_group(path)
    f["b/z/deep"].create_dataset("v", data=np.arange(2))
    f["a"].create_dataset("d0", data=np.arange(3))
    f.create_dataset("top", data=np.arange(4))
    f["a/x"]["soft"] = h5py.SoftLink("/top")
    f["b"].attrs["kind"] = "group attr"


# -- filters --------------------------------------------------------------------------------
_FILTER_DATA = np.tile(np.arange(100, dtype="<f4"), 20).reshape(40, 50) / 7


def _filtered(name: str, **kwargs: object) -> None:
    def fill(f: h5py.File) -> None:
        f.create_dataset("data", data=_FILTER_DATA, chunks=(10, 25), **kwargs)
        f.create_dataset("ints", data=np.arange(1000, dtype="<i8").reshape(10, 100) * 3,
                         chunks=(5, 50), **kwargs)
    fill.__name__ = f"filter_{name}"
    corpus(fill)


def _register_filters() -> None:
    import hdf5plugin

    _filtered("gzip", compression="gzip", compression_opts=6)
    _filtered("shuffle_gzip_f32", compression="gzip", shuffle=True, fletcher32=True)
    _filtered("lzf", compression="lzf")
    _filtered("scaleoffset", scaleoffset=3)
    _filtered("lz4", **hdf5plugin.LZ4())
    _filtered("zstd", **hdf5plugin.Zstd(clevel=5))
    _filtered("bitshuffle", **hdf5plugin.Bitshuffle(cname="none"))
    _filtered("bitshuffle_lz4", **hdf5plugin.Bitshuffle(cname="lz4"))
    _filtered("bitshuffle_zstd", **hdf5plugin.Bitshuffle(cname="zstd"))
    _filtered("blosc_lz4", **hdf5plugin.Blosc(cname="lz4", shuffle=hdf5plugin.Blosc.SHUFFLE))
    _filtered("blosc_zstd", **hdf5plugin.Blosc(cname="zstd", clevel=3,
                                               shuffle=hdf5plugin.Blosc.BITSHUFFLE))
    _filtered("blosc_blosclz", **hdf5plugin.Blosc(cname="blosclz",
                                                  shuffle=hdf5plugin.Blosc.NOSHUFFLE))
    _filtered("blosc_zlib", **hdf5plugin.Blosc(cname="zlib"))
    _filtered("blosc2", **hdf5plugin.Blosc2(cname="zstd"))
    _filtered("bzip2", **hdf5plugin.BZip2())
    _filtered("zfp_reversible", **hdf5plugin.Zfp(reversible=True))


_register_filters()


# -- netCDF-4 -------------------------------------------------------------------------------
@nc_corpus
def basic(ds: object) -> None:
    ds.createDimension("time", None)
    ds.createDimension("lat", 3)
    t = ds.createVariable("time", "f8", ("time",))
    t.units = "days since 2000-01-01"
    t[:] = [0, 1]
    lat = ds.createVariable("lat", "f4", ("lat",))
    lat[:] = [-10, 0, 10]
    v = ds.createVariable("tas", "f4", ("time", "lat"), zlib=True, fill_value=-999.0)
    v[:] = np.arange(6).reshape(2, 3)
    v.long_name = "temperature"
    v.valid_range = np.array([0, 500], dtype="f4")
    ds.title = "basic"
    ds.history = "created by the corpus"
    ds.setncattr_string("strattr", "a NC_STRING attribute")


@nc_corpus
def groups(ds: object) -> None:
    ds.createDimension("x", 4)
    sub = ds.createGroup("sub")
    sub.createDimension("y", 2)
    deeper = sub.createGroup("deeper")
    v = deeper.createVariable("v", "i2", ("x", "y"))
    v[:] = np.arange(8).reshape(4, 2)
    sub.createVariable("w", "f8", ("y",))[:] = [1.5, 2.5]
    ds.createVariable("x", "i4", ("x",))[:] = np.arange(4)
    sub.note = "in a subgroup"


@nc_corpus
def strings(ds: object) -> None:
    ds.createDimension("n", 3)
    ds.createDimension("len", 4)
    s = ds.createVariable("names", str, ("n",))
    s[:] = np.array(["a", "bb", "h\u00e9"], dtype=object)
    c = ds.createVariable("chars", "S1", ("n", "len"))
    c[:] = np.array([list(b"abcd"), list(b"ef\0\0"), list(b"\0\0\0\0")], dtype="S1")
    ds.setncattr("text", "plain text")
    ds.setncattr_string("strings", ["one", "two"])


@nc_corpus
def user_types(ds: object) -> None:
    ds.createDimension("n", 2)
    cmp = ds.createCompoundType(np.dtype([("x", "f8"), ("y", "i4")]), "point")
    v = ds.createVariable("points", cmp, ("n",))
    v[:] = np.array([(1.5, 2), (-0.5, 7)], dtype=cmp.dtype)
    ds.setncattr("origin", np.array((42.41, 3), dtype=cmp.dtype))
    enum = ds.createEnumType("u1", "cloud_t", {"clear": 0, "cloudy": 1, "missing": 255})
    e = ds.createVariable("cloud", enum, ("n",), fill_value=255)
    e[:] = np.array([0, 1], dtype="u1")
    vl = ds.createVLType("i4", "ragged_t")
    r = ds.createVariable("ragged", vl, ("n",))
    r[0] = np.array([1, 2, 3], dtype="i4")
    r[1] = np.array([4], dtype="i4")


def _phony(f: h5py.File) -> None:
    f.create_dataset("a", data=np.zeros((3, 4)))
    f.create_dataset("b", data=np.zeros((4, 4)))
    g = f.create_group("g")
    g.create_dataset("c", data=np.zeros((4, 5)))
    g.create_dataset("b", data=np.zeros(3))
    h = g.create_group("h")
    h.create_dataset("d", data=np.zeros((5, 5, 3)))
    f.create_group("e").create_dataset("x", data=np.zeros(7))


corpus(_phony)
MAKERS["phony_dims"] = MAKERS.pop("_phony")


def reference_files() -> dict[str, Path]:
    """The real files of other projects (tests/data/reference)."""
    if not REFERENCE_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(REFERENCE_DIR.iterdir())
            if p.suffix in (".nc", ".h5", ".hdf5", ".he5", ".nc4")}


def source_file(name: str, where: Path) -> Path:
    """The file of corpus case ``name``: ``ref:<file>`` is a reference file, any other
    name is made by its maker under ``where`` on first use."""
    if name.startswith("ref:"):
        return reference_files()[name[4:]]
    path = where / f"{name}.h5"
    if not path.exists():
        MAKERS[name](path)
    return path


__all__ = ["MAKERS", "REFERENCE_DIR", "reference_files", "source_file"]
