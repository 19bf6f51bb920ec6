"""The agency's front desk: faults, validation, duplicates, rejection and protocol, in order.

The SOAP and REST apps only translate between the wire and this module, so all four
simulators apply fault rules and record effects the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from simulators.faults import TECHNICAL_KINDS, FaultRule, Matcher, RuleBook
from simulators.httpio import gateway_response, pause
from simulators.ledger import Effect, Ledger, now_utc
from simulators.numbering import NUMBERING, Counters, Lookup

__all__ = ["AgencyDesk", "InvalidMessageError", "Outcome", "Replies", "Submission"]

#: The reason given with a business rejection when the rule names none.
DEFAULT_REJECTION = "Richiesta respinta dall'ente"


class InvalidMessageError(ValueError):
    """The message fails the agency's contract; `code` is XML, SCHEMA, ACTION, JSON..."""

    def __init__(self, code: str, error: str) -> None:
        super().__init__(error)
        self.code = code
        self.error = error


@dataclass(frozen=True, slots=True)
class Submission:
    """A valid message as the desk needs it, whatever the wire format."""

    operation: str
    message_id: str
    filing_reference: str
    lookup: Lookup


@dataclass(frozen=True, slots=True)
class Outcome:
    """Either an effect (`first` False for a repeat) or a rejection with code and reason."""

    effect: Effect | None
    first: bool = False
    code: str = ""
    reason: str = ""


class Replies(Protocol):
    """How one wire format says each outcome."""

    def technical_fault(self, operation: str, rule: FaultRule) -> Response: ...

    def invalid(self, operation: str | None, exc: InvalidMessageError) -> Response: ...

    def rejection(self, operation: str, code: str, reason: str) -> Response: ...

    def receipt(self, effect: Effect, first: bool) -> Response: ...


class AgencyDesk:
    """One simulated agency's state: ledger, fault rules, counters."""

    def __init__(
        self, agency: str, operations: Iterable[str], permanent: list[FaultRule] | None = None
    ) -> None:
        self.agency = agency
        self.operations = tuple(operations)
        self.ledger = Ledger()
        self.rules = RuleBook(permanent)
        self.counters = Counters()
        self._wake = asyncio.Event()

    def reset(self) -> None:
        """Clear ledger and runtime faults; requests held by a pause give up."""
        self.ledger.clear()
        self.rules.reset()
        self.wake_sleepers()

    def wake_sleepers(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    def accept(self, submission: Submission, rule: FaultRule | None) -> Outcome:
        """Protocol a message once; a repeat gets the first effect, a reject rule a refusal."""
        first = self.ledger.effects.get(submission.message_id)
        if first is not None:
            first.duplicates += 1
            return Outcome(first)
        if rule is not None and rule.kind == "reject":
            self.rules.use(rule)
            reason = rule.text or DEFAULT_REJECTION
            self.ledger.record_rejection(
                submission.operation, submission.message_id, submission.filing_reference,
                rule.code, reason,
            )
            return Outcome(None, code=rule.code, reason=reason)
        protocol, references = NUMBERING[self.agency](self.counters, submission.lookup)
        stamp = now_utc()
        effect = Effect(
            message_id=submission.message_id,
            operation=submission.operation,
            protocol_number=protocol,
            protocolled_at=stamp,
            references=references,
            received_at=stamp,
            filing_reference=submission.filing_reference,
        )
        self.ledger.effects[submission.message_id] = effect
        return Outcome(effect, first=True)

    async def process(
        self,
        request: Request,
        operation: str,
        matches: Matcher,
        check: Callable[[], Submission],
        replies: Replies,
    ) -> Response:
        """Answer one parsed request whose operation is known.

        Technical faults come first (a sick agency is sick whatever it receives); then the
        contract check; then the duplicate check, which wins over a rejection rule because the
        agency has already protocolled that message.
        """
        rule = self.rules.find(operation, matches)
        if rule is not None and rule.kind in TECHNICAL_KINDS:
            self.rules.use(rule)
            if rule.kind == "http_status":
                return gateway_response(rule.status, rule.retry_after)
            if rule.kind == "soap_fault":
                return replies.technical_fault(operation, rule)
            if not rule.after_effect and not await pause(request, rule.delay_s, self._wake):
                return gateway_response(503)
        try:
            submission = check()
        except InvalidMessageError as exc:
            self.ledger.record_invalid(operation, exc.code, exc.error)
            return replies.invalid(operation, exc)
        outcome = self.accept(submission, rule)
        if rule is not None and rule.kind in ("latency", "timeout") and rule.after_effect:
            # The effect is recorded; now the reply is "lost" for as long as the rule says.
            await pause(request, rule.delay_s, self._wake)
        if outcome.effect is not None:
            return replies.receipt(outcome.effect, outcome.first)
        return replies.rejection(operation, outcome.code, outcome.reason)
