"""DataTrees of files nobody here wrote: ``xr.open_datatree(domain, engine="h5cloud")`` of
an ingested file (copy and ``--link``) is identical to ``xr.open_datatree(file,
engine="h5netcdf")`` (decoded, raw, both ``phony_dims`` modes); a domain HSDS wrote
through h5pyd opens as the tree h5netcdf shows of the same calls made through h5py.

Expected differences, each checked as such:

- ``h5netcdf_test.hdf5``: h5netcdf's tree is unaligned (its ``/subgroup`` has
  other sizes for the root's dimensions); both readers refuse it with xarray's
  error naming that group.
- ``tall.h5``: ``/g1/g1.2`` holds an external link to a file that does not exist
  ("somefile"), and ``/g1/g1.2/g1.2.1`` a dangling soft link: h5py, so h5netcdf,
  cannot open those groups, nor the tree; h5cloud shows them as empty groups (neither
  link leads to data; it warns that it does not follow the external link) and every
  other group as h5netcdf's ``open_dataset(group=)`` shows it.
"""

from __future__ import annotations

import shutil
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from h5dask.errors import UnfollowedLinkWarning
from h5dask.ingest import load_file

pytest.importorskip("h5netcdf")
pytestmark = pytest.mark.timeout(300)

REFERENCE = Path(__file__).resolve().parents[1] / "data" / "reference"
# reference files with groups (and ref_tst_dims.nc: netCDF-C's dimensions, root only)
IDENTICAL_TREES = ["earliest.hdf5", "groups.hdf5", "latest.hdf5", "new_style_groups.hdf5",
                   "tgroup.h5", "ref_tst_dims.nc", "ref_groups.h5", "ref_no_ncproperty.nc",
                   "ref_provenance_v1.nc"]
VARIANTS = [{}, {"decode_cf": False}, {"phony_dims": "access"}]


def _domain(name: str, tmp_path: Path, link: bool) -> str:
    """The file ingested into a domain; linked, the file is copied into the store first
    (a linked domain reads only files of its own store unless told otherwise)."""
    source = REFERENCE / name
    store = tmp_path / ("link" if link else "copy")
    if link:
        (store / "sources").mkdir(parents=True)
        source = Path(shutil.copyfile(source, store / "sources" / name))
    url = (store / "domain.h5").as_uri()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # filter notes, local-link advice
        load_file(source, url, progress=False, link=link)
    return url


def _open(source, engine: str, **kwargs) -> xr.DataTree:
    kwargs.setdefault("phony_dims", "sort")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return xr.open_datatree(source, engine=engine, **kwargs).load()


@pytest.mark.parametrize("link", [False, True], ids=["copy", "link"])
@pytest.mark.parametrize("name", IDENTICAL_TREES)
def test_tree_is_h5netcdfs(name: str, link: bool, tmp_path: Path) -> None:
    url = _domain(name, tmp_path, link)
    for kwargs in VARIANTS:
        want = _open(REFERENCE / name, "h5netcdf", **kwargs)
        got = _open(url, "h5cloud", **kwargs)
        xr.testing.assert_identical(got, want)
    if name != "ref_tst_dims.nc":
        assert len(got.groups) > 1  # a real tree


@pytest.mark.parametrize("link", [False, True], ids=["copy", "link"])
def test_unaligned_tree_refused_as_h5netcdf_refuses_it(link: bool, tmp_path: Path) -> None:
    url = _domain("h5netcdf_test.hdf5", tmp_path, link)
    with pytest.raises(ValueError) as want:
        _open(REFERENCE / "h5netcdf_test.hdf5", "h5netcdf")
    with pytest.raises(ValueError) as got:
        _open(url, "h5cloud")
    # the same words and groups (the repr differs only where h5cloud loaded the
    # dimension coordinates at open: values, not "...")
    first_lines = [str(err.value).split("\n")[0] for err in (got, want)]
    assert first_lines[0] == first_lines[1] == (
        "group '/subgroup' is not aligned with its parents:")
    # every group still opens on its own, as h5netcdf opens it
    groups = xr.open_groups(url, engine="h5cloud")
    for path, ds in groups.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = xr.open_dataset(REFERENCE / "h5netcdf_test.hdf5", engine="h5netcdf",
                                       group=path, phony_dims="sort").load()
        xr.testing.assert_identical(ds.load(), expected)


