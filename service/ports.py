"""The plain records that cross the store's ports, the store's typed errors, and the parsed
filing as the use cases read it.

The store's Protocols, one per consumer, are in `service.store_ports`.

Concrete implementations live at the edge (`storage/`, `transport/`, `adapters/`); tests may
substitute fakes that honour the same signatures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from lxml import etree

from domain.timestamps import rfc3339

__all__ = [
    "AcceptedFiling",
    "AgencyStatus",
    "AttemptRecord",
    "CallbackTarget",
    "ClaimedJob",
    "Completion",
    "DeliveryView",
    "EventSendResult",
    "FilingEvent",
    "FilingView",
    "IdempotencyConflict",
    "NeedsCorrection",
    "NewFiling",
    "NotResendable",
    "ParsedFilingView",
    "RecipientNotFound",
    "StoreError",
    "StoreFailed",
    "StoreUnavailable",
    "TokenClaim",
    "TokenNotAdmitted",
]


class StoreError(Exception):
    """A store call failed in the database: the base of the typed errors storage raises instead of
    its driver's, so no caller outside `storage/` needs to know the driver."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or cannot take a write now (connection refused or lost,
    the file locked or unreadable): retry later with backoff, lose nothing.

    Storage translates its driver's failures into this once, so the loops can tell an outage
    (wait it out) from any other error (a bug or bad data: bounded retries, then park).
    """


class StoreFailed(StoreError):
    """The database refused a call that the API or a command made, and not for an outage (a
    value that does not fit its column, a constraint): the request is answered as not recorded.

    The background loops' own calls keep the driver's error instead (see `storage.errors`).
    """


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body."""

    def __init__(self, reference: str) -> None:
        super().__init__(f"the Idempotency-Key was already used for filing {reference} with a different body")
        self.reference = reference


@dataclass(frozen=True, slots=True)
class TokenClaim:
    """A verified request's token id, to be admitted in the transaction that acts on it.

    Admitting it there (refused if `caller` is locked out or the id was seen) makes the
    replay check and the change one commit: neither happens without the other.
    """

    caller: str
    issuer: str
    jti: str
    keep_until: float
    now: float


class TokenNotAdmitted(Exception):
    """The claimed token was refused inside the transaction, which was rolled back.

    `outcome` is `locked` (with `locked_until`) or `replayed`.
    """

    def __init__(self, outcome: str, locked_until: float | None = None) -> None:
        super().__init__(f"token not admitted: {outcome}")
        self.outcome = outcome
        self.locked_until = locked_until


@dataclass(frozen=True, slots=True)
class NewFiling:
    kind: str
    portal: str
    subject_tax_code: str
    subject_name: str
    declarant_tax_code: str
    declarant_role: str
    document: bytes
    digest: str
    received_at: datetime
    idempotency_key: str | None = None
    request_digest: str | None = None
    #: Identity (issue 5): the authenticated user, the delegate who answers for a
    #: collaborator's filing, the basis per recipient, who may read the filing, and the
    #: authentication facts the audit line keeps.
    filed_by: str | None = None
    responsible_tax_code: str | None = None
    authorization: dict[str, Any] | None = None
    viewers: tuple[str, ...] = ()
    auth_context: dict[str, Any] | None = None
    #: The request's token, admitted in the accept transaction (None: admitted before).
    token: TokenClaim | None = None


@dataclass(frozen=True, slots=True)
class AcceptedFiling:
    reference: str
    state: str
    recipients: list[dict[str, str]]
    replayed: bool  # True when an Idempotency-Key replay returned the first answer


@dataclass(frozen=True, slots=True)
class DeliveryView:
    delivery_id: str
    agency: str
    operation: str
    message_id: str
    state: str
    protocol_number: str | None
    protocolled_at: str | None
    outcome_code: str | None
    outcome_text: str | None
    references: dict[str, str]
    attempts: int
    last_error: str | None
    next_attempt_at: float | None
    updated_at: datetime
    outcome: str | None = None  # the agency's decision: accepted | rejected | None (none yet)
    waits_for: str | None = None  # the agency whose outcome this delivery waits for
    correlation_id: str | None = None
    corrects: dict[str, str] | None = None  # {deliveryId, messageId, protocolNumber?}
    #: Contradictions the agency sent that the hub kept for operators ({kind, detail,
    #: createdAt}); None where they were not read (a resend's answer).
    anomalies: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class FilingView:
    reference: str
    kind: str
    portal: str
    state: str
    created_at: datetime
    updated_at: datetime
    deliveries: list[DeliveryView]
    #: Whom the filing is for and who declared it (the receipt names them; the status JSON does not).
    subject_tax_code: str = ""
    subject_name: str = ""
    declarant_tax_code: str = ""
    declarant_role: str = ""
    #: When the portal archived it (api/desk.py) and when retention purged its payloads.
    archived_at: datetime | None = None
    payload_purged_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    job_id: int
    delivery_id: str
    filing_id: int
    filing_reference: str
    agency: str
    operation: str
    message_id: str
    state: str
    content: dict[str, Any]
    rounds: int
    created_at: datetime  # where the schedule's age bound starts (creation, resend or release)
    correlation_id: str | None = None
    poll_url: str | None = None  # set while acknowledged under the PULL pattern
    polls: int = 0
    acknowledged_at: datetime | None = None
    contract_version: str | None = None  # the agency contract version it was planned with
    #: How often this job was handed to a worker before without an outcome coming back (the
    #: worker died or hung): a job that keeps killing its workers is a poison job.
    handed_out: int = 0
    #: The embedded queue's claim count when this pass took the job: a later claim (the lease
    #: ran out and the job was taken again) makes this pass stale. None from RabbitMQ.
    lease_token: int | None = None
    #: An operator's "retry now" forced past the agency's Retry-After: this pass skips the
    #: breaker's throttle (and only this pass).
    forced: bool = False


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    number: int
    started_at: datetime
    duration_ms: float
    result: str  # ok | transient | permanent
    error_code: str | None = None
    error_text: str | None = None
    error_class: str | None = None  # the delivery error's class (AgencyUnreachable, ...)
    http_status: int | None = None  # the agency's HTTP status, when it answered one
    request_body: str | None = None  # the body sent, bounded (adapters.wire)
    reply_body: str | None = None  # the reply's body, bounded


