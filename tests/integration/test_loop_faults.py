"""The worker's outcome commits through faults of the store, on SQLite and PostgreSQL.

A store outage during a commit (PostgreSQL behind a loopback proxy that is cut; a SQLite file
whose write lock another process holds) is waited out, one warning line per retry, and every
outcome is recorded once the store is back. An outcome the store refuses for another reason
is parked as undeliverable (`COMMIT_FAILED`, with the reason) and the rest of its batch is
recorded.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DataError
from structlog.testing import capture_logs

from cli.client import PortalClient
from config.settings import PROJECT_ROOT
from routing.plan import PlannedDelivery
from service.ports import Completion, NewFiling
from service.relay import OutboxRelay
from storage.store import SqlStore
from tests.conftest import _postgres_schema_url
from tests.integration.rabbit_harness import RABBITMQ_URL, rabbit_prefix  # noqa: F401 - fixture
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_settings, wait_for
from tests.tcp_proxy import TcpProxy

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"
AGENCIES = ("inps", "cciaa", "runts")


class Outage:
    """Makes the test's database unavailable and available again."""

    url: str

    def prepare(self, engine: Engine) -> None:
        """Tune the hub's engine before it serves (SQLite: how long a writer waits for the lock)."""

    def begin(self) -> None:
        raise NotImplementedError

    def end(self) -> None:
        raise NotImplementedError


class PostgresBehindProxy(Outage):
    """PostgreSQL reached through a loopback proxy: cutting it is the server going away."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.proxy = TcpProxy((parsed.host or "127.0.0.1", parsed.port or 5432))
        self.url = parsed.set(port=self.proxy.port).render_as_string(hide_password=False)

    def begin(self) -> None:
        self.proxy.cut()

    def end(self) -> None:
        self.proxy.restore()


class LockedSqlite(Outage):
    """Another process holds the SQLite file's write lock: no writer gets a turn."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self._holder: sqlite3.Connection | None = None

    def prepare(self, engine: Engine) -> None:
        # The hub waits 30 s for a busy database before it fails; a test outage is shorter.
        event.listen(engine, "connect", lambda conn, _record: conn.execute("PRAGMA busy_timeout=200"))
        engine.dispose()

    def begin(self) -> None:
        self._holder = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._holder.execute("BEGIN IMMEDIATE")

    def end(self) -> None:
        if self._holder is not None:
            self._holder.execute("ROLLBACK")
            self._holder.close()
            self._holder = None


@pytest.fixture(params=["sqlite", "postgresql"])
def outage(request: pytest.FixtureRequest, tmp_path) -> Iterator[Outage]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        locked = LockedSqlite(str(tmp_path / "crocevia.db"))
        yield locked
        locked.end()
        return
    for url in _postgres_schema_url():
        behind = PostgresBehindProxy(url)
        try:
            yield behind
        finally:
            behind.proxy.close()


def stores_behind_proxies() -> Iterator[tuple[PostgresBehindProxy, SqlStore]]:
    """A migrated store on each PostgreSQL test schema, reached through a proxy that can cut it
    off; its engine and proxy are closed once the caller moves on."""
    from storage.engine import build_engine
    from storage.migrate import upgrade_to_head

    for url in _postgres_schema_url():
        behind = PostgresBehindProxy(url)
        engine = build_engine(behind.url)
        try:
            upgrade_to_head(engine)
            yield behind, SqlStore(engine)
        finally:
            engine.dispose()
            behind.proxy.close()


async def until_retried(events: Sequence[dict[str, Any]], deadline: float) -> None:
    """Wait until the store outage was retried twice (two `store_unavailable` lines)."""
    while sum(e["event"] == "store_unavailable" for e in events) < 2:
        assert time.monotonic() < deadline, "no retries during the outage"
        await asyncio.sleep(0.02)


def _slow(sims: Any, delay_ms: int) -> None:  # type: ignore[no-untyped-def]
    for agency in AGENCIES:
        sims.set_faults(agency, [{"operation": "*", "kind": "latency", "delay_ms": delay_ms}] if delay_ms else [])


def _endpoints(sims: Any) -> dict[str, str]:
    return {agency: sims.soap_endpoint(agency) for agency in sims.urls}


def _effects(sims: Any, reference: str, agency: str) -> list[dict[str, Any]]:
    return [e for e in sims.ledger(agency)["effects"] if e["filingReference"] == reference]


