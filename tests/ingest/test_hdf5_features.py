"""HDF5 features the corpus (test_corpus.py) lacks, in files written here with h5py: each
dataset reads back through a copied and a linked domain as h5py reads the file, or load
lists it as skipped; never other values."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr
from h5py import h5d, h5p, h5s, h5t, h5z

import h5dask
from h5dask.errors import CorruptChunkError
from h5dask.ingest import load_file

pytestmark = pytest.mark.timeout(120)

MAKERS: dict[str, Callable[[h5py.File], None]] = {}


def maker(fn: Callable[[h5py.File], None]) -> Callable[[h5py.File], None]:
    MAKERS[fn.__name__] = fn
    return fn


def low_level(f: h5py.File, name: str, tid: h5t.TypeID, shape: tuple[int, ...],
              chunks: tuple[int, ...], dcpl_setup: Callable[[h5p.PropDCID], None],
              data: np.ndarray) -> None:
    """A chunked dataset of the file type ``tid`` whose creation properties (filter
    order, nbit, ...) h5py's high-level API cannot set."""
    dcpl = h5p.create(h5p.DATASET_CREATE)
    dcpl.set_chunk(chunks)
    dcpl_setup(dcpl)
    h5d.create(f.id, name.encode(), tid, h5s.create_simple(shape), dcpl=dcpl)
    f[name][...] = data


def _int_with_bit_offset(precision: int, offset: int) -> h5t.TypeID:
    tid = h5t.STD_I32LE.copy()
    tid.set_precision(precision)
    tid.set_offset(offset)
    return tid


@maker
def int_bit_offset(f: h5py.File) -> None:
    # 12 significant bits starting at bit 4 of a 32-bit integer: the bytes are not int32s
    low_level(f, "int_off", _int_with_bit_offset(12, 4), (50,), (10,), lambda d: None,
              np.arange(50) - 20)
    f.create_dataset("enum_off", data=np.array([0, 1, 1, 0], dtype="i4"),
                     dtype=h5py.enum_dtype({"a": 0, "b": 1}, basetype="i4"))
    contiguous = h5p.create(h5p.DATASET_CREATE)
    h5d.create(f.id, b"int_off_contiguous", _int_with_bit_offset(20, 8),
               h5s.create_simple((30,)), dcpl=contiguous)
    f["int_off_contiguous"][...] = np.arange(30) * 1000 - 15000
    record = h5t.create(h5t.COMPOUND, 12)
    record.insert(b"a", 0, _int_with_bit_offset(12, 4))
    record.insert(b"b", 4, h5t.STD_I64LE)
    low_level(f, "compound_member_off", record, (4,), (2,), lambda d: None,
              np.array([(-3, 5), (4, 6), (7, 8), (-9, 10)], dtype=[("a", "<i4"), ("b", "<i8")]))


@maker
def nbit_and_scaleoffset(f: h5py.File) -> None:
    tid = h5t.STD_U16LE.copy()
    tid.set_precision(10)
    low_level(f, "nbit_u10", tid, (50,), (10,), lambda d: d.set_filter(h5z.FILTER_NBIT),
              np.arange(50) * 3)
    low_level(f, "nbit_i12_off4", _int_with_bit_offset(12, 4), (50,), (10,),
              lambda d: d.set_filter(h5z.FILTER_NBIT), np.arange(50) - 20)
    f.create_dataset("so_int", data=np.arange(1000, dtype="i4").reshape(10, 100),
                     chunks=(5, 50), scaleoffset=0)
    f.create_dataset("so_float", data=np.linspace(0, 1, 1000).reshape(10, 100),
                     chunks=(5, 50), scaleoffset=3)


@maker
def filter_orders(f: h5py.File) -> None:
    values = np.arange(100.0)

    def deflate_then_shuffle(d: h5p.PropDCID) -> None:
        d.set_deflate(4)
        d.set_shuffle()

    def fletcher32_first(d: h5p.PropDCID) -> None:
        d.set_fletcher32()
        d.set_deflate(4)

    def deflate_twice(d: h5p.PropDCID) -> None:
        d.set_shuffle()
        d.set_deflate(1)
        d.set_deflate(2)

    for name, setup in [("gz_sh", deflate_then_shuffle), ("f32_gz", fletcher32_first),
                        ("gz_twice", deflate_twice)]:
        low_level(f, name, h5t.IEEE_F64LE, (100,), (30,), setup, values)
    f.create_dataset("lzf", data=values, chunks=(30,), compression="lzf")
    f.create_dataset("sh_gz1_f32", data=np.arange(200, dtype="i8"), chunks=(30,),
                     shuffle=True, compression="gzip", compression_opts=1, fletcher32=True)
    if h5z.filter_avail(h5z.FILTER_SZIP):
        f.create_dataset("szip", data=np.arange(1000, dtype="i4"), chunks=(100,),
                         compression="szip")


