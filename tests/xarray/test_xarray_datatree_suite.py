"""xarray's own DataTree backend tests, run against h5cloud.

``xarray/tests/test_backends_datatree.py`` (shipped in the xarray wheel) holds the
netCDF backends to the same DataTree round trips: ``NetCDFIOBase`` and
``TestH5NetCDFDatatreeIO`` run here unchanged with ``engine = "h5cloud"``. Their bodies
write with ``DataTree.to_netcdf(path, engine=self.engine)``, which xarray keeps to its
own netCDF engines: for ``engine="h5cloud"`` a fixture hands that call, with its
arguments, to :func:`h5dask.to_h5cloud` (the patch lives for one test only).
Domains live on the local file system, in the tests' temporary directories.

Tests that need a file written by netCDF4-python or h5py ingest it first
(``h5dask.ingest.load_file``), as h5cloud users get such files; the tests of
``TestGenericNetCDFIO``, ``TestNetCDF4DatatreeIO`` and ``TestZarrDatatreeIO`` that are
about semantics every backend shares (inherited coordinates, write modes,
``compute=False``, a specific group, unaligned hierarchies, ``open_groups``, chunks) are
re-stated in ``TestH5CloudDatatreeSemantics`` with the same data and assertions.

Tests not applicable to h5cloud are listed in ``NOT_APPLICABLE`` with the reason; tests
re-stated because their xarray body reads the written file with netCDF4-python or
expects a different, deliberate behaviour are in ``RESTATED`` with the reason.
"""

from __future__ import annotations

import contextlib
import os
import re

import numpy as np
import pytest
import xarray as xr
from xarray import DataTree, open_datatree, open_groups
from xarray.testing import assert_equal, assert_identical

import h5dask
from h5dask.errors import H5DaskError

tdt = pytest.importorskip("xarray.tests.test_backends_datatree")
pytest.importorskip("h5netcdf")
nc4 = pytest.importorskip("netCDF4")
tb = pytest.importorskip("xarray.tests.test_backends")
xr_conftest = pytest.importorskip("xarray.tests.conftest")
from test_task_graph import _getter_tasks  # noqa: E402  (same folder)
from test_xarray_backend_suite import _H5Cloud  # noqa: E402
from test_xarray_backend_suite import _not_applicable as _dataset_suite_marks  # noqa: E402
from xarray.tests.conftest import time_unit, use_dask  # noqa: E402,F401  (the suite's fixtures)

# the fixtures the xarray classes use, as this module's
create_test_datatree = xr_conftest.create_test_datatree
simple_datatree = xr_conftest.simple_datatree
unaligned_datatree_nc = tdt.unaligned_datatree_nc
assert_chunks_equal = tdt.assert_chunks_equal

pytestmark = pytest.mark.timeout(120)

NOT_APPLICABLE: dict[str, str] = {
    "test_roundtrip_via_memoryview": "a domain is many objects in a store, never one "
                                     "in-memory file: to_h5cloud needs a URL",
    "test_to_memoryview_compute_false": "no memoryview target (see above)",
    "test_roundtrip_using_filelike_object": "a domain is not a file: no file-like objects",
    "test_default_write_engine": "about which netCDF library to_netcdf picks without "
                                 "engine=; to_h5cloud has one writer",
}
RESTATED: dict[str, str] = {
    "test_no_redundant_dimensions": "xarray reads the file with netCDF4-python: re-stated "
                                    "reading the domain's dimension scales",
    "test_compute_false": "a new domain becomes visible only once compute() wrote every "
                          "chunk (h5dask writes the metadata last), so the in-progress "
                          "open fails instead of showing fill values",
    "test_phony_dims_warning": "the file is written by h5py: ingested, then opened; "
                               "h5cloud's phony_dims default is 'sort', without warning",
}


def _ingested(path: str | os.PathLike, link: bool = False) -> str:
    """The domain ``load_file`` makes of an HDF5 file written by another library."""
    from h5dask.ingest import load_file

    domain = f"{os.fspath(path)}.{'link' if link else 'copy'}.domain"
    load_file(os.fspath(path), domain, progress=False, overwrite=True, link=link)
    return domain


