"""The sender notifier: pushes each filing's events to its portal's callback, in order.

Events are written by the transaction that changed the filing (`filing_events`); this loop
only moves them. It leases the earliest undelivered event of each filing, POSTs it, and
records the answer: delivered, or retried later with backoff. A later event of a filing is
never pushed while an earlier one is undelivered; every retry carries the same event id.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Protocol

import orjson
import structlog

from service.ports import EventSendResult, FilingEvent
from service.schedule import SchedulePolicy
from service.waiting import wait_any

__all__ = ["EventNotifier", "EventSender", "EventStore"]

log = structlog.get_logger("crocevia.notifier")


class EventStore(Protocol):
    def claim_events(self, owner: str, portals: Sequence[str], limit: int,
                     lease_seconds: float) -> list[FilingEvent]: ...

    def finish_events(self, results: Sequence[EventSendResult]) -> None: ...


class EventSender(Protocol):
    """Delivers one event body to a portal; raises on anything but acceptance (an exception
    may carry `retry_after`, the portal's wish)."""

    @property
    def portals(self) -> list[str]: ...

    async def send(self, portal: str, event_id: str, body: bytes) -> None: ...


class EventNotifier:
    """Runs in a worker process next to the delivery worker; several may run at once."""

    def __init__(
        self,
        *,
        store: EventStore,
        sender: EventSender,
        backoff: SchedulePolicy,
        concurrency: int = 16,
        lease_seconds: float = 60.0,
        poll_interval: float = 0.05,
        max_poll_interval: float = 0.5,
        clock: Callable[[], float] = time.time,
        owner: str | None = None,
    ) -> None:
        self.owner = owner or f"notifier-{uuid.uuid4().hex[:12]}"
        self._store = store
        self._sender = sender
        self._backoff = backoff
        self._concurrency = concurrency
        self._lease = lease_seconds
        self._poll = poll_interval
        self._max_poll = max_poll_interval
        self._clock = clock
        self._wake = asyncio.Event()
        self.delivered = 0

    def notify(self) -> None:
        """New events may be due: skip the poll wait."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        portals = self._sender.portals
        if not portals:
            log.info("notifier_idle", reason="no portal has a callback address")
            return
        log.info("notifier_started", owner=self.owner, portals=portals)
        idle = self._poll
        while not stop.is_set():
            try:
                events = await asyncio.to_thread(self._store.claim_events, self.owner, portals,
                                                 self._concurrency, self._lease)
            except Exception:
                log.exception("events_claim_failed")
                events = []
            if not events:
                self._wake.clear()
                await wait_any(self._wake, stop, timeout=idle)
                idle = min(self._max_poll, idle * 2)
                continue
            idle = self._poll
            results = await asyncio.gather(*(self._push(e) for e in events))
            try:
                await asyncio.to_thread(self._store.finish_events, results)
            except Exception:
                # The leases run out and the events go again: the portal sees a repeat, by id.
                log.exception("events_finish_failed", count=len(results))
                await asyncio.sleep(self._max_poll)
            self.delivered += sum(r.delivered for r in results)
        log.info("notifier_stopped", owner=self.owner, delivered=self.delivered)

    async def _push(self, event: FilingEvent) -> EventSendResult:
        body = orjson.dumps(event.to_json())
        try:
            await self._sender.send(event.portal, event.id, body)
        except Exception as exc:  # the sender's failures, whatever the transport said
            retry_after = getattr(exc, "retry_after", None)
            delay = self._backoff.delay_after(event.attempts + 1, retry_after)
            log.warning("event_push_failed", filing_ref=event.payload.get("reference"), event_id=event.id,
                        seq=event.seq, attempt=event.attempts + 1, error=str(exc), retry_in_s=round(delay, 3))
            return EventSendResult(event.id, self.owner, False, self._clock() + delay, str(exc))
        log.info("event_pushed", filing_ref=event.payload.get("reference"), event_id=event.id, seq=event.seq,
                 type=event.type)
        return EventSendResult(event.id, self.owner, True)

