"""Run PyActiveStorage's own tests against h5dask's active-storage server and SeaweedFS.

The real client's authors test it against MinIO and a Reductionist container (their
S3/Minio workflow). Here the same tests run against a SeaweedFS with their keys and
buckets and ``python -m h5dask.active.server`` with its default limits::

    git clone https://github.com/NCAS-CMS/PyActiveStorage /tmp/pas
    PYTHONPATH=$PWD .venv/bin/python ci/pyactivestorage/run.py /tmp/pas

Four pytest runs (their code is run from the checkout, never copied here):

A. their suite with ``USE_S3 = True`` (as their workflow appends it to the config);
B. the same with their version-1 (client-side) S3 reads sent through the server;
C. ``tests/test_real_s3*.py``, which read JASMIN's store and Reductionist, pointed at
   SeaweedFS (their small test files in the buckets they name, ``bnl`` and
   ``esmvaltool-zarr`` readable without keys as there) and this server; the tests of
   3 GB and 17 GB files that are not in their repository are left out;
D. ``tests/s3_exploratory/test_s3_reduction.py``.

``tests/unit/test_mock_s3.py`` (moto) and ``tests/test_real_https.py`` (ESGF files of
75 MB and more) are not run. Exit status 1 when a run failed; the server's log is
written to ``server.log`` in the temporary directory it names.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from servers.active import start_active_server, stop_process  # noqa: E402

from h5dask.services.seaweedfs import SeaweedFS  # noqa: E402

KEY = SECRET = "minioadmin"  # their config's keys
PUBLIC = ("bnl", "esmvaltool-zarr")  # their anonymous tests read these
JASMIN_S3 = "https://uor-aces-o.s3-ext.jc.rl.ac.uk"
JASMIN_REDUCTIONIST = "https://reductionist.jasmin.ac.uk/"
#: tests of files that live only at JASMIN (3 GB and 17 GB)
ABSENT_FILES = "not test_s3_dataset and not test_no_axis and not test_axis_0"


def real_s3_tests(checkout: Path, out: Path, s3: str, active: str) -> None:
    """tests/test_real_s3*.py with JASMIN's endpoints and keys replaced by ours."""
    for name in ("test_real_s3.py", "test_real_s3_with_axes.py"):
        text = (checkout / "tests" / name).read_text()
        text = text.replace(JASMIN_S3, s3).replace(JASMIN_REDUCTIONIST, active + "/")
        text = re.sub(r"'key': \"[^\"]*\"", f"'key': \"{KEY}\"", text)
        text = re.sub(r"'secret':\s*\"[^\"]*\"", f"'secret': \"{SECRET}\"", text)
        (out / name).write_text(text)


def upload(s3: SeaweedFS, checkout: Path) -> None:
    client = s3.s3_client()
    for bucket in ("pyactivestorage", "repacking", *PUBLIC):
        s3.create_bucket(bucket)
    for bucket in ("repacking", *PUBLIC):
        for name in ("CMIP6-test.nc", "test1.nc"):
            data = (checkout / "tests" / "test_data" / name).read_bytes()
            client.put_object(Bucket=bucket, Key=name, Body=data)


def pytest(checkout: Path, args: list[str], env: dict[str, str]) -> int:
    command = [sys.executable, "-m", "pytest", "-p", "pas_plugin", "-p", "no:cacheprovider",
               "--noconftest", "-o", "addopts=", "-q", "-rfEsxX", *args]
    print("$", " ".join(command), flush=True)
    return subprocess.run(command, cwd=checkout, env=env, timeout=1800).returncode


def main(checkout: Path) -> int:
    work = Path(tempfile.mkdtemp(prefix="h5dask-pas-"))
    with SeaweedFS(access_key=KEY, secret_key=SECRET, public_buckets=PUBLIC) as s3:
        upload(s3, checkout)
        proc, active = start_active_server(work / "server.log",
                                           ["--allow-upstream", s3.endpoint])
        try:
            real_s3_tests(checkout, work, s3.endpoint, active)
            paths = [str(ROOT), str(Path(__file__).parent), str(checkout / "tests"),
                     str(checkout / "tests" / "s3_exploratory")]
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths),
                   "H5DASK_PA_ENDPOINTS": json.dumps(
                       {"s3": s3.endpoint, "active": active, "key": KEY, "secret": SECRET})}
            suite = ["tests", "--ignore=tests/s3_exploratory",
                     "--ignore=tests/unit/test_mock_s3.py", "--ignore=tests/test_real_https.py",
                     "--ignore=tests/test_real_s3.py", "--ignore=tests/test_real_s3_with_axes.py"]
            codes = {
                "A suite": pytest(checkout, suite, env),
                "B suite, reads through the server": pytest(
                    checkout, suite, {**env, "H5DASK_PA_FORCE_V2": "1"}),
                "C test_real_s3*": pytest(checkout, [str(work), "--rootdir", str(checkout),
                                                     "-k", ABSENT_FILES], env),
                "D s3_exploratory": pytest(
                    checkout, ["tests/s3_exploratory/test_s3_reduction.py"], env),
            }
        finally:
            stop_process(proc)
    for run, code in codes.items():
        print(f"{run}: {'passed' if code == 0 else f'FAILED (pytest exit {code})'}")
    print(f"server log: {work / 'server.log'}")
    return int(any(codes.values()))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1]).resolve()))
