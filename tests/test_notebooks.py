"""The notebooks (issue 14 items 11 and 12): they run top to bottom, their stored outputs
are current, and they leave no process or temporary folder behind, also when a cell fails.

What "the stored outputs are current" compares, cell by cell (code cells only):

- the kinds of outputs each cell produces, in order: ``stream`` (stdout), ``execute_result``
  and ``display_data`` with their MIME types (e.g. ``image/png`` for a plot, ``text/html``
  for a Dataset), and no ``error``. Consecutive stdout chunks count as one output; stderr
  (warnings, logging) is left out, in the stored notebooks as in the comparison.
- the text of cells tagged ``deterministic`` (cell metadata ``tags``): their stdout and
  ``text/plain`` results must be identical. Other cells print run-dependent figures
  (endpoints, random names, timings, throughput) whose text is not compared.

After changing a notebook or what it prints, store fresh outputs with
``.venv/bin/python tests/test_notebooks.py`` (it executes the notebooks in place; without
AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL set they start their own SeaweedFS).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
psutil = pytest.importorskip("psutil")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
DETERMINISTIC = "deterministic"
AWS_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
                 "AWS_DEFAULT_REGION", "AWS_PROFILE")


def execute(nb: Any, cwd: Path, timeout: int = 600) -> Any:
    """Run ``nb`` in a fresh python3 kernel (inheriting this process's environment) and
    return it with its outputs normalised as they are stored."""
    client = nbclient.NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                     record_timing=False,
                                     resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return normalise(nb)


def normalise(nb: Any) -> Any:
    """Drop stderr, join consecutive stdout chunks, drop per-run execution metadata."""
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        outputs: list[Any] = []
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stderr":
                continue
            if (out.output_type == "stream" and outputs
                    and outputs[-1].output_type == "stream"):
                outputs[-1].text += out.text
                continue
            outputs.append(out)
        cell.outputs = outputs
    return nb


def signature(nb: Any) -> list[list[tuple]]:
    """Per code cell: the kinds of its outputs, and their text if the cell is tagged
    deterministic (see the module docstring)."""
    cells = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        exact = DETERMINISTIC in cell.metadata.get("tags", [])
        kinds = []
        for out in cell.outputs:
            if out.output_type == "stream":
                kinds.append(("stream", out.name, out.text if exact else None))
            elif out.output_type in ("execute_result", "display_data"):
                text = out.data.get("text/plain") if exact else None
                kinds.append((out.output_type, tuple(sorted(out.data)), text))
            else:
                kinds.append((out.output_type, out.get("ename"), out.get("evalue")))
        cells.append(kinds)
    return cells


def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A TMPDIR of the test's own, so leftovers of this notebook (not of other tests or
    sessions on the machine) can be found: the folder and every process inheriting it."""
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    return tmpdir


def _leftovers(tmpdir: Path, wait: float = 20.0) -> tuple[list[str], list[str]]:
    """Processes started under ``tmpdir`` (the kernel's TMPDIR) still alive after ``wait``
    seconds, and SeaweedFS folders left in it."""
    deadline = time.monotonic() + wait
    while True:
        alive = []
        for proc in psutil.process_iter(["pid", "cmdline"]):
            try:
                if proc.environ().get("TMPDIR") == str(tmpdir):
                    alive.append(" ".join(proc.info["cmdline"] or [])[:200])
            except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
        folders = sorted(p.name for p in tmpdir.glob("h5dask-weed-*"))
        if (not alive and not folders) or time.monotonic() > deadline:
            return alive, folders
        time.sleep(0.5)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_stored_outputs_are_current(path, seaweedfs, monkeypatch,
                                                      tmp_path):
    """Against the fixtures' SeaweedFS, named by AWS_ENDPOINT_URL_S3 while
    AWS_ENDPOINT_URL points at a closed port: the notebook must honour the precedence."""
    tmpdir = _isolated_env(monkeypatch, tmp_path)
    seaweedfs.create_bucket("notebooks")
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)  # the kernel inherits the environment
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweedfs.endpoint)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # discard: nothing listens
    monkeypatch.setenv("H5DASK_NOTEBOOK_BUCKET", "notebooks")
    stored = nbformat.read(path, as_version=4)
    assert any(cell.get("outputs") for cell in stored.cells if cell.cell_type == "code"), \
        "notebooks are committed executed, with outputs (see the module docstring)"
    assert any("image/png" in out.get("data", {}) for cell in stored.cells
               if cell.cell_type == "code" for out in cell.outputs), "a plot is stored"
    executed = execute(nbformat.read(path, as_version=4), tmp_path)
    assert signature(executed) == signature(stored), \
        f"stored outputs of {path.name} are stale: run `.venv/bin/python {__file__}`"
    assert _leftovers(tmpdir) == ([], [])


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_a_failing_cell_leaves_nothing_behind(path, monkeypatch, tmp_path):
    """Run as a newcomer would (no AWS endpoint: the notebook starts its own SeaweedFS),
    with a cell failing just before the clean-up cell: no process and no folder remain."""
    tmpdir = _isolated_env(monkeypatch, tmp_path)
    for name in AWS_VARIABLES + ("H5DASK_NOTEBOOK_BUCKET",):
        monkeypatch.delenv(name, raising=False)
    nb = nbformat.read(path, as_version=4)
    last_code = max(i for i, cell in enumerate(nb.cells) if cell.cell_type == "code")
    nb.cells.insert(last_code, nbformat.v4.new_code_cell(
        "raise RuntimeError('a cell failed on purpose')"))
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="on purpose"):
        execute(nb, tmp_path)
    assert _leftovers(tmpdir) == ([], [])


def test_quickstart_uses_your_aws_bucket_without_an_endpoint(monkeypatch):
    """On AWS itself no endpoint is set: a bucket named by H5DASK_NOTEBOOK_BUCKET is used
    as it is, with no embedded SeaweedFS started in its place."""
    import subprocess

    nb = nbformat.read(NOTEBOOK_DIR / "quickstart.ipynb", as_version=4)
    setup = next(c.source for c in nb.cells if c.cell_type == "code")
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("H5DASK_NOTEBOOK_BUCKET", "my-bucket")
    probe = setup + "\nimport sys\nprint(BUCKET, 'h5dask.services.seaweedfs' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=120, check=True).stdout
    assert out.splitlines() == ["S3 endpoint: AWS", "my-bucket False"]


def test_servers_are_started_in_with_blocks_not_by_hand():
    """Context managers are used as such: a server entered by hand is never left."""
    for path in NOTEBOOKS:
        source = "\n".join(cell.source for cell in nbformat.read(path, as_version=4).cells)
        assert "__enter__" not in source and "__exit__" not in source, path.name
        assert "load_file" not in source, f"{path.name}: use the public h5dask.load"


def _refresh(paths: list[Path]) -> None:
    """Execute the notebooks in place and store their normalised outputs."""
    for path in paths:
        nb = execute(nbformat.read(path, as_version=4), path.parent)
        nbformat.write(nb, path)
        print(f"stored the outputs of {path}")


if __name__ == "__main__":
    _refresh([Path(p) for p in sys.argv[1:]] or NOTEBOOKS)