@pytest.fixture(autouse=True)
def _to_netcdf_engine_h5cloud_writes_with_to_h5cloud(monkeypatch):
    """``DataTree.to_netcdf(path, engine="h5cloud", ...)`` is ``to_h5cloud(tree, path, ...)``
    (xarray accepts only its own engines there); other engines are xarray's."""
    original = DataTree.to_netcdf

    def to_netcdf(self, filepath=None, mode="w", encoding=None, unlimited_dims=None,
                  format=None, engine=None, group=None, write_inherited_coords=False,
                  compute=True, **kwargs):
        if engine != "h5cloud":
            return original(self, filepath, mode, encoding, unlimited_dims, format, engine,
                            group, write_inherited_coords, compute, **kwargs)
        return h5dask.to_h5cloud(self, os.fspath(filepath), mode=mode, encoding=encoding,
                                 unlimited_dims=unlimited_dims, format=format, group=group,
                                 write_inherited_coords=write_inherited_coords,
                                 compute=compute, **kwargs)

    monkeypatch.setattr(DataTree, "to_netcdf", to_netcdf)


def _marked(cls):
    for name, reason in NOT_APPLICABLE.items():
        if hasattr(cls, name):
            setattr(cls, name, pytest.mark.skip(reason=f"not applicable: {reason}")(
                getattr(cls, name)))
    return cls


@_marked
class TestH5CloudDatatreeIO(tdt.TestH5NetCDFDatatreeIO):
    engine = "h5cloud"

    # -- re-stated (see RESTATED) --------------------------------------------------------
    def test_no_redundant_dimensions(self, tmpdir) -> None:
        original_dt = DataTree.from_dict({
            "/": xr.Dataset(coords={"x": [1, 2, 3]}),
            "/child": xr.Dataset({"foo": ("x", [4, 5, 6])}),
        })
        filepath = tmpdir / "test.h5"
        original_dt.to_netcdf(filepath, engine=self.engine)

        f = h5dask.File(str(filepath), "r")
        assert list(f) == ["child", "x"]
        assert f["x"].attrs["CLASS"] in (b"DIMENSION_SCALE", "DIMENSION_SCALE")
        assert list(f["child"]) == ["foo"]  # no second "x" scale in the child

    def test_compute_false(self, tmpdir, simple_datatree) -> None:
        filepath = tmpdir / "test.h5"
        original_dt = simple_datatree.chunk()
        result = original_dt.to_netcdf(filepath, engine=self.engine, compute=False)

        with pytest.raises(H5DaskError, match="test.h5"):
            open_datatree(filepath, engine=self.engine)

        result.compute()
        with open_datatree(filepath, engine=self.engine) as written_dt:
            assert_identical(written_dt, original_dt)

    def test_phony_dims_warning(self, tmpdir) -> None:
        import h5py

        filepath = tmpdir + "/phony_dims.nc"
        foo_data = np.arange(125).reshape(5, 5, 5)
        bar_data = np.arange(625).reshape(25, 5, 5)
        var = {"foo1": foo_data, "foo2": bar_data, "foo3": foo_data, "foo4": bar_data}
        with h5py.File(filepath, "w") as f:
            for grp in ["bar", "baz"]:
                fx = f.create_group(grp)
                for k, v in var.items():
                    fx.create_dataset(k, data=v)

        with open_datatree(_ingested(filepath), engine=self.engine) as tree:
            assert tree.bar.dims == {"phony_dim_0": 5, "phony_dim_1": 5, "phony_dim_2": 5,
                                     "phony_dim_3": 25}


class TestH5CloudDataTree(_H5Cloud, tb.TestH5NetCDFData):
    """xarray's whole Dataset suite, each file read back through ``open_datatree``
    (``.to_dataset()`` of its root), as xarray's ``TestNetCDF4DataTree`` does."""

    @contextlib.contextmanager
    def open(self, path, **kwargs):
        with open_datatree(self.domain_of(path), engine=self.engine, **kwargs) as tree:
            yield tree.to_dataset()

    def test_child_group_with_inconsistent_dimensions(self) -> None:
        with pytest.raises(ValueError,
                           match=r"group '/child' is not aligned with its parents"):
            super().test_child_group_with_inconsistent_dimensions()


