"""The notifier keeps its callbacks flowing past a slow one, on SQLite and PostgreSQL: a portal
that holds one callback holds that filing's later events only (they wait their turn), while
every other filing's events reach it, each filing's in order."""

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


class _PortalHoldingOne:
    """A portal's callback server that holds the first callback until `release` is set and
    answers every other at once; `answered` lists the bodies it answered, in order."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.held: dict[str, Any] = {}
        self.answered: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                event = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer._lock:
                    first = not outer.held
                    if first:
                        outer.held = event
                if first:
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

    def __enter__(self) -> _PortalHoldingOne:
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
    with _PortalHoldingOne() as portal:
        client = httpx.AsyncClient(trust_env=False, timeout=httpx.Timeout(30.0))
        notifier = EventNotifier(store=store, sender=WebhookSender(client, {"test": WebhookTarget(portal.url, b"s")}),
                                 clock=clock, backoff=SchedulePolicy(initial_delay=10.0, max_delay=10.0, jitter=0.0),
                                 concurrency=2, poll_interval=0.01, max_poll_interval=0.05)

        async def scenario() -> None:
            await _until(lambda: bool(portal.held), what="the first callback")
            held = portal.held["reference"]
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
