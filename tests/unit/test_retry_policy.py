"""`deliver_with_retries` over a scripted fake adapter that subclasses the port."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from adapters.base import deliver_with_retries
from domain.errors import (
    AgencyProtocolError,
    AgencyRejected,
    AgencyThrottled,
    AgencyUnreachable,
    OutcomeUnknown,
)
from domain.messages import OutgoingMessage, Receipt
from service.delivery_port import AgencyAdapter, RetryPolicy

TAX_CODE = "RSSMRA80A01H501U"
MESSAGE = OutgoingMessage(
    message_id="0123456789abcdef0123456789abcdef",
    delivery_id="dlv-1",
    filing_reference="CRV-2026-000042",
    agency="inps",
    operation="RichiestaDurc",
    content={"messageHeader": {"declarant": {"taxCode": TAX_CODE}}, "codiceFiscale": TAX_CODE},
)
RECEIPT = Receipt(protocol_number="INPS.0001.2026.0000123")
NO_WAIT = RetryPolicy.without_waits(attempts=3)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


class ScriptedAdapter(AgencyAdapter):
    """A fake adapter: raises or returns the scripted outcomes in order."""

    agency = "inps"

    def __init__(self, *outcomes: Exception | Receipt) -> None:
        self.outcomes = list(outcomes)
        self.sent: list[OutgoingMessage] = []

    async def deliver(self, message: OutgoingMessage) -> Receipt:
        self.sent.append(message)
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    async def aclose(self) -> None:
        pass


def _unreachable() -> AgencyUnreachable:
    return AgencyUnreachable("HTTP 503", agency="inps", operation="RichiestaDurc")


@pytest.mark.anyio
async def test_transient_then_success_records_two_tries() -> None:
    """A 503-like failure is retried; the receipt comes on the second try."""
    adapter = ScriptedAdapter(_unreachable(), RECEIPT)
    result = await deliver_with_retries(adapter, MESSAGE, NO_WAIT)
    assert result.receipt == RECEIPT and result.error is None and result.succeeded
    assert [t.number for t in result.tries] == [1, 2]
    assert isinstance(result.tries[0].error, AgencyUnreachable)
    assert result.tries[1].error is None
    assert all(t.duration_ms >= 0 and t.started_at.tzinfo is not None for t in result.tries)


@pytest.mark.anyio
async def test_permanent_error_is_not_retried() -> None:
    """A business rejection ends the delivery after one try."""
    rejection = AgencyRejected("gia' iscritta", code="R001")
    adapter = ScriptedAdapter(rejection, RECEIPT)
    result = await deliver_with_retries(adapter, MESSAGE, NO_WAIT)
    assert result.receipt is None and result.error is rejection
    assert len(result.tries) == 1 and len(adapter.sent) == 1


@pytest.mark.anyio
async def test_transient_errors_stop_after_the_policy_attempts() -> None:
    """Bounded: three failures, three tries, the last error returned."""
    errors = [_unreachable() for _ in range(4)]
    adapter = ScriptedAdapter(*errors)
    result = await deliver_with_retries(adapter, MESSAGE, NO_WAIT)
    assert len(result.tries) == 3 and result.error is errors[2]


@pytest.mark.anyio
async def test_outcome_unknown_is_retried_with_the_same_message() -> None:
    """After a read timeout the very same message (same id) goes again."""
    adapter = ScriptedAdapter(OutcomeUnknown("read timeout"), RECEIPT)
    result = await deliver_with_retries(adapter, MESSAGE, NO_WAIT)
    assert result.receipt == RECEIPT
    assert [m.message_id for m in adapter.sent] == [MESSAGE.message_id] * 2


@pytest.mark.anyio
async def test_retry_after_beyond_the_planned_wait_returns_the_throttle() -> None:
    """Retry-After 30 s with waits of at most 2 s: stop, never call before Retry-After."""
    throttled = AgencyThrottled("HTTP 429", retry_after=30.0)
    adapter = ScriptedAdapter(throttled, RECEIPT)
    result = await deliver_with_retries(adapter, MESSAGE, RetryPolicy())
    assert result.error is throttled and result.error.retry_after == 30.0
    assert len(result.tries) == 1 and len(adapter.sent) == 1


@pytest.mark.anyio
async def test_throttle_without_retry_after_is_retried_like_any_transient() -> None:
    """429 without Retry-After leaves the pacing to the policy."""
    adapter = ScriptedAdapter(AgencyThrottled("HTTP 429", retry_after=None), RECEIPT)
    result = await deliver_with_retries(adapter, MESSAGE, NO_WAIT)
    assert result.receipt == RECEIPT and len(result.tries) == 2


@pytest.mark.anyio
async def test_unclassified_exception_is_wrapped_logged_and_kept() -> None:
    """A bug in an adapter becomes a transient protocol error with its cause and a traceback."""
    bug = KeyError("ricevuta")
    adapter = ScriptedAdapter(bug, RECEIPT)
    with capture_logs() as logs:
        result = await deliver_with_retries(adapter, MESSAGE, NO_WAIT)
    first = result.tries[0].error
    assert isinstance(first, AgencyProtocolError) and first.__cause__ is bug
    assert (first.agency, first.operation, first.delivery_id) == ("inps", "RichiestaDurc", "dlv-1")
    assert result.receipt == RECEIPT  # wrapped as transient, so the bounded retry applied
    unclassified = [e for e in logs if e["event"] == "delivery_unclassified_error"]
    assert len(unclassified) == 1
    assert unclassified[0]["log_level"] == "error" and unclassified[0]["exc_info"] is True


@pytest.mark.anyio
async def test_unclassified_exception_is_returned_when_it_persists() -> None:
    """Never swallowed: when retries run out the wrapped error is the result."""
    bug = RuntimeError("boom")
    result = await deliver_with_retries(ScriptedAdapter(bug, bug, bug), MESSAGE, NO_WAIT)
    assert isinstance(result.error, AgencyProtocolError) and result.error.__cause__ is bug
    assert result.receipt is None and len(result.tries) == 3


@pytest.mark.anyio
async def test_retries_are_logged_without_payload_or_tax_code() -> None:
    """`delivery_retry_scheduled` names agency, operation and attempt, never the content."""
    with capture_logs() as logs:
        await deliver_with_retries(ScriptedAdapter(_unreachable(), RECEIPT), MESSAGE, NO_WAIT)
    scheduled = [e for e in logs if e["event"] == "delivery_retry_scheduled"]
    assert len(scheduled) == 1
    assert scheduled[0]["agency"] == "inps" and scheduled[0]["operation"] == "RichiestaDurc"
    assert scheduled[0]["attempt"] == 1
    assert [e["event"] for e in logs][-1] == "delivery_sent"
    assert TAX_CODE not in repr(logs) and "content" not in repr(logs)


@pytest.mark.anyio
async def test_final_failure_is_logged_once() -> None:
    """`delivery_failed` is emitted once with the error class and code."""
    with capture_logs() as logs:
        await deliver_with_retries(ScriptedAdapter(AgencyRejected("no", code="R001")), MESSAGE,
                                   NO_WAIT)
    failed = [e for e in logs if e["event"] == "delivery_failed"]
    assert len(failed) == 1 and failed[0]["error_code"] == "R001"
    assert failed[0]["transient"] is False


def test_policy_rejects_nonsense_and_allows_zero_waits() -> None:
    """Zero waits are valid (tests); zero attempts or negative waits are not."""
    assert RetryPolicy(attempts=1, initial_wait=0, max_wait=0, jitter=0).attempts == 1
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(initial_wait=-1)


@pytest.mark.anyio
async def test_a_failed_first_try_is_handed_to_the_retry_loop_not_sent_again() -> None:
    """The first try runs before the retry loop; on a transient failure the loop counts it as
    attempt 1 (waits growing from the policy's first), without sending the message again."""
    errors = [_unreachable() for _ in range(3)]
    adapter = ScriptedAdapter(*errors)
    policy = RetryPolicy(attempts=3, initial_wait=0.001, max_wait=1.0, jitter=0.0)
    with capture_logs() as logs:
        result = await deliver_with_retries(adapter, MESSAGE, policy)
    assert len(adapter.sent) == 3 and [t.number for t in result.tries] == [1, 2, 3]
    assert [t.error for t in result.tries] == errors and result.error is errors[2]
    scheduled = [(e["attempt"], e["wait_s"]) for e in logs if e["event"] == "delivery_retry_scheduled"]
    assert scheduled == [(1, 0.001), (2, 0.002)]


@pytest.mark.anyio
async def test_a_single_attempt_policy_returns_the_first_transient_failure() -> None:
    """attempts=1: no retry, the first failure is the result."""
    adapter = ScriptedAdapter(_unreachable(), RECEIPT)
    result = await deliver_with_retries(adapter, MESSAGE, RetryPolicy.without_waits(attempts=1))
    assert isinstance(result.error, AgencyUnreachable) and len(adapter.sent) == 1
