"""Fixtures and a process harness for the RabbitMQ tests: a fresh PostgreSQL schema, a unique
queue prefix (deleted at teardown), and the hub's processes (`hub.py serve|relay|worker`) started
as real OS processes against the simulators.

Import the fixtures into a test module with `from tests.integration.rabbit_harness import ...`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, create_engine, text

from config.settings import PROJECT_ROOT
from tests.conftest import POSTGRES_ADMIN_URL, require_server
from tests.support import free_port, portal_env, wait_for

RABBITMQ_URL = os.environ.get("CROCEVIA_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/%2F")
AGENCIES = ("cciaa", "inail", "inps", "runts")
EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"

__all__ = ["Cluster", "RABBITMQ_URL", "cluster", "pg_url", "rabbit_prefix"]


def _delete_topology(prefix: str) -> None:
    from transport.amqp import Topology, delete_topology

    delete_topology(RABBITMQ_URL, Topology(prefix, AGENCIES))


@pytest.fixture
def rabbit_prefix() -> Iterator[str]:
    """A queue and exchange prefix of this test only; everything under it is deleted after."""
    import pika

    try:
        pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL)).close()
    except Exception as exc:  # noqa: BLE001 - any failure means the broker is not usable
        require_server("RabbitMQ", f"{type(exc).__name__}: {exc}")
    prefix = f"crvtest-{uuid.uuid4().hex[:10]}"
    try:
        yield prefix
    finally:
        _ensure_rabbitmq_running()
        _delete_topology(prefix)


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema, migrated to head before any hub process starts."""
    from storage.engine import build_engine
    from storage.migrate import upgrade_to_head

    schema = f"crv_{uuid.uuid4().hex[:10]}"
    admin = create_engine(POSTGRES_ADMIN_URL, pool_pre_ping=True)
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    except Exception as exc:  # noqa: BLE001
        admin.dispose()
        require_server("PostgreSQL", str(exc).splitlines()[0])
    sep = "&" if "?" in POSTGRES_ADMIN_URL else "?"
    url = f"{POSTGRES_ADMIN_URL}{sep}options=-csearch_path%3D{schema}"
    engine = build_engine(url)
    upgrade_to_head(engine)
    engine.dispose()
    try:
        yield url
    finally:
        _ensure_postgres_running()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def _ensure_rabbitmq_running() -> None:
    subprocess.run(["rabbitmqctl", "-q", "start_app"], capture_output=True, timeout=120)


def _ensure_postgres_running() -> None:
    version = sorted(os.listdir("/etc/postgresql"))[0] if os.path.isdir("/etc/postgresql") else None
    if version is None:
        return
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"],
                   capture_output=True, timeout=60)
    subprocess.run(["pg_isready", "-h", "127.0.0.1", "-t", "30"], capture_output=True, timeout=60)


