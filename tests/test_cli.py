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


@pytest.mark.parametrize("command", [[], ["load"], ["ls"], ["info"], ["rm"], ["gc"],
                                     ["serve-active"], ["demo"]])
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


def test_aws_profile_alone_configures_the_cli(domain, seaweedfs, tmp_path):
    """No option on the command line: AWS_PROFILE's keys and endpoint_url reach the
    server; a profile that does not exist is a usage error naming it."""
    (tmp_path / "creds").write_text(f"[weed]\naws_access_key_id = {seaweedfs.access_key}\n"
                                    f"aws_secret_access_key = {seaweedfs.secret_key}\n")
    (tmp_path / "conf").write_text(f"[profile weed]\nendpoint_url = {seaweedfs.endpoint}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "creds"), AWS_PROFILE="weed",
               AWS_CONFIG_FILE=str(tmp_path / "conf"), AWS_EC2_METADATA_DISABLED="true")
    assert "x  float64 (100,)" in run("ls", domain, env=env).stdout
    proc = run("ls", domain, check=False, env={**env, "AWS_PROFILE": "wheed"})
    assert proc.returncode != 0 and "AWS profile 'wheed' (from AWS_PROFILE)" in proc.stderr
    assert "['weed']" in proc.stderr


def test_bad_usage_exit_code():
    assert run("ls", check=False).returncode == 2
    assert run("load", "a", "b", "--chunks", "x,y", check=False).returncode == 2
    superscript = run("load", "a", "b", "--compression", "gzip:\u00b2", check=False)
    assert superscript.returncode == 2 and "NAME:LEVEL" in superscript.stderr


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


# -- issue 14: storage locations, rm/gc, messages ------------------------------------------
def _empty_bucket(seaweedfs) -> str:
    import uuid

    name = f"cli-{uuid.uuid4().hex[:12]}"
    seaweedfs.create_bucket(name)
    return name


def test_load_that_skipped_objects_exits_6_unless_allow_skips(tmp_path):
    """A script can tell a load that left objects out: status 6, the skipped objects
    listed; --allow-skips accepts them (status 0). Either way the rest is published."""
    import h5py

    src = tmp_path / "partial.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("pairs", shape=(3,), dtype=np.dtype(("<f4", (2,))))  # skipped
        f["ok"] = np.arange(3)
        f["ok2"] = np.arange(4)
    partial = run("load", str(src), f"file://{tmp_path}/a.h5", "--no-progress", check=False)
    assert partial.returncode == 6, partial.stderr
    assert "skipped: /pairs: dataset" in partial.stdout
    assert "1 object(s) skipped" in partial.stderr and "--allow-skips" in partial.stderr
    accepted = run("load", str(src), f"file://{tmp_path}/b.h5", "--no-progress",
                   "--allow-skips", check=False)
    assert accepted.returncode == 0 and "skipped: /pairs: dataset" in accepted.stdout
    for name in ("a.h5", "b.h5"):
        with h5dask.File(f"file://{tmp_path}/{name}") as f:
            assert sorted(f) == ["ok", "ok2"]
    with h5py.File(tmp_path / "whole.h5", "w") as f:
        f["x"] = np.arange(5)
    whole = run("load", str(tmp_path / "whole.h5"), f"file://{tmp_path}/c.h5", "--no-progress",
                check=False)
    assert whole.returncode == 0 and "skipped:" not in whole.stdout and not whole.stderr


def test_load_file_url_writes_only_inside_the_named_folder(shared_data, tmp_path):
    """issue 14 item 4: an ancestor's db/ is never used; the message says how to choose."""
    src = str(shared_data / "daily_data.nc")
    run("load", src, f"file://{tmp_path}/earlier.h5", "--no-progress")
    before = sorted(p for p in tmp_path.rglob("*"))
    url = f"file://{tmp_path}/baretest/root/home/daily.h5"
    proc = run("load", src, url, "--no-progress", check=False)
    assert proc.returncode == 1 and "--bucket-root" in proc.stderr
    assert sorted(p for p in tmp_path.rglob("*")) == before
    bucket = tmp_path / "baretest" / "root"
    run("load", src, url, "--no-progress", "--bucket-root", str(bucket))
    assert sorted(os.listdir(bucket)) == ["db", "home"]
    assert sorted(p for p in tmp_path.rglob("*") if not p.is_relative_to(bucket)) == \
        sorted([*before, tmp_path / "baretest"])
    assert "ta " in run("ls", url).stdout


