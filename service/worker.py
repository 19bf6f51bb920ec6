"""The delivery worker: claims jobs, keeps many agency calls in flight, commits outcomes in batches.

One asyncio loop per process. Each agency has its own concurrency limit, so a slow agency
fills only its own slots and never starves the others. Outcomes are written in batches by a
single committer task; a job is closed only in the same transaction that records its outcome,
so a worker killed at any point loses nothing: its lease expires and the job is taken again,
and the stable message id lets the agency answer a repeat with its first receipt.

Before calling an agency a pass asks whether an operator paused it (the store's pause board),
then its maintenance calendar and circuit breaker; when one says no, the job moves to the
time they name, without a call and without counting a pass against the delivery. An
acknowledged delivery (late outcome) is advanced by polling the agency's status resource
(PULL) or, when its callback is overdue, by sending the same message id again, which the
agency answers with what it knows (PUSH).

Failures of the store are told apart: an outage (`StoreUnavailable`) is waited out with
backoff, one warning line per retry, and no outcome is dropped; any other commit failure is
a bug or bad data: it is retried a bounded number of times (with its traceback), then the
batch is split until the one outcome that cannot be recorded is found and its delivery
parked as undeliverable (`COMMIT_FAILED`), while the rest of the batch is recorded.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import structlog

from domain.errors import AgencyThrottled, TransientDeliveryError
from domain.messages import OutgoingMessage
from domain.states import TERMINAL_DELIVERY_STATES, DeliveryState
from service.agency_runtime import AgencyRuntime, WorkerOptions
from service.delivery_port import AgencyAdapter, DeliveryResult, RetryPolicy
from service.operations import PAUSED_REASON, PauseBoard
from service.metrics import HubMetrics
from service.ports import ClaimedJob, Completion, StoreUnavailable
from service.settle import abandon, defer, park_uncommitted, settle
from service.waiting import Backoff, sleep_unless, store_retry, wait_any

__all__ = ["AgencyRuntime", "DeliveryWorker", "JobSource", "WorkerOptions"]

log = structlog.get_logger("crocevia.worker")

_TERMINAL = {s.value for s in TERMINAL_DELIVERY_STATES}
#: Waits after a failed store call (claim or commit), doubling while it keeps failing.
_STORE_BACKOFF_INITIAL = 0.1
_STORE_BACKOFF_MAX = 5.0


class JobSource(Protocol):
    """Where jobs come from and where their outcomes go (embedded queue or RabbitMQ)."""

    async def claim(self, owner: str, agencies: Sequence[str], limit: int) -> list[ClaimedJob]: ...

    async def complete(self, completions: Sequence[Completion]) -> None: ...


DeliverFn = Callable[[AgencyAdapter, OutgoingMessage, RetryPolicy], Awaitable[DeliveryResult]]
PollFn = Callable[[AgencyAdapter, OutgoingMessage, str], Awaitable[DeliveryResult]]
#: `report(agency, breaker.snapshot(), owner)`: publish a breaker's new state.
CircuitReport = Callable[[str, Mapping[str, Any], str], Awaitable[None]]


class DeliveryWorker:
    """Delivers the claimed jobs of `agencies`, each within its own concurrency limit."""

    def __init__(
        self,
        *,
        source: JobSource,
        agencies: Mapping[str, AgencyRuntime],
        deliver: DeliverFn,
        options: WorkerOptions | None = None,
        owner: str | None = None,
        clock: Callable[[], float] = time.time,
        poll: PollFn | None = None,
        report_circuit: CircuitReport | None = None,
        refresh_circuit: CircuitReport | None = None,
        pauses: PauseBoard | None = None,
        metrics: HubMetrics | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> None:
        opts = options or WorkerOptions()
        self.owner = owner or f"worker-{uuid.uuid4().hex[:12]}"
        self._agencies = dict(agencies)
        self._poll_fn = poll
        self._breakers = {name: a.breaker for name, a in self._agencies.items() if a.breaker is not None}
        self._report_circuit = report_circuit
        #: The periodic re-report (default: `report_circuit`); it must not hide another live
        #: worker's different state (see `SqlStore.report_agency_status`).
        self._refresh_circuit = refresh_circuit or report_circuit
        self._max_handouts = opts.max_handouts
        self._pauses = pauses
        self._pause_hold = opts.pause_hold
        self._metrics = metrics
        #: Breakers are re-reported this often, so the circuit view can tell a live worker's
        #: report from a stopped one's (`stale`); None: only on a change.
        self._report_interval = opts.report_interval
        self._heartbeat = heartbeat
        self._source = source
        self._deliver = deliver
        self._batch_size = opts.batch_size
        self._commit_batch = opts.commit_batch
        self._commit_attempts = max(1, opts.commit_attempts)
        self._commit_gather = opts.commit_gather
        self._claim_backoff = Backoff(_STORE_BACKOFF_INITIAL, _STORE_BACKOFF_MAX)
        self._poll = opts.poll_interval
        self._max_poll = opts.max_poll_interval
        self._clock = clock
        self._in_flight = {agency: 0 for agency in self._agencies}
        self._slot_freed = asyncio.Event()
        self._wake = asyncio.Event()
        self._outcomes: asyncio.Queue[Completion] = asyncio.Queue()
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0

    def notify(self) -> None:
        """New jobs may be due (called by an API in the same process): skip the poll wait."""
        self._wake.set()

    def _free_slots(self) -> dict[str, int]:
        limits = {a: self._agencies[a].concurrency if a in self._agencies else 16 for a in self._in_flight}
        return {a: limits[a] - n for a, n in self._in_flight.items() if limits[a] > n}

    async def run(self, stop: asyncio.Event) -> None:
        committer = asyncio.create_task(self._commit_loop(stop))
        reporter = asyncio.create_task(self._report_loop(stop)) if self._report_interval else None
        idle = self._poll
        log.info("worker_started", owner=self.owner, agencies=sorted(self._agencies))
        try:
            while not stop.is_set():
                if self._heartbeat is not None:
                    self._heartbeat()
                if committer.done():
                    # Outcomes would pile up unrecorded: end this worker, loudly (its supervisor
                    # stops the process; the leases expire and the jobs are taken again).
                    committer.result()
                    raise RuntimeError("the outcome-commit loop ended")
                free = self._free_slots()
                if not free:
                    self._slot_freed.clear()
                    await wait_any(self._slot_freed, stop, timeout=self._max_poll)
                    continue
                limit = min(self._batch_size, sum(free.values()))
                jobs = await self._claim(list(free), limit, stop)
                if not jobs:
                    self._wake.clear()
                    await wait_any(self._wake, stop, timeout=idle)
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
            if not committer.done():  # a dead committer would never drain the queue
                drained = asyncio.ensure_future(self._outcomes.join())
                await asyncio.wait({drained, committer}, return_when=asyncio.FIRST_COMPLETED)
                drained.cancel()
            committer.cancel()
            if reporter is not None:
                reporter.cancel()
            await asyncio.gather(committer, *([reporter] if reporter else []), return_exceptions=True)
            log.info("worker_stopped", owner=self.owner, delivered=self.delivered)

    async def _claim(self, agencies: list[str], limit: int, stop: asyncio.Event) -> list[ClaimedJob]:
        try:
            jobs = await self._source.claim(self.owner, agencies, limit)
        except Exception as exc:
            await store_retry(log, exc, self._claim_backoff, stop, action="jobs_claim", failed="jobs_claim_failed",
                              owner=self.owner)
            return []
        self._claim_backoff.reset()
        return jobs

    async def _handle(self, job: ClaimedJob) -> None:
        structlog.contextvars.bind_contextvars(
            filing_ref=job.filing_reference, delivery_id=job.delivery_id, agency=job.agency
        )
        try:
            if job.state in _TERMINAL or job.state == DeliveryState.WAITING.value:
                # A redelivered job whose delivery already settled (or that waits for another
                # recipient and should have no job): close it, send nothing.
                completion = Completion(job=job, owner=self.owner, new_state=job.state)
            elif job.handed_out >= self._max_handouts:
                completion = abandon(job, owner=self.owner, limit=self._max_handouts)
                log.error("delivery_poisoned", handed_out=job.handed_out, limit=self._max_handouts)
            else:
                completion = await self._pass(job)
                _log_completion(completion)
                if self._metrics is not None:
                    self._metrics.record_outcome(job.agency, completion.new_state, deferred=completion.deferred)
            await self._outcomes.put(completion)
        except Exception:
            log.exception("delivery_pass_crashed")
            raise
        finally:
            self._in_flight[job.agency] -= 1
            self._slot_freed.set()
            structlog.contextvars.clear_contextvars()

    async def _pass(self, job: ClaimedJob) -> Completion:
        agency = job.agency
        runtime = self._agencies[agency]
        schedule = runtime.schedule
        now = self._clock()
        if self._pauses is not None and await self._pauses.is_paused(agency):
            # An operator paused the agency: no call, no pass counted and no age bound (nothing
            # is lost however long the pause); resuming makes the job due at once.
            return Completion(job=job, owner=self.owner, new_state=job.state, deferred=True,
                              next_attempt_at=now + self._pause_hold, last_error=PAUSED_REASON)
        calendar = runtime.maintenance
        resume = calendar.resume_at(now) if calendar else None
        if resume is not None:
            return defer(job, resume, f"{agency} is in a maintenance window", schedule, owner=self.owner, now=now)
        breaker = runtime.breaker
        # An operator forced this job past the agency's Retry-After (audited with a reason).
        admission = breaker.admit(now) if breaker is not None and not job.forced else None
        if admission is not None and not admission.allowed:
            return defer(job, admission.retry_at, admission.reason, schedule, owner=self.owner, now=now)
        probe = admission is not None and admission.probe
        if probe:
            await self._publish(agency)
        message = OutgoingMessage(
            message_id=job.message_id,
            delivery_id=job.delivery_id,
            filing_reference=job.filing_reference,
            agency=agency,
            operation=job.operation,
            content=job.content,
            contract_version=job.contract_version,
        )
        poll_url = job.poll_url if job.state == DeliveryState.ACKNOWLEDGED.value else None
        polling = poll_url is not None
        try:
            if poll_url is not None and self._poll_fn is not None:
                result = await self._poll_fn(runtime.adapter, message, poll_url)
            else:
                # Half-open: a single call decides whether the circuit closes again.
                policy = dataclasses.replace(runtime.retry, attempts=1) if probe else runtime.retry
                result = await self._deliver(runtime.adapter, message, policy)
        except BaseException:
            if breaker is not None and probe:
                breaker.record([], self._clock(), probe=True)
            raise
        after = self._clock()
        if self._metrics is not None:
            self._metrics.record_tries(agency, result.tries)
        if breaker is not None:
            answered = [not isinstance(t.error, TransientDeliveryError) for t in result.tries]
            changed = breaker.record(answered, after, probe=probe)
            error = result.error
            if isinstance(error, AgencyThrottled) and error.retry_after:
                changed |= breaker.throttle(after + error.retry_after)
            if changed:
                await self._publish(agency)
        return settle(job, result, schedule, owner=self.owner, now=after,
                      late=runtime.late, poll=polling and self._poll_fn is not None)

    async def _report_loop(self, stop: asyncio.Event) -> None:
        """Re-report every breaker now and then: the report's age tells readers this worker lives."""
        assert self._report_interval
        while not stop.is_set():
            for agency in self._breakers:
                await self._publish(agency, changed=False)
            await sleep_unless(stop, self._report_interval)

    async def _publish(self, agency: str, *, changed: bool = True) -> None:
        """Tell the store how the agency's circuit stands now (best effort: it is only shown)."""
        breaker = self._breakers[agency]
        snapshot = breaker.snapshot()
        if changed:
            log.info("circuit_changed", agency=agency, **snapshot)
        report = self._report_circuit if changed else self._refresh_circuit
        if report is None:
            return
        try:
            await report(agency, snapshot, self.owner)
        except StoreUnavailable as exc:
            log.warning("store_unavailable", action="circuit_report", agency=agency, error=str(exc))
        except Exception:
            log.exception("circuit_report_failed", agency=agency)

    async def _commit_loop(self, stop: asyncio.Event) -> None:
        while True:
            batch = [await self._outcomes.get()]
            if (self._commit_gather and self._outcomes.qsize() + 1 < self._commit_batch
                    and any(self._in_flight.values())):
                await asyncio.sleep(self._commit_gather)
            while len(batch) < self._commit_batch and not self._outcomes.empty():
                batch.append(self._outcomes.get_nowait())
            await self._commit(batch, self._commit_attempts)
            for _ in batch:
                self._outcomes.task_done()

    async def _commit(self, batch: list[Completion], attempts: int) -> None:
        """Record `batch`: through any store outage, or else by parts (see the module doc).

        If this process dies meanwhile the leases expire and the jobs are retaken, never lost.
        """
        backoff, failures = Backoff(_STORE_BACKOFF_INITIAL, _STORE_BACKOFF_MAX), 0
        while True:
            try:
                await self._source.complete(batch)
            except Exception as exc:
                if not isinstance(exc, StoreUnavailable):  # an outage holds the outcomes however long
                    failures += 1
                    if failures >= attempts:
                        await self._split(batch, exc)
                        return
                # No stop: the outcomes are held until recorded (the run drains them before it ends).
                await store_retry(log, exc, backoff, None, action="outcomes_commit", failed="outcomes_commit_failed",
                                  failures=failures, count=len(batch))
            else:
                self.delivered += sum(1 for c in batch if c.new_state == DeliveryState.PROTOCOLLED.value)
                return

    async def _split(self, batch: list[Completion], exc: Exception) -> None:
        """The batch keeps failing for another reason than an outage: record its halves apart
        (one try each: the error has proved itself), down to the one outcome at fault."""
        if len(batch) > 1:
            log.warning("outcomes_commit_split", count=len(batch), error=_one_line(exc))
            middle = len(batch) // 2
            await self._commit(batch[:middle], 1)
            await self._commit(batch[middle:], 1)
            return
        (completion,) = batch
        parked = park_uncommitted(completion, _one_line(exc))
        job = completion.job
        log.error("delivery_parked", filing_ref=job.filing_reference, delivery_id=job.delivery_id, agency=job.agency,
                  outcome_code=parked.outcome_code, state=completion.new_state, exc_info=exc)
        backoff = Backoff(_STORE_BACKOFF_INITIAL, _STORE_BACKOFF_MAX)
        while True:
            try:
                await self._source.complete([parked])
                return
            except StoreUnavailable as outage:
                await store_retry(log, outage, backoff, None, action="outcome_park", count=1)
            except Exception:
                # Even the parking is refused: leave the job to its lease (it comes back, and
                # the poison-job guard ends its round trips).
                log.exception("delivery_park_failed", delivery_id=job.delivery_id, agency=job.agency)
                return


