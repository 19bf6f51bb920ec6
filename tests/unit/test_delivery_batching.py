"""Batching on the delivery side: the relay lets a short batch's successors gather, the worker
commits outcomes that arrive close together in one transaction."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime, timezone

from structlog.testing import capture_logs

from bootstrap import worker_options
from config.settings import load_settings

from domain.messages import OutgoingMessage, Receipt
from service.delivery_port import AgencyAdapter, DeliveryResult, RetryPolicy
from service.ports import ClaimedJob, Completion
from service.relay import OutboxJob, OutboxRelay
from service.schedule import SchedulePolicy
from service.worker import AgencyRuntime, DeliveryWorker, WorkerOptions
from wiring.rabbitmq import build_relay


class _Store:
    """Hands out `per_claim` jobs per claim; notes when each claim happened and what was marked."""

    def __init__(self, per_claim: int, stop_after: int) -> None:
        self.per_claim, self.stop_after = per_claim, stop_after
        self.claims: list[float] = []
        self.marked: list[list[int]] = []  # per claim, what it marked first
        self.marked_apart: list[int] = []
        self.stop: asyncio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def claim_unpublished(self, owner: str, limit: int, lease_seconds: float,
                          published: Sequence[int] = ()) -> list[OutboxJob]:
        self.claims.append(time.monotonic())
        self.marked.append(sorted(published))
        if len(self.claims) >= self.stop_after:
            assert self.loop is not None and self.stop is not None
            self.loop.call_soon_threadsafe(self.stop.set)
        start = len(self.claims) * 1000
        return [OutboxJob(start + i, f"d{start + i}", "inps") for i in range(self.per_claim)]

    def mark_published(self, job_ids: Sequence[int]) -> None:
        self.marked_apart.extend(job_ids)


class _Publisher:
    async def publish(self, jobs: Sequence[OutboxJob]) -> list[int]:
        return [job.job_id for job in jobs]

    async def close(self) -> None:
        pass


def _relay_run(store: _Store, *, batch: int, gather: float) -> None:
    relay = OutboxRelay(store=store, publisher=_Publisher(), batch_size=batch, gather=gather)

    async def scenario() -> None:
        store.stop, store.loop = asyncio.Event(), asyncio.get_running_loop()
        await asyncio.wait_for(relay.run(store.stop), 20)

    with capture_logs():
        asyncio.run(scenario())


def test_the_relay_lets_the_next_batch_gather_after_a_short_one() -> None:
    """A pass shorter than the batch is followed by the gathering wait before the next claim."""
    store = _Store(per_claim=2, stop_after=2)
    _relay_run(store, batch=500, gather=0.3)
    assert len(store.claims) == 2
    assert store.claims[1] - store.claims[0] >= 0.3


def test_the_relay_claims_again_at_once_after_a_full_batch() -> None:
    """A full batch means more may be due: no gathering wait (it would be 30 s here)."""
    store = _Store(per_claim=5, stop_after=2)
    started = time.monotonic()
    _relay_run(store, batch=5, gather=30)
    assert len(store.claims) == 2 and time.monotonic() - started < 15


def test_the_relay_marks_a_batch_in_the_transaction_of_the_next_claim() -> None:
    """One transaction per pass: the confirmed ids ride on the next claim; the last batch is
    marked on its own when the relay stops."""
    store = _Store(per_claim=2, stop_after=3)
    _relay_run(store, batch=500, gather=0.001)
    assert store.marked == [[], [1000, 1001], [2000, 2001]]
    assert store.marked_apart == [3000, 3001]


def test_the_configured_gathers_reach_the_relay_and_the_workers() -> None:
    """`[relay] gather_interval` and `[worker] commit_gather_interval` are what the relay and
    the workers built from the settings wait (operators trade a little latency for batches)."""
    settings = load_settings(transport={"kind": "rabbitmq"}, relay={"gather_interval": 0.3},
                             worker={"commit_gather_interval": 0.2})
    assert build_relay(settings, _Store(per_claim=0, stop_after=1), ["inps"]).gather == 0.3
    assert worker_options(settings).commit_gather == 0.2


def _job(job_id: int) -> ClaimedJob:
    return ClaimedJob(job_id, f"{job_id:032d}", 1, "CRV-2026-000001", "inps", "RichiestaDurc", "m" * 32, "pending",
                      {}, 0, datetime.now(timezone.utc))


class _Source:
    """Two jobs at once, then none; records the size of each committed batch."""

    def __init__(self) -> None:
        self.handed = False
        self.batches: list[int] = []
        self.done = asyncio.Event()

    async def claim(self, owner: str, agencies: Sequence[str], limit: int) -> list[ClaimedJob]:
        if self.handed:
            return []
        self.handed = True
        return [_job(1), _job(2)]

    async def complete(self, completions: Sequence[Completion]) -> None:
        self.batches.append(len(completions))
        if sum(self.batches) == 2:
            self.done.set()


async def _deliver(adapter: AgencyAdapter, message: OutgoingMessage, policy: RetryPolicy) -> DeliveryResult:
    # The second job's call ends a few loop turns after the first one's.
    for _ in range(int(message.delivery_id) * 3):
        await asyncio.sleep(0)
    return DeliveryResult(receipt=Receipt(protocol_number=f"P-{message.delivery_id}"), error=None)


def _worker_batches(gather: float) -> list[int]:
    inps = AgencyRuntime(name="inps", adapter=object(), retry=RetryPolicy(),  # type: ignore[arg-type]  # passed to _deliver only
                         schedule=SchedulePolicy(), concurrency=4)
    source = _Source()
    worker = DeliveryWorker(source=source, agencies={"inps": inps}, deliver=_deliver,
                            options=WorkerOptions(poll_interval=0.01, max_poll_interval=0.02, commit_gather=gather))

    async def scenario() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))
        await asyncio.wait_for(source.done.wait(), 10)
        stop.set()
        await asyncio.wait_for(task, 10)

    with capture_logs():
        asyncio.run(scenario())
    return source.batches


def test_outcomes_ending_close_together_are_committed_in_one_batch() -> None:
    """While a call is still in flight, the committer waits briefly for its outcome."""
    assert _worker_batches(gather=0.5) == [2]


def test_without_gathering_each_outcome_is_committed_as_it_comes() -> None:
    """The contrast: no wait, the first outcome is committed alone."""
    assert _worker_batches(gather=0) == [1, 1]
