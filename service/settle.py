"""Turn one worker pass over a delivery into the state the store records."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

from domain.errors import (
    AgencyRejected,
    AgencyThrottled,
    MessageRejectedAsInvalid,
    PermanentDeliveryError,
)
from domain.messages import Receipt
from domain.states import ESITO_DECISIONS, Decision, DeliveryState
from service.delivery_port import DeliveryResult, TryRecord
from service.ports import AttemptRecord, ClaimedJob, Completion
from service.schedule import LateOutcomePolicy, SchedulePolicy

__all__ = ["abandon", "attempt_result", "defer", "park_uncommitted", "settle"]

_DEFAULT_LATE = LateOutcomePolicy()


def attempt_result(error: BaseException | None) -> tuple[str, str | None]:
    """One call's result (ok, invalid, permanent or transient) and its error's class name (None if ok)."""
    if error is None:
        return "ok", None
    # "invalid": our message fails the agency's schema; only a correction can help
    # (a bodiless resend of it is refused, storage.delivery_store.resend_recipient).
    result = ("invalid" if isinstance(error, MessageRejectedAsInvalid)
              else "permanent" if isinstance(error, PermanentDeliveryError) else "transient")
    return result, type(error).__name__


def _attempt_records(tries: Sequence[TryRecord]) -> list[AttemptRecord]:
    records = []
    for t in tries:
        result, error_class = attempt_result(t.error)
        if t.error is None:
            http_status, code, text = None, None, None
        else:
            http_status, code, text = t.error.http_status, t.error.code, t.error.text[:2000]
        records.append(AttemptRecord(t.number, t.started_at, t.duration_ms, result, code, text,
                                     error_class=error_class, http_status=http_status,
                                     request_body=t.sent, reply_body=t.received))
    return records


def _epoch(moment: datetime) -> float:
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def _age(job: ClaimedJob, now: float) -> float:
    """Seconds since the schedule's origin; an acknowledged delivery counts from the agency's ack."""
    if job.state == DeliveryState.ACKNOWLEDGED.value and job.acknowledged_at is not None:
        return now - _epoch(job.acknowledged_at)
    return now - _epoch(job.created_at)


def _from_receipt(
    job: ClaimedJob, r: Receipt, records: list[AttemptRecord], *, owner: str, now: float,
    late: LateOutcomePolicy, poll: bool,
) -> Completion:
    if r.acknowledged_only:
        was_acknowledged = job.state == DeliveryState.ACKNOWLEDGED.value
        if was_acknowledged and _age(job, now) >= late.max_wait_seconds:
            return Completion(
                job=job, owner=owner, new_state=DeliveryState.UNDELIVERABLE.value, attempts=records,
                outcome_code="NO_OUTCOME",
                outcome_text=f"acknowledged, but no protocol number within {late.max_wait_seconds:.0f}s",
                last_error="the agency never gave its protocol number",
            )
        poll_url = r.poll_url or job.poll_url
        polls = job.polls if was_acknowledged else 0
        return Completion(
            job=job,
            owner=owner,
            new_state=DeliveryState.ACKNOWLEDGED.value,
            attempts=records,
            correlation_id=r.correlation_id or job.correlation_id or job.message_id,
            poll_url=poll_url,
            next_attempt_at=now + late.next_check(polls, pull=poll_url is not None, retry_after=r.retry_after),
            polled=was_acknowledged,
        )
    decision = ESITO_DECISIONS.get(r.outcome)
    rejected = decision is Decision.REJECTED
    return Completion(
        job=job,
        owner=owner,
        new_state=(DeliveryState.REJECTED if rejected else DeliveryState.PROTOCOLLED).value,
        attempts=records,
        protocol_number=r.protocol_number,
        protocolled_at=r.protocolled_at,
        outcome=decision.value if decision is not None else None,
        outcome_code=(r.outcome_code or "RESPINTA") if rejected else None,
        outcome_text=(r.outcome_text or "rejected after protocol") if rejected else None,
        references=dict(r.references),
        polled=poll,
    )


def settle(
    job: ClaimedJob,
    result: DeliveryResult,
    policy: SchedulePolicy,
    *,
    owner: str,
    now: float,
    late: LateOutcomePolicy | None = None,
    poll: bool = False,
) -> Completion:
    """A receipt protocols the delivery (an acknowledgment keeps it waiting for the late
    outcome); an agency's refusal rejects it; our own permanent failures (schema,
    configuration) park it as undeliverable for operations; a transient failure schedules the
    next pass until the policy gives up. `poll` marks a pass that asked for a late outcome:
    its calls are not delivery attempts."""
    records = [] if poll else _attempt_records(result.tries)
    if result.receipt is not None:
        return _from_receipt(job, result.receipt, records, owner=owner, now=now,
                             late=late or _DEFAULT_LATE, poll=poll)
    error = result.error
    if error is None:  # pragma: no cover - the adapter contract forbids it
        raise ValueError("a delivery result carries neither a receipt nor an error")
    if isinstance(error, AgencyRejected):
        return Completion(
            job=job,
            owner=owner,
            new_state=DeliveryState.REJECTED.value,
            attempts=records,
            outcome=Decision.REJECTED.value,
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
    if policy.gives_up(rounds, _age(job, now)):
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
    # A failed poll keeps the delivery acknowledged: the agency has the message already.
    state = DeliveryState.ACKNOWLEDGED if poll else DeliveryState.RETRYING
    return Completion(
        job=job,
        owner=owner,
        new_state=state.value,
        attempts=records,
        last_error=str(error),
        next_attempt_at=now + policy.delay_after(rounds, retry_after),
    )


def defer(
    job: ClaimedJob, until: float, reason: str, policy: SchedulePolicy, *, owner: str, now: float
) -> Completion:
    """A pass that must not call the agency now (circuit open, Retry-After, maintenance):
    move the job to `until` without counting a pass, unless the delivery is past its age."""
    if _age(job, now) >= policy.max_age_seconds:
        return Completion(
            job=job,
            owner=owner,
            new_state=DeliveryState.UNDELIVERABLE.value,
            outcome_code="TOO_OLD",
            outcome_text=f"gave up after {policy.max_age_seconds:.0f}s: {reason}",
            last_error=reason,
        )
    return Completion(job=job, owner=owner, new_state=job.state, next_attempt_at=until,
                      deferred=True, last_error=reason)


def abandon(job: ClaimedJob, *, owner: str, limit: int) -> Completion:
    """A poison job: handed out `job.handed_out` times and no worker ever reported back.

    Sending it again would likely stop one more worker, so the delivery becomes visibly
    undeliverable instead of circling (or vanishing into a dead-letter queue while the
    filing waits forever). Operations can resend it once the cause is fixed; the resend
    keeps the message id, so an agency that did receive it answers with its first receipt.
    """
    reason = (f"taken by a worker {job.handed_out} times without an outcome (limit {limit}): "
              "every worker that took it stopped or hung; not sent again")
    return Completion(
        job=job,
        owner=owner,
        new_state=DeliveryState.UNDELIVERABLE.value,
        outcome_code="POISON_JOB",
        outcome_text=reason,
        last_error=reason,
    )


def park_uncommitted(completion: Completion, reason: str) -> Completion:
    """A pass whose outcome the store keeps refusing (not an outage: this data or this code is
    wrong, e.g. a value that does not fit its column) after bounded retries.

    Retrying it would stall every outcome committed with it, and dropping it would let its job
    circle, so the delivery is parked as visibly undeliverable with the reason, like a poison
    job. Operations can resend it once the cause is fixed; the resend keeps the message id, so
    an agency that did take the message answers with its first receipt.
    """
    text = (f"the outcome of a pass ({completion.new_state}) could not be recorded: {reason}; "
            "not sent again")[:2000]
    return Completion(
        job=completion.job,
        owner=completion.owner,
        new_state=DeliveryState.UNDELIVERABLE.value,
        outcome_code="COMMIT_FAILED",
        outcome_text=text,
        last_error=text,
    )