def test_outcomes_committed_during_a_store_outage_are_recorded_once_it_returns(  # type: ignore[no-untyped-def]
    outage: Outage, sims, caplog: pytest.LogCaptureFixture
) -> None:
    """The store goes away while the agencies answer: the commit is retried with backoff, one
    warning line per retry and no traceback, and every outcome is recorded once it is back."""
    running = RunningHub(hub_settings(outage.url, _endpoints(sims)))
    outage.prepare(running.hub.engine)
    with capture_logs() as events, running as hub, PortalClient(hub.base_url, TEST_PORTAL_KEY) as client:
        _slow(sims, 1500)
        try:
            calls_before = {a: sims.ledger(a)["calls"] for a in AGENCIES}
            references = [client.submit((EXAMPLES / name).read_bytes()).json()["reference"]
                          for name in ("durc_request.xml", "runts_deposit_accounts.xml", "runts_registration.xml")]
            wait_for(lambda: all(sims.ledger(a)["calls"] > n for a, n in calls_before.items()),
                     timeout=20, what="the agencies' calls in flight")
            outage.begin()
            try:
                wait_for(lambda: len(_commit_retries(events)) >= 2, timeout=30,
                         what="the commit retried during the outage")
            finally:
                outage.end()
        finally:
            _slow(sims, 0)
        views = client.wait_settled(references, timeout=30)
    for reference in references:
        assert views[reference]["state"] == "protocolled", views[reference]
        for recipient in views[reference]["recipients"]:
            effects = _effects(sims, reference, recipient["agency"])
            assert len(effects) == 1 and effects[0]["protocollo"] == recipient["protocolNumber"]
    retries = _commit_retries(events)
    assert all(e["log_level"] == "warning" and "exc_info" not in e for e in retries)
    assert all("database is unavailable" in e["error"] and e["retry_in_s"] > 0 for e in retries)
    # An expected fault: no ERROR and no traceback anywhere while it lasted.
    assert [e for e in list(events) if e["log_level"] in ("error", "critical") or "exc_info" in e] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


def _commit_retries(events: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in list(events) if e["event"] == "store_unavailable" and e.get("action") == "outcomes_commit"]


class RefusingStore(SqlStore):
    """Fault injection: the store refuses to record the agency's answer for one recipient, as a
    database refuses a value that does not fit its column (a non-outage error).

    The first commit is held until `release` is set, so that the outcomes that arrive meanwhile
    are committed together, in one batch with the refused one.
    """

    def __init__(self, original: SqlStore) -> None:
        super().__init__(original._engine, clock=original._clock)  # noqa: SLF001 - same engine and clock
        self._write_lock = original._write_lock  # noqa: SLF001 - one writer queue with the identity store
        self.refuse: tuple[str, str] | None = None  # (filing reference, agency)
        self.release = threading.Event()
        self._first = True
        self.batches: list[int] = []

    def complete_jobs(self, completions: Sequence[Completion]) -> None:
        if self._first:
            self._first = False
            self.release.wait(30)
        self.batches.append(len(completions))
        for c in completions:
            if (c.job.filing_reference, c.job.agency) == self.refuse and c.protocol_number:
                raise DataError("UPDATE deliveries SET protocol_number=...", None,
                                Exception("value too long for type character varying(64)"))
        super().complete_jobs(completions)


def test_an_outcome_the_store_refuses_is_parked_and_the_rest_of_its_batch_recorded(database_url: str, sims) -> None:  # type: ignore[no-untyped-def]
    """One outcome of a batch cannot be recorded (not an outage): after bounded retries the
    batch is split, that recipient is parked as undeliverable with the reason, and every other
    outcome is recorded."""
    running = RunningHub(hub_settings(database_url, _endpoints(sims), commit_attempts=2))
    store = RefusingStore(running.hub.store)
    running.hub.store = store
    documents = [(EXAMPLES / name).read_bytes() for name in (
        # Recipients that go at once (deposits go to RUNTS directly): one waiting on another
        # agency's protocol number would wait behind the batch this test holds back.
        "durc_request.xml", "durc_request.xml", "runts_deposit_accounts.xml", "responsibility_declaration.xml",
        "runts_deposit_statute.xml")]
    with capture_logs() as events, running as hub, PortalClient(hub.base_url, TEST_PORTAL_KEY) as client:
        _slow(sims, 300)
        try:
            references = [client.submit(d).json()["reference"] for d in documents]
            store.refuse = (references[1], "inps")
            views = {r: client.status(r).json() for r in references}
            expected = [(r, d["agency"]) for r, v in views.items() for d in v["recipients"]]
            wait_for(lambda: all(_effects(sims, r, a) for r, a in expected), timeout=30,
                     what="every agency's answer")
        finally:
            store.release.set()
            _slow(sims, 0)
        views = client.wait_settled(references, timeout=30)
    refused = next(r for r in views[references[1]]["recipients"] if r["agency"] == "inps")
    assert refused["state"] == "undeliverable"
    assert refused["outcomeCode"] == "COMMIT_FAILED"
    assert "could not be recorded" in refused["outcomeText"] and "value too long" in refused["outcomeText"]
    others = [(ref, r) for ref in references for r in views[ref]["recipients"]
              if (ref, r["agency"]) != (references[1], "inps")]
    assert others and all(r["state"] == "protocolled" for _, r in others), others
    assert all(len(_effects(sims, ref, r["agency"])) == 1 for ref, r in others)
    parked = [e for e in events if e["event"] == "delivery_parked"]
    assert len(parked) == 1 and parked[0]["outcome_code"] == "COMMIT_FAILED" and "exc_info" in parked[0]
    assert not [e for e in events if e["event"] == "store_unavailable"]


