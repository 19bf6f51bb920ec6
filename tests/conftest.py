"""Shared fixtures: loopback-only sockets, databases (SQLite and PostgreSQL), simulators.

Fixtures that need a server skip locally when it is missing and FAIL under CI=true, so a
green CI run always means the integration suite really ran.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

IN_CI = os.environ.get("CI", "").lower() == "true"
POSTGRES_ADMIN_URL = os.environ.get(
    "CROCEVIA_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_loopback(address: object) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0] if isinstance(address, tuple) else None
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback  # type: ignore[arg-type]
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests may talk only to this machine."""

    def guarded_connect(self: socket.socket, address: object) -> None:
        if not _is_loopback(address):
            raise ConnectionRefusedError(f"tests may only connect to loopback, not {address!r}")
        return _real_connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: object) -> int:
        if not _is_loopback(address):
            raise ConnectionRefusedError(f"tests may only connect to loopback, not {address!r}")
        return _real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket.socket, "connect_ex", guarded_connect_ex)


def require_server(name: str, reason: str) -> None:
    """Skip locally, fail under CI=true."""
    message = f"{name} is not reachable: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI=true: integration servers are required)")
    pytest.skip(message)


def _postgres_schema_url() -> Iterator[str]:
    from sqlalchemy import create_engine

    schema = f"crv_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001 - any failure means the server is not usable
        admin.dispose()
        require_server("PostgreSQL", str(exc).splitlines()[0])
    sep = "&" if "?" in POSTGRES_ADMIN_URL else "?"
    try:
        yield f"{POSTGRES_ADMIN_URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A fresh, empty database of each kind; the same test runs on both."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('db') / 'crocevia.db'}"
    else:
        yield from _postgres_schema_url()


@pytest.fixture
def migrated_engine(database_url: str) -> Iterator[Engine]:
    """An engine on `database_url`'s fresh database, migrated to head; disposed after."""
    from storage.engine import build_engine
    from storage.migrate import upgrade_to_head

    engine = build_engine(database_url)
    upgrade_to_head(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def simulators() -> Iterator[object]:
    from simulators.launcher import start_simulators

    handle = start_simulators()
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def sims(simulators: object) -> object:
    """The session's simulators with empty ledgers and no faults."""
    simulators.reset()  # type: ignore[attr-defined]
    return simulators