_dataset_suite_marks(TestH5CloudDataTree)


def _unaligned_datatree_domain(path) -> str:
    """TestZarrDatatreeIO's unaligned store, written with ``to_h5cloud(group=, mode="a")``:
    /Group2's ``y`` (2) differs from the root's (3)."""
    url = str(path)
    h5dask.to_h5cloud(xr.Dataset({"a": ("y", [6, 7, 8]), "set0": ("x", [9, 10])}), url)
    set1 = xr.Dataset({"a": 0, "b": 1})
    h5dask.to_h5cloud(set1, url, group="/Group1", mode="a")
    h5dask.to_h5cloud(xr.Dataset({"a": ("y", [2, 3]), "b": ("x", [0.1, 0.2])}), url,
                      group="/Group2", mode="a")
    h5dask.to_h5cloud(set1, url, group="/Group1/subgroup1", mode="a")
    return url


def _chunked_tree(chunks) -> DataTree:
    return DataTree.from_dict({
        "/": xr.Dataset({"a": ("y", [6, 7, 8]), "set0": ("x", [9, 10])}).chunk(chunks),
        "/group1": xr.Dataset({"a": ("y", [-1, 0, 1]), "b": ("x", [-10, 6])}).chunk(chunks),
        "/group2": xr.Dataset({"a": ("y", [1, 2, 3]), "b": ("x", [0.1, 0.2])}).chunk(chunks),
    })