def _one_line(exc: BaseException) -> str:
    """An exception as one short line for logs and the delivery's reason (a database error's
    text goes on with the statement)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else 'no detail'}"[:500]


def _log_completion(c: Completion) -> None:
    fields: dict[str, Any] = {"state": c.new_state, "tries": len(c.attempts)}
    if c.deferred:
        log.info("delivery_deferred", reason=c.last_error, next_attempt_at=c.next_attempt_at, **fields)
    elif c.new_state == DeliveryState.PROTOCOLLED.value:
        log.info("delivery_protocolled", protocol_number=c.protocol_number, **fields)
    elif c.new_state == DeliveryState.ACKNOWLEDGED.value and c.last_error is None:
        log.info("delivery_acknowledged", correlation_id=c.correlation_id, pull=c.poll_url is not None,
                 next_check_at=c.next_attempt_at, **fields)
    elif c.new_state == DeliveryState.ACKNOWLEDGED.value:
        log.warning("late_outcome_check_failed", error=c.last_error, next_attempt_at=c.next_attempt_at, **fields)
    elif c.new_state == DeliveryState.RETRYING.value:
        log.warning("delivery_retry_scheduled", error=c.last_error, next_attempt_at=c.next_attempt_at, **fields)
    elif c.new_state == DeliveryState.REJECTED.value:
        log.warning("delivery_rejected", outcome_code=c.outcome_code, **fields)
    else:
        log.error("delivery_undeliverable", error=c.last_error, **fields)

