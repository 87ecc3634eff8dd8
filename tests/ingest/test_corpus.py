"""Fidelity corpus: every file of :mod:`corpus_files` (generated) and of
``tests/data/reference`` (real files of other projects) reads back through a copied and a
linked domain exactly as h5py reads the file (``h5dask.File``: order, dtypes, values,
attributes), and through ``engine="h5cloud"`` exactly as through ``engine="h5netcdf"``
(``assert_identical``, decoded and with ``decode_cf=False``, every group, both
``phony_dims`` modes). A few files also go through SeaweedFS (real S3)."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytest
import xarray as xr
from corpus_files import MAKERS, reference_files, source_file

import h5dask
from h5dask.format.types import has_vlen
from h5dask.ingest import load_file

pytestmark = pytest.mark.timeout(300)

# what load lists as skipped, by file (never silently different values)
EXPECTED_SKIPS = {
    "region_refs": ["/regions"], "array_type_dataset": ["/vec3"],
    "regionref_dset": ["/DS1"],  # hdf5-json: region references
    "ref_tst_interops4": ["/dim_0"],  # netCDF-C: a REFERENCE_LIST HDF5 cannot dereference
    # pyfive: region references in a dataset, a chunked dataset and a root attribute
    "references": ["/", "/chunked_regionref_dataset", "/regionref_dataset"],
}
# files h5netcdf itself reads inconsistently (nothing to compare with)
XARRAY_UNCOMPARABLE = {
    "array_type_dataset": "h5netcdf gives vec3 one dimension for its 2-d data",
    "region_refs": "load skips the region-reference dataset that h5netcdf shows",
    "regionref_dset": "load skips the region-reference dataset that h5netcdf shows",
    "null_objref_dset": "h5netcdf gives h5py Reference objects, h5cloud the targets' ids",
    # h5netcdf >= 1.8.3 reads object-reference variables too (as h5py Reference objects,
    # meaningless outside the file); test_file_reads_as_h5py_reads checks them by target
    "object_refs": "h5netcdf gives h5py Reference objects, h5cloud the targets' ids",
    "references": "h5netcdf fails on the file's object references (TypeError: no len())",
    "air_linked": "h5netcdf names a hard-linked dimension scale 'lat' in air's dimensions "
                  "but 'lat_hard' in its own (two dimensions of one scale)",
}

MANY_VARIABLES = {"ref_hdf5_compat1"}  # 1000 variables: one xarray variant is enough
BIG = 10**6  # elements: larger datasets are compared by their first elements

REFERENCE = reference_files()
ALL_FILES = sorted(MAKERS) + [f"ref:{n}" for n in REFERENCE]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("corpus")


def inside_store(path: Path, store: Path) -> Path:
    """A copy of ``path`` inside the store's directory: a linked domain reads only files
    of its own store unless told otherwise."""
    target = store / "sources" / path.name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return target


def load(path: Path, url: str, link: bool) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # filter notes ("lzf -> lz4"...)
        return load_file(path, url, progress=False, link=link)


# -- h5py comparison ------------------------------------------------------------------------
class Compare:
    """h5dask.File against h5py.File, object by object."""

    def __init__(self, h5: h5py.File, hd: h5dask.File, skipped: list[str]) -> None:
        self.h5, self.hd = h5, hd
        self.skipped = [s.split(":")[0] for s in skipped if " attribute " not in s]
        self.skipped_attrs = {(s.split(" attribute ")[0], s.split("'")[1])
                              for s in skipped if " attribute " in s}
        self.names_by_id: dict[str, str] = {}
        hd.visititems(lambda name, obj: self.names_by_id.update({obj.id: "/" + name}))
        self.names_by_id[hd.id] = "/"

    def run(self) -> None:
        want: list[str] = []
        self.h5.visit(want.append)
        got: list[str] = []
        self.hd.visit(got.append)
        want = [n for n in want if "/" + n not in self.skipped]
        assert got == want, "visit order"
        self.attrs("/", self.h5.attrs, self.hd.attrs)
        # not inside h5py's visititems: it holds h5py's lock, which the garbage collector
        # may need on the I/O thread while this thread waits for a read there
        if self.h5.filename and Path(self.h5.filename).stem in MANY_VARIABLES:
            want = want[::25]  # 1000 datasets alike: a sample keeps the test short
        for name in want:
            self.one(name, self.h5[name])

    def one(self, name: str, obj: Any) -> None:
        path = "/" + name
        if path in self.skipped:
            assert path not in self.hd
            return
        mine = self.hd[path]
        self.attrs(path, obj.attrs, mine.attrs)
        if isinstance(obj, h5py.Group):
            assert sorted(obj) == list(mine), path
            return
        if isinstance(obj, h5py.Datatype):
            same_dtype(obj.dtype, mine.dtype, path)
            return
        same_dtype(obj.dtype, mine.dtype, path)
        assert obj.shape == mine.shape, path
        assert obj.maxshape == mine.maxshape, f"{path} maxshape"
        if obj.shape is None:
            assert mine[()] == h5py.Empty(obj.dtype), path
            return
        try:
            fill = obj.fillvalue
        except RuntimeError:  # "fill value is undefined" (HDF5 has none to give)
            fill = None
        if fill is not None and not has_vlen(obj.dtype):  # vlen fills are not kept
            self.values(f"{path} fill value", np.asarray(fill), np.asarray(mine.fillvalue),
                        obj.dtype)
        head = () if obj.size <= BIG else tuple(slice(0, 1000) for _ in obj.shape)
        self.values(path, obj[head], mine[head], obj.dtype)

    def attrs(self, path: str, want: Any, got: Any) -> None:
        names = [n for n in want if (path, n) not in self.skipped_attrs]
        assert sorted(names) == sorted(got), f"{path} attributes"
        for n in names:
            w = want[n]
            g = got[n]
            wd = want.get_id(n).dtype
            where = f"{path} attribute {n!r}"
            if isinstance(w, h5py.Empty):
                assert isinstance(g, h5py.Empty), where
                assert np.dtype(g.dtype) == np.dtype(w.dtype), where
                continue
            same_dtype(wd, got.dtype_of(n), where)
            self.values(where, w, g, wd)

    def values(self, where: str, want: Any, got: Any, dt: np.dtype) -> None:
        if h5py.check_vlen_dtype(dt) in (str, bytes):
            want, got = np.asarray(want, dtype=object), np.asarray(got, dtype=object)
        want_a, got_a = np.asarray(want), np.asarray(got)
        assert want_a.shape == got_a.shape, where
        if want_a.dtype.kind in "fc" and got_a.dtype.kind == want_a.dtype.kind:
            assert want_a.dtype == got_a.dtype, where
            np.testing.assert_array_equal(want_a, got_a, err_msg=where)
            return
        if want_a.dtype.kind != "O" and not want_a.dtype.names and want_a.dtype.kind != "V":
            assert want_a.dtype == got_a.dtype, where
            np.testing.assert_array_equal(want_a, got_a, err_msg=where)
            return
        for w, g in zip(want_a.reshape(-1), got_a.reshape(-1)):
            self.element(where, w, g, dt)

    def element(self, where: str, w: Any, g: Any, dt: np.dtype, member: bool = False) -> None:
        if dt.names:
            for n in dt.names:
                self.element(f"{where}.{n}", w[n], g[n], dt.fields[n][0], member=True)
            return
        if dt.subdtype is not None:
            base = dt.subdtype[0]
            if base.kind != "O":
                self.values(where, w, g, base)
                return
            w, g = np.asarray(w, dtype=object), np.asarray(g, dtype=object)
            assert w.shape == g.shape, where
            for x, y in zip(w.reshape(-1), g.reshape(-1)):  # keeps ``member`` for strings
                self.element(where, x, y, base, member)
            return
        if h5py.check_ref_dtype(dt) is not None:
            if not w:
                assert not g, f"{where}: a null reference reads as {g!r}"
            else:
                # the same HDF5 object (h5py's ids compare by file and address); not
                # by h5py's .name of the target, which searches the whole file each time
                mine = self.names_by_id.get(str(g).split("/")[-1])
                assert mine is not None and self.h5[mine].id == self.h5[w].id, where
            return
        vlen = h5py.check_vlen_dtype(dt)
        if vlen is str or vlen is bytes:
            # h5py reads vlen strings of datasets as bytes and of attributes as str, and
            # so does h5dask; a null string pointer reads as None (HSDS's encoding has
            # only the empty string)
            if w is not None:
                assert type(g) is type(w), f"{where}: {g!r} where h5py reads {w!r}"
            w, g = ("" if w is None else w), ("" if g is None else g)
            w = w.decode("utf-8", "surrogateescape") if isinstance(w, bytes) else w
            g = g.decode("utf-8", "surrogateescape") if isinstance(g, bytes) else g
            assert w == g, where
            return
        if vlen is not None:
            self.values(where, w, g, vlen)
            return
        if dt.kind == "V":
            assert bytes(w) == bytes(g), where
            return
        self.values(where, w, g, dt)


def same_dtype(want: np.dtype, got: np.dtype, where: str) -> None:
    """The same numpy dtype and the same h5py special-type metadata; compounds are
    compared member by member (HSDS types are packed: a padded compound reads back
    with its members at packed offsets)."""
    if want.names:
        assert want.names == got.names, where
        for n in want.names:
            same_dtype(want.fields[n][0], got.fields[n][0], f"{where}.{n}")
        return
    if want.subdtype is not None:
        assert got.subdtype is not None and want.shape == got.shape, where
        same_dtype(want.subdtype[0], got.subdtype[0], where)
        return
    assert want == got, f"{where}: dtype {got} != h5py's {want}"
    assert h5py.check_string_dtype(want) == h5py.check_string_dtype(got), where
    assert h5py.check_enum_dtype(want) == h5py.check_enum_dtype(got), where
    assert (h5py.check_ref_dtype(want) is None) == (h5py.check_ref_dtype(got) is None), where
    wv, gv = h5py.check_vlen_dtype(want), h5py.check_vlen_dtype(got)
    assert (wv is None) == (gv is None), where
    if isinstance(wv, np.dtype):
        same_dtype(wv, gv, where)


def check_file(path: Path, url: str, summary: Any) -> None:
    expected = EXPECTED_SKIPS.get(path.stem, [])
    skipped = [s.split(":")[0].split(" attribute ")[0] for s in summary.skipped]
    assert sorted(set(skipped)) == sorted(expected), summary.skipped
    with h5py.File(path, "r") as h5:
        hd = h5dask.File(url, "r")
        Compare(h5, hd, summary.skipped).run()


# -- xarray comparison ----------------------------------------------------------------------
def groups_of(path: Path) -> list[str]:
    out = ["/"]
    with h5py.File(path, "r") as f:
        f.visititems(lambda n, o: out.append("/" + n) if isinstance(o, h5py.Group) else None)
    return out


def head(ds: xr.Dataset) -> xr.Dataset:
    """The first 1000 elements along each dimension (some reference files declare
    dimensions of billions of unwritten elements)."""
    return ds.isel({d: slice(0, 1000) for d in ds.dims})


def assert_same_dataset(got: xr.Dataset, want: xr.Dataset) -> None:
    """``assert_identical``, or where xarray cannot compare a value with itself (opaque
    ``np.void`` attributes), equal data and attributes equal value by value."""
    try:
        comparable = want.identical(want.copy(deep=True))
    except (TypeError, ValueError):  # values xarray cannot copy or compare
        comparable = False
    if comparable:
        xr.testing.assert_identical(got, want)
        return
    xr.testing.assert_equal(got, want)
    for name in [None, *want.variables]:
        wa = want.attrs if name is None else want[name].attrs
        ga = got.attrs if name is None else got[name].attrs
        assert list(ga) == list(wa), name
        for k in wa:
            assert type(ga[k]) is type(wa[k]), (name, k)
            assert equal_values(ga[k], wa[k]), (name, k)


def equal_values(a: Any, b: Any) -> bool:
    """Equal values, object arrays (vlen sequences) element by element."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype.kind == "O" or b.dtype.kind == "O":
        return a.shape == b.shape and all(
            equal_values(x, y) for x, y in zip(a.reshape(-1), b.reshape(-1)))
    return bool(np.array_equal(a, b))


