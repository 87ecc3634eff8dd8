"""The examples of ``h5dask --help`` and ``h5dask load --help`` run as printed, against
real S3 (SeaweedFS), with only the bucket, endpoint and credentials filled in."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import xarray as xr

import h5dask

BIN = Path(sys.executable).parent


def _examples(*command: str) -> list[str]:
    """The shell lines under "Examples:" in a command's help, continuations joined."""
    out = subprocess.run([str(BIN / "h5dask"), *command, "--help"], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    block = out.split("Examples:\n", 1)[1].split("\n\n", 1)[0]
    lines = [line.strip() for line in block.replace("\\\n", " ").splitlines()]
    return [line for line in lines if line.startswith(("h5dask ", "for "))]


def test_help_examples_run_as_printed(tmp_path, shared_data, seaweedfs, s3_bucket_url,
                                      storage_options):
    (tmp_path / "runs").mkdir()
    shutil.copy(shared_data / "CMIP6_IPSL-CM6A-LR_tas.nc", tmp_path / "tas.nc")
    for name in ("a", "b"):
        shutil.copy(shared_data / "daily_data.nc", tmp_path / "runs" / f"{name}.nc")
    load_examples = _examples("load")
    main_examples = _examples()
    assert len(load_examples) == 3 and len(main_examples) == 3
    # the second load example gives its own endpoint and keys; the others use the
    # AWS environment
    bare = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    bare["PATH"] = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    with_aws = {**bare, **seaweedfs.env()}
    outputs = []
    for i, line in enumerate([*load_examples, *main_examples[1:]]):
        line = line.replace("s3://bucket/", f"{s3_bucket_url}/")
        line = line.replace("http://minio:9000", seaweedfs.endpoint)
        line = line.replace("KEY", seaweedfs.access_key).replace("SECRET", seaweedfs.secret_key)
        if i == 1:  # the first example's domain is there already
            line = line.replace("tas.h5", "tas2.h5")
        proc = subprocess.run(["bash", "-c", line], capture_output=True, text=True,
                              timeout=300, cwd=tmp_path, env=bare if i == 1 else with_aws,
                              stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, (line, proc.stderr)
        outputs.append(proc.stdout)
    assert re.search(r"tas\.h5\n.*tas2\.h5", outputs[3], re.S)
    assert "shape:   (15, 143, 144)" in outputs[4]
    runs = h5dask.list_domains(f"{s3_bucket_url}/home/me/runs/", storage_options)
    assert [u.rsplit("/", 1)[1] for u in runs] == ["a.h5", "b.h5"]
    ds = xr.open_dataset(f"{s3_bucket_url}/home/me/tas.h5", engine="h5cloud", chunks={},
                         storage_options=storage_options)
    assert ds.tas.shape == (15, 143, 144)
