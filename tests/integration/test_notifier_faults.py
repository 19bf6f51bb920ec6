"""The sender notifier through faults, on SQLite and PostgreSQL: a portal that keeps failing
is given up at the horizon (and holds back no later event), a bug in the sender keeps its
traceback and is retried, a store outage is one warning line per retry."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import httpx
import orjson
from sqlalchemy import select
from structlog.testing import capture_logs

from adapters.webhook import WebhookSender, WebhookTarget
from routing.plan import PlannedDelivery
from service.notifier import EventNotifier
from service.ports import Completion, NewFiling
from service.schedule import SchedulePolicy
from storage.delivery_tables import filing_events
from storage.store import SqlStore
from tests.e2e.test_delivery_semantics import _PortalCallbacks
from tests.integration.test_store import Clock, clock, store  # noqa: F401 - fixtures: a store on a manual clock

HORIZON = 30.0


def _sent(portal: _PortalCallbacks) -> list[tuple[int, str]]:
    """What the portal's callback server saw: (status answered, event id), in order."""
    return [(status, orjson.loads(body)["id"]) for status, _, body in portal.received]


class _BuggySender(WebhookSender):
    """Fault injection: the sender's first call fails with a bug of its own (not a
    `NotificationFailed`), as a missing key or a broken signature would."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    async def send(self, portal: str, event_id: str, body: bytes) -> None:
        self.calls += 1
        if self.calls == 1:
            raise KeyError("signing-key")
        await super().send(portal, event_id, body)


def _filing(store: SqlStore, portal: str = "test") -> int:
    """A filing whose only recipient is protocolled: several events (accepted, state changes)."""
    new = NewFiling("durc_request", portal, "09182730581", "Alfa", "FTTMRC85C14H501X", "legal_representative",
                    b"<filing/>", "b" * 64, datetime.now(timezone.utc))
    store.accept_filing(new, lambda ref: [PlannedDelivery(uuid.uuid4().hex, uuid.uuid4().hex, "inps", "Op", {})])
    [job] = store.claim_jobs("w", ["inps"], 10, 60)
    store.complete_jobs([Completion(job=job, owner="w", new_state="protocolled", protocol_number="P1")])
    return job.filing_id


def _events(store: SqlStore) -> list[Any]:
    with store._engine.connect() as conn:  # noqa: SLF001 - test inspection
        return conn.execute(select(filing_events).order_by(filing_events.c.seq)).all()


async def _until(condition: Callable[[], Any], *, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def _run(notifier: EventNotifier, scenario: Callable[[], Awaitable[None]]) -> None:
    async def main() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(notifier.run(stop))
        try:
            await scenario()
        finally:
            stop.set()
            await asyncio.wait_for(task, 20)

    asyncio.run(main())


def _notifier(store: SqlStore, clock: Clock, sender: WebhookSender, **horizon: float) -> EventNotifier:
    return EventNotifier(store=store, sender=sender, clock=clock, **horizon,
                         backoff=SchedulePolicy(initial_delay=10.0, max_delay=10.0, jitter=0.0),
                         poll_interval=0.01, max_poll_interval=0.05)


def test_an_event_the_portal_keeps_refusing_is_given_up_at_the_horizon(store: SqlStore, clock: Clock) -> None:
    """Two refusals, the second with the horizon near: the event is not pushed again, and the
    filing's later events go to the portal (the feed still holds the given-up one)."""
    clock.now = time.time()
    _filing(store)
    first, *later = _events(store)
    assert later
    with _PortalCallbacks(failures=2) as portal, capture_logs() as logs:
        client = httpx.AsyncClient(trust_env=False)
        notifier = _notifier(store, clock, WebhookSender(client, {"test": WebhookTarget(portal.url, b"s")},
                                                         clock=clock), max_age_seconds=HORIZON)

        async def scenario() -> None:
            await _until(lambda: len(portal.received) == 1, what="the first refusal")
            clock.now += HORIZON - 5  # the retry is due; another wait would pass the horizon
            notifier.notify()
            await _until(lambda: sum(s == 200 for s, _ in _sent(portal)) == len(later),
                         what="the later events delivered")
            await client.aclose()

        _run(notifier, scenario)
    assert [(s, i) for s, i in _sent(portal)[:2]] == [(500, first.id), (500, first.id)]
    assert [i for _, i in _sent(portal)[2:]] == [e.id for e in later]  # never the given-up one again
    rows = {r.id: r for r in _events(store)}
    assert rows[first.id].delivered_at is None and rows[first.id].last_error.startswith("gave up after 2 attempts")
    assert store.claim_events("n", {"test": 10}, 10, 60) == []  # not due, ever
    assert [e["event"] for e in logs if e["log_level"] != "info"] == ["event_push_failed", "event_push_abandoned"]
    assert not [e for e in logs if "exc_info" in e]


def test_a_bug_in_the_sender_keeps_its_traceback_and_the_event_is_retried(store: SqlStore, clock: Clock) -> None:
    """The sender raises something that is not a `NotificationFailed`: logged as an error with
    its traceback, the event scheduled again, the notifier still running and delivering."""
    clock.now = time.time()
    _filing(store)
    events = _events(store)
    with _PortalCallbacks(failures=0) as portal, capture_logs() as logs:
        client = httpx.AsyncClient(trust_env=False)
        sender = _BuggySender(client, {"test": WebhookTarget(portal.url, b"s")}, clock=clock)
        notifier = _notifier(store, clock, sender)

        async def scenario() -> None:
            await _until(lambda: any(e["event"] == "event_push_crashed" for e in logs), what="the crash")
            clock.now += 10  # the retry is due
            notifier.notify()
            await _until(lambda: len(portal.received) == len(events), what="every event delivered")
            await client.aclose()

        _run(notifier, scenario)
    [crash] = [e for e in logs if e["event"] == "event_push_crashed"]
    assert crash["log_level"] == "error" and isinstance(crash["exc_info"], KeyError)
    assert [i for _, i in _sent(portal)] == [e.id for e in events]
    rows = _events(store)
    assert all(r.delivered_at is not None for r in rows) and rows[0].attempts == 2


def test_a_store_outage_is_one_warning_per_retry_and_the_events_go_once_it_is_back() -> None:
    """PostgreSQL is away when the notifier looks for events: one warning line per retry, no
    traceback; once it is back, every event reaches the portal."""
    from tests.integration.test_loop_faults import quiet_retries, stores_behind_proxies

    for behind, away in stores_behind_proxies():
        _filing(away)
        events = _events(away)
        with _PortalCallbacks(failures=0) as portal, capture_logs() as logs:
            client = httpx.AsyncClient(trust_env=False)
            notifier = _notifier(away, Clock(), WebhookSender(client, {"test": WebhookTarget(portal.url, b"s")}))
            behind.begin()

            async def scenario() -> None:
                try:
                    await _until(lambda: sum(e["event"] == "store_unavailable" for e in logs) >= 2,
                                 what="retries during the outage")
                finally:
                    behind.end()
                await _until(lambda: len(portal.received) == len(events), what="every event delivered")
                await client.aclose()

            _run(notifier, scenario)
    quiet_retries(logs)