@pytest.mark.parametrize("link", [False, True], ids=["copy", "link"])
def test_tree_with_dangling_links(link: bool, tmp_path: Path) -> None:
    url = _domain("tall.h5", tmp_path, link)
    with pytest.raises((KeyError, OSError), match="can't open file"):
        _open(REFERENCE / "tall.h5", "h5netcdf")
    # (phony_dims="sort" numbers the phony dimensions of every group, so h5netcdf cannot
    # open even the root with it: "access", group by group)
    with pytest.warns(UnfollowedLinkWarning, match=r"'/g1/g1.2/extlink' is an external "
                      r"link \(to 'somepath' in 'somefile'\).*not follow"):
        xr.open_datatree(url, engine="h5cloud")
    got = _open(url, "h5cloud", phony_dims="access")
    assert sorted(got.groups) == ["/", "/g1", "/g1/g1.1", "/g1/g1.2", "/g1/g1.2/g1.2.1", "/g2"]
    for path in ("/g1/g1.2", "/g1/g1.2/g1.2.1"):
        assert not got[path].variables and not got[path].attrs, path
    for path in ("/", "/g1", "/g1/g1.1", "/g2"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = xr.open_dataset(REFERENCE / "tall.h5", engine="h5netcdf", group=path,
                                   phony_dims="access").load()
        xr.testing.assert_identical(got[path].to_dataset(inherit=False), want)


# -- a domain HSDS wrote --------------------------------------------------------------------
def _write_tree(f) -> None:
    """Groups with netCDF-style dimension scales through the h5py API (h5py or h5pyd): the
    root's ``x`` used by a child group's variable, a grandchild with its own ``y``."""
    f.attrs["title"] = "groups written through the h5py API"
    x = f.create_dataset("x", data=np.arange(4, dtype="<f8") * 0.5)
    x.make_scale("x")
    x.attrs["units"] = "m"
    t = f.create_dataset("t", data=np.array([10, 20, 30], dtype="<i4"))
    t.make_scale("t")
    v = f.create_dataset("v", data=np.arange(12, dtype="<f4").reshape(3, 4), chunks=(1, 4))
    v.dims[0].attach_scale(t)
    v.dims[1].attach_scale(x)
    obs = f.create_group("obs")
    obs.attrs["station"] = "north"
    w = obs.create_dataset("w", data=np.array([1, 2, 3, 4], dtype="<i2"), chunks=(2,))
    w.dims[0].attach_scale(x)
    w.attrs["long_name"] = "counts"
    deep = obs.create_group("deep")
    y = deep.create_dataset("y", data=np.array([-1.0, 1.0], dtype="<f8"))
    y.make_scale("y")
    u = deep.create_dataset("u", data=np.ones((2, 4), dtype="<f8"), chunks=(1, 2),
                            compression="gzip")
    u.dims[0].attach_scale(y)
    u.dims[1].attach_scale(x)


@pytest.mark.hsds
def test_domain_hsds_wrote_opens_as_the_tree_h5netcdf_shows(hsds_posix, tmp_path) -> None:
    import h5py

    h5pyd = pytest.importorskip("h5pyd")
    server = hsds_posix
    domain = f"/home/{server.username}/tree-{uuid.uuid4().hex[:12]}.h5"
    with h5pyd.File(domain, "w", **server.h5pyd_kwargs()) as f:
        _write_tree(f)
    server.wait_for_keys([domain.lstrip("/") + "/.domain.json"], domain=domain, quiet=1.0)
    local = tmp_path / "same-calls.h5"
    with h5py.File(local, "w") as f:
        _write_tree(f)

    url = f"file://{server.root_dir}/{server.bucket}{domain}"
    for kwargs in VARIANTS:
        want = _open(local, "h5netcdf", **kwargs)
        got = _open(url, "h5cloud", **kwargs)
        xr.testing.assert_identical(got, want)
    assert got.groups == ("/", "/obs", "/obs/deep")
    assert got["obs/deep/u"].dims == ("y", "x")
    with xr.open_datatree(url, engine="h5cloud", chunks={}) as lazy:
        assert lazy["obs/deep/u"].data.numblocks == (2, 2)  # one block per chunk object


@pytest.mark.hsds
def test_tree_to_h5cloud_wrote_is_served_by_hsds_with_scoped_dimensions(hsds_posix) -> None:
    """A child variable attached to its parent's dimension scale (netCDF-4 scoping):
    HSDS serves the domain, and h5pyd resolves the child's dimension to the root's scale."""
    import h5dask

    h5pyd = pytest.importorskip("h5pyd")
    server = hsds_posix
    domain = f"/home/{server.username}/tree-{uuid.uuid4().hex[:12]}.h5"
    url = f"file://{server.root_dir}/{server.bucket}{domain}"
    tree = xr.DataTree.from_dict({
        "/": xr.Dataset(coords={"x": [1.0, 2.0, 3.0]}),
        "/obs": xr.Dataset({"w": ("x", np.array([4, 5, 6], "<i2"))}),
        "/obs/deep": xr.Dataset({"u": (("y", "x"), np.ones((2, 3)))}, coords={"y": [0, 1]}),
    })
    h5dask.to_h5cloud(tree, url)
    with h5pyd.File(domain, "r", **server.h5pyd_kwargs()) as f:
        assert [s.name for s in f["obs/w"].dims[0].values()] == ["/x"]
        assert [s.name for s in f["obs/deep/u"].dims[0].values()] == ["/obs/deep/y"]
        assert [s.name for s in f["obs/deep/u"].dims[1].values()] == ["/x"]
        np.testing.assert_array_equal(f["obs/w"][...], [4, 5, 6])
    with xr.open_datatree(url, engine="h5cloud") as back:
        xr.testing.assert_identical(back, tree)