@dataclass(frozen=True, slots=True)
class Completion:
    """Everything one worker pass learned about one job, written in one transaction."""

    job: ClaimedJob
    owner: str
    new_state: str
    attempts: list[AttemptRecord] = field(default_factory=list)
    protocol_number: str | None = None
    protocolled_at: str | None = None
    outcome: str | None = None
    outcome_code: str | None = None
    outcome_text: str | None = None
    references: dict[str, str] | None = None
    last_error: str | None = None
    next_attempt_at: float | None = None  # a retry job becomes available then
    correlation_id: str | None = None
    poll_url: str | None = None
    #: The pass made no call (circuit open, throttled, maintenance): the job moves to
    #: `next_attempt_at` and nothing else changes, no pass is counted against the delivery.
    deferred: bool = False
    #: The pass asked for a late outcome (poll or callback check) that is not there yet: it
    #: counts as a poll, not as a failed pass.
    polled: bool = False
    #: The transport found the pass stale (its message was requeued under it): the store
    #: records only the calls it made (`attempts`), and neither its outcome nor its job.
    stale: bool = False


# -- delivery semantics: late outcomes, resend and correction, events, agency status -------------


class RecipientNotFound(Exception):
    """No such filing for this caller, or the filing has no recipient of that agency."""


class NotResendable(Exception):
    """The recipient's state does not allow the requested resend or correction."""

    def __init__(self, message: str, *, agency: str, state: str) -> None:
        super().__init__(message)
        self.agency = agency
        self.state = state


class NeedsCorrection(NotResendable):
    """The agency refused the recipient's message as invalid: the same message would be
    refused again, only a corrected filing can be sent."""


@dataclass(frozen=True, slots=True)
class CallbackTarget:
    """The delivery an agency's callback is about."""

    delivery_id: str
    filing_id: int
    agency: str
    operation: str
    message_id: str
    state: str
    contract_version: str | None = None  # the agency contract version it was planned with


@dataclass(frozen=True, slots=True)
class FilingEvent:
    """One event of a filing's feed, as stored; `seq` orders the filing's events."""

    id: str
    filing_id: int
    portal: str
    seq: int
    type: str
    payload: dict[str, Any]
    created_at: datetime
    attempts: int = 0

    def to_json(self) -> dict[str, Any]:
        """The body the portal receives (callback) and reads (feed)."""
        return {
            "id": self.id,
            "sequence": self.seq,
            "type": self.type,
            "reference": self.payload.get("reference"),
            "createdAt": rfc3339(self.created_at),
            "data": {k: v for k, v in self.payload.items() if k != "reference"},
        }


@dataclass(frozen=True, slots=True)
class EventSendResult:
    event_id: str
    owner: str
    delivered: bool
    next_attempt_at: float | None = None
    error: str | None = None
    #: The notifier's horizon passed: the event is not pushed again (the feed still serves it),
    #: and it no longer holds back the filing's later events.
    gave_up: bool = False


@dataclass(frozen=True, slots=True)
class AgencyStatus:
    agency: str
    circuit: str
    failures: int
    opened_at: float | None
    open_until: float | None
    throttled_until: float | None
    reported_by: str | None
    updated_at: datetime


class ParsedFilingView(Protocol):
    """A filing that passed the intake checks (`schemas.filing.ParsedFiling`)."""

    @property
    def root(self) -> etree._Element: ...
    @property
    def xml(self) -> bytes: ...
    @property
    def kind(self) -> str: ...
    @property
    def subject_tax_code(self) -> str: ...
    @property
    def subject_name(self) -> str: ...
    @property
    def declarant_tax_code(self) -> str: ...
    @property
    def declarant_role(self) -> str: ...
    @property
    def digest(self) -> str: ...