def check_xarray_sample(path: Path, url: str) -> None:
    """For a file of many alike variables, every 25th of them, decoded and not: h5netcdf
    resolves the dimensions of all 1000 variables of ref_hdf5_compat1 in minutes, so the
    expected variables come from xarray's own h5netcdf store one by one."""
    from xarray.backends.h5netcdf_ import H5NetCDFStore

    store = H5NetCDFStore.open(str(path), phony_dims="sort")
    try:
        names = list(store.ds.variables)[::25]
        want = xr.Dataset({n: store.open_store_variable(n, store.ds.variables[n])
                           for n in names}, attrs=dict(store.get_attrs())).load()
    finally:
        store.close()
    got = xr.open_dataset(url, engine="h5cloud", decode_cf=False)[names].load()
    assert_same_dataset(got, want)
    assert_same_dataset(xr.decode_cf(got), xr.decode_cf(want))


def check_xarray(path: Path, url: str) -> None:
    if path.stem in MANY_VARIABLES:
        check_xarray_sample(path, url)
        return
    variants: list[dict] = [{}, {"decode_cf": False}, {"phony_dims": "access"}]
    for group in groups_of(path):
        for kwargs in (dict(v) for v in variants):
            phony = kwargs.pop("phony_dims", "sort")
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    want = xr.open_dataset(path, engine="h5netcdf", group=group,
                                           phony_dims=phony, **kwargs)
                    want_sizes = dict(want.sizes)
                    want = head(want).load()
            except Exception as exc:  # noqa: BLE001 - h5netcdf cannot read it: no reference
                print(f"{path.name}{group}: h5netcdf fails: {type(exc).__name__}: {exc}")
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                got = xr.open_dataset(url, engine="h5cloud", group=group, phony_dims=phony,
                                      **kwargs)
                assert dict(got.sizes) == want_sizes, group
                got = head(got).load()
            assert_same_dataset(got, want)
            for name in want.variables:
                if want[name].dtype.names:  # packed compounds: member by member
                    same_dtype(want[name].dtype, got[name].dtype, f"{group} {name}")
                else:
                    assert got[name].dtype == want[name].dtype, (group, name)
                if want[name].dtype.kind == "O":
                    assert [type(v) for v in got[name].values.reshape(-1)] == [
                        type(v) for v in want[name].values.reshape(-1)], (group, name)


