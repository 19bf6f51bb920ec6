"""Operators' actions as use cases: each previews what it would do, or (confirmed) does it,
audited as `operator:NAME`; and the board of paused agencies the workers consult."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from domain.states import RESENDABLE_DELIVERY_STATES, DeliveryState
from domain.timestamps import epoch_rfc3339, rfc3339
from service.ports import DeliveryView
from service.store_ports import RecipientOperations

__all__ = [
    "AgencyThrottledNow",
    "BULK_RESEND_MAX",
    "CANCELLABLE_STATES",
    "BulkResend",
    "MAX_REASON",
    "OperationsPort",
    "PAUSED_REASON",
    "PauseBoard",
    "bulk_resend",
    "can_cancel",
    "can_resend",
    "can_retry",
    "operator_actor",
    "resend_preview",
]

log = structlog.get_logger("crocevia.operations")

#: Why a job of a paused agency was deferred (the worker's log line).
PAUSED_REASON = "agency paused by an operator"
#: A recipient an operator may cancel: not yet taken in charge by the agency, or given up.
#: An acknowledged one is the agency's now: cancelling our record would not cancel theirs.
CANCELLABLE_STATES = frozenset({DeliveryState.PENDING, DeliveryState.WAITING, DeliveryState.RETRYING,
                                DeliveryState.HELD, DeliveryState.UNDELIVERABLE})
#: The longest reason an operator may give (kept in the audit trail; operator API and console).
MAX_REASON = 500


class AgencyThrottledNow(Exception):
    """The agency asked for no calls before `until` (Retry-After): a retry now needs `force`."""

    def __init__(self, agency: str, until: float) -> None:
        when = epoch_rfc3339(until)
        super().__init__(f"{agency} asked for no calls before {when} (Retry-After); "
                         "send \"force\": true with a \"reason\" to call it anyway")
        self.agency = agency
        self.until = until


#: The most recipients one confirmed bulk resend sends again (the rest: run it again).
BULK_RESEND_MAX = 500


def operator_actor(name: str) -> str:
    """The audit trail's actor for an operator (same as `hub.py lockouts lift`)."""
    return f"operator:{name}"


#: What the actions need of the store (kept under its first name; see `service.store_ports`).
OperationsPort = RecipientOperations


# What an operator may ask of a recipient in `state` (its state's value, or the DeliveryState:
# a StrEnum member is equal to, and hashes as, its value). The store checks again when it acts.
def can_resend(state: str) -> bool:
    """Whether a recipient in `state` may be resent (with the same message id)."""
    return state in RESENDABLE_DELIVERY_STATES


def can_retry(state: str) -> bool:
    """Whether a recipient in `state` may be retried now (only one waiting for its next attempt)."""
    return state == DeliveryState.RETRYING


def can_cancel(state: str) -> bool:
    """Whether a recipient in `state` may be cancelled (see `CANCELLABLE_STATES`)."""
    return state in CANCELLABLE_STATES


def resend_preview(view: DeliveryView) -> dict[str, Any]:
    """What a resend of this recipient would do (nothing is changed)."""
    ok = can_resend(view.state)
    return {"wouldResend": ok, "state": view.state, "messageId": view.message_id,
            "reason": None if ok else f"the recipient is {view.state}; a resend needs undeliverable or cancelled"}


@dataclass(frozen=True, slots=True)
class BulkResend:
    """What a bulk resend found (preview) or did (confirmed)."""

    matching: int
    resent: list[str]
    skipped: list[dict[str, str]]
    remaining: int


def bulk_resend(store: OperationsPort, agency: str, start: datetime, end: datetime, *, operator: str,
                confirm: bool, limit: int = BULK_RESEND_MAX, reason: str | None = None) -> BulkResend:
    """Resend `agency`'s recipients that became undeliverable in [start, end), at most `limit`
    (bounded: a big window is finished by running it again). Unconfirmed: only the count.

    Each recipient is resent in its own transaction (and audited), so one that cannot be
    resent (its message needs a correction, what it waits for failed) is skipped, not fatal.
    """
    from service.ports import NotResendable, RecipientNotFound

    limit = max(1, min(limit, BULK_RESEND_MAX))
    count, references = store.undeliverable_recipients(agency, start, end, limit if confirm else 0)
    if not confirm:
        return BulkResend(matching=count, resent=[], skipped=[], remaining=count)
    actor = operator_actor(operator)
    resent: list[str] = []
    skipped: list[dict[str, str]] = []
    for reference in references:
        try:
            store.resend_recipient(reference, None, agency, actor=actor,
                                   detail={"bulk": True, "reason": reason})
            resent.append(reference)
        except (NotResendable, RecipientNotFound) as exc:
            skipped.append({"reference": reference, "reason": str(exc)})
    store.audit(actor, "agency_bulk_resend", agency, "done",
                {"agency": agency, "from": rfc3339(start), "to": rfc3339(end), "matching": count,
                 "resent": len(resent), "skipped": len(skipped), "reason": reason})
    log.info("bulk_resend_done", agency=agency, matching=count, resent=len(resent), skipped=len(skipped))
    return BulkResend(matching=count, resent=resent, skipped=skipped, remaining=max(0, count - len(references)))


class PauseBoard:
    """Which agencies operators paused, as the store says, read at most once per `ttl`.

    Every worker process reads the same rows, so a pause holds everywhere within `ttl`. If
    the store cannot be read the last answer stands (a failing read neither pauses nor
    resumes anything).
    """

    def __init__(self, read: Callable[[], Collection[str]], *, ttl: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._read = read
        self._ttl = ttl
        self._clock = clock
        self._paused: frozenset[str] = frozenset()
        self._read_at: float | None = None
        self._lock = asyncio.Lock()

    async def is_paused(self, agency: str) -> bool:
        """Whether `agency` is paused. A "no" may be `ttl` old (the common, cheap answer); a
        "yes" is read afresh, so a job made due by a resume is not deferred again on a stale
        answer (and paused jobs come by once per pause hold only)."""
        async with self._lock:
            stale = self._read_at is None or self._clock() - self._read_at >= self._ttl
            if stale or agency in self._paused:
                await self._refresh()
        return agency in self._paused

    async def _refresh(self) -> None:
        try:
            self._paused = frozenset(await asyncio.to_thread(self._read))
        except Exception as exc:  # noqa: BLE001 - the last answer stands; the store's outage is logged
            log.warning("paused_agencies_unreadable", error=f"{type(exc).__name__}: {str(exc)[:200]}")
        self._read_at = self._clock()