def test_load_plain_path_creates_db_beside_it(shared_data, tmp_path):
    out = run("load", str(shared_data / "daily_data.nc"), "localdom.h5", "--no-progress",
              cwd=tmp_path).stdout
    assert sorted(os.listdir(tmp_path)) == ["db", "localdom.h5"]
    assert f"bucket root: {tmp_path.as_uri()} (the domain's objects are in its db/)" in out


def test_rm_and_gc(shared_data, s3_bucket_url, seaweedfs, tmp_path):
    """issue 14 item 5 on S3 and file://: rm removes every object, refuses folders,
    --dry-run changes nothing; gc finds an interrupted load's objects."""
    src = str(shared_data / "daily_data.nc")
    url = f"{s3_bucket_url}/home/me/d.h5"
    run("load", src, url, "--no-progress", *_opts(seaweedfs))
    s3 = seaweedfs.s3_client()
    prefix = s3_bucket_url.split("/", 3)[3]

    def count() -> int:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="h5dask-test")
        return sum(1 for page in pages for obj in page.get("Contents", []))

    total = count()
    folder = run("rm", f"{s3_bucket_url}/home/", *_opts(seaweedfs), check=False)
    assert folder.returncode == 5 and "--recursive" in folder.stderr
    dry = run("rm", url, "--dry-run", *_opts(seaweedfs)).stdout
    assert f"would remove {url}" in dry and count() == total
    out = run("rm", url, *_opts(seaweedfs)).stdout
    n = int(out.split("domain(s), ")[1].split(" object")[0])
    assert f"removed {url}" in out and n > 10 and count() == total - n
    assert not s3.list_objects_v2(Bucket="h5dask-test", Prefix=prefix).get("Contents")
    assert run("rm", url, *_opts(seaweedfs), check=False).returncode == 3

    # file://: an interrupted load leaves objects but no .domain.json
    bucket = tmp_path / "bucket"
    run("load", src, f"file://{bucket}/a.h5", "--no-progress")
    run("load", src, f"file://{bucket}/b.h5", "--no-progress")
    (bucket / "b.h5" / ".domain.json").unlink()
    young = run("gc", f"file://{bucket}").stdout
    assert "kept: younger than the minimum age" in young
    assert len(os.listdir(bucket / "db")) == 2
    old = run("gc", str(bucket), "--min-age", "0").stdout
    assert "1 orphaned prefix(es)" in old and "--delete" in old
    assert "objects deleted" in run("gc", str(bucket), "--min-age", "0", "--delete").stdout
    assert len(os.listdir(bucket / "db")) == 1
    assert "ta " in run("ls", f"file://{bucket}/a.h5").stdout
    run("rm", "-r", f"file://{bucket}/")
    assert os.listdir(bucket / "db") == []


def test_ls_bucket_root_and_missing_bucket(domain, seaweedfs):
    """issue 14 item 6."""
    bucket = _empty_bucket(seaweedfs)
    url = f"s3://{bucket}/home/x.h5"
    with h5dask.File(url, "w", storage_options=seaweedfs.storage_options()) as f:
        f["v"] = np.arange(3)
    for root in (f"s3://{bucket}", f"s3://{bucket}/"):
        assert run("ls", root, *_opts(seaweedfs)).stdout.split() == [url]
    for missing in ("s3://no-such-bucket-h5dask", "s3://no-such-bucket-h5dask/",
                    "s3://no-such-bucket-h5dask/home/x.h5"):
        proc = run("ls", missing, *_opts(seaweedfs), check=False)
        assert proc.returncode == 3, proc.stderr
        assert "bucket 'no-such-bucket-h5dask' does not exist" in proc.stderr
        assert "<?xml" not in proc.stderr


@pytest.mark.parametrize("command", [["ls"], ["info"], ["rm"], ["load", "x.nc"]])
def test_debug_after_the_subcommand(command, seaweedfs):
    """issue 14 item 7: --debug is accepted after any subcommand and shows a traceback."""
    proc = run(*command, "s3://no-such-bucket-h5dask/x.h5", "--debug", *_opts(seaweedfs),
               check=False)
    assert "No such option" not in proc.stderr
    assert "Traceback" in proc.stderr