# -- the tests ------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["copy", "link"])
@pytest.mark.parametrize("name", ALL_FILES)
def test_file_reads_as_h5py_reads(name: str, mode: str, corpus_dir: Path,
                                  tmp_path: Path) -> None:
    path = source_file(name, corpus_dir)
    url = (tmp_path / "store" / "domain.h5").as_uri()
    if mode == "link":
        path = inside_store(path, tmp_path / "store")
    summary = load(path, url, link=mode == "link")
    check_file(path, url, summary)


@pytest.mark.parametrize("name", ALL_FILES)
def test_xarray_reads_as_h5netcdf_reads(name: str, corpus_dir: Path, tmp_path: Path) -> None:
    stem = Path(name.removeprefix("ref:")).stem
    if stem in XARRAY_UNCOMPARABLE:
        pytest.skip(XARRAY_UNCOMPARABLE[stem])
    path = source_file(name, corpus_dir)
    for mode in ("copy",) if path.stem in MANY_VARIABLES else ("copy", "link"):
        url = (tmp_path / mode / "domain.h5").as_uri()
        src = inside_store(path, tmp_path / mode) if mode == "link" else path
        load(src, url, link=mode == "link")
        check_xarray(path, url)


def test_corpus_has_forty_files() -> None:
    assert len(ALL_FILES) >= 40