def _relay(store: SqlStore, topology: Any) -> OutboxRelay:
    from transport.amqp import amqp_parameters
    from transport.rabbitmq import RabbitPublisher

    return OutboxRelay(store=store, publisher=RabbitPublisher(
        amqp_parameters(RABBITMQ_URL, name="test-relay"), topology), backoff_initial=0.05, backoff_max=0.2)


def _inps_plan(_reference: str) -> list[PlannedDelivery]:
    return [PlannedDelivery(uuid.uuid4().hex, uuid.uuid4().hex, "inps", "Op", {})]


_NEW_FILING = NewFiling("durc_request", "test", "09182730581", "Alfa", "FTTMRC85C14H501X",
                        "legal_representative", b"<filing/>", "b" * 64, datetime.now(timezone.utc))


async def _published(relay: OutboxRelay, count: int, deadline: float) -> None:
    while relay.published < count:
        assert time.monotonic() < deadline, f"{relay.published} of {count} published"
        await asyncio.sleep(0.02)


def quiet_retries(events: Sequence[dict[str, Any]]) -> None:
    """Every retry was one warning line, and nothing was logged as an error or with a traceback."""
    retries = [e for e in events if e["event"] == "store_unavailable"]
    assert all(e["log_level"] == "warning" and "database is unavailable" in e["error"] for e in retries)
    assert not [e for e in events if e["log_level"] in ("error", "critical") or "exc_info" in e]


def test_the_relay_waits_out_a_store_outage(rabbit_prefix: str) -> None:  # noqa: F811
    """PostgreSQL is away when the relay starts: one warning line per retry, no traceback; once
    it is back, the committed jobs are published."""
    from transport.amqp import Topology, queue_depths

    topology = Topology(rabbit_prefix, ("inps",))
    for behind, store in stores_behind_proxies():
        for _ in range(3):
            store.accept_filing(_NEW_FILING, _inps_plan)
        relay = _relay(store, topology)

        async def scenario() -> None:
            stop = asyncio.Event()
            behind.begin()
            task = asyncio.create_task(relay.run(stop))
            try:
                await until_retried(events, time.monotonic() + 20)
                behind.end()
                await _published(relay, 3, time.monotonic() + 20)
            finally:
                stop.set()
                await asyncio.wait_for(task, 20)

        with capture_logs() as events:
            asyncio.run(scenario())
    assert queue_depths(RABBITMQ_URL, topology)["inps"]["ready"] == 3
    quiet_retries(events)


def test_the_relay_rides_out_a_store_outage_while_it_runs(rabbit_prefix: str) -> None:  # noqa: F811
    """PostgreSQL goes away under a running relay (its pooled connections die with it): warnings
    only, no traceback; jobs committed before and after the outage are all published once back."""
    from transport.amqp import Topology, queue_depths

    topology = Topology(rabbit_prefix, ("inps",))
    for behind, store in stores_behind_proxies():
        relay = _relay(store, topology)

        async def scenario() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(relay.run(stop))
            try:
                for _ in range(3):
                    await asyncio.to_thread(store.accept_filing, _NEW_FILING, _inps_plan)
                await _published(relay, 3, time.monotonic() + 20)
                behind.begin()
                await until_retried(events, time.monotonic() + 20)
                behind.end()
                for _ in range(3):
                    await asyncio.to_thread(store.accept_filing, _NEW_FILING, _inps_plan)
                await _published(relay, 6, time.monotonic() + 20)
            finally:
                stop.set()
                await asyncio.wait_for(task, 20)

        with capture_logs() as events:
            asyncio.run(scenario())
    assert queue_depths(RABBITMQ_URL, topology)["inps"]["ready"] == 6
    quiet_retries(events)