@maker
def unfiltered_chunk(f: h5py.File) -> None:
    # a chunk stored raw, its filter mask saying it skipped gzip
    d = f.create_dataset("masked", shape=(40,), dtype="<i4", chunks=(10,), compression="gzip")
    d[:] = np.arange(40)
    d.id.write_direct_chunk((10,), np.arange(100, 110, dtype="<i4").tobytes(), filter_mask=1)


@maker
def mask_resize_allocation(f: h5py.File) -> None:
    # a chunk that skipped gzip but not fletcher32 (mask bit 0 only)
    d = f.create_dataset("masked_f32", shape=(40,), dtype="<i4", chunks=(10,),
                         compression="gzip", fletcher32=True)
    d[:] = np.arange(40)
    checksummed = f.create_dataset("tmp", data=np.arange(100, 110, dtype="<i4"), chunks=(10,),
                                   fletcher32=True)
    _mask, chunk = checksummed.id.read_direct_chunk((0,))
    d.id.write_direct_chunk((10,), chunk, filter_mask=1)
    del f["tmp"]
    # shrunk and grown again: HDF5 fills the cut-off part of the edge chunks
    d = f.create_dataset("shrunk", data=np.arange(100.0).reshape(10, 10), chunks=(4, 4),
                         maxshape=(None, None), fillvalue=-2)
    d.resize((5, 7))
    d.resize((9, 9))
    f.create_dataset("unwritten_contiguous", shape=(10,), dtype="i4", fillvalue=9)
    early = h5p.create(h5p.DATASET_CREATE)
    early.set_chunk((5,))
    early.set_alloc_time(h5d.ALLOC_TIME_EARLY)
    early.set_fill_value(np.array(4, "i2"))
    h5d.create(f.id, b"early", h5t.STD_I16LE, h5s.create_simple((20,)), dcpl=early)
    f["early"][3] = 1
    f.create_dataset("be_shuffle_gzip", data=np.arange(100, dtype=">f8"), chunks=(30,),
                     shuffle=True, compression="gzip")
    f.create_dataset("scaleoffset_fill", data=np.linspace(0, 1, 100), chunks=(30,),
                     scaleoffset=2, fillvalue=-9.5)


@maker
def layouts_and_links(f: h5py.File) -> None:
    f.create_dataset("base", data=np.arange(200.0), chunks=(64,))
    f.create_dataset("gz", data=np.arange(200.0) * 2, chunks=(64,), compression="gzip")
    compact = h5p.create(h5p.DATASET_CREATE)
    compact.set_layout(h5d.COMPACT)
    h5d.create(f.id, b"compact", h5t.STD_I32BE, h5s.create_simple((10,)), dcpl=compact)
    f["compact"][...] = np.arange(10)
    raw = Path(f.filename).with_suffix(".raw")
    f.create_dataset("external", shape=(100,), dtype="<i4", external=[(str(raw), 0, 400)])
    f["external"][...] = np.arange(100)
    f["hard"] = f["base"]
    f["soft"] = h5py.SoftLink("/gz")
    layout = h5py.VirtualLayout(shape=(2, 100), dtype="f8")
    layout[0] = h5py.VirtualSource(f["base"])[:100]
    layout[1, :50] = h5py.VirtualSource(f["gz"])[100:150]
    f.create_virtual_dataset("vds", layout, fillvalue=-1)
    # values in another file (which exists next to this one) and in a missing one: HDF5
    # would read fill values where it cannot open them
    other = Path(f.filename).with_name("vds_part.h5")
    with h5py.File(other, "w") as part:
        part["x"] = np.arange(10.0)
    layout = h5py.VirtualLayout(shape=(2, 10), dtype="f8")
    layout[0] = h5py.VirtualSource(other.name, "x", shape=(10,))
    layout[1] = h5py.VirtualSource("missing.h5", "x", shape=(10,))
    f.create_virtual_dataset("vds_other_files", layout, fillvalue=-1)


@maker
def fill_values(f: h5py.File) -> None:
    for when in ("alloc", "ifset"):
        f.create_dataset(f"fill_{when}", shape=(25,), dtype="i4", chunks=(10,), fillvalue=5,
                         fill_time=when)
        f[f"fill_{when}"][0:3] = 1
    record = np.dtype([("a", "i4"), ("s", "S4")])
    f.create_dataset("fill_compound", shape=(7,), dtype=record, chunks=(3,),
                     fillvalue=np.array((3, b"ab"), dtype=record))
    f["fill_compound"][0] = (1, b"x")
    f.create_dataset("fill_string", shape=(7,), dtype="S5", chunks=(3,), fillvalue=b"zz")
    f["fill_string"][0] = b"q"
    f.create_dataset("fill_vlen_string", shape=(7,), dtype=h5py.string_dtype(), chunks=(3,))
    f["fill_vlen_string"][0] = "hi"
    f.create_dataset("edge", data=np.arange(23 * 7, dtype="f4").reshape(23, 7), chunks=(5, 3),
                     fillvalue=np.nan)


