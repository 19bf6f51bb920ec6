"""The notifier keeps its callbacks flowing past a slow one, on SQLite and PostgreSQL: a portal
that holds one callback holds that filing's later events only (they wait their turn), while
every other filing's events reach it, each filing's in order; a portal that holds every callback
fills its own share of the window, and another portal's events keep going."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson

from adapters.webhook import WebhookSender, WebhookTarget
from service.notifier import EventNotifier
from service.schedule import SchedulePolicy
from storage.store import SqlStore
from tests.integration.test_notifier_faults import _events, _filing, _run, _until
from tests.integration.test_store import Clock, clock, store  # noqa: F401 - fixtures: a store on a manual clock


class _PortalHolding:
    """A portal's callback server that holds its first `count` callbacks until `release` is set
    and answers every other at once; `held` lists the bodies it holds or held, `answered` those
    it answered, in order."""

    def __init__(self, count: int = 1) -> None:
        self.release = threading.Event()
        self.held: list[dict[str, Any]] = []
        self.answered: list[dict[str, Any]] = []
        self._count = count
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                event = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    hold = len(outer.held) < outer._count
                    if hold:
                        outer.held.append(event)
                if hold:
                    outer.release.wait(30)
                with outer._lock:
                    outer.answered.append(event)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/events"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> _PortalHolding:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


def test_a_callback_the_portal_holds_holds_back_only_its_own_filings_events(store: SqlStore, clock: Clock) -> None:
    clock.now = time.time()
    for _ in range(4):
        _filing(store)
    events = _events(store)
    with _PortalHolding() as portal:
        client = httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(30.0))
        notifier = EventNotifier(store=store, sender=WebhookSender(client, {"test": WebhookTarget(portal.url, b"s")}),
                                 clock=clock, backoff=SchedulePolicy(initial_delay=10.0, max_delay=10.0, jitter=0.0),
                                 concurrency=2, poll_interval=0.01, max_poll_interval=0.05)

        async def scenario() -> None:
            await _until(lambda: bool(portal.held), what="the first callback")
            held = portal.held[0]["reference"]
            others = [e for e in events if e.payload["reference"] != held]
            # One place of two is held: every other filing's events still go, through the other.
            await _until(lambda: len(portal.answered) == len(others), what="the other filings' events")
            assert {a["id"] for a in portal.answered} == {e.id for e in others}
            portal.release.set()
            await _until(lambda: len(portal.answered) == len(events), what="every event, once released")
            await client.aclose()

        _run(notifier, scenario)
    by_filing: dict[str, list[int]] = {}
    for answered in portal.answered:
        by_filing.setdefault(answered["reference"], []).append(answered["sequence"])
    assert len(by_filing) == 4 and all(seqs == sorted(seqs) for seqs in by_filing.values())
    assert sorted(a["id"] for a in portal.answered) == sorted(e.id for e in events)  # each once
    assert all(r.delivered_at is not None for r in _events(store))


def test_a_portal_that_holds_every_callback_fills_its_share_and_another_portals_events_keep_going(
        store: SqlStore, clock: Clock) -> None:
    clock.now = time.time()
    for portal in ("slow", "test", "slow", "test", "slow", "test"):
        _filing(store, portal)
    events = _events(store)
    fast_events = [e for e in events if e.portal == "test"]
    with _PortalHolding(count=len(events)) as slow, _PortalHolding(count=0) as fast:
        client = httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(30.0))
        targets = {"slow": WebhookTarget(slow.url, b"s", concurrency=2), "test": WebhookTarget(fast.url, b"t")}
        # Without the shares, the slow portal's held callbacks would take all four places.
        notifier = EventNotifier(store=store, sender=WebhookSender(client, targets), clock=clock,
                                 backoff=SchedulePolicy(initial_delay=10.0, max_delay=10.0, jitter=0.0),
                                 concurrency=4, poll_interval=0.01, max_poll_interval=0.05)

        async def scenario() -> None:
            await _until(lambda: len(slow.held) == 2, what="the slow portal's share, held")
            await _until(lambda: len(fast.answered) == len(fast_events), what="the other portal's events")
            assert len(slow.held) == 2 and not slow.answered  # never more than its share in flight
            slow.release.set()
            await _until(lambda: len(slow.answered) == len(events) - len(fast_events), what="the slow portal's events")
            await client.aclose()

        _run(notifier, scenario)
    assert sorted(a["id"] for a in fast.answered) == sorted(e.id for e in fast_events)
    assert all(r.delivered_at is not None for r in _events(store))
