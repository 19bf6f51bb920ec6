"""The agency's front desk: faults, validation, duplicates, rejection and protocol, in order.

The SOAP and REST apps only translate between the wire and this module, so all four
simulators apply fault rules and record effects the same way. Late outcomes (the AgID
non-blocking patterns) live here too: a 202 now, then the receipt POSTed to the caller's
X-ReplyTo (push) or served from a status resource (pull, `simulators.late`).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from starlette.requests import Request
from starlette.responses import Response

from security.callbacks import CallbackSigner
from simulators.faults import ASYNC_KINDS, DUPLICATE_NUMBER, TECHNICAL_KINDS, TRICKLE, FaultRule, Matcher, RuleBook
from simulators.httpio import gateway_response, pause, trickled
from simulators.ledger import Effect, Ledger, now_utc
from simulators.numbering import NUMBERING, Counters, Lookup
from simulators.services import DURC_DEBTORS, SERVICE_RULES, ServiceContext, Verdict, today_in_rome

__all__ = ["AgencyDesk", "InvalidMessageError", "Outcome", "Replies", "Submission"]

#: The reason given with a business rejection when the rule names none.
DEFAULT_REJECTION = "Richiesta respinta dall'ente"
#: Fields another agency's receipt hands over, kept in the ledger to prove the hand-off.
HANDED_OVER = ("numeroREA", "protocolloRI")
#: Tries of one callback, and the first pause between them (doubling).
CALLBACK_TRIES = 6
CALLBACK_BACKOFF_S = 0.2


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
    corrects: dict[str, str] | None = None  # the header's link to a refused message
    #: The attachments received with it, each checked against its declared SHA-256.
    attachments: list[dict[str, Any]] = field(default_factory=list)


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

    def acknowledged(self, effect: Effect) -> Response: ...


class AgencyDesk:
    """One simulated agency's state: ledger, fault rules, counters."""

    def __init__(
        self, agency: str, operations: Iterable[str], permanent: list[FaultRule] | None = None,
        numbering: Callable[[Counters, Lookup], tuple[str, dict[str, str]]] | None = None,
    ) -> None:
        self.agency = agency
        #: How protocol numbers look: the agency's own format, or the sandbox's generic one.
        self.numbering = numbering or NUMBERING[agency]
        #: The seed services' own rules (simulators.services); none where numbering is generic.
        self.services = {op: rule for (name, op), rule in SERVICE_RULES.items()
                         if name == agency} if numbering is None else {}
        #: The subjects with unpaid contributions in this agency's records (DURC On Line).
        self.debtors: frozenset[str] = DURC_DEBTORS
        #: RUNTS repertory positions given, with their ente; like the counters, kept on reset.
        self.registry: dict[str, str] = {}
        self.operations = tuple(operations)
        self.ledger = Ledger()
        self.rules = RuleBook(permanent)
        self.counters = Counters()
        #: The last protocol number given (and its references): what `duplicate_number` reuses.
        self._last_numbered: tuple[str, dict[str, str]] | None = None
        self._wake = asyncio.Event()
        #: Effects taken in charge for a late outcome, by correlation id.
        self.late: dict[str, Effect] = {}
        #: How this agency's wire format says things (set by its app).
        self.replies: Replies | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        #: Signs callbacks with the credential the agency's file declares (None: unsigned).
        self.signer: CallbackSigner | None = None

    def signed_callback(self, body: bytes, content_type: str, correlation_id: str) -> tuple[bytes, dict[str, str]]:
        """One try of a callback, signed anew (a fresh token or Timestamp: the hub refuses a
        repeat); unsigned when the agency has no signer."""
        if self.signer is None:
            return body, {}
        return self.signer.sign(body, content_type, correlation_id)

    async def post_callback(self, http: httpx.AsyncClient, url: str, content: bytes,
                            headers: Mapping[str, str], correlation_id: str,
                            record: Callable[[int | None], None], *, tries: int,
                            backoff_s: float) -> None:
        """POST `content` to `url` until it answers 2xx, at most `tries` times, the pause
        doubling from `backoff_s`; each try is signed anew and its status (None: no answer)
        passed to `record`."""
        pause_s = backoff_s
        for _ in range(tries):
            body, signature = self.signed_callback(content, headers.get("Content-Type", ""), correlation_id)
            try:
                status: int | None = (await http.post(url, content=body,
                                                      headers={**headers, **signature})).status_code
            except httpx.HTTPError:
                status = None
            record(status)
            if status is not None and 200 <= status < 300:
                return
            await asyncio.sleep(pause_s)  # the consumer may not have recorded its ack yet
            pause_s *= 2

    def reset(self) -> None:
        """Clear ledger and runtime faults; requests held by a pause give up, callbacks stop."""
        self.ledger.clear()
        self.rules.reset()
        self.late.clear()
        for task in self._tasks:
            task.cancel()
        self.wake_sleepers()

    def wake_sleepers(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    def accept(self, submission: Submission, rule: FaultRule | None, reply_to: str | None = None) -> Outcome:
        """Protocol a message once; a repeat gets the first effect, a reject rule a refusal, an
        async rule a taking in charge (the protocol number follows later)."""
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
        verdict = self._verdict(submission)
        if verdict is not None and verdict.refused:
            self.ledger.record_rejection(
                submission.operation, submission.message_id, submission.filing_reference,
                verdict.code, verdict.reason,
            )
            return Outcome(None, code=verdict.code, reason=verdict.reason)
        if verdict is not None and verdict.protocol:
            protocol, references = verdict.protocol, dict(verdict.references)
        else:
            protocol, references = self.numbering(self.counters, submission.lookup)
        if rule is not None and rule.kind == DUPLICATE_NUMBER and self._last_numbered is not None:
            self.rules.use(rule)  # a faulty numbering: the previous message's number again
            protocol, references = self._last_numbered[0], dict(self._last_numbered[1])
        self._last_numbered = (protocol, dict(references))
        stamp = now_utc()
        effect = Effect(
            message_id=submission.message_id,
            operation=submission.operation,
            protocol_number=protocol,
            protocolled_at=stamp,
            references=references,
            received_at=stamp,
            filing_reference=submission.filing_reference,
            received={name: value for name in HANDED_OVER if (value := submission.lookup(name))},
            corrects=submission.corrects,
            arrival=self.ledger.next_arrival(),
            attachments=list(submission.attachments),
        )
        if verdict is not None and verdict.decision is not None:
            effect.decision, effect.decided = verdict.decision, True
        if rule is not None and rule.kind in ASYNC_KINDS:
            self.rules.use(rule)
            self._take_in_charge(effect, rule, reply_to)
        self.ledger.effects[submission.message_id] = effect
        return Outcome(effect, first=True)

    def _verdict(self, submission: Submission) -> Verdict | None:
        """The operation's own rule (simulators.services), if it has one."""
        service = self.services.get(submission.operation)
        if service is None:
            return None
        return service(submission.lookup, ServiceContext(self.counters, self.debtors, today_in_rome(),
                                                          self.registry))

    # ----- late outcomes -----

    def refresh(self, effect: Effect) -> Effect:
        """A pulled outcome is ready once its time has come (push tasks move their own)."""
        if effect.mode == "pull" and effect.status == "acknowledged" and time.monotonic() >= effect.ready_at:
            effect.status = "protocolled"
            effect.decided = effect.decision is not None
        return effect

    def _take_in_charge(self, effect: Effect, rule: FaultRule, reply_to: str | None) -> None:
        effect.status = "acknowledged"
        effect.mode = "push" if rule.kind == "async_push" else "pull"
        effect.correlation_id = uuid.uuid4().hex
        effect.reply_to = reply_to
        effect.decision = rule.decision  # the rule's decision, late, replaces a service's own
        effect.decided = False
        effect.decision_code = rule.code if rule.decision == "rejected" else ""
        effect.decision_text = (rule.text or DEFAULT_REJECTION) if rule.decision == "rejected" else ""
        delay = rule.delay_s
        if effect.mode == "pull":
            # PULL serves the result once, with the decision in it if one is configured.
            delay += rule.decision_delay_ms / 1000 if rule.decision else 0.0
        effect.ready_at = time.monotonic() + delay
        self.late[effect.correlation_id] = effect
        if effect.mode == "push":
            task = asyncio.ensure_future(self._push(effect, rule.delay_s, rule.decision_delay_ms / 1000))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _push(self, effect: Effect, delay: float, decision_delay: float) -> None:
        """Protocol after `delay`, call back; then the decision, if any, after `decision_delay`."""
        try:
            await asyncio.sleep(delay)
            effect.status = "protocolled"
            await self._call_back(effect)
            if effect.decision is not None:
                await asyncio.sleep(decision_delay)
                effect.decided = True
                await self._call_back(effect)
        except asyncio.CancelledError:
            pass

    async def _call_back(self, effect: Effect) -> None:
        """POST the receipt to the caller's X-ReplyTo until it answers 2xx (bounded tries)."""
        assert self.replies is not None and effect.reply_to and effect.correlation_id
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=5.0, trust_env=False)
        reply = self.replies.receipt(effect, False)
        headers = {"Content-Type": reply.headers["content-type"], "X-Correlation-ID": effect.correlation_id}
        await self.post_callback(
            self._http, effect.reply_to, bytes(reply.body), headers, effect.correlation_id,
            lambda status: effect.callbacks.append({"at": now_utc(), "esito": effect.esito, "status": status}),
            tries=CALLBACK_TRIES, backoff_s=CALLBACK_BACKOFF_S)

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
        reply_to = request.headers.get("x-replyto")
        if rule is not None and rule.kind == "async_push" and not reply_to \
                and submission.message_id not in self.ledger.effects:
            error = InvalidMessageError("REPLY_TO", "intestazione X-ReplyTo mancante (NONBLOCK_PUSH)")
            self.ledger.record_invalid(operation, error.code, error.error)
            return replies.invalid(operation, error)
        outcome = self.accept(submission, rule, reply_to)
        if rule is not None and rule.kind in ("latency", "timeout") and rule.after_effect:
            # The effect is recorded; now the reply is "lost" for as long as the rule says.
            await pause(request, rule.delay_s, self._wake)
        if outcome.effect is not None and self.refresh(outcome.effect).status == "acknowledged":
            # Taken in charge (or asked again before the outcome is out): 202 again.
            reply = replies.acknowledged(outcome.effect)
        elif outcome.effect is not None:
            reply = replies.receipt(outcome.effect, outcome.first)
        else:
            reply = replies.rejection(operation, outcome.code, outcome.reason)
        if rule is not None and rule.kind == TRICKLE:
            # The message is recorded; its reply now drips out one byte at a time.
            self.rules.use(rule)
            return trickled(reply, rule.delay_s)
        return reply