class TestH5CloudDatatreeSemantics:
    """The tests of TestGenericNetCDFIO, TestNetCDF4DatatreeIO and TestZarrDatatreeIO
    about semantics every backend shares, with h5cloud (same data, same assertions)."""

    engine = "h5cloud"

    # -- TestGenericNetCDFIO / TestNetCDF4DatatreeIO: files netCDF4-python wrote --------
    @pytest.mark.parametrize("link", [False, True])
    def test_open_datatree_unaligned_hierarchy(self, unaligned_datatree_nc, link) -> None:
        domain = _ingested(unaligned_datatree_nc, link)
        with pytest.raises(ValueError, match=re.escape(
                "group '/Group1/subgroup1' is not aligned with its parents:\nGroup:\n")):
            open_datatree(domain, engine=self.engine)

    def test_open_groups(self, unaligned_datatree_nc) -> None:
        domain = _ingested(unaligned_datatree_nc)
        groups = open_groups(domain, engine=self.engine)
        assert list(groups) == ["/", "/Group1", "/Group1/subgroup1"]
        for group in ("/", "Group1", "/Group1/subgroup1"):
            with xr.open_dataset(domain, group=group, engine=self.engine) as expected:
                assert_identical(groups["/" + group.strip("/")], expected)
        for ds in groups.values():
            ds.close()

    def test_open_groups_chunks(self, tmpdir) -> None:
        chunks = {"x": 2, "y": 1}
        filepath = tmpdir / "test.h5"
        _chunked_tree(chunks).to_netcdf(filepath, engine=self.engine)
        for path, ds in open_groups(filepath, engine=self.engine, chunks=chunks).items():
            assert {k: max(vs) for k, vs in ds.chunksizes.items()} == chunks, path

    def test_open_groups_to_dict(self, tmpdir) -> None:
        filepath = tmpdir + "/all_aligned_child_nodes.nc"
        with nc4.Dataset(filepath, "w", format="NETCDF4") as root_group:
            group_1 = root_group.createGroup("/Group1")
            subgroup_1 = group_1.createGroup("/subgroup1")
            root_group.createDimension("lat", 1)
            root_group.createDimension("lon", 2)
            root_group.createVariable("root_variable", np.float64, ("lat", "lon"))
            group_1_var = group_1.createVariable("group_1_var", np.float64, ("lat", "lon"))
            group_1_var[:] = np.array([[0.1, 0.2]])
            group_1_var.units = "K"
            group_1_var.long_name = "air_temperature"
            subgroup1_var = subgroup_1.createVariable("subgroup1_var", np.float64,
                                                      ("lat", "lon"))
            subgroup1_var[:] = np.array([[0.1, 0.2]])
        domain = _ingested(filepath)
        aligned_dt = DataTree.from_dict(open_groups(domain, engine=self.engine))
        with open_datatree(domain, engine=self.engine) as opened_tree:
            assert opened_tree.identical(aligned_dt)
        with xr.open_datatree(filepath, engine="h5netcdf") as by_h5netcdf:
            assert_identical(aligned_dt, by_h5netcdf)

    # -- TestZarrDatatreeIO: semantics, not zarr's files -----------------------------------
    def test_default_write_mode_w_minus(self, tmpdir, simple_datatree) -> None:
        url = str(tmpdir / "test.h5")
        h5dask.to_h5cloud(simple_datatree, url, mode="w-")
        with pytest.raises(FileExistsError):
            h5dask.to_h5cloud(simple_datatree, url, mode="w-")

    def test_rplus_mode(self, tmpdir, simple_datatree) -> None:
        url = str(tmpdir / "test.h5")
        original_dt = simple_datatree.chunk()
        # (a compute=False write publishes nothing until computed: write zeros first)
        h5dask.to_h5cloud(original_dt.map_over_datasets(lambda ds: ds * 0), url)
        h5dask.to_h5cloud(original_dt, url, mode="r+")
        with open_datatree(url, engine=self.engine) as written_dt:
            assert_identical(written_dt, original_dt)

    @pytest.mark.parametrize(("path", "added", "refusal"), [
        ("set3", DataTree(xr.Dataset({"new": ("x", [1, 2])})), "'new'.*mode='r\\+'"),
        ("set3/new", DataTree(), "group '/set3/new' does not exist in .*r\\+"),
    ], ids=["new-variable", "new-group"])
    def test_rplus_mode_refuses_what_the_domain_lacks(self, tmpdir, simple_datatree, path,
                                                      added, refusal) -> None:
        url = str(tmpdir / "test.h5")
        h5dask.to_h5cloud(simple_datatree, url)
        bigger = simple_datatree.copy()
        bigger[path] = added
        with pytest.raises(H5DaskError, match=refusal):
            h5dask.to_h5cloud(bigger, url, mode="r+")
        with open_datatree(url, engine=self.engine) as unchanged:
            assert_identical(unchanged, simple_datatree)

    def test_append_mode_adds_groups_and_variables(self, tmpdir, simple_datatree) -> None:
        url = str(tmpdir / "test.h5")
        h5dask.to_h5cloud(simple_datatree, url)
        more = DataTree.from_dict({"/set2": xr.Dataset({"c": ("x", [7, 8])}),
                                   "/set4": xr.Dataset({"d": ("z", [1.5])})})
        h5dask.to_h5cloud(more, url, mode="a")
        expected = simple_datatree.copy()
        expected["set2/c"] = xr.DataArray([7, 8], dims="x")
        expected["set4"] = DataTree(xr.Dataset({"d": ("z", [1.5])}))
        with open_datatree(url, engine=self.engine) as written_dt:
            assert_identical(written_dt, expected)

    def test_compute_false_writes_every_group(self, tmpdir) -> None:
        url = str(tmpdir / "test.h5")
        original = _chunked_tree({"x": 1, "y": 1})
        h5dask.to_h5cloud(original, url)
        # every variable dask-backed, three groups of chunks, one delayed
        changed = original.map_over_datasets(lambda ds: ds + 100)
        delayed = h5dask.to_h5cloud(changed, url, mode="a", compute=False)
        with open_datatree(url, engine=self.engine) as before:
            assert_identical(before, original)
        delayed.compute()
        with open_datatree(url, engine=self.engine) as after:
            assert_identical(after, changed)

    def test_no_redundant_computation(self, tmpdir) -> None:
        import dask.array as da

        eval_count = 0

        def expensive_func(x):
            nonlocal eval_count
            eval_count += 1
            return x + 1

        base = da.random.random((), chunks=())
        derived1 = da.map_blocks(expensive_func, base, meta=np.array((), np.float64))
        tree = DataTree.from_dict({"group1": xr.Dataset({"derived": derived1}),
                                   "group2": xr.Dataset({"derived": derived1 + 1})})
        h5dask.to_h5cloud(tree, str(tmpdir / "test.h5"))
        assert eval_count == 1  # not 2

    def test_open_groups_round_trip(self, tmpdir, simple_datatree) -> None:
        url = str(tmpdir / "test.h5")
        h5dask.to_h5cloud(simple_datatree, url)
        roundtrip_dt = DataTree.from_dict(open_groups(url, engine=self.engine))
        with open_datatree(url, engine=self.engine) as opened_tree:
            assert opened_tree.identical(roundtrip_dt)

    def test_open_datatree_unaligned_hierarchy_of_to_h5cloud(self, tmpdir) -> None:
        url = _unaligned_datatree_domain(tmpdir / "unaligned.h5")
        with pytest.raises(ValueError, match=re.escape(
                "group '/Group2' is not aligned with its parents:")):
            open_datatree(url, engine=self.engine)

    def test_open_groups_of_unaligned_hierarchy(self, tmpdir) -> None:
        url = _unaligned_datatree_domain(tmpdir / "unaligned.h5")
        groups = open_groups(url, engine=self.engine)
        assert list(groups) == ["/", "/Group1", "/Group1/subgroup1", "/Group2"]
        assert groups["/Group2"].sizes == {"y": 2, "x": 2}
        for group in ("/", "Group1", "/Group1/subgroup1", "/Group2"):
            with xr.open_dataset(url, group=group, engine=self.engine) as expected:
                assert_identical(groups["/" + group.strip("/")], expected)

    def test_open_datatree_specific_group(self, tmpdir, simple_datatree) -> None:
        url = str(tmpdir / "test.h5")
        h5dask.to_h5cloud(simple_datatree, url)
        expected_subtree = simple_datatree["/set2"].copy()
        expected_subtree.orphan()
        with open_datatree(url, group="/set2", engine=self.engine) as subgroup_tree:
            assert subgroup_tree.root.parent is None
            assert_equal(subgroup_tree, expected_subtree)

    def test_open_datatree_chunks_computed_in_one_go(self, tmpdir) -> None:
        chunks = {"x": 2, "y": 1}
        original_tree = _chunked_tree(chunks)
        url = str(tmpdir / "test.h5")
        h5dask.to_h5cloud(original_tree, url)
        with open_datatree(url, engine=self.engine, chunks=chunks) as tree:
            assert_identical(tree, original_tree)
            assert_chunks_equal(tree, original_tree, enforce_dask=True)
            # https://github.com/pydata/xarray/issues/10098: one token per node
            assert_identical(tree.compute(), original_tree)

    @pytest.mark.parametrize("write_inherited_coords", [False, True])
    def test_write_inherited_coords(self, tmpdir, write_inherited_coords) -> None:
        original_dt = DataTree.from_dict({
            "/": xr.Dataset(coords={"x": [1, 2, 3]}),
            "/child": xr.Dataset({"foo": ("x", [4, 5, 6])}),
        })
        url = str(tmpdir / "test.h5")
        h5dask.to_h5cloud(original_dt, url, write_inherited_coords=write_inherited_coords)
        with open_datatree(url, engine=self.engine) as roundtrip_dt:
            assert_identical(original_dt, roundtrip_dt)
        expected_child = original_dt.children["child"].copy(inherit=write_inherited_coords)
        expected_child.name = None
        with open_datatree(url, group="child", engine=self.engine) as roundtrip_child:
            assert_identical(expected_child, roundtrip_child)


