"""Retention: the payloads of settled filings are purged once the configured period has passed.

What holds personal data goes (the filing document, the subject's name, each agency's message as
mapped, the bodies sent and received); what proves what happened stays (reference, states,
protocol numbers, the filing's digest) and each purge is an audit line carrying the SHA-256 of
what it removed. `hub.py retention run` and the workers' periodic pass both call `run_retention`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import structlog

from service.ports import StoreError
from service.waiting import sleep_unless

__all__ = ["RETENTION_ACTOR", "PayloadPurger", "PurgedPayload", "RetentionReport", "retention_loop", "run_retention"]

log = structlog.get_logger("crocevia.retention")

#: Whom the audit trail names for a purge: the hub itself, by its retention rule.
RETENTION_ACTOR = "system:retention"


@dataclass(frozen=True, slots=True)
class PurgedPayload:
    """One filing whose payloads were (or, on a dry run, would be) purged."""

    reference: str
    settled_at: datetime
    removed: dict[str, Any]  # what was removed: sizes and counts, never the content
    sha256: str  # of the removed payloads' canonical form (storage.retention)


@dataclass
class RetentionReport:
    cutoff: datetime
    dry_run: bool
    filings: list[PurgedPayload] = field(default_factory=list)


class PayloadPurger(Protocol):
    """The store's side (`storage.retention.RetentionStore`)."""

    def purge_settled_payloads(self, before: datetime, *, limit: int, dry_run: bool,
                               actor: str, retention_days: int) -> list[PurgedPayload]: ...


def run_retention(purger: PayloadPurger, days: int, *, now: datetime | None = None, batch: int = 200,
                  dry_run: bool = False, actor: str = RETENTION_ACTOR) -> RetentionReport:
    """Purge (or, with `dry_run`, list) every settled filing older than `days`, a batch per
    transaction. `days` 0 purges nothing: retention is off.

    Raises:
        StoreError: the store failed; the batches committed before stay purged.
    """
    cutoff = (now or datetime.now(timezone.utc)) - timedelta(days=days)
    report = RetentionReport(cutoff, dry_run)
    if days <= 0:
        return report
    if dry_run:  # nothing changes, so one pass lists them all
        report.filings = purger.purge_settled_payloads(cutoff, limit=0, dry_run=True, actor=actor,
                                                       retention_days=days)
        return report
    while True:
        done = purger.purge_settled_payloads(cutoff, limit=batch, dry_run=False, actor=actor, retention_days=days)
        report.filings.extend(done)
        if len(done) < batch:
            return report


async def retention_loop(purger: PayloadPurger, days: int, interval: float, stop: asyncio.Event, *,
                         batch: int = 200, clock: Callable[[], float] = time.time) -> None:
    """A worker's periodic pass: purge what is due, then wait `interval` seconds (or `stop`).

    A store outage skips a pass (logged); the next pass catches up.
    """
    while not stop.is_set():
        now = datetime.fromtimestamp(clock(), timezone.utc)
        try:
            report = await asyncio.to_thread(run_retention, purger, days, now=now, batch=batch)
        except StoreError:
            log.warning("retention_pass_failed", exc_info=True)
        else:
            if report.filings:
                log.info("retention_pass_done", purged=len(report.filings))
        await sleep_unless(stop, interval)