class Cluster:
    """The hub as separate OS processes: API, relays and workers, on one schema and prefix."""

    def __init__(self, database_url: str, prefix: str, sims: Any, workdir: Path) -> None:
        self.database_url = database_url
        self.prefix = prefix
        self.sims = sims
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.engine: Engine = create_engine(database_url, pool_pre_ping=True)
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("AGENCIES__", "DATABASE__", "WORKER__", "TRANSPORT__", "RELAY__",
                                         "PORTALS__", "API__"))}
        self.env.update({
            "DATABASE__URL": database_url,
            "TRANSPORT__KIND": "rabbitmq",
            "TRANSPORT__URL": RABBITMQ_URL,
            "TRANSPORT__PREFIX": prefix,
            "TRANSPORT__RECONNECT_INITIAL": "0.1",
            "TRANSPORT__RECONNECT_MAX": "1.0",
            "WORKER__POLL_INTERVAL": "0.02",
            "WORKER__MAX_POLL_INTERVAL": "0.1",
            "RELAY__LEASE_SECONDS": "3",
            "LOG_LEVEL": "info",
            **portal_env("test"),  # the test portal's public key (ModI-signed requests)
        })
        for agency in AGENCIES:
            key = f"AGENCIES__{agency.upper()}__"
            self.env[key + "ENDPOINT"] = sims.soap_endpoint(agency)
            self.env[key + "READ_TIMEOUT"] = "10"
            self.env[key + "RETRY__INITIAL_WAIT"] = "0.01"
            self.env[key + "RETRY__MAX_WAIT"] = "0.05"
            self.env[key + "SCHEDULE__INITIAL_DELAY"] = "0.2"
            self.env[key + "SCHEDULE__MAX_DELAY"] = "0.5"
            # A circuit that opens in a test closes again (or probes) within a second.
            self.env[key + "CIRCUIT__COOL_DOWN"] = "0.5"
            self.env[key + "CIRCUIT__PROBE_WAIT"] = "0.05"

    # -- processes ----------------------------------------------------------------------------
    def start(self, role: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
        name = f"{role}-{len(self._procs)}"
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, str(PROJECT_ROOT / "hub.py"), role, *args],
            env={**self.env, **env}, cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        self._procs.append((name, proc))
        return proc

    def start_api(self) -> subprocess.Popen[bytes]:
        proc = self.start("serve", "--port", str(self.port))

        def healthy() -> bool:
            assert proc.poll() is None, self.logs()
            try:
                return httpx.get(f"{self.base_url}/health", trust_env=False, timeout=1).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, timeout=30, interval=0.05, what="the API to listen")
        return proc

    def start_worker(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        return self.start("worker", *args, **env)

    def start_relay(self, **env: str) -> subprocess.Popen[bytes]:
        return self.start("relay", **env)

    def logs(self) -> str:
        parts = []
        for path in sorted(self.workdir.glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop_all(self) -> None:
        for _, proc in self._procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for _, proc in self._procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.engine.dispose()

    def queued(self, *, dead: bool = False) -> int:
        """Messages ready in the agencies' queues (or dead-letter queues), from the broker."""
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
        try:
            channel = conn.channel()
            suffix = ".dead" if dead else ""
            return sum(channel.queue_declare(f"{self.prefix}.delivery.{a}{suffix}", passive=True).method.message_count
                       for a in AGENCIES)
        except pika.exceptions.ChannelClosedByBroker:
            return 0  # not declared yet
        finally:
            if conn.is_open:
                conn.close()

    # -- the database, seen from outside --------------------------------------------------------
    def scalar(self, sql: str, **params: Any) -> Any:
        """One value from the database; waits (bounded) while PostgreSQL is restarting."""
        from sqlalchemy.exc import OperationalError

        deadline = time.monotonic() + 60
        while True:
            try:
                with self.engine.connect() as conn:
                    return conn.execute(text(sql), params).scalar_one()
            except OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # the server is restarting: ask again, within the bound

    def open_deliveries(self, agency: str | None = None) -> int:
        from domain.states import OPEN_DELIVERY_STATES

        states = ", ".join(f"'{s.value}'" for s in OPEN_DELIVERY_STATES)
        where = " AND agency = :agency" if agency else ""
        return self.scalar(f"SELECT count(*) FROM deliveries WHERE state IN ({states})" + where, agency=agency)

    def wait_all_settled(self, timeout: float = 60.0) -> None:
        try:
            wait_for(lambda: self.open_deliveries() == 0, timeout=timeout, interval=0.1, what="every delivery to settle")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnosis()}") from None

    def diagnosis(self) -> str:
        """What is still open, and where its jobs are: for a failing test's message."""
        with self.engine.connect() as conn:
            jobs = conn.execute(text(
                "SELECT d.agency, d.state, d.rounds, o.id, o.published_at IS NOT NULL, o.done_at IS NOT NULL, "
                "o.claims, o.available_at - extract(epoch from now()) FROM deliveries d JOIN outbox o "
                "ON o.delivery_id = d.id WHERE d.state NOT IN ('protocolled','rejected','undeliverable','cancelled') "
                "ORDER BY o.id")).all()
        keep = Path(tempfile.mkdtemp(prefix="crocevia-failed-"))
        for path in self.workdir.glob("*.log"):
            (keep / path.name).write_bytes(path.read_bytes())
        lines = [f"states {self.states()}; logs kept in {keep}",
                 "agency state rounds job published done claims due_in"]
        lines += [" ".join(str(v) for v in row) for row in jobs[:40]]
        return "\n".join(lines)

    def states(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return dict(conn.execute(text("SELECT state, count(*) FROM deliveries GROUP BY state")).all())

    def assert_exactly_one_effect_each(self) -> None:
        """Every delivery is protocolled, and its agency's ledger holds exactly one effect for it."""
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT agency, message_id, state, protocol_number FROM deliveries")).all()
        assert rows, "no deliveries"
        ledgers = {agency: self.sims.ledger(agency) for agency in AGENCIES}
        effects: dict[str, list[dict[str, Any]]] = {}
        for agency, ledger in ledgers.items():
            for effect in ledger["effects"]:
                effects.setdefault(effect["messageId"], []).append(effect)
        for agency, message_id, state, protocol in rows:
            assert state == "protocolled", (agency, message_id, state)
            found = effects.get(message_id, [])
            assert len(found) == 1, (agency, message_id, found)
            assert found[0]["protocollo"] == protocol
        assert sum(len(ledger["effects"]) for ledger in ledgers.values()) == len(rows)


@pytest.fixture
def cluster(pg_url: str, rabbit_prefix: str, sims: Any) -> Iterator[Cluster]:
    with tempfile.TemporaryDirectory(prefix="crocevia-rabbit-") as workdir:
        running = Cluster(pg_url, rabbit_prefix, sims, Path(workdir))
        try:
            yield running
        finally:
            running.stop_all()


def submit(client: Any, name: str) -> str:
    """Submit one example filing; returns its reference."""
    response = client.submit((EXAMPLES / name).read_bytes())
    assert response.status_code == 202, response.text
    return response.json()["reference"]


def deadline_loop(seconds: float) -> Iterator[int]:
    """Count up until `seconds` have passed (a bound for loops that feed load)."""
    end = time.monotonic() + seconds
    i = 0
    while time.monotonic() < end:
        yield i
        i += 1
