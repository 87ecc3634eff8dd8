"""The h5dask command line, through its real entry point (the installed console script)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

import h5dask

H5DASK = shutil.which("h5dask", path=str(Path(sys.executable).parent)) or "h5dask"


def run(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([H5DASK, *args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture
def domain(s3_bucket_url, storage_options):
    url = f"{s3_bucket_url}/home/me/cli.h5"
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        f.attrs["title"] = "cli test"
        x = f.create_dataset("grp/x", data=np.arange(100.0), chunks=(10,), compression="gzip")
        x.attrs["units"] = "K"
    return url


def _opts(seaweedfs):
    return ["--endpoint-url", seaweedfs.endpoint, "-o", f"key={seaweedfs.access_key}",
            "-o", f"secret={seaweedfs.secret_key}"]


@pytest.mark.parametrize("command", [[], ["load"], ["ls"], ["info"], ["serve-active"],
                                     ["demo"]])
def test_help(command):
    out = run(*command, "--help").stdout
    assert "Usage:" in out


def test_version():
    assert run("--version").stdout.strip() == f"h5dask, version {h5dask.__version__}"


def test_ls_tree_of_a_domain(domain, seaweedfs):
    out = run("ls", domain, *_opts(seaweedfs)).stdout
    assert "grp/" in out and "x  float64 (100,)  chunks 10, gzip" in out


def test_ls_domains_under_a_prefix(domain, seaweedfs):
    prefix = domain.rsplit("/", 1)[0] + "/"
    assert domain in run("ls", prefix, *_opts(seaweedfs)).stdout


def test_ls_with_credentials_from_the_environment(domain, seaweedfs):
    env = {**os.environ, **seaweedfs.env()}
    assert "grp/" in run("ls", domain, env=env).stdout


def test_info_of_a_dataset(domain, seaweedfs):
    out = run("info", domain, "--path", "/grp/x", *_opts(seaweedfs)).stdout
    assert "shape:   (100,)" in out and "chunks:  10 of 10 stored" in out
    assert '@units = "K"' in out
    assert '"H5D_CHUNKED"' in run("info", domain, "--path", "/grp/x", "--json",
                                  *_opts(seaweedfs)).stdout


def test_missing_domain_exit_code_and_message(seaweedfs):
    proc = run("ls", "s3://h5dask-test/no/such/domain.h5", *_opts(seaweedfs), check=False)
    assert proc.returncode == 3
    assert "h5dask: error:" in proc.stderr and "Traceback" not in proc.stderr


def test_missing_object_exit_code(domain, seaweedfs):
    proc = run("info", domain, "--path", "/nope", *_opts(seaweedfs), check=False)
    assert proc.returncode == 3 and "no object 'nope'" in proc.stderr


def test_wrong_credentials_exit_code(domain, seaweedfs):
    proc = run("ls", domain, "--endpoint-url", seaweedfs.endpoint, "-o", "key=wrong",
               "-o", "secret=wrong", check=False)
    assert proc.returncode == 4, proc.stderr
    debug = run("--debug", "ls", domain, "--endpoint-url", seaweedfs.endpoint, "-o",
                "key=wrong", "-o", "secret=wrong", check=False)
    assert "Traceback" in debug.stderr


def test_bad_usage_exit_code():
    assert run("ls", check=False).returncode == 2
    assert run("load", "a", "b", "--chunks", "x,y", check=False).returncode == 2


def test_serve_active_answers_and_stops(seaweedfs):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([H5DASK, "serve-active", "--port", str(port), "--allow-upstream",
                             seaweedfs.endpoint], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert r.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "serve-active did not answer"
                time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(10)


def test_load_copy_and_link(shared_data, s3_bucket_url, seaweedfs, storage_options):
    import xarray as xr

    src = shared_data / "CMIP6_IPSL-CM6A-LR_tas.nc"
    url = f"{s3_bucket_url}/home/me/tas.h5"
    proc = run("load", str(src), url, *_opts(seaweedfs))
    assert "%" in proc.stderr  # the progress bar
    assert "tas" in run("ls", url, *_opts(seaweedfs)).stdout
    expected = xr.open_dataset(src, engine="h5netcdf")
    got = xr.open_dataset(url, engine="h5cloud", storage_options=storage_options)
    xr.testing.assert_identical(got, expected)
    again = run("load", str(src), url, *_opts(seaweedfs), check=False)
    assert again.returncode == 1 and "exists" in again.stderr
    run("load", str(src), url, "--overwrite", "--compression", "zstd", "--no-progress",
        *_opts(seaweedfs))

    # link: the file itself in S3, the domain references its chunks
    s3 = seaweedfs.s3_client()
    s3.put_object(Bucket="h5dask-test", Key=f"{url.split('/', 3)[3]}-files/tas.nc",
                  Body=src.read_bytes())
    file_url = f"s3://h5dask-test/{url.split('/', 3)[3]}-files/tas.nc"
    linked = f"{s3_bucket_url}/home/me/linked.h5"
    run("load", "--link", file_url, linked, *_opts(seaweedfs),
        "--src-storage-option", f"key={seaweedfs.access_key}",
        "--src-storage-option", f"secret={seaweedfs.secret_key}",
        "--src-storage-option", f"client_kwargs.endpoint_url={seaweedfs.endpoint}")
    got = xr.open_dataset(linked, engine="h5cloud", storage_options=storage_options)
    xr.testing.assert_identical(got, expected)