# -- beyond xarray's suite: appends, regions, group=, bad input, laziness ----------------
def _time_tree(times, values, bare: bool = False) -> DataTree:
    """A root whose ``time`` (a coordinate, or with ``bare`` a dimension without one) a
    child's variable uses."""
    root = (xr.Dataset({"r": ("time", np.zeros(len(times), "i8"))}) if bare
            else xr.Dataset(coords={"time": times}))
    return DataTree.from_dict({"/": root, "/a": xr.Dataset({"v": ("time", values)})})


@pytest.mark.parametrize("bare", [False, True], ids=["coordinate", "bare-dimension"])
def test_append_dim_grows_the_dimension_children_share(tmp_path, bare) -> None:
    url = str(tmp_path / "t.h5")
    h5dask.to_h5cloud(_time_tree([0, 1], [1.0, 2.0], bare), url, unlimited_dims=["time"])
    h5dask.to_h5cloud(_time_tree([2], [5.0], bare), url, append_dim="time")
    with open_datatree(url, engine="h5cloud") as tree:
        assert_identical(tree, _time_tree([0, 1, 2], [1.0, 2.0, 5.0], bare))
    f = h5dask.File(url, "r")
    assert list(f["a"]) == ["v"]  # the child still uses the root's dimension


@pytest.mark.parametrize("bare", [False, True], ids=["coordinate", "bare-dimension"])
def test_appending_to_a_child_alone_is_refused(tmp_path, bare) -> None:
    url = str(tmp_path / "t.h5")
    tree = _time_tree([0, 1], [1.0, 2.0], bare)
    h5dask.to_h5cloud(tree, url, unlimited_dims=["time"])
    with pytest.raises(H5DaskError, match="'/a/v' would have 3 elements along 'time', the "
                       "dimension of the enclosing '/time' \\(2\\)"):
        h5dask.to_h5cloud(xr.Dataset({"v": ("time", [5.0])}), url, group="a",
                          append_dim="time")
    with open_datatree(url, engine="h5cloud") as unchanged:
        assert_identical(unchanged, tree)


