"""The embedded transport: the database's outbox table is the queue, claimed under a lease."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from service.ports import ClaimedJob, Completion
from service.store_ports import JobStore

__all__ = ["EmbeddedQueue"]


class EmbeddedQueue:
    """A `JobSource` over the store; blocking database calls run in worker threads."""

    def __init__(self, store: JobStore, *, lease_seconds: float) -> None:
        self._store = store
        self._lease = lease_seconds

    async def claim(self, owner: str, agencies: Sequence[str], limit: int) -> list[ClaimedJob]:
        return await asyncio.to_thread(self._store.claim_jobs, owner, agencies, limit, self._lease)

    async def complete(self, completions: Sequence[Completion]) -> None:
        await asyncio.to_thread(self._store.complete_jobs, completions)
