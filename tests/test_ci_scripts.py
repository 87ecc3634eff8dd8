"""ci/setup.sh tells a newcomer what it does (issue 14 item 2): the slow first run says
it is creating .venv and shows pip's progress; the optional ``hey`` is announced."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ("bash", "sha256sum", "cut", "cat", "id", "mkdir", "touch", "dirname", "cp")

FAKE_PYTHON = """#!/bin/bash
# stands in for python3 and .venv/bin/python: records its arguments, creates the venv
echo "$0 $*" >> "$CALLS"
if [ "$1" = "--version" ]; then echo "Python 3.99"; fi
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    mkdir -p "$3/bin" && cp "$0" "$3/bin/python"
fi
"""


def _run_setup(tmp_path: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    repo, bin_dir = tmp_path / "clone", tmp_path / "bin"  # bin: no apt-get, no hey
    if not repo.exists():
        (repo / "ci").mkdir(parents=True)
        shutil.copy(ROOT / "ci" / "setup.sh", repo / "ci" / "setup.sh")
        shutil.copy(ROOT / "pyproject.toml", repo / "pyproject.toml")
        bin_dir.mkdir()
        for tool in TOOLS:
            os.symlink(shutil.which(tool), bin_dir / tool)
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    env = {"PATH": str(bin_dir), "PYTHON": str(fake), "CALLS": str(calls)}
    proc = subprocess.run(["bash", str(repo / "ci" / "setup.sh")], capture_output=True,
                          text=True, env=env, timeout=60)
    return proc, calls.read_text().splitlines()


def test_first_run_says_what_it_does_and_shows_pip(tmp_path):
    proc, calls = _run_setup(tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "creating .venv" in proc.stderr and "first run takes a few minutes" in proc.stderr
    install = [c for c in calls if "install -e .[test]" in c]
    assert install and " -q" not in install[0]  # pip's own progress is shown
    assert "'hey' is not installed (optional" in proc.stderr


def test_second_run_is_silent(tmp_path):
    _run_setup(tmp_path)
    proc, calls = _run_setup(tmp_path)
    assert proc.returncode == 0 and proc.stderr == ""
