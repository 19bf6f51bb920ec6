"""The sender notifier: pushes each filing's events to its portal's callback, in order.

Events are written by the transaction that changed the filing (`filing_events`); this loop
only moves them. It leases the earliest undelivered event of each filing, POSTs it, and
records the answer: delivered, or retried later with backoff. A later event of a filing is
never pushed while an earlier one is undelivered; every retry carries the same event id.

Past the horizon (`max_age_seconds` after the event was written) an event is given up: it
is not pushed again and no longer holds back the filing's later events; the portal still
reads it from the feed. What the sender raises by contract (`NotificationFailed`: the portal
is away or said no) is an expected fault, one warning line; anything else is a bug, logged
with its traceback and retried the same way. A store outage is waited out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Protocol

import orjson
import structlog

from domain.errors import NotificationFailed
from service.ports import EventSendResult, FilingEvent
from service.schedule import SchedulePolicy
from service.waiting import Backoff, store_retry, wait_any

__all__ = ["EventNotifier", "EventSender", "EventStore"]

log = structlog.get_logger("crocevia.notifier")


class EventStore(Protocol):
    def claim_events(self, owner: str, portals: Sequence[str], limit: int,
                     lease_seconds: float) -> list[FilingEvent]: ...

    def finish_events(self, results: Sequence[EventSendResult]) -> None: ...


class EventSender(Protocol):
    """Delivers one event body to a portal; raises `NotificationFailed` on anything but
    acceptance (it may carry `retry_after`, the portal's wish)."""

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
        max_age_seconds: float = 86_400.0,
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
        self._horizon = max_age_seconds
        self._store_backoff = Backoff(_INITIAL_STORE_BACKOFF, _MAX_STORE_BACKOFF)
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
            except Exception as exc:
                await store_retry(log, exc, self._store_backoff, stop, action="events_claim_failed",
                                  failed="events_claim_failed")
                continue
            self._store_backoff.reset()
            if not events:
                self._wake.clear()
                await wait_any(self._wake, stop, timeout=idle)
                idle = min(self._max_poll, idle * 2)
                continue
            idle = self._poll
            results = await asyncio.gather(*(self._push(e) for e in events))
            try:
                await asyncio.to_thread(self._store.finish_events, results)
            except Exception as exc:
                # The leases run out and the events go again: the portal sees a repeat, by id.
                await store_retry(log, exc, self._store_backoff, stop, action="events_finish_failed",
                                  failed="events_finish_failed", count=len(results))
                continue
            self.delivered += sum(r.delivered for r in results)
        log.info("notifier_stopped", owner=self.owner, delivered=self.delivered)

    async def _push(self, event: FilingEvent) -> EventSendResult:
        body = orjson.dumps(event.to_json())
        fields = {"filing_ref": event.payload.get("reference"), "event_id": event.id, "seq": event.seq}
        try:
            await self._sender.send(event.portal, event.id, body)
        except NotificationFailed as exc:  # the portal is away or said no: expected
            return self._failed(event, str(exc), exc.retry_after, fields)
        except Exception as exc:  # a bug in the sender: keep the traceback, retry the same way
            log.error("event_push_crashed", attempt=event.attempts + 1, exc_info=exc, **fields)
            return self._failed(event, f"{type(exc).__name__} in the sender", None, fields)
        log.info("event_pushed", type=event.type, **fields)
        return EventSendResult(event.id, self.owner, True)

    def _failed(self, event: FilingEvent, error: str, retry_after: float | None,
                fields: dict[str, object]) -> EventSendResult:
        """Schedule the next push, or give the event up if that push would fall past the horizon."""
        now = self._clock()
        attempt = event.attempts + 1
        delay = self._backoff.delay_after(attempt, retry_after)
        age = now - _epoch(event.created_at)
        if age + delay >= self._horizon:
            # Final, like an undeliverable delivery: operations should look at the portal.
            log.error("event_push_abandoned", attempt=attempt, error=error, age_s=round(age, 1),
                      horizon_s=self._horizon, **fields)
            return EventSendResult(event.id, self.owner, False, None,
                                   f"gave up after {attempt} attempts in {age:.0f}s: {error}", gave_up=True)
        log.warning("event_push_failed", attempt=attempt, error=error, retry_in_s=round(delay, 3), **fields)
        return EventSendResult(event.id, self.owner, False, now + delay, error)


#: Waits after a failed store call (claim or finish), doubling while it keeps failing.
_INITIAL_STORE_BACKOFF = 0.2
_MAX_STORE_BACKOFF = 5.0


def _epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()

