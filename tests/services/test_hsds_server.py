"""The HSDS fixtures: a real HSDS writes a small domain into POSIX and S3 storage."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from servers.hsds import HSDSServer
from test_seaweedfs import _pid_alive

h5pyd = pytest.importorskip("h5pyd")

pytestmark = pytest.mark.hsds


def _write_and_check(server: HSDSServer, name: str) -> None:
    domain = f"/home/{server.username}/{name}"
    data = np.arange(40 * 30, dtype="f4").reshape(40, 30)
    with h5pyd.File(domain, "w", **server.h5pyd_kwargs()) as f:
        grp = f.create_group("a/b")
        grp.attrs["answer"] = 42
        dset = grp.create_dataset("x", data=data, chunks=(20, 15), compression="gzip")
        dset.attrs["units"] = "K"
    key_domain = domain.lstrip("/") + "/.domain.json"
    keys = server.wait_for_keys(
        [key_domain, "db/*/.group.json", "db/*/g/*/.group.json", "db/*/d/*/.dataset.json"]
        + [f"db/*/d/*/{i}_{j}" for i in range(2) for j in range(2)],
        domain=domain,
    )
    domain_json = json.loads(server.read_key(key_domain))
    root = domain_json["root"]
    assert root.startswith("g-")
    root_dir = "db/" + root[2:19]  # "g-xxxxxxxx-xxxxxxxx-..." -> "xxxxxxxx-xxxxxxxx"
    assert f"{root_dir}/.group.json" in keys
    dset_keys = [k for k in keys if k.startswith(root_dir) and k.endswith(".dataset.json")]
    assert len(dset_keys) == 1
    dset_json = json.loads(server.read_key(dset_keys[0]))
    assert dset_json["shape"]["dims"] == [40, 30]
    assert dset_json["attributes"]["units"]["value"] == "K"
    # reading it back through the server gives the data
    with h5pyd.File(domain, "r", **server.h5pyd_kwargs()) as f:
        np.testing.assert_array_equal(f["a/b/x"][...], data)
        assert f["a/b"].attrs["answer"] == 42


def test_hsds_posix_writes_storage(hsds_posix: HSDSServer) -> None:
    assert hsds_posix.storage == "posix"
    _write_and_check(hsds_posix, "fixture-posix.h5")
    assert (hsds_posix.root_dir / hsds_posix.bucket / "home" / "admin").is_dir()


def test_hsds_s3_writes_storage(hsds_s3: HSDSServer, seaweedfs) -> None:
    assert hsds_s3.storage == "s3" and hsds_s3.s3_endpoint == seaweedfs.endpoint
    _write_and_check(hsds_s3, "fixture-s3.h5")
    listed = seaweedfs.s3_client().list_objects_v2(Bucket="hsds-test", Prefix="home/admin/")
    assert any(o["Key"].endswith("fixture-s3.h5/.domain.json") for o in listed["Contents"])


def test_two_hsds_at_once_and_stop(hsds_posix: HSDSServer, tmp_path) -> None:
    """A second server next to the session one; stop() ends every node."""
    import os

    other = HSDSServer(root_dir=tmp_path, bucket="other").start()
    try:
        assert other.endpoint != hsds_posix.endpoint
        assert set(other.dn_ports).isdisjoint(hsds_posix.dn_ports)
        other.make_home_folders()
        assert "home/admin/.domain.json" in other.list_keys()
        pid = other.pid
    finally:
        other.stop()
    assert pid is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    # the session server is unaffected
    h5pyd.Folder("/home/admin/", mode="r", **hsds_posix.h5pyd_kwargs())


@pytest.mark.parametrize("ending", ["exit", "killed"])
def test_nodes_never_stopped_are_stopped_when_their_starter_ends(ending: str,
                                                                 tmp_path: Path) -> None:
    """A test run or script that started HSDS and ended without ``stop()`` (interrupted,
    killed) leaves no node process and no temporary directory behind."""
    script = (
        "from h5dask.services.hsds import HSDSServer\n"
        f"server = HSDSServer(bucket='b', root_dir={str(tmp_path / 'root')!r}).start()\n"
        "print(server.work_dir, *(p.pid for p in server._procs), flush=True)\n"
        + {"exit": "", "killed": "import os, signal; os.kill(os.getpid(), signal.SIGKILL)\n"
           }[ending]
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=180)
    assert proc.returncode == {"exit": 0, "killed": -9}[ending], proc.stderr
    work_dir, *pids = proc.stdout.split()
    assert len(pids) >= 2  # a service node and a data node
    deadline = time.monotonic() + 30
    while ((any(_pid_alive(int(p)) for p in pids) or Path(work_dir).exists())
           and time.monotonic() < deadline):
        time.sleep(0.1)
    assert not [p for p in pids if _pid_alive(int(p))], "HSDS nodes outlived their starter"
    assert not Path(work_dir).exists()