@pytest.mark.parametrize("bare", [False, True], ids=["coordinate", "bare-dimension"])
def test_region_writes_into_every_group(tmp_path, bare) -> None:
    url = str(tmp_path / "t.h5")
    h5dask.to_h5cloud(_time_tree([0, 1, 2], [1.0, 2.0, 3.0], bare), url)
    h5dask.to_h5cloud(_time_tree([7, 8], [9.0, 9.0], bare).isel(time=slice(0, 2)), url,
                      region={"time": slice(1, 3)}, safe_chunks=False)
    with open_datatree(url, engine="h5cloud") as tree:
        assert tree["a/v"].values.tolist() == [1.0, 9.0, 9.0]
        if not bare:
            assert tree["time"].values.tolist() == [0, 7, 8]


def test_tree_written_under_a_group(tmp_path, simple_datatree) -> None:
    url = str(tmp_path / "t.h5")
    h5dask.to_h5cloud(xr.Dataset({"top": 1}), url)
    h5dask.to_h5cloud(simple_datatree, url, group="/runs/first", mode="a")
    with open_datatree(url, group="runs/first/", engine="h5cloud") as tree:
        assert_identical(tree, simple_datatree)
    with open_datatree(url, engine="h5cloud") as whole:
        assert whole["top"].item() == 1
        assert_identical(whole["runs/first/set2"].to_dataset(),
                         simple_datatree["set2"].to_dataset())


def test_encoding_and_unlimited_dims_per_group_path(tmp_path, simple_datatree) -> None:
    url = str(tmp_path / "t.h5")
    h5dask.to_h5cloud(simple_datatree, url,
                      encoding={"/set2": {"a": {"chunks": (1,), "compression": "gzip"}}},
                      unlimited_dims={"/set2": ["x"]})
    f = h5dask.File(url, "r")
    assert f["set2/a"].chunks == (1,) and f["set2/a"].compression == "gzip"
    assert f["set2/x"].maxshape == (None,)  # set2's own x (the root's has length 2 too,
    assert f["x"].maxshape == (2,)          # but only set2's is unlimited)


