"""Issue 3 acceptance: the shared netCDF-4 files, imported by HSDS's own ``hsload`` into
an HSDS domain on SeaweedFS, open with ``engine="h5cloud"`` (straight from the bucket, no
server in the data path) identical to h5netcdf on the original file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr
from interop_compare import fresh_name

pytest.importorskip("h5pyd")
pytest.importorskip("h5netcdf")

pytestmark = pytest.mark.hsds

FILES = ["CMIP6_IPSL-CM6A-LR_tas.nc", "obs4MIPS_CERES-EBAF_L3B_Ed2-8_rlut.nc", "daily_data.nc"]
HSLOAD = Path(sys.executable).parent / "hsload"


def _hsload(server, path: Path, domain: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HS_", "AWS_"))}
    env.update(HS_ENDPOINT=server.endpoint, HS_USERNAME=server.username,
               HS_PASSWORD=server.password)
    done = subprocess.run([str(HSLOAD), str(path), domain], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, f"hsload failed ({done.returncode}):\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("name", FILES)
def test_hsload_domain_opens_identical_to_h5netcdf(name, shared_data, hsds_s3, storage_options):
    path = shared_data / name
    domain = f"/home/{hsds_s3.username}/{fresh_name(Path(name).stem)}"
    _hsload(hsds_s3, path, domain)
    hsds_s3.wait_for_keys([domain.lstrip("/") + "/.domain.json", "db/*/d/*/.dataset.json"],
                          domain=domain, quiet=1.0)
    url = f"s3://{hsds_s3.bucket}{domain}"

    for decode in ({}, {"decode_cf": False}):
        with xr.open_dataset(path, engine="h5netcdf", **decode) as want, \
                xr.open_dataset(url, engine="h5cloud", storage_options=storage_options,
                                **decode) as got:
            xr.testing.assert_identical(got, want)
