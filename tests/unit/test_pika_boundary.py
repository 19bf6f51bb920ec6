"""pika's exceptions stop at the transport: no module above `transport/` imports pika."""

from __future__ import annotations

import ast

from config.settings import PROJECT_ROOT

#: Where pika may be imported: the transport, and tests/benchmarks that inspect the broker.
_ALLOWED = ("transport", "tests", "bench")


def _imports_pika(source: str) -> bool:
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "pika" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "pika":
            return True
    return False


def test_only_the_transport_imports_pika() -> None:
    """Handlers, services, storage, the API and bootstrap see `service.relay.TransportError`s only."""
    offenders = [
        str(path.relative_to(PROJECT_ROOT))
        for path in PROJECT_ROOT.rglob("*.py")
        if ".venv" not in path.parts and path.relative_to(PROJECT_ROOT).parts[0] not in _ALLOWED
        and _imports_pika(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