# -- order, bad input, S3 ---------------------------------------------------------------------
def test_ls_prints_members_under_their_parent(corpus_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from h5dask.cli import main

    url = (tmp_path / "store" / "nested.h5").as_uri()
    load(source_file("nested_groups", corpus_dir), url, link=False)
    out = CliRunner().invoke(main, ["ls", url]).output
    tree = [(len(line) - len(line.lstrip()), line.split()[0].rstrip("/"))
            for line in out.splitlines() if line.startswith("  ")]
    with h5py.File(source_file("nested_groups", corpus_dir), "r") as f:
        want: list[str] = []
        f.visit(want.append)
    # h5py's depth-first order, each member indented one level below its parent
    assert [name for _, name in tree] == [n.rsplit("/", 1)[-1] for n in want]
    assert [depth for depth, _ in tree] == [2 * (n.count("/") + 1) for n in want]


BAD = Path(__file__).resolve().parents[1] / "data" / "bad"


@pytest.mark.parametrize(("name", "obj"), [
    ("notahdf5file.h5", None), ("ref_null_byte_padding_test.nc", None),
    ("false_east_north_merc.nc", None),  # netCDF-3 64-bit offset (iris)
    ("opaque_dset.h5", "/DS1"),
])
def test_file_h5py_cannot_read_gets_one_clear_error(name: str, obj: str | None,
                                                     tmp_path: Path) -> None:
    url = (tmp_path / "store" / "bad.h5").as_uri()
    with pytest.raises(h5dask.errors.SourceFileError) as info:
        load(BAD / name, url, link=False)
    assert name in str(info.value)
    if obj:
        assert f"dataset {obj}" in str(info.value)
    with pytest.raises(h5dask.DomainNotFoundError):
        h5dask.File(url, "r")  # nothing published


@pytest.mark.parametrize("name", ["complex_numbers", "opaque_datetime", "fixed_spacepad_ascii",
                                  "filter_blosc_lz4", "nc_groups"])
def test_corpus_through_seaweedfs(name: str, corpus_dir: Path, put_s3: Any,
                                  s3_bucket_url: str, storage_options: dict) -> None:
    """A few corpus files linked from S3 and copied to S3 (real SeaweedFS)."""
    path = source_file(name, corpus_dir)
    src = put_s3(path, f"{name}.h5")
    for mode in ("copy", "link"):
        url = f"{s3_bucket_url}/{mode}-{name}.h5"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summary = load_file(src, url, progress=False, link=mode == "link",
                                storage_options=storage_options)
        with h5py.File(path, "r") as h5:
            Compare(h5, h5dask.File(url, "r", storage_options=storage_options),
                    summary.skipped).run()
