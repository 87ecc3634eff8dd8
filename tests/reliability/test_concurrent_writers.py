"""Concurrent writers (see CONCURRENCY.md): 4 processes writing different domains, or
different chunks of one dataset, at the same time all succeed with exactly their data;
4 processes rewriting the same chunk leave exactly one writer's chunk (last writer
wins, never a mix)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr

import h5dask

HERE = Path(__file__).resolve().parent
PROJECT_ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from concurrent_writers import CHUNK, domain_data, rows_data  # noqa: E402

WRITERS = 4


def run_writers(jobs: list[dict], tmp_path: Path) -> list[dict]:
    plan_path = tmp_path / f"plan-{uuid.uuid4().hex[:6]}.json"
    plan_path.write_text(json.dumps({"jobs": jobs}))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT),
                                                    env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run([sys.executable, str(HERE / "concurrent_writers.py"), str(plan_path)],
                          capture_output=True, text=True, timeout=300, env=env,
                          stdin=subprocess.DEVNULL, cwd=PROJECT_ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(results) == len(jobs)
    assert all(r["exit"] == 0 for r in results), (results, proc.stderr[-4000:])
    return results


def make_place(request: Any, kind: str, tmp_path: Path) -> tuple[str, dict]:
    """A fresh folder URL and its storage options, on SeaweedFS or a local directory."""
    if kind == "s3":
        seaweedfs = request.getfixturevalue("seaweedfs")
        return (f"s3://h5dask-test/reliability/concurrent-{uuid.uuid4().hex[:8]}",
                seaweedfs.storage_options())
    root = tmp_path / "bucket"
    (root / "db").mkdir(parents=True)
    return root.as_uri() + "/home", {}


@pytest.fixture
def place(request: Any, tmp_path: Path) -> tuple[str, dict]:
    """SeaweedFS (the real target); local directories in the slow variants."""
    return make_place(request, "s3", tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("case", ["domains", "chunks", "same_chunk"])
def test_writers_on_a_local_directory_slow(request: Any, tmp_path: Path, case: str) -> None:
    place = make_place(request, "file", tmp_path)
    {"domains": test_writers_of_different_domains,
     "chunks": test_writers_of_different_chunks_of_one_dataset,
     "same_chunk": test_writers_of_the_same_chunk_last_writer_wins}[case](place, tmp_path)


def test_writers_of_different_domains(place: tuple[str, dict], tmp_path: Path) -> None:
    base, options = place
    jobs = [{"kind": "domain", "url": f"{base}/w{i}.h5", "options": options, "seed": i}
            for i in range(WRITERS)]
    run_writers(jobs, tmp_path)
    for i in range(WRITERS):
        got = xr.open_dataset(f"{base}/w{i}.h5", engine="h5cloud",
                              storage_options=options).load()
        xr.testing.assert_identical(got, domain_data(i).compute())


def test_writers_of_different_chunks_of_one_dataset(place: tuple[str, dict],
                                                    tmp_path: Path) -> None:
    base, options = place
    url = f"{base}/shared.h5"
    rows, cols = WRITERS * 3 * CHUNK[0], 2 * CHUNK[1]
    with h5dask.File(url, "w", storage_options=options) as f:
        f.create_dataset("x", shape=(rows, cols), dtype="f8", chunks=CHUNK, fillvalue=-1.0,
                         compression="gzip")
    per = rows // WRITERS
    jobs = [{"kind": "rows", "url": url, "options": options, "start": i * per,
             "stop": (i + 1) * per} for i in range(WRITERS)]
    run_writers(jobs, tmp_path)
    with h5dask.File(url, storage_options=options) as f:
        np.testing.assert_array_equal(f["x"][...], rows_data(0, rows, cols))


def test_writers_of_the_same_chunk_last_writer_wins(place: tuple[str, dict],
                                                   tmp_path: Path) -> None:
    base, options = place
    url = f"{base}/same.h5"
    with h5dask.File(url, "w", storage_options=options) as f:
        f.create_dataset("x", shape=CHUNK, dtype="f8", chunks=CHUNK, compression="gzip")
    jobs = [{"kind": "same_chunk", "url": url, "options": options, "value": i + 1,
             "repeat": 10} for i in range(WRITERS)]
    run_writers(jobs, tmp_path)
    with h5dask.File(url, storage_options=options) as f:
        chunk = f["x"][...]
    values = set(np.unique(chunk).tolist())
    assert len(values) == 1 and values <= {1.0, 2.0, 3.0, 4.0}, values  # one whole chunk
