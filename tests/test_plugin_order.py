"""h5dask's HDF5 filters whatever the import order: ``import netCDF4`` before hdf5plugin
(and h5dask) points HDF5_PLUGIN_PATH at netCDF4's own plugins, built on its own copy of
HDF5, and hdf5plugin then left Blosc, Zstd and BZip2 to them: h5py writes with them
failed ("error during user callback"). Run in a fresh interpreter: this one imported
hdf5plugin first (tests/conftest.py)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import h5py
import hdf5plugin
import numpy as np

FILTERS = {"blosc": hdf5plugin.Blosc(cname="zstd", shuffle=hdf5plugin.Blosc.BITSHUFFLE),
           "zstd": hdf5plugin.Zstd(), "lz4": hdf5plugin.LZ4(), "bzip2": hdf5plugin.BZip2()}


def test_netcdf4_imported_first_does_not_take_the_filters(tmp_path) -> None:
    src = tmp_path / "filtered.h5"
    with h5py.File(src, "w") as f:
        for name, opts in FILTERS.items():
            f.create_dataset(name, data=np.arange(4000, dtype="f4"), chunks=(1000,), **opts)
    code = textwrap.dedent(f"""
        import netCDF4  # first, as a user's notebook does
        import h5dask, h5py, numpy as np
        # rechunked: every chunk is decoded by h5py through the filter plugins
        h5dask.load({str(src)!r}, "memory://plugin-order/x.h5",
                    chunks={{n: (500,) for n in {sorted(FILTERS)!r}}})
        with h5dask.File("memory://plugin-order/x.h5") as f:
            for name in {sorted(FILTERS)!r}:
                assert (f[name][...] == np.arange(4000)).all(), name
        import hdf5plugin
        theirs = [n for n, origin in hdf5plugin.get_config().registered_filters.items()
                  if origin == "unknown"]
        assert not theirs, f"filters left to netCDF4's plugins: {{theirs}}"
        with h5py.File({str(tmp_path / "out.h5")!r}, "w") as f:  # h5py writes Blosc again
            f.create_dataset("b", data=np.arange(100.0), chunks=(10,), **hdf5plugin.Blosc())
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0 and run.stdout.strip().endswith("ok"), run.stderr[-2000:]
