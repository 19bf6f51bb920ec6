"""The delivery worker: claims jobs, keeps many agency calls in flight, commits outcomes in batches.

One asyncio loop per process. Each agency has its own concurrency limit, so a slow agency
fills only its own slots and never starves the others. Outcomes are written in batches by a
single committer task; a job is closed only in the same transaction that records its outcome,
so a worker killed at any point loses nothing: its lease expires and the job is taken again,
and the stable message id lets the agency answer a repeat with its first receipt.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog

from domain.messages import OutgoingMessage
from domain.states import TERMINAL_DELIVERY_STATES, DeliveryState
from service.ports import ClaimedJob, Completion
from service.schedule import SchedulePolicy
from service.settle import settle

__all__ = ["DeliveryWorker", "JobSource"]

log = structlog.get_logger("crocevia.worker")

_TERMINAL = {s.value for s in TERMINAL_DELIVERY_STATES}


class JobSource(Protocol):
    """Where jobs come from and where their outcomes go (embedded queue or RabbitMQ)."""

    async def claim(self, owner: str, agencies: Sequence[str], limit: int) -> list[ClaimedJob]: ...

    async def complete(self, completions: Sequence[Completion]) -> None: ...


DeliverFn = Callable[[Any, OutgoingMessage, Any], Awaitable[Any]]


class DeliveryWorker:
    def __init__(
        self,
        *,
        source: JobSource,
        adapters: Mapping[str, Any],
        retry_policies: Mapping[str, Any],
        schedules: Mapping[str, SchedulePolicy],
        concurrency: Mapping[str, int],
        deliver: DeliverFn,
        batch_size: int = 64,
        commit_batch: int = 64,
        poll_interval: float = 0.05,
        max_poll_interval: float = 0.5,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.owner = owner or f"worker-{uuid.uuid4().hex[:12]}"
        self._source = source
        self._adapters = adapters
        self._retry = retry_policies
        self._schedules = schedules
        self._limits = dict(concurrency)
        self._deliver = deliver
        self._batch_size = batch_size
        self._commit_batch = commit_batch
        self._poll = poll_interval
        self._max_poll = max_poll_interval
        self._clock = clock
        self._in_flight = {agency: 0 for agency in adapters}
        self._slot_freed = asyncio.Event()
        self._wake = asyncio.Event()
        self._outcomes: asyncio.Queue[Completion] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0

    def notify(self) -> None:
        """New jobs may be due (called by an API in the same process): skip the poll wait."""
        self._wake.set()

    def _free_slots(self) -> dict[str, int]:
        return {a: self._limits.get(a, 16) - n for a, n in self._in_flight.items() if self._limits.get(a, 16) > n}

    async def run(self, stop: asyncio.Event) -> None:
        committer = asyncio.create_task(self._commit_loop(stop))
        idle = self._poll
        log.info("worker_started", owner=self.owner, agencies=sorted(self._adapters))
        try:
            while not stop.is_set():
                free = self._free_slots()
                if not free:
                    self._slot_freed.clear()
                    await _wait_any(self._slot_freed, stop, timeout=self._max_poll)
                    continue
                limit = min(self._batch_size, sum(free.values()))
                jobs = await self._claim(list(free), limit)
                if not jobs:
                    self._wake.clear()
                    await _wait_any(self._wake, stop, timeout=idle)
                    idle = min(self._max_poll, idle * 2)
                    continue
                idle = self._poll
                for job in jobs:
                    self._in_flight[job.agency] = self._in_flight.get(job.agency, 0) + 1
                    task = asyncio.create_task(self._handle(job))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        finally:
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            await self._outcomes.join()
            committer.cancel()
            await asyncio.gather(committer, return_exceptions=True)
            log.info("worker_stopped", owner=self.owner, delivered=self.delivered)

    async def _claim(self, agencies: list[str], limit: int) -> list[ClaimedJob]:
        try:
            return await self._source.claim(self.owner, agencies, limit)
        except Exception:
            log.exception("jobs_claim_failed", owner=self.owner)
            await asyncio.sleep(self._max_poll)
            return []

    async def _handle(self, job: ClaimedJob) -> None:
        structlog.contextvars.bind_contextvars(
            filing_ref=job.filing_reference, delivery_id=job.delivery_id, agency=job.agency
        )
        try:
            if job.state in _TERMINAL:
                # A redelivered job whose delivery already settled: close it, send nothing.
                completion = Completion(job=job, owner=self.owner, new_state=job.state)
            else:
                message = OutgoingMessage(
                    message_id=job.message_id,
                    delivery_id=job.delivery_id,
                    filing_reference=job.filing_reference,
                    agency=job.agency,
                    operation=job.operation,
                    content=job.content,
                )
                result = await self._deliver(self._adapters[job.agency], message, self._retry[job.agency])
                completion = settle(
                    job, result, self._schedules[job.agency], owner=self.owner, now=self._clock()
                )
                _log_completion(completion)
            await self._outcomes.put(completion)
        except Exception:
            log.exception("delivery_pass_crashed")
            raise
        finally:
            self._in_flight[job.agency] -= 1
            self._slot_freed.set()
            structlog.contextvars.clear_contextvars()

    async def _commit_loop(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while True:
            batch = [await self._outcomes.get()]
            while len(batch) < self._commit_batch and not self._outcomes.empty():
                batch.append(self._outcomes.get_nowait())
            while True:
                try:
                    await self._source.complete(batch)
                    break
                except Exception:
                    # The database is away: hold the outcomes and try again; if this process
                    # dies meanwhile the leases expire and the jobs are retaken, never lost.
                    log.exception("outcomes_commit_failed", count=len(batch))
                    await asyncio.sleep(backoff)
                    backoff = min(5.0, backoff * 2)
            backoff = 0.1
            self.delivered += sum(1 for c in batch if c.new_state == DeliveryState.PROTOCOLLED.value)
            for _ in batch:
                self._outcomes.task_done()


def _log_completion(c: Completion) -> None:
    fields: dict[str, Any] = {"state": c.new_state, "tries": len(c.attempts)}
    if c.new_state == DeliveryState.PROTOCOLLED.value:
        log.info("delivery_protocolled", protocol_number=c.protocol_number, **fields)
    elif c.new_state == DeliveryState.RETRYING.value:
        log.warning("delivery_retry_scheduled", error=c.last_error, next_attempt_at=c.next_attempt_at, **fields)
    elif c.new_state == DeliveryState.REJECTED.value:
        log.warning("delivery_rejected", outcome_code=c.outcome_code, **fields)
    else:
        log.error("delivery_undeliverable", error=c.last_error, **fields)


async def _wait_any(event: asyncio.Event, stop: asyncio.Event, *, timeout: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()