def test_load_names_a_source_that_is_not_hdf5(tmp_path, s3_bucket_url, seaweedfs):
    """issue 14 item 8."""
    classic = tmp_path / "classic.nc"
    classic.write_bytes(b"CDF\x01" + bytes(60))
    text = tmp_path / "notes.nc"
    text.write_text("just text")
    proc = run("load", str(classic), f"{s3_bucket_url}/c.h5", *_opts(seaweedfs), check=False)
    assert proc.returncode == 1 and str(classic) in proc.stderr
    assert "netCDF-3" in proc.stderr and "nccopy -k nc4" in proc.stderr
    proc = run("load", str(text), f"{s3_bucket_url}/t.h5", *_opts(seaweedfs), check=False)
    assert proc.returncode == 1 and str(text) in proc.stderr and "not an HDF5" in proc.stderr
    assert "signature" not in proc.stderr


def test_http_url_and_plain_hdf5_file_as_domain(shared_data, tmp_path):
    """issue 14 item 8: an http:// domain URL and a plain netCDF-4 file get h5dask errors;
    an unreachable http:// source is named."""
    proc = run("ls", "http://example.invalid/home/x.h5", check=False)
    assert proc.returncode == 1 and "s3://" in proc.stderr and "file://" in proc.stderr
    assert "InvalidUrl" not in proc.stderr
    proc = run("load", "http://127.0.0.1:9/x.nc", f"file://{tmp_path}/x.h5", check=False)
    assert proc.returncode in (1, 3) and "'http://127.0.0.1:9/x.nc'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "x.h5").exists()
    nc = shared_data / "daily_data.nc"
    proc = run("ls", f"file://{nc}", check=False)
    assert proc.returncode == 3 and "engine='h5netcdf'" in proc.stderr
    assert "h5dask load" in proc.stderr


def test_load_messages_overwrite_and_local_link(shared_data, s3_bucket_url, seaweedfs,
                                                tmp_path):
    """issue 14 item 9."""
    src = str(shared_data / "daily_data.nc")
    url = f"{s3_bucket_url}/d.h5"
    run("load", src, url, "--no-progress", *_opts(seaweedfs))
    again = run("load", src, url, "--no-progress", *_opts(seaweedfs), check=False)
    assert again.returncode == 1 and "--overwrite" in again.stderr
    bucket = tmp_path / "bucket"  # a local file linked from inside the bucket root
    (bucket / "files").mkdir(parents=True)
    shutil.copy(src, bucket / "files" / "d.nc")
    linked = run("load", "--link", str(bucket / "files" / "d.nc"), f"file://{bucket}/l.h5",
                 "--bucket-root", str(bucket), "--no-progress")
    assert "warning:" in linked.stderr and "readable only where that path exists" in \
        linked.stderr
    assert "a local path works too" in " ".join(run("load", "--help").stdout.split())


def test_info_prints_values_as_text_and_linked_files(shared_data, tmp_path):
    """issue 14 item 10: no numpy reprs; a linked domain says where its chunks are."""
    bucket = tmp_path / "bucket"
    (bucket / "files").mkdir(parents=True)
    src = bucket / "files" / "daily.nc"
    shutil.copy(shared_data / "daily_data.nc", src)
    url = f"file://{bucket}/d.h5"
    run("load", "--link", str(src), url, "--bucket-root", str(bucket), "--no-progress")
    out = run("info", url).stdout
    assert '@experiment_id = "historical"' in out
    assert "np.bytes_" not in out and "array(" not in out
    assert f"linked:  chunks inside {src.as_uri()}" in out
    out = run("info", url, "--path", "/ta").stdout
    assert f"linked:  chunks inside {src.as_uri()}" in out


def test_info_into_a_closed_pipe_exits_quietly(domain, seaweedfs):
    """issue 14 item 10: `h5dask info ... | head` ends without 'Broken pipe' (exit 0)."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first line
    try:
        proc = subprocess.run([H5DASK, "info", domain, *_opts(seaweedfs)], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
    finally:
        os.close(write_end)
    assert proc.returncode == 0 and "Broken pipe" not in proc.stderr, proc.stderr


def test_unknown_storage_option_is_named_with_the_valid_ones(tmp_path):
    proc = run("ls", str(tmp_path / "x.h5"), "-o", "bogus=1", "-o", "max_concurency=3",
               check=False)
    assert proc.returncode != 0
    assert "unknown file:// storage_options ['bogus', 'max_concurency']" in proc.stderr
    assert "'max_concurrency'" in proc.stderr and "Traceback" not in proc.stderr
