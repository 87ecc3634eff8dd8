"""``import h5dask`` is cheap (issue 14 item 3): the heavy stack is imported on first use,
xarray's backend discovery stays cheap, and real climate data (a 365_day calendar) opens."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import cftime
import xarray as xr

import h5dask
from h5dask.xarray.entrypoint import LazyH5CloudEntrypoint

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("xarray", "dask", "pandas", "aiohttp", "distributed", "numcodecs", "h5py", "obstore")


def _modules_after(code: str) -> set[str]:
    """The top-level modules a fresh interpreter holds after running ``code``."""
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys, json\n"
                          "print(json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, timeout=120)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_import_h5dask_imports_none_of_the_heavy_stack() -> None:
    loaded = _modules_after("import h5dask")
    assert not loaded & set(HEAVY)


def test_public_names_resolve_on_first_use() -> None:
    loaded = _modules_after("import h5dask\nh5dask.File\nh5dask.stats()")
    assert "h5dask.file" in loaded and "xarray" not in loaded
    for name in h5dask.__all__:
        assert getattr(h5dask, name) is not None
    assert sorted(dir(h5dask)) == sorted(h5dask.__all__)


def test_xarray_entry_point_imports_no_reader() -> None:
    """xarray imports every backend's entry point module on each ``open_dataset``."""
    entry = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    module, _, name = entry["xarray.backends"]["h5cloud"].partition(":")
    before = _modules_after("import xarray")
    after = _modules_after(f"import xarray\nimport {module}\n{module}.{name}")
    assert not {m for m in after - before if m.split(".")[0] != "h5dask"} - {"h5dask"}
    assert not {"h5dask.xarray.backend", "h5dask.chunkio", "h5dask.file"} & after


def test_cmip_365_day_calendar_opens_with_cftime(shared_data, seaweedfs, s3_bucket_url,
                                                 storage_options) -> None:
    url = f"{s3_bucket_url}/daily.h5"
    summary = h5dask.load(shared_data / "daily_data.nc", url, storage_options=storage_options)
    assert summary.datasets > 0
    ds = xr.open_dataset(url, engine=LazyH5CloudEntrypoint, chunks={},
                         storage_options=storage_options)
    first = ds.time.values[0]
    assert isinstance(first, cftime.DatetimeNoLeap)
    assert ds.time.dt.calendar == "noleap"
    assert ds.ta.sizes["time"] == 62 and float(ds.ta.mean().compute()) > 0