class TestBadInput:
    def test_encoding_for_a_group_the_tree_does_not_have(self, tmp_path, simple_datatree):
        url = str(tmp_path / "t.h5")
        with pytest.raises(H5DaskError, match=r"unexpected encoding group.*'/set9'.*'/set2'"
                           ) as err:
            h5dask.to_h5cloud(simple_datatree, url, encoding={"/set9": {"a": {}}})
        assert isinstance(err.value, ValueError)
        assert not os.path.exists(url)  # nothing written

    def test_unlimited_dims_of_no_group(self, tmp_path, simple_datatree):
        with pytest.raises(H5DaskError, match=r"unlimited_dims \['time'\].*no group"):
            h5dask.to_h5cloud(simple_datatree, str(tmp_path / "t.h5"), unlimited_dims=["time"])

    def test_a_refused_variable_is_named_with_its_group(self, tmp_path, simple_datatree):
        url = str(tmp_path / "t.h5")
        h5dask.to_h5cloud(simple_datatree, url)
        changed = simple_datatree.copy()
        changed["set1/a"] = xr.DataArray("text")  # stored as int64
        with pytest.raises(H5DaskError, match="^group '/set1': variable 'a'"):
            h5dask.to_h5cloud(changed, url, mode="a")
        with open_datatree(url, engine="h5cloud") as unchanged:  # nothing written
            assert_identical(unchanged, simple_datatree)

    def test_open_datatree_of_a_missing_group_names_it_and_the_domain(self, tmp_path,
                                                                     simple_datatree):
        url = str(tmp_path / "t.h5")
        h5dask.to_h5cloud(simple_datatree, url)
        for opener in (open_datatree, open_groups, xr.open_dataset):
            with pytest.raises(KeyError) as err:
                opener(url, group="/set2/nothing", engine="h5cloud")
            assert isinstance(err.value, H5DaskError)
            assert "'/set2/nothing' not found in" in str(err.value)
            assert "t.h5" in str(err.value) and "'/set2/set1'" in str(err.value)

    @pytest.mark.parametrize("group", ["a//b", "/set2/../set1", "./set2", 5])
    def test_a_group_that_is_not_a_path(self, tmp_path, simple_datatree, group):
        from h5dask.errors import InvalidGroupPathError

        url = str(tmp_path / "t.h5")
        h5dask.to_h5cloud(simple_datatree, url)
        for opener in (open_datatree, open_groups, xr.open_dataset):
            with pytest.raises(InvalidGroupPathError, match=re.escape(f"group={group!r}")):
                opener(url, group=group, engine="h5cloud")
        with pytest.raises(InvalidGroupPathError, match=re.escape(f"group={group!r}")):
            h5dask.to_h5cloud(simple_datatree, url, group=group, mode="a")
        with open_datatree(url, engine="h5cloud") as unchanged:
            assert_identical(unchanged, simple_datatree)

    def test_unaligned_hierarchy_error_names_the_group(self, tmp_path):
        url = _unaligned_datatree_domain(tmp_path / "unaligned.h5")
        with pytest.raises(ValueError, match="group '/Group2' is not aligned"):
            open_datatree(url, engine="h5cloud")


def test_chunks_empty_gives_one_task_per_chunk_object_in_every_group(tmp_path) -> None:
    url = str(tmp_path / "t.h5")
    tree = DataTree.from_dict({
        "/": xr.Dataset({"v": (("y", "x"), np.arange(80.0).reshape(8, 10))}),
        "/g": xr.Dataset({"w": (("y", "x"), np.ones((8, 10), "f4"))}),
        "/g/h": xr.Dataset({"u": ("z", np.arange(30))}),
    })
    h5dask.to_h5cloud(tree, url, encoding={"/": {"v": {"chunks": (2, 5)}},
                                           "/g": {"w": {"chunks": (4, 10)}},
                                           "/g/h": {"u": {"chunks": (7,)}}})
    h5dask.reset_stats()
    with open_datatree(url, engine="h5cloud", chunks={}) as opened:
        assert h5dask.stats()["chunk"]["read_requests"] == 0
        for path, name, blocks in [("/", "v", (4, 2)), ("/g", "w", (2, 1)),
                                   ("/g/h", "u", (5,))]:
            arr = opened[path][name].data
            assert arr.numblocks == blocks, path
            assert len(_getter_tasks(arr)) == int(np.prod(blocks)), path
        assert_identical(opened.compute(), tree)


def test_soft_link_to_a_group_is_not_followed_and_says_so(tmp_path) -> None:
    from h5dask.errors import UnfollowedLinkWarning

    url = str(tmp_path / "t.h5")
    with h5dask.File(url, "w") as f:
        f.create_dataset("g/v", data=np.arange(3))
        f["alias"] = h5dask.SoftLink("/g")
    with pytest.warns(UnfollowedLinkWarning, match="'/alias' is a soft link to the group '/g'"):
        tree = open_datatree(url, engine="h5cloud")
    assert tree.groups == ("/", "/g")
