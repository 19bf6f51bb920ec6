"""A filing's state follows its deliveries; the retry schedule backs off and gives up."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from domain.errors import (
    AgencyRejected,
    AgencyThrottled,
    AgencyUnreachable,
    DeliveryError,
    MessageRejectedAsInvalid,
)
from domain.messages import Receipt
from domain.states import DeliveryState as D
from domain.states import FilingState as F
from routing.aggregate import aggregate_filing_state
from service.delivery_port import DeliveryResult, TryRecord
from service.ports import ClaimedJob
from service.schedule import SchedulePolicy
from service.settle import settle


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([D.PENDING, D.PENDING], F.IN_PROGRESS),
        ([D.PROTOCOLLED, D.RETRYING], F.PARTIALLY_PROTOCOLLED),
        ([D.PROTOCOLLED, D.PROTOCOLLED], F.PROTOCOLLED),
        ([D.PROTOCOLLED, D.REJECTED], F.PARTIALLY_REJECTED),
        ([D.REJECTED], F.REJECTED),
        ([D.PROTOCOLLED, D.UNDELIVERABLE, D.REJECTED], F.UNDELIVERABLE),
        ([D.REJECTED, D.PENDING], F.IN_PROGRESS),
    ],
)
def test_filing_state_is_derived_from_deliveries(states: list[D], expected: F) -> None:
    """Open recipients keep the filing open; settled ones give the worst outcome."""
    assert aggregate_filing_state(states) is expected


def test_schedule_backs_off_exponentially_up_to_the_cap() -> None:
    """Delays double per pass and never exceed the cap."""
    policy = SchedulePolicy(initial_delay=1, max_delay=10, jitter=0)
    assert [policy.delay_after(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]


def test_schedule_never_retries_before_retry_after() -> None:
    """An agency's Retry-After wins over a shorter backoff."""
    assert SchedulePolicy(initial_delay=1, jitter=0).delay_after(1, retry_after=30) == 30


def test_jitter_spreads_delays_within_bounds() -> None:
    """Jitter adds at most its fraction of the base delay."""
    policy = SchedulePolicy(initial_delay=10, max_delay=100, jitter=0.5)
    rng = random.Random(7)
    delays = {policy.delay_after(1, rng=rng) for _ in range(50)}
    assert len(delays) > 1 and all(10 <= d <= 15 for d in delays)


def _Try(number: int, error: DeliveryError | None) -> TryRecord:
    return TryRecord(number, datetime.now(timezone.utc), 1.0, error)


def _Result(receipt: Receipt | None, errors: list[DeliveryError | None]) -> DeliveryResult:
    return DeliveryResult(receipt, errors[-1], [_Try(i + 1, e) for i, e in enumerate(errors)])


def _job(rounds: int = 0, age: float = 0.0) -> ClaimedJob:
    return ClaimedJob(1, "d" * 32, 1, "CRV-2026-000001", "inps", "RichiestaDurc", "m" * 32, "pending",
                      {}, rounds, datetime.now(timezone.utc) - timedelta(seconds=age))


def test_a_receipt_protocols_the_delivery() -> None:
    """The protocol number and references are recorded with every try."""
    result = _Result(Receipt("INPS.0001.2026.0000001", references={"x": "y"}), [AgencyUnreachable("503"), None])
    c = settle(_job(), result, SchedulePolicy(), owner="w", now=0)
    assert (c.new_state, c.protocol_number, len(c.attempts)) == ("protocolled", "INPS.0001.2026.0000001", 2)
    assert [a.result for a in c.attempts] == ["transient", "ok"]


def test_a_business_rejection_is_recorded_and_not_retried() -> None:
    """AgencyRejected settles as rejected with the agency's code; no retry is scheduled."""
    c = settle(_job(), _Result(None, [AgencyRejected("no", code="R001")]), SchedulePolicy(), owner="w", now=0)
    assert (c.new_state, c.outcome_code, c.next_attempt_at) == ("rejected", "R001", None)


def test_our_own_permanent_failure_is_parked_as_undeliverable() -> None:
    """A schema failure is not the agency's refusal: operations must look at it."""
    c = settle(_job(), _Result(None, [MessageRejectedAsInvalid("bad")]), SchedulePolicy(), owner="w", now=0)
    assert c.new_state == "undeliverable" and c.next_attempt_at is None


def test_a_transient_failure_schedules_the_next_pass() -> None:
    """After the short retries, the delivery waits on the persisted schedule."""
    now = datetime.now(timezone.utc).timestamp()
    c = settle(_job(), _Result(None, [AgencyThrottled("429", retry_after=60)]),
               SchedulePolicy(initial_delay=1), owner="w", now=now)
    assert c.new_state == "retrying" and c.next_attempt_at >= now + 60


def test_the_schedule_gives_up_after_its_bound() -> None:
    """Past max_rounds the delivery is undeliverable, never silently dropped."""
    c = settle(_job(rounds=2), _Result(None, [AgencyUnreachable("down")]),
               SchedulePolicy(max_rounds=3), owner="w", now=datetime.now(timezone.utc).timestamp())
    assert c.new_state == "undeliverable" and "gave up after 3 passes" in c.outcome_text
