"""``h5dask demo`` end to end through the console script, and its clean Ctrl-C exit."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

H5DASK = shutil.which("h5dask", path=str(Path(sys.executable).parent)) or "h5dask"


def _children_named(proc: psutil.Process, name: str) -> list[psutil.Process]:
    return [c for c in proc.children(recursive=True) if name in " ".join(c.cmdline())]


def test_demo_runs_to_the_end(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([H5DASK, "demo", "--size-mib", "16", "--output", str(out)],
                          capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = proc.stdout
    for line in ("load CMIP6_IPSL-CM6A-LR_tas.nc", "monthly climatology",
                 "global mean, computed locally", "global mean, pushed down", "map saved"):
        assert line in report
    png = out / "h5dask-demo-map.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_demo_stops_everything_on_ctrl_c(tmp_path):
    proc = subprocess.Popen([H5DASK, "demo", "--size-mib", "16", "--output", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    try:
        deadline = time.monotonic() + 120
        weeds: list[psutil.Process] = []
        while not weeds:
            assert time.monotonic() < deadline and proc.poll() is None, "demo did not start"
            weeds = _children_named(parent, "weed")
            time.sleep(0.2)
        time.sleep(1.0)
        children = parent.children(recursive=True)
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(120)
        assert proc.returncode == 130, proc.stdout.read()
        gone, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, [p.cmdline() for p in alive]
    finally:
        if proc.poll() is None:
            proc.kill()
