"""The import graph of ``h5dask/`` runs one way (issue 11 item 3): the format and the
stores import nothing above them, reading a dataset (linked layouts included) never
imports the loader, and ingest and xarray do not import each other."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "h5dask"

#: modules (or packages) that a layer must not import, whatever the import's place
ABOVE = {
    "h5dask.format": ("h5dask.storage", "h5dask.chunkio", "h5dask.sources", "h5dask.domain",
                      "h5dask.file", "h5dask.ingest", "h5dask.xarray", "h5dask.active"),
    "h5dask.storage": ("h5dask.chunkio", "h5dask.sources", "h5dask.domain", "h5dask.file",
                       "h5dask.ingest", "h5dask.xarray", "h5dask.active"),
    "h5dask.chunkio": ("h5dask.sources", "h5dask.domain", "h5dask.file", "h5dask.ingest",
                       "h5dask.xarray", "h5dask.active"),
    "h5dask.sources": ("h5dask.file", "h5dask.ingest", "h5dask.xarray", "h5dask.active"),
    "h5dask.linked_files": ("h5dask.sources", "h5dask.file", "h5dask.ingest",
                            "h5dask.xarray", "h5dask.active"),
    "h5dask.file": ("h5dask.ingest", "h5dask.xarray", "h5dask.active"),
    "h5dask.xarray": ("h5dask.ingest",),
    "h5dask.ingest": ("h5dask.xarray", "h5dask.active"),
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every h5dask module the code of ``module`` imports, at the top or in a function."""
    package = module if is_package else module.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(source, module)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            out.add(target)
            out.update(f"{target}.{alias.name}" for alias in node.names)
    return {name for name in out if name.split(".")[0] == "h5dask"}


def _back_arrows(module: str, imports: set[str]) -> list[str]:
    layer = _layer(module)
    if layer is None:
        return []
    return [f"{module} imports {name}" for name in sorted(imports)
            if any(_within(name, up) for up in ABOVE[layer])]


def _layer(module: str) -> str | None:
    return next((layer for layer in ABOVE if module == layer
                 or module.startswith(layer + ".")), None)


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_no_import_runs_back_up() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        wrong += _back_arrows(module, _imports(path.read_text(), module,
                                               path.name == "__init__.py"))
    assert not wrong


def test_the_check_sees_relative_and_lazy_imports() -> None:
    """The test above fails on a back-arrow like the old ``file`` -> ``ingest`` one."""
    old_file = "def _linked(s, m, n):\n    from .ingest.linked import linked_chunk_refs\n"
    assert _back_arrows("h5dask.file", _imports(old_file, "h5dask.file")) == [
        "h5dask.file imports h5dask.ingest.linked",
        "h5dask.file imports h5dask.ingest.linked.linked_chunk_refs"]
    assert _back_arrows("h5dask.format.x", _imports("from ..storage import sync",
                                                    "h5dask.format.x"))
    assert not _back_arrows("h5dask.ingest.load", _imports("from ..file import File",
                                                           "h5dask.ingest.load"))


@pytest.mark.parametrize("code", [
    "import h5dask.file",
    "import h5dask.xarray.backend",
])
def test_reading_never_imports_the_loader(code: str) -> None:
    out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\n"
                          "print(sorted(m for m in sys.modules if m.startswith('h5dask.')))"],
                         capture_output=True, text=True, check=True, timeout=120)
    assert "h5dask.ingest" not in out.stdout
    assert "h5dask.sources" in out.stdout
