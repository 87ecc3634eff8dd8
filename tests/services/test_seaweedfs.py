"""The SeaweedFS launcher: a real S3 server that starts, serves and stops."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from h5dask.services.seaweedfs import SeaweedFS


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_fixture_put_get(seaweedfs: SeaweedFS, s3_bucket_url: str) -> None:
    client = seaweedfs.s3_client()
    bucket, prefix = s3_bucket_url.removeprefix("s3://").split("/", 1)
    client.put_object(Bucket=bucket, Key=f"{prefix}/hello.bin", Body=b"\x00hello\xff")
    got = client.get_object(Bucket=bucket, Key=f"{prefix}/hello.bin")["Body"].read()
    assert got == b"\x00hello\xff"
    listed = client.list_objects_v2(Bucket=bucket, Prefix=prefix + "/")
    assert [o["Key"] for o in listed["Contents"]] == [f"{prefix}/hello.bin"]


def test_fixture_options(seaweedfs: SeaweedFS, storage_options: dict) -> None:
    assert storage_options == {
        "key": seaweedfs.access_key,
        "secret": seaweedfs.secret_key,
        "client_kwargs": {"endpoint_url": seaweedfs.endpoint, "region_name": "us-east-1"},
    }
    assert seaweedfs.env()["AWS_ENDPOINT_URL"] == seaweedfs.endpoint
    seaweedfs.create_bucket("h5dask-test")  # idempotent


def test_two_instances_and_stop(tmp_path) -> None:
    with SeaweedFS(access_key="k-one", secret_key="s-one") as one:
        two = SeaweedFS(tmp_path / "two").start()  # a given data dir
        try:
            assert one.endpoint != two.endpoint
            for server, body in ((one, b"one"), (two, b"two")):
                server.create_bucket("bucket-x")
                server.s3_client().put_object(Bucket="bucket-x", Key="k", Body=body)
            for server, body in ((one, b"one"), (two, b"two")):
                got = server.s3_client().get_object(Bucket="bucket-x", Key="k")["Body"].read()
                assert got == body
            pid_two = two.pid
        finally:
            two.stop(timeout=2)  # default for a given dir: 30 s of graceful shutdown
        assert pid_two is not None and not _pid_alive(pid_two)
        assert (tmp_path / "two" / "weed.log").exists()  # a given dir is kept
        assert one.running
        pid_one, dir_one = one.pid, one.data_dir
    assert pid_one is not None and not _pid_alive(pid_one)
    assert dir_one is not None and not dir_one.exists()  # a temporary dir is removed


def test_public_buckets_are_read_without_credentials() -> None:
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with SeaweedFS(public_buckets=("open",)) as server:
        for bucket in ("open", "closed"):
            server.create_bucket(bucket)
            server.s3_client().put_object(Bucket=bucket, Key="k", Body=bucket.encode())
        with opener.open(f"{server.endpoint}/open/k", timeout=10) as resp:
            assert resp.read() == b"open"
        with pytest.raises(urllib.error.HTTPError) as info:
            opener.open(f"{server.endpoint}/closed/k", timeout=10)
        assert info.value.code == 403
        got = server.s3_client().get_object(Bucket="closed", Key="k")["Body"].read()
        assert got == b"closed"  # the keys still read everything


def test_a_temporary_store_is_killed_without_waiting(monkeypatch) -> None:
    """weed ignores SIGTERM for 10-30 s: a temporary store (thrown away) is killed at
    once, where every test, notebook and demo that stopped one used to wait 2 s for
    nothing; a given ``data_dir`` still gets its graceful shutdown."""
    import h5dask.services.seaweedfs as module

    graces: list[float] = []
    terminate = module.terminate_group

    def recording(pgid, alive, timeout=2.0):  # noqa: ANN001, ANN202
        graces.append(timeout)
        terminate(pgid, alive, timeout)

    monkeypatch.setattr(module, "terminate_group", recording)
    with SeaweedFS() as server:
        pid, data_dir = server.pid, server.data_dir
    assert graces == [0.0]
    assert pid is not None and not _pid_alive(pid)
    assert data_dir is not None and not data_dir.exists()


def test_restart_same_object() -> None:
    server = SeaweedFS().start()
    first_pid = server.pid
    server.stop()
    assert not server.running and server.pid is None
    with pytest.raises(RuntimeError):
        server.endpoint  # noqa: B018
    server.start()  # new ports, new temporary dir
    try:
        assert server.running and server.pid != first_pid
        server.create_bucket("again")
    finally:
        server.stop()


@pytest.mark.parametrize("ending", ["exit", "uncaught error", "killed"])
def test_a_server_never_stopped_is_stopped_at_exit(ending: str) -> None:
    """A notebook or script that starts SeaweedFS and never stops it (a cell failed, the
    kernel was shut down or killed) leaves no ``weed`` process and no temporary directory
    behind."""
    script = (
        "from h5dask.services.seaweedfs import SeaweedFS\n"
        "s3 = SeaweedFS().start()\n"
        "print(s3.pid, s3.data_dir, flush=True)\n"
        + {"exit": "", "uncaught error": "raise RuntimeError('a failing cell')\n",
           "killed": "import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n"}[ending]
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    expected = {"exit": 0, "uncaught error": 1, "killed": -9}[ending]
    assert proc.returncode == expected, proc.stderr
    pid_text, data_dir = proc.stdout.split()
    pid = int(pid_text)
    deadline = time.monotonic() + 15
    while (_pid_alive(pid) or Path(data_dir).exists()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _pid_alive(pid), "weed outlived the process that started it"
    assert not Path(data_dir).exists()


def test_stop_ends_the_whole_process_group() -> None:
    with SeaweedFS() as server:
        pgid = os.getpgid(server.pid)
        assert pgid == server.pid != os.getpgid(0)  # weed leads a group of its own
    with pytest.raises(ProcessLookupError):
        os.killpg(pgid, 0)
