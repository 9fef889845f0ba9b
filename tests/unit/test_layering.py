"""The architecture, read from the folders (not from a hand-kept list):

- ``monitors/core``: pure computations. Imports nothing from ``monitors.adapters``, ``monitors.demo`` or ``flows``,
  no I/O library, and never opens a file; the only other module it may use is ``monitors.config`` (the settings
  schema: plain pydantic models, read from disk only by the CLI).
- ``monitors/adapters``: the outside world; never imports ``flows`` or ``monitors.demo``.
- ``monitors/demo``: only the demo flows (``flows/demo*.py``) and the simulator (``flows/simulate.py``, which
  replays the shipped human text and refits the demo's n-gram generator on it) import it.
- nothing under ``monitors/`` imports ``flows`` or Prefect.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IO_LIBRARIES = {"mlflow", "prefect", "sqlalchemy", "great_expectations", "evidently", "fsspec", "pyarrow", "torch",
                "transformers", "urllib", "sqlite3", "socket", "subprocess", "shutil", "tempfile", "requests", "httpx",
                "gzip", "fcntl", "yaml", "dask", "skops", "matplotlib"}
FILE_CALLS = {"open", "read_text", "write_text", "read_bytes", "write_bytes", "mkdir", "unlink", "iterdir", "glob"}


def _modules(folder: str) -> list[Path]:
    return sorted(p for p in (REPO / folder).rglob("*.py") if "data" not in p.relative_to(REPO).parts)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _under(names: set[str], *prefixes: str) -> set[str]:
    return {n for n in names if any(n == p or n.startswith(p + ".") for p in prefixes)}


def _id(path: Path) -> str:
    return str(path.relative_to(REPO))


CORE = _modules("monitors/core")
ADAPTERS = _modules("monitors/adapters")


def test_the_folders_are_not_empty():
    assert len(CORE) > 10 and len(ADAPTERS) > 10


@pytest.mark.parametrize("path", CORE, ids=_id)
def test_core_is_pure(path):
    names = _imports(path)
    assert not _under(names, "flows", "monitors.adapters", "monitors.demo"), "core imports an outer layer"
    assert not {n.split(".")[0] for n in names} & IO_LIBRARIES, "core imports an I/O library"
    monitors = _under(names, "monitors") - _under(names, "monitors.core", "monitors.config")
    assert monitors <= {"monitors"}, f"core imports {monitors}"
    calls = {(n.func.attr if isinstance(n.func, ast.Attribute) else getattr(n.func, "id", None))
             for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.Call)}
    assert not calls & FILE_CALLS, f"core touches files: {calls & FILE_CALLS}"


@pytest.mark.parametrize("path", ADAPTERS, ids=_id)
def test_adapters_never_import_flows_or_the_demo(path):
    assert not _under(_imports(path), "flows", "monitors.demo", "prefect")


@pytest.mark.parametrize("path", _modules("monitors") + _modules("flows"), ids=_id)
def test_only_the_demo_flows_import_the_demo(path):
    if path.parent.name == "demo" or path.name.startswith("demo"):
        return
    if path == REPO / "flows" / "simulate.py":  # replays shipped human text through the demo's n-gram generator
        return
    assert not _under(_imports(path), "monitors.demo")


@pytest.mark.parametrize("path", _modules("monitors"), ids=_id)
def test_monitors_never_imports_flows_or_prefect(path):
    assert not _under(_imports(path), "flows", "prefect")


def test_the_readme_architecture_names_every_module():
    """The README's tree has one line per module; a module added without its line fails here."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    tree = readme.split("### Architecture", 1)[1].split("```", 2)[1]
    missing = [_id(p) for folder in ("monitors", "flows") for p in _modules(folder)
               if p.name not in ("__init__.py", "__main__.py") and p.name not in tree]
    assert missing == []