@maker
def dtypes(f: h5py.File) -> None:
    f.create_dataset("be_i2", data=np.arange(100, dtype=">i2"), chunks=(30,))
    f.create_dataset("be_f8", data=np.arange(100, dtype=">f8"))
    f.create_dataset("be_enum", data=np.array([0, 1, 1], dtype=">i2"),
                     dtype=h5py.enum_dtype({"a": 0, "b": 1}, basetype=">i2"))
    f.create_dataset("be_compound", data=np.array([(1, 2.0)], dtype=[("a", ">i4"), ("b", ">f8")]),
                     chunks=(1,))
    f.create_dataset("bool", data=np.array([True, False, True]))
    f.create_dataset("f16", data=np.arange(10, dtype="f2"))
    f.create_dataset("vlen_i2", shape=(3,), dtype=h5py.vlen_dtype("i2"))
    f["vlen_i2"][0] = [1, 2]
    f["vlen_i2"][2] = [3]
    f.create_dataset("nested_compound", data=np.zeros(3, dtype=[
        ("x", [("p", "i2"), ("q", "f4")]), ("y", "u1")]), chunks=(2,))
    if np.dtype(np.longdouble).itemsize == 16:
        f.create_dataset("f128", data=np.arange(3, dtype=np.longdouble))


@maker
def shapes(f: h5py.File) -> None:
    f.create_dataset("scalar", data=np.int16(7))
    f.create_dataset("zero_length", shape=(0, 5), dtype="f4")
    f.create_dataset("unlimited", data=np.arange(10.0), maxshape=(None,), chunks=(4,))
    f.create_dataset("chunk_over_shape", data=np.arange(10.0), maxshape=(100,), chunks=(64,))
    f.create_dataset("len1_huge_chunk", data=np.arange(5.0).reshape(1, 5), chunks=(1000, 5),
                     maxshape=(None, 5))


#: what load lists as skipped, by maker (HDF5 types h5dask cannot represent)
EXPECTED_SKIPS = {"dtypes": ["/f128"] if np.dtype(np.longdouble).itemsize == 16 else [],
                  "layouts_and_links": ["/vds_other_files"]}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("features")


def _as_list(values: np.ndarray) -> list:
    """Values comparable across h5py and h5dask (vlen sequences as lists, NaN as a str)."""
    flat = [v.tolist() if isinstance(v, np.ndarray) else v
            for v in np.asarray(values, dtype=object).reshape(-1)]
    return [str(v) if isinstance(v, float) and np.isnan(v) else v for v in flat]


@pytest.mark.parametrize("link", [False, True], ids=["copy", "link"])
@pytest.mark.parametrize("name", sorted(MAKERS))
def test_feature_reads_as_h5py(name: str, link: bool, store: Path) -> None:
    # a linked domain reads only files inside its own store
    path = store / "sources" / f"{name}.h5"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            MAKERS[name](f)
    url = (store / f"{name}-{'link' if link else 'copy'}").as_uri()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # filter notes ("lzf -> lz4", ...)
        summary = load_file(path, url, progress=False, link=link)
    skipped = sorted(s.split(":")[0] for s in summary.skipped)
    assert skipped == EXPECTED_SKIPS.get(name, [])
    with h5py.File(path, "r") as want_file, h5dask.File(url) as got_file:
        for key, want in want_file.items():
            if f"/{key}" in skipped:
                assert key not in got_file
                continue
            got = got_file[key]
            assert got.shape == want.shape, key
            assert got.dtype == want.dtype, key
            assert _as_list(got[()]) == _as_list(want[()]), key
            if want.dtype.kind != "O":  # h5py has no fill value of variable-length types
                assert _as_list(np.asarray(got.fillvalue)) == _as_list(
                    np.asarray(want.fillvalue)), key


