"""What the README promises a newcomer (issue 14 items 1 and 14)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dask.array as da
import pytest
import xarray as xr

import h5dask

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_readme_starts_with_the_two_setup_commands():
    first_block = re.search(r"```bash\n(.*?)```", README, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ["ci/demo.sh", "ci/test.sh"]


def test_nothing_reads_outside_the_clone():
    """The sample files are in the repository; no code, test, notebook or script reads a
    ``shared`` folder beside the clone."""
    assert {p.name for p in (ROOT / "tests" / "data").glob("*.nc")} >= {
        "CMIP6_IPSL-CM6A-LR_tas.nc", "daily_data.nc", "obs4MIPS_CERES-EBAF_L3B_Ed2-8_rlut.nc"}
    pattern = re.compile(r"\.\./shared|/work/shared|(parent|parents\[\d\]) / \"shared\"")
    offenders = []
    for folder in ("h5dask", "tests", "notebooks", "ci", ".ci", "benchmarks", "docs"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".sh", ".ipynb", ".md", ".toml", "") and path.is_file():
                text = path.read_text(errors="replace")
                if path != Path(__file__) and pattern.search(text):
                    offenders.append(str(path.relative_to(ROOT)))
    assert not pattern.search(README) and not offenders


def test_open_dataset_without_chunks_is_lazily_indexed_numpy(shared_data, seaweedfs,
                                                              s3_bucket_url, storage_options):
    url = f"{s3_bucket_url}/tas.h5"
    h5dask.load(shared_data / "CMIP6_IPSL-CM6A-LR_tas.nc", url, storage_options=storage_options)
    h5dask.reset_stats()
    ds = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    assert not isinstance(ds.tas.data, da.Array) and ds.tas.chunks is None
    opened = h5dask.stats()["chunk"]["read_bytes"]
    assert opened < ds.tas.nbytes  # tas itself is not read at open
    assert float(ds.tas[0, 0, 0]) > 0
    assert isinstance(xr.open_dataset(url, engine="h5cloud", chunks={},
                                      storage_options=storage_options).tas.data, da.Array)


def test_without_engine_xarray_may_pick_netcdf4_for_s3(s3_bucket_url, storage_options):
    pytest.importorskip("netCDF4")
    with pytest.raises(TypeError, match="unexpected keyword argument 'storage_options'"):
        xr.open_dataset(f"{s3_bucket_url}/tas.h5", storage_options=storage_options)
    assert "unexpected keyword argument" in README and "lazily indexed numpy" in README


def test_the_use_snippet_runs_as_written(tmp_path, monkeypatch, shared_data, s3_bucket_url,
                                         storage_options):
    """The "Use" block, run against real S3 with only the store's options and the bucket
    filled in: the import, open, reduction, DataTree, write, h5py-like API and many-files
    lines all work as printed."""
    block = re.search(r"## Use\n\n```python\n(.*?)```", README, re.S).group(1)
    code = re.sub(r"^opts = \{.*\}$", "opts = STORE_OPTIONS", block, flags=re.M)
    code = code.replace("s3://bucket/", f"{s3_bucket_url}/")
    assert "STORE_OPTIONS" in code and "s3://bucket" not in code
    tas = shared_data / "CMIP6_IPSL-CM6A-LR_tas.nc"
    shutil.copy(tas, tmp_path / "run1.nc")
    (tmp_path / "runs").mkdir()
    with xr.open_dataset(tas, engine="h5netcdf") as whole:  # the user's files: two halves
        for name, part in (("a", slice(0, 7)), ("b", slice(7, None))):
            whole.isel(time=part).to_netcdf(tmp_path / "runs" / f"{name}.nc", engine="h5netcdf")
    monkeypatch.chdir(tmp_path)
    namespace = {"STORE_OPTIONS": storage_options}
    exec(compile(code, "README.md (Use)", "exec"), namespace)
    runs, ds = namespace["runs"], namespace["ds"]
    assert isinstance(runs.tas.data, da.Array) and runs.sizes["time"] == ds.sizes["time"]
    xr.testing.assert_identical(runs.tas.load(), ds.tas.load())


def test_chunks_auto_makes_blocks_of_whole_chunk_objects_of_dasks_chunk_size():
    import dask
    import numpy as np

    url = "memory://readme-auto/home/v.h5"
    ds = xr.Dataset({"v": (("time", "y", "x"), np.zeros((400, 180, 360), "f4"))})
    h5dask.to_h5cloud(ds, url, encoding={"v": {"chunks": (10, 180, 360)}})  # 2.5 MiB each
    with dask.config.set({"array.chunk-size": "8MiB"}):
        auto = xr.open_dataset(url, engine="h5cloud", chunks="auto").v.data
    assert set(auto.chunks[0]) == {30, 10} and auto.chunksize == (30, 180, 360)
    per_object = xr.open_dataset(url, engine="h5cloud", chunks={}).v.data
    assert per_object.numblocks == (40, 1, 1)
    assert '`chunks="auto"` for blocks of whole chunk objects' in README.replace("\n  ", " ")


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_readme_links_lead_to_files_and_headings_that_exist():
    links = re.findall(r"\]\(([^)\s]+)\)", README)
    assert links
    for link in links:
        if link.startswith("http"):
            continue
        path, _, anchor = link.partition("#")
        target = ROOT / path
        assert target.is_file(), link
        if anchor:
            headings = re.findall(r"^#+ (.*)$", target.read_text(), re.M)
            assert anchor in {_anchor(h) for h in headings}, link
