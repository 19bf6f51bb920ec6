"""The store's ports, one narrow Protocol per consumer, over the records of `service.ports`.

Each caller is typed with the few methods it uses, so a fake for a test implements only those
and a new store method does not widen every consumer. `storage.store.SqlStore` satisfies all
of them (checked statically in `storage/store.py`). The background loops' own ports stay beside
them: `service.notifier.EventStore`, `service.relay.RelayStore`, `service.worker.JobSource`.

Every method the API, the console or a command calls raises `service.ports.StoreError`
(`StoreUnavailable` for an outage) instead of its driver's errors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from domain.drafts import Draft
from domain.messages import Receipt
from routing.plan import PlannedDelivery
from service.identity import AuditEntry
from service.ports import (
    AcceptedFiling,
    AgencyStatus,
    CallbackTarget,
    ClaimedJob,
    Completion,
    DeliveryView,
    FilingEvent,
    FilingView,
    NewFiling,
)

__all__ = [
    "AgencyPauses",
    "AgencyStatusReads",
    "ApiStore",
    "Auditor",
    "DraftStore",
    "FilingIntake",
    "FilingReads",
    "IntakeItem",
    "JobStore",
    "LateOutcomes",
    "RecipientCorrections",
    "RecipientOperations",
    "RecipientResend",
    "Store",
]

#: Builds a recipient's corrected delivery from its message content and references.
CorrectionPlan = Callable[[dict[str, Any], dict[str, str]], PlannedDelivery]


#: A filing to store and the plan of its deliveries, given the reference the store mints.
IntakeItem = tuple[NewFiling, Callable[[str], list[PlannedDelivery]]]


class FilingIntake(Protocol):
    """Intake (`service.intake`): a filing and its planned deliveries, at once."""

    def accept_filing(
        self, filing: NewFiling, plan: Callable[[str], list[PlannedDelivery]]
    ) -> AcceptedFiling: ...

    def accept_filings(self, items: Sequence[IntakeItem]) -> list[AcceptedFiling | BaseException]:
        """Several filings, in one transaction where they can be; per item, in order, what it
        was accepted as or the error its caller is to raise."""
        ...


class FilingReads(Protocol):
    """The portal's reads: a filing's status and its event feed (None: not this caller's)."""

    def get_filing(self, reference: str, portal: str | None, user: str | None = None) -> FilingView | None: ...

    def filing_events(self, reference: str, portal: str | None, after: int = 0,
                      limit: int = 1000) -> list[FilingEvent] | None: ...


class Auditor(Protocol):
    """One line of the audit trail."""

    def audit(self, actor: str, action: str, subject: str, outcome: str, detail: dict[str, Any]) -> None: ...


class RecipientResend(Protocol):
    """Send one recipient's message again, with the same message id (portal or operator)."""

    def resend_recipient(self, reference: str, portal: str | None, agency: str, *, actor: str,
                         detail: Mapping[str, Any] | None = None) -> DeliveryView: ...


class RecipientCorrections(Protocol):
    """Replace a recipient refused as invalid by a corrected delivery (`service.recipients`)."""

    def correct_recipient(self, reference: str, portal: str | None, agency: str, plan: CorrectionPlan, *,
                          actor: str, detail: Mapping[str, Any] | None = None) -> DeliveryView: ...


class LateOutcomes(Protocol):
    """Agencies' callbacks: find the delivery a correlation id names, record its outcome."""

    def find_callback_target(self, agency: str, correlation_id: str) -> CallbackTarget | None: ...

    def record_late_outcome(self, delivery_id: str, receipt: Receipt) -> str: ...


class AgencyStatusReads(Protocol):
    """The agencies' circuits as the workers last reported them."""

    def agency_statuses(self) -> list[AgencyStatus]: ...


class RecipientOperations(RecipientResend, Auditor, Protocol):
    """Operators' actions on recipients (`/v1/ops`, the console, `service.operations`)."""

    def ops_recipient(self, reference: str, agency: str) -> DeliveryView | None: ...

    def throttled_until(self, agency: str) -> float | None: ...

    def retry_recipient_now(self, reference: str, agency: str, *, actor: str, force: bool = False,
                            reason: str | None = None) -> DeliveryView: ...

    def cancel_recipient(self, reference: str, agency: str, *, actor: str, reason: str) -> DeliveryView: ...

    def undeliverable_recipients(self, agency: str, start: datetime, end: datetime,
                                 limit: int) -> tuple[int, list[str]]: ...


class AgencyPauses(Protocol):
    """Operators pause and resume an agency; the workers and the console read the pauses."""

    def paused_agencies(self) -> dict[str, dict[str, Any]]: ...

    def pause_agency(self, agency: str, *, actor: str, reason: str | None) -> bool: ...

    def resume_agency(self, agency: str, *, actor: str, reason: str | None = None) -> int | None: ...


class JobStore(Protocol):
    """The embedded queue and the RabbitMQ consumer: claim or load jobs, record their passes."""

    def claim_jobs(
        self, owner: str, agencies: Sequence[str] | None, limit: int, lease_seconds: float
    ) -> list[ClaimedJob]: ...

    def load_jobs(self, job_ids: Sequence[int]) -> tuple[list[ClaimedJob], set[int]]: ...

    def complete_jobs(self, completions: Sequence[Completion]) -> None: ...


class ApiStore(FilingIntake, FilingReads, RecipientCorrections, LateOutcomes, AgencyStatusReads,
               RecipientOperations, AgencyPauses, Protocol):
    """Everything the HTTP edge (API and console) asks of the store, as one typed field."""


class Store(FilingIntake, FilingReads, JobStore, Auditor, Protocol):
    """The filing store as intake, status and the job loops see it (kept for older callers)."""


class DraftStore(Protocol):
    """Drafts (`service.drafts`): each change commits with its audit line.

    A draft is found only in its portal and by one of its viewers; None otherwise.
    """

    def create_draft(self, draft: Draft, max_per_owner: int, now: datetime, audit: AuditEntry) -> bool:
        """False (nothing stored) when the owner already has `max_per_owner` live drafts."""
        ...

    def get_draft(self, draft_id: str, portal: str, viewer: str) -> Draft | None: ...

    def list_drafts(self, portal: str, viewer: str, now: datetime, before: int | None,
                    limit: int) -> tuple[list[Draft], int | None]:
        """Live drafts newest first, and the position to continue from (None: the last page)."""
        ...

    def replace_draft(self, draft: Draft, expected_version: int, audit: AuditEntry) -> bool:
        """False when the stored draft is no longer at `expected_version` or no longer open."""
        ...

    def delete_draft(self, draft_id: str, audit: AuditEntry) -> bool: ...

    def mark_submitted(self, draft_id: str, reference: str, answer: dict[str, Any], audit: AuditEntry) -> bool:
        """False when another submit marked it first (the same filing: its answer stands)."""
        ...

    def submission(self, draft_id: str) -> dict[str, Any] | None:
        """The answer of the submit that made the draft a filing (None: not submitted)."""
        ...

    def purge_expired_drafts(self, now: datetime, limit: int) -> int: ...

    def audit_draft(self, audit: AuditEntry) -> None: ...
