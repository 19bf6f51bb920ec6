"""The sender notifier: pushes each filing's events to its portal's callback, in order.

Events are written by the transaction that changed the filing (`filing_events`); this loop
only moves them. It leases the earliest undelivered event of each filing, POSTs it, and
records the answer: delivered, or retried later with backoff. A later event of a filing is
never pushed while an earlier one is undelivered; every retry carries the same event id.

Up to `concurrency` callbacks are in flight, as a window that slides: when half of it is free,
the answers in hand are recorded and as many events claimed as there are free places. A
portal that is slow to answer one callback holds that place only; in batches that waited for
their slowest callback, a portal answering one callback in fifty a second late took under a
quarter of the callbacks it took otherwise (`bench/rabbitmq_e2e.py --callbacks --callback-slow 50:1000`).
Each portal also has a share of the window of its own (the most callbacks in flight to it, the
sender says how many): a portal that holds its callbacks fills its share, not the window, and
the other portals' events keep going.

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
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Protocol

import orjson
import structlog

from domain.errors import NotificationFailed
from service.ports import EventSendResult, FilingEvent
from service.schedule import SchedulePolicy
from service.waiting import Backoff, store_retry

__all__ = ["EventNotifier", "EventSender", "EventStore"]

log = structlog.get_logger("crocevia.notifier")


class EventStore(Protocol):
    def claim_events(self, owner: str, portals: Mapping[str, int], limit: int,
                     lease_seconds: float) -> list[FilingEvent]: ...

    def finish_events(self, results: Sequence[EventSendResult]) -> None: ...


class EventSender(Protocol):
    """Delivers one event body to a portal; raises `NotificationFailed` on anything but
    acceptance (it may carry `retry_after`, the portal's wish)."""

    @property
    def portals(self) -> Mapping[str, int]:
        """Each portal with a callback address, and the most callbacks in flight to it at once."""

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
        concurrency: int = 64,
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
        self._turn = 0  #: which portal's events a claim takes first (they take turns)
        self.delivered = 0

    def notify(self) -> None:
        """New events may be due: skip the poll wait."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        shares = dict(self._sender.portals)
        if not shares:
            log.info("notifier_idle", reason="no portal has a callback address")
            return
        portals = sorted(shares)
        log.info("notifier_started", owner=self.owner, portals=portals)
        # Claim again once half of the window that one portal can fill is free: claims in
        # batches, and a portal holding its whole share does not keep the others waiting.
        refill = max(1, min(self._concurrency, max(shares.values())) // 2)
        pushing: dict[asyncio.Task[EventSendResult], str] = {}  #: push → its portal
        busy: Counter[str] = Counter()  #: callbacks in flight per portal
        answered: list[EventSendResult] = []  #: pushes ended, not yet recorded
        answered_since = 0.0  #: when the oldest of them ended (monotonic)
        idle = self._poll
        claim_at = 0.0  #: after a claim that found nothing, the next one waits until then (monotonic)
        try:
            while not stop.is_set():
                if self._wake.is_set():
                    self._wake.clear()
                    claim_at = 0.0
                free = self._concurrency - len(pushing)
                room = {p: shares[p] - busy[p] for p in portals if busy[p] < shares[p]}
                if min(free, sum(room.values())) >= refill and time.monotonic() >= claim_at:
                    # Recorded first: a filing's next event is due only once this one is delivered.
                    await self._record(answered, stop)
                    answered = []
                    events = await self._claim(portals, room, free, stop)
                    if events:
                        idle = self._poll
                        for event in events:
                            pushing[asyncio.create_task(self._push(event))] = event.portal
                            busy[event.portal] += 1
                    elif events is not None:
                        claim_at = time.monotonic() + idle
                        idle = min(self._max_poll, idle * 2)
                if answered and (not pushing or time.monotonic() - answered_since >= self._poll):
                    await self._record(answered, stop)
                    answered = []
                timeout = self._poll if pushing or answered else max(0.0, claim_at - time.monotonic())
                ended = await self._progress(set(pushing), stop, timeout)
                if ended:
                    if not answered:
                        answered_since = time.monotonic()
                    for task in ended:
                        busy[pushing.pop(task)] -= 1
                        answered.append(task.result())
        except asyncio.CancelledError:
            for task in pushing:
                task.cancel()  # their leases run out and the events go again: a repeat, by id
            raise
        # Stopping: the callbacks in flight end (each within the client's deadline) and are recorded.
        if pushing:
            ended, _ = await asyncio.wait(set(pushing))
            answered.extend(task.result() for task in ended)
        await self._record(answered, None)
        log.info("notifier_stopped", owner=self.owner, delivered=self.delivered)

    async def _claim(self, portals: list[str], room: Mapping[str, int], limit: int,
                     stop: asyncio.Event) -> list[FilingEvent] | None:
        """Lease up to `limit` due events, each portal up to its `room`, the portals taking turns
        at being served first; None when the store failed (after waiting it out a while)."""
        self._turn = (self._turn + 1) % len(portals)
        in_turn = {p: room[p] for p in portals[self._turn:] + portals[:self._turn] if p in room}
        try:
            events = await asyncio.to_thread(self._store.claim_events, self.owner, in_turn, limit, self._lease)
        except Exception as exc:
            await store_retry(log, exc, self._store_backoff, stop, action="events_claim_failed",
                              failed="events_claim_failed")
            return None
        self._store_backoff.reset()
        return events

    async def _record(self, results: list[EventSendResult], stop: asyncio.Event | None) -> None:
        """Record the pushes' answers. A failed write is not retried: the leases run out and the
        events go again, a repeat the portal recognises by id."""
        if not results:
            return
        try:
            await asyncio.to_thread(self._store.finish_events, results)
        except Exception as exc:
            await store_retry(log, exc, self._store_backoff, stop, action="events_finish_failed",
                              failed="events_finish_failed", count=len(results))
            return
        self.delivered += sum(r.delivered for r in results)

    async def _progress(self, pushing: set[asyncio.Task[EventSendResult]], stop: asyncio.Event,
                        timeout: float) -> set[asyncio.Task[EventSendResult]]:
        """Wait until a push ends, a wake or the stop comes, or `timeout`; the pushes ended."""
        waiters = {asyncio.ensure_future(self._wake.wait()), asyncio.ensure_future(stop.wait())}
        try:
            await asyncio.wait(pushing | waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        return {task for task in pushing if task.done()}

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

