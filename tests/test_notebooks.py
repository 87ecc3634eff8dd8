"""The notebooks run top to bottom against the SeaweedFS of the test fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, seaweedfs, monkeypatch, tmp_path):
    seaweedfs.create_bucket("notebooks")
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)  # the kernel inherits the environment
    monkeypatch.setenv("H5DASK_NOTEBOOK_BUCKET", "notebooks")
    nb = nbformat.read(path, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells if cell.cell_type == "code"), \
        "notebooks are committed with outputs stripped"
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for cell in nb.cells if cell.cell_type == "code"
              for o in cell.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
