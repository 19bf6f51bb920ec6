"""The transactional outbox relay: publishes committed jobs to the broker, then marks them sent.

The relay is also the scheduler of the persisted retries: a retry is an outbox row whose
`available_at` lies in the future, and it is published only when due, so a long wait lives in
the database and never in an unacknowledged message. Several relays may run at once; a row
published twice (a relay killed between the broker's confirm and the mark) is harmless, because
a worker skips a job that is already done and agencies drop a repeated message id.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import structlog

from service.ports import StoreUnavailable
from service.waiting import Backoff, sleep_unless

__all__ = [
    "BrokerUnavailable",
    "OutboxJob",
    "OutboxRelay",
    "PublishFailed",
    "Publisher",
    "RelayStore",
    "TransportError",
]

log = structlog.get_logger("crocevia.relay")


class TransportError(Exception):
    """The broker failed; the transport translated the library's exception into this tree."""


class BrokerUnavailable(TransportError):
    """No connection to the broker, or it was lost; nothing unconfirmed may be taken as sent."""


class PublishFailed(TransportError):
    """The broker refused a message (negative confirm, or unroutable with `mandatory`)."""


@dataclass(frozen=True, slots=True)
class OutboxJob:
    """What goes on the wire: identifiers only, the store holds the payload."""

    job_id: int
    delivery_id: str
    agency: str


class RelayStore(Protocol):
    def claim_unpublished(self, owner: str, limit: int, lease_seconds: float,
                          published: Sequence[int] = ()) -> list[OutboxJob]:
        """Lease the next due jobs, after marking `published` (in the same transaction)."""
        ...

    def mark_published(self, job_ids: Sequence[int]) -> None:
        """Record that the broker confirmed these jobs."""
        ...


class Publisher(Protocol):
    async def publish(self, jobs: Sequence[OutboxJob]) -> list[int]:
        """Publish persistently and wait for the broker's confirms.

        Returns:
            The ids of the jobs the broker confirmed; the others were refused (logged).

        Raises:
            BrokerUnavailable: the connection is missing or was lost before every confirm came.
        """
        ...

    async def close(self) -> None: ...


class OutboxRelay:
    """Claims due unpublished outbox rows under a lease, publishes them, marks them published."""

    def __init__(
        self,
        *,
        store: RelayStore,
        publisher: Publisher,
        batch_size: int = 500,
        lease_seconds: float = 15.0,
        poll_interval: float = 0.02,
        max_poll_interval: float = 0.2,
        backoff_initial: float = 0.2,
        backoff_max: float = 5.0,
        hold_before_mark: float = 0.0,
        gather: float = 0.05,
        owner: str | None = None,
    ) -> None:
        self.owner = owner or f"relay-{uuid.uuid4().hex[:12]}"
        self._store = store
        self._publisher = publisher
        self._batch = batch_size
        self._lease = lease_seconds
        self._poll = poll_interval
        self._max_poll = max_poll_interval
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._hold = hold_before_mark
        #: After a pass shorter than a batch, wait this long before claiming again: each pass
        #: costs a store round trip and a confirm round trip whatever its size, so letting the
        #: next batch gather shares that cost among more jobs, and downstream each worker
        #: claims (one store read) and commits more jobs at a time.
        self.gather = gather
        self.published = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; every failure is logged and retried with backoff."""
        idle = self._poll
        backoff = Backoff(self._backoff_initial, self._backoff_max, jitter=True)
        pending: list[OutboxJob] = []  # claimed but not confirmed: published first next time
        # Confirmed but not yet marked: marked with the next claim, in its transaction (one
        # transaction per pass instead of two); a crash before that publishes them again.
        confirmed: list[int] = []
        log.info("relay_started", owner=self.owner)
        while not stop.is_set():
            try:
                if not pending:
                    pending = await asyncio.to_thread(
                        self._store.claim_unpublished, self.owner, self._batch, self._lease, confirmed
                    )
                    self.published += len(confirmed)
                    confirmed = []
                if not pending:
                    await sleep_unless(stop, idle)
                    idle = min(self._max_poll, idle * 2)
                    continue
                idle = self._poll
                confirmed = await self._publisher.publish(pending)
                if self._hold:
                    await sleep_unless(stop, self._hold)
                short, pending = len(pending) < self._batch, []
                backoff.reset()
                if short and self.gather:
                    await sleep_unless(stop, self.gather)
            except BrokerUnavailable as exc:
                log.warning("broker_unavailable", owner=self.owner, error=str(exc),
                            unconfirmed=len(pending), retry_in=round(backoff.wait, 2))
                await backoff.sleep(stop)
            except StoreUnavailable as exc:
                # Expected: one line per retry. Claimed rows stay leased and come back; rows
                # published but not marked are marked with the next claim, or else published
                # again after their lease (harmless).
                log.warning("store_unavailable", owner=self.owner, error=str(exc), retry_in=round(backoff.wait, 2))
                pending = []
                await backoff.sleep(stop)
            except Exception:
                # Not an outage: a bug or bad data, kept with its traceback.
                log.exception("relay_pass_failed", owner=self.owner, retry_in=round(backoff.wait, 2))
                pending, confirmed = [], []
                await backoff.sleep(stop)
        await self._mark_last(confirmed)
        await self._publisher.close()
        log.info("relay_stopped", owner=self.owner, published=self.published)

    async def _mark_last(self, confirmed: list[int]) -> None:
        """Mark the last confirmed batch before stopping (if the store is away, its rows are
        published again after their lease: harmless)."""
        if not confirmed:
            return
        try:
            await asyncio.to_thread(self._store.mark_published, confirmed)
            self.published += len(confirmed)
        except StoreUnavailable as exc:
            log.warning("store_unavailable", owner=self.owner, error=str(exc), unmarked=len(confirmed))
        except Exception:
            log.exception("relay_mark_failed", owner=self.owner, unmarked=len(confirmed))
