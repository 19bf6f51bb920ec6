"""Turn one worker pass over a delivery into the state the store records."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Protocol, Sequence

from domain.errors import (
    AgencyRejected,
    AgencyThrottled,
    DeliveryError,
    PermanentDeliveryError,
)
from domain.messages import Receipt
from domain.states import DeliveryState
from service.ports import AttemptRecord, ClaimedJob, Completion
from service.schedule import SchedulePolicy

__all__ = ["settle"]


class _Try(Protocol):
    number: int
    started_at: datetime
    duration_ms: float
    error: DeliveryError | None


class _Result(Protocol):
    receipt: Receipt | None
    error: DeliveryError | None
    tries: Sequence[_Try]


def _attempt_records(tries: Sequence[_Try]) -> list[AttemptRecord]:
    records = []
    for t in tries:
        if t.error is None:
            result, code, text = "ok", None, None
        else:
            result = "permanent" if isinstance(t.error, PermanentDeliveryError) else "transient"
            code, text = t.error.code, t.error.text[:2000]
        records.append(AttemptRecord(t.number, t.started_at, t.duration_ms, result, code, text))
    return records


def settle(
    job: ClaimedJob, result: _Result, policy: SchedulePolicy, *, owner: str, now: float
) -> Completion:
    """A receipt protocols the delivery; an agency's refusal rejects it; our own permanent
    failures (schema, configuration) park it as undeliverable for operations; a transient
    failure schedules the next pass until the policy gives up."""
    records = _attempt_records(result.tries)
    if result.receipt is not None:
        r = result.receipt
        return Completion(
            job=job,
            owner=owner,
            new_state=DeliveryState.PROTOCOLLED.value,
            attempts=records,
            protocol_number=r.protocol_number,
            protocolled_at=r.protocolled_at,
            outcome=r.outcome,
            references=dict(r.references),
        )
    error = result.error
    if error is None:  # pragma: no cover - the adapter contract forbids it
        raise ValueError("a delivery result carries neither a receipt nor an error")
    if isinstance(error, AgencyRejected):
        return Completion(
            job=job,
            owner=owner,
            new_state=DeliveryState.REJECTED.value,
            attempts=records,
            outcome="RESPINTA",
            outcome_code=error.code,
            outcome_text=error.text,
            last_error=str(error),
        )
    if isinstance(error, PermanentDeliveryError):
        return Completion(
            job=job,
            owner=owner,
            new_state=DeliveryState.UNDELIVERABLE.value,
            attempts=records,
            outcome_code=error.code,
            outcome_text=error.text,
            last_error=str(error),
        )
    rounds = job.rounds + 1
    created = job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=timezone.utc)
    age = now - created.timestamp()
    if policy.gives_up(rounds, age):
        return Completion(
            job=job,
            owner=owner,
            new_state=DeliveryState.UNDELIVERABLE.value,
            attempts=records,
            outcome_code=error.code,
            outcome_text=f"gave up after {rounds} passes: {error.text}",
            last_error=str(error),
        )
    retry_after = error.retry_after if isinstance(error, AgencyThrottled) else None
    return Completion(
        job=job,
        owner=owner,
        new_state=DeliveryState.RETRYING.value,
        attempts=records,
        last_error=str(error),
        next_attempt_at=now + policy.delay_after(rounds, retry_after),
    )