@pytest.mark.parametrize("link", [False, True], ids=["copy", "link"])
def test_references_to_skipped_objects_are_skipped_not_nulled(link: bool, tmp_path: Path
                                                              ) -> None:
    # f128 cannot be loaded: a reference to it must not become a null reference
    path = tmp_path / "store" / "refs.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        f.create_dataset("vec3", shape=(2,), dtype=np.dtype(("<i4", (3,))))  # skipped
        f.create_dataset("ok", data=np.arange(3))
        refs = f.create_dataset("refs", shape=(2,), dtype=h5py.ref_dtype)
        refs[0], refs[1] = f["ok"].ref, f["vec3"].ref
        # refers to a dataset that is itself skipped for its reference
        f.create_dataset("refs_to_refs", data=[f["refs"].ref], dtype=h5py.ref_dtype)
        f.create_dataset("good_refs", data=[f["ok"].ref, h5py.Reference()],
                         dtype=h5py.ref_dtype)
        f.attrs["to_skipped"] = f["vec3"].ref
        f.attrs["to_ok"] = f["ok"].ref
    url = (tmp_path / "store" / "domain").as_uri()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = load_file(path, url, progress=False, link=link)
    assert sorted(s.split(" ")[0].rstrip(":") for s in summary.skipped) == [
        "/", "/refs", "/refs_to_refs", "/vec3"]
    assert any("attribute 'to_skipped'" in s and "/vec3" in s for s in summary.skipped)
    assert any(s.startswith("/refs:") and "reference to /vec3" in s for s in summary.skipped)
    with h5dask.File(url) as f:
        assert "refs" not in f and "refs_to_refs" not in f and "to_skipped" not in f.attrs
        good = f["good_refs"][()]
        assert good[1] in ("", b"") and good[0] not in ("", b"")
        assert f.attrs["to_ok"] == good[0]


def test_fletcher32_mismatch_in_linked_chunk_raises(tmp_path: Path) -> None:
    path = tmp_path / "store" / "f32.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.arange(64, dtype="<i4"), chunks=(16,), fletcher32=True)
    url = (tmp_path / "store" / "domain").as_uri()
    summary = load_file(path, url, progress=False, link=True)
    assert summary.copied == []
    with h5py.File(path, "r") as f:
        offset = f["x"].id.get_chunk_info(1).byte_offset
    data = bytearray(path.read_bytes())
    data[offset + 3] ^= 0xFF  # one byte of a value of the second chunk
    path.write_bytes(bytes(data))
    with h5dask.File(url) as f:
        np.testing.assert_array_equal(f["x"][:16], np.arange(16))
        with pytest.raises(CorruptChunkError, match="fletcher32"):
            f["x"][()]


@pytest.mark.parametrize("link", [False, True], ids=["copy", "link"])
@pytest.mark.parametrize("name", sorted(set(MAKERS) - {"dtypes"}))  # h5netcdf fails on f128
def test_feature_opens_in_xarray_as_with_h5netcdf(name: str, link: bool, tmp_path: Path
                                                  ) -> None:
    path = tmp_path / "store" / f"{name}.h5"
    path.parent.mkdir()
    with h5py.File(path, "w") as f:
        MAKERS[name](f)
    url = (tmp_path / "store" / "domain").as_uri()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        summary = load_file(path, url, progress=False, link=link)
        skipped = [s.split(":")[0].lstrip("/") for s in summary.skipped]
        want = xr.open_dataset(path, engine="h5netcdf", phony_dims="sort",
                               decode_cf=False).drop_vars(skipped).load()
        got = xr.open_dataset(url, engine="h5cloud", phony_dims="sort", chunks={},
                              decode_cf=False).load()
    xr.testing.assert_identical(got, want)


@pytest.mark.parametrize("link", [False, True], ids=["copy", "link"])
def test_fill_time_never_reads_unwritten_values_as_h5py_does(link: bool, tmp_path: Path
                                                            ) -> None:
    """H5D_FILL_TIME_NEVER: HDF5 does not fill unwritten storage and h5py reads zeros
    there, not the declared fill value; the domain reads the same (no fill value)."""
    path = tmp_path / "never.h5"
    with h5py.File(path, "w") as f:
        chunked = f.create_dataset("chunked", shape=(12,), dtype="<i4", chunks=(4,),
                                   fillvalue=5, fill_time="never")
        chunked[1:3] = 7  # one chunk written (its other values: zeros), two never
        f.create_dataset("contiguous", shape=(6,), dtype="<f8", fillvalue=-1.5,
                         fill_time="never")
        f.create_dataset("rechunked_2d", shape=(6, 6), dtype="<i2", chunks=(3, 3),
                         fillvalue=9, fill_time="never")[0, 0] = 1
        ifset = f.create_dataset("ifset", shape=(8,), dtype="<i4", chunks=(4,), fillvalue=5)
        ifset[0] = 1
    url = (tmp_path / f"never-{link}.h5").as_uri()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        load_file(path, url, progress=False, link=link)
    with h5py.File(path) as want, h5dask.File(url) as got:
        assert want["chunked"][4] == 0 and want["contiguous"][0] == 0  # as h5py reads
        for name in want:
            np.testing.assert_array_equal(got[name][...], want[name][...], err_msg=name)
        assert got["ifset"].fillvalue == 5
        assert got["chunked"]._meta.raw["creationProperties"]["fillTime"] == \
            "H5D_FILL_TIME_NEVER"
