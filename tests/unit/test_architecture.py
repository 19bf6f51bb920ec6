"""The top-level modules keep to the layers that import-linter cannot check for them.

`lint-imports` (run by `make check`) checks packages only; hub.py, bootstrap.py, runner.py and
probes.py are modules, so their one rule — SQLAlchemy only through `storage`, pika only through
`transport` — is read from their source here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ["hub.py", "bootstrap.py", "runner.py", "probes.py"]
FORBIDDEN = {"sqlalchemy": "storage", "alembic": "storage", "pika": "transport"}


def _imported_roots(source: str) -> set[str]:
    """Every top-level package a module imports, at module level or inside a function."""
    roots: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("module", TOP_LEVEL)
def test_top_level_module_reaches_the_database_and_broker_only_through_their_packages(module: str) -> None:
    """bootstrap and its neighbours wire storage and transport; they never import their drivers."""
    roots = _imported_roots((ROOT / module).read_text(encoding="utf-8"))
    offending = {name: owner for name, owner in FORBIDDEN.items() if name in roots}
    assert not offending, f"{module} imports {sorted(offending)}; go through {sorted(set(offending.values()))}"


def test_the_import_reader_sees_imports_inside_functions() -> None:
    """The check would pass vacuously if it missed deferred imports, which bootstrap uses."""
    source = "def f():\n    from sqlalchemy.exc import OperationalError\n    import pika\n"
    assert {"sqlalchemy", "pika"} <= _imported_roots(source)
