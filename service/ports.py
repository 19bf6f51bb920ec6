"""The ports the use cases need, and the plain records that cross them.

Concrete implementations live at the edge (`storage/`, `transport/`, `adapters/`); tests may
substitute fakes that honour the same signatures.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Protocol, Sequence

from routing.plan import PlannedDelivery

__all__ = [
    "AcceptedFiling",
    "AttemptRecord",
    "ClaimedJob",
    "Completion",
    "DeliveryView",
    "FilingView",
    "IdempotencyConflict",
    "NewFiling",
    "Store",
]


class IdempotencyConflict(Exception):
    """The Idempotency-Key was used before with a different request body."""

    def __init__(self, reference: str) -> None:
        super().__init__(f"the Idempotency-Key was already used for filing {reference} with a different body")
        self.reference = reference


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


@dataclass(frozen=True, slots=True)
class FilingView:
    reference: str
    kind: str
    portal: str
    state: str
    created_at: datetime
    updated_at: datetime
    deliveries: list[DeliveryView]


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
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    number: int
    started_at: datetime
    duration_ms: float
    result: str  # ok | transient | permanent
    error_code: str | None = None
    error_text: str | None = None


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


class Store(Protocol):
    def accept_filing(
        self, filing: NewFiling, plan: Callable[[str], list[PlannedDelivery]]
    ) -> AcceptedFiling: ...

    def get_filing(self, reference: str, portal: str | None) -> FilingView | None: ...

    def claim_jobs(
        self, owner: str, agencies: Sequence[str] | None, limit: int, lease_seconds: float
    ) -> list[ClaimedJob]: ...

    def complete_jobs(self, completions: Sequence[Completion]) -> None: ...

    def audit(self, actor: str, action: str, subject: str, outcome: str, detail: dict[str, Any]) -> None: ...
