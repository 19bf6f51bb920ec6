"""Drafts: save a filing before it is complete, check it as intake would, submit it once.

Saving runs the hardened parse (its refusals stay refusals) and keeps what the schema and
content checks find as warnings. `check` runs the whole intake without accepting: validation,
authorization per recipient and each agency's message as it would be sent. `submit` hands the
draft to the same intake as `POST /v1/filings`, under an idempotency key derived from the
draft, so two submits (even concurrent) make one filing.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from domain.delegation import delegation_status
from domain.drafts import Draft, DraftRefused, DraftState, MessagePreview, draft_viewers
from domain.identity import User
from domain.intake import FilingRefused, Violation
from routing.plan import FilingFacts, plan_deliveries
from routing.routes import RouteTable
from schemas.child_paths import child_text
from schemas.drafts import DraftInspection, inspect_draft
from schemas.filing import FilingValidator
from service.identity import AuditEntry, IdentityStore, RecipientsNotAuthorized, authorize_filing
from service.intake import PLANNING_REFERENCE, MessageCheck, NoRecipients, accept_filing
from service.ports import AcceptedFiling, NewFiling
from service.store_ports import DraftStore, FilingIntake

__all__ = ["DraftCaller", "DraftCheck", "DraftDesk", "DraftPolicy", "MessagePreviewer", "NoRecipients",
           "RecipientCheck", "Submitted", "etag", "submission_json"]

_ROME = ZoneInfo("Europe/Rome")
_MEDIA_TYPES = ("application/xml", "application/json")


class MessagePreviewer(MessageCheck, Protocol):
    """Builds a recipient's message as its adapter would (`adapters.message_check.MessageChecker`)."""

    def preview(self, agency: str, version: str | None, operation: str,
                content: Mapping[str, Any]) -> MessagePreview: ...


@dataclass(frozen=True, slots=True)
class DraftPolicy:
    """How long drafts live and how many one user may keep (`[drafts]` in config)."""

    ttl: timedelta = timedelta(days=30)
    max_per_user: int = 100
    page_size: int = 50
    purge_batch: int = 500


@dataclass(frozen=True, slots=True)
class DraftCaller:
    """Who acts: the portal, the user it vouches for, and the facts the audit line keeps."""

    portal: str
    user: User
    audit_context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RecipientCheck:
    """One recipient as intake would see it now."""

    agency: str
    operation: str
    authorized: bool
    reasons: tuple[str, ...]
    preview: MessagePreview | None  #: None when the hub checks no agency contract at intake

    @property
    def message_valid(self) -> bool:
        """As intake judges it: without a contract check, every message passes."""
        return self.preview is None or self.preview.problem is None


@dataclass(frozen=True, slots=True)
class DraftCheck:
    """The whole intake, run without accepting."""

    violations: list[Violation]
    general: list[dict[str, str]]  #: errors that are not the document's fields (no route...)
    recipients: list[RecipientCheck]

    @property
    def ready(self) -> bool:
        return (not self.violations and not self.general and bool(self.recipients)
                and all(r.authorized and r.message_valid for r in self.recipients))


@dataclass(frozen=True, slots=True)
class Submitted:
    """The answer of a submit: the same body for the first submit and every repeat."""

    body: dict[str, Any]
    replayed: bool


def _cursor(position: int) -> str:
    return base64.urlsafe_b64encode(f"d:{position}".encode()).decode().rstrip("=")


def _position(cursor: str) -> int:
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        position = int(text[2:]) if text.startswith("d:") else 0
        if not 0 < position < 2**63:  # a listing position is a positive BIGINT
            raise ValueError(cursor)
        return position
    except (ValueError, UnicodeDecodeError):
        raise DraftRefused(400, "invalid-cursor", "the cursor is not one this hub gave") from None


def _violation_json(v: Violation) -> dict[str, Any]:
    item: dict[str, Any] = {"code": v.code, "location": v.location, "detail": v.detail}
    if v.line is not None:
        item["line"] = v.line
    return item


class DraftDesk:
    """The draft use cases over the drafts store, the filing intake and the identity store."""

    def __init__(self, drafts: DraftStore, intake: FilingIntake, validator: FilingValidator,
                 routes: RouteTable, identity: IdentityStore, previewer: MessagePreviewer | None,
                 policy: DraftPolicy = DraftPolicy(),
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        self.drafts = drafts
        self._intake = intake
        self.validator = validator  #: also the API's, to render a draft in the form asked
        self._routes = routes
        self._identity = identity
        self._previewer = previewer
        self.policy = policy
        self._new_id = new_id

    # -- helpers ------------------------------------------------------------------------------
    def _entry(self, caller: DraftCaller, action: str, subject: str, outcome: str = "ok",
               **detail: Any) -> AuditEntry:
        return AuditEntry(caller.user.tax_code, action, subject, outcome,
                          {**detail, **caller.audit_context})

    def _inspect(self, media_type: str, body: bytes, now: datetime) -> DraftInspection:
        if media_type not in _MEDIA_TYPES:
            raise DraftRefused(415, "unsupported-media-type", "send the draft as application/xml or application/json")
        return inspect_draft(self.validator, body, media_type, today=now.astimezone(_ROME).date())

    def _viewers(self, owner: str, inspection: DraftInspection, now: datetime) -> tuple[str, ...]:
        subject = inspection.text("f:subject/f:taxCode")
        chain: list[str] = []
        if subject:
            grants = self._identity.grants_for(owner, subject)
            known = {d.id: d for d in grants}
            for d in grants:
                parent = known.get(d.parent_id or "")
                if d.delegate_tax_code == owner and delegation_status(d, now, parent) == "active":
                    chain.append(d.granted_by)
                    if parent is not None:
                        chain += [parent.granted_by, parent.delegate_tax_code]
        return draft_viewers(owner, inspection.text("f:legalRepresentative/f:taxCode"), tuple(chain))

    def _visible(self, caller: DraftCaller, draft_id: str, now: datetime, action: str) -> Draft:
        """The draft `caller` may read; 404 otherwise, 410 (and gone) once it has expired."""
        draft = self.drafts.get_draft(draft_id, caller.portal, caller.user.tax_code)
        if draft is None:
            self.drafts.audit_draft(self._entry(caller, action, draft_id, "not-found"))
            raise DraftRefused(404, "not-found", f"no draft {draft_id}", audited=True)
        if draft.expired(now):
            # Purged on access: the loop is not needed to make an expired draft disappear.
            self.drafts.delete_draft(draft.id, self._entry(caller, "draft_expired", draft_id, "expired"))
            raise DraftRefused(410, "draft-expired", f"draft {draft_id} expired at {draft.expires_at.isoformat()}",
                               audited=True)
        return draft

    def _owned(self, caller: DraftCaller, draft_id: str, now: datetime, action: str) -> Draft:
        draft = self._visible(caller, draft_id, now, action)
        if draft.owner != caller.user.tax_code:
            self.drafts.audit_draft(self._entry(caller, action, draft_id, "not-draft-owner"))
            raise DraftRefused(403, "not-draft-owner", "only the user who saved the draft may change or submit it",
                               audited=True)
        return draft

    # -- use cases ----------------------------------------------------------------------------
    def create(self, caller: DraftCaller, media_type: str, body: bytes, now: datetime) -> Draft:
        """Save a new draft; its open points come back as warnings.

        Raises:
            FilingRefused: the hard refusals of the parsers (malformed, unsafe, too large, too deep).
            DraftRefused: 415 for another media type, 409 at the per-user cap.
        """
        self.purge(now)
        inspection = self._inspect(media_type, body, now)
        draft = Draft(
            id=self._new_id(), portal=caller.portal, owner=caller.user.tax_code, kind=inspection.kind,
            state=DraftState.DRAFT, media_type=media_type, document=body,
            warnings=tuple(_violation_json(v) for v in inspection.warnings), version=1,
            created_at=now, updated_at=now, expires_at=now + self.policy.ttl,
            subject_tax_code=inspection.text("f:subject/f:taxCode"),
            viewers=self._viewers(caller.user.tax_code, inspection, now),
        )
        entry = self._entry(caller, "draft_created", draft.id, kind=draft.kind, warnings=len(draft.warnings))
        if not self.drafts.create_draft(draft, self.policy.max_per_user, now, entry):
            raise DraftRefused(409, "too-many-drafts",
                               f"a user may keep at most {self.policy.max_per_user} drafts; submit or delete one",
                               audited=True)
        return draft

    def replace(self, caller: DraftCaller, draft_id: str, if_match: str | None, media_type: str, body: bytes,
                now: datetime) -> Draft:
        """Replace an open draft's document (`if_match`: the ETag it was read at, or "*").

        Raises:
            DraftRefused: 404/410/403 as for reading, 409 once submitted, 412 on a stale version.
            FilingRefused: the parsers' hard refusals.
        """
        draft = self._owned(caller, draft_id, now, "draft_updated")
        if draft.state is DraftState.SUBMITTED:
            self.drafts.audit_draft(self._entry(caller, "draft_updated", draft_id, "draft-submitted"))
            raise DraftRefused(409, "draft-submitted", f"draft {draft_id} was submitted as {draft.reference}",
                               {"reference": draft.reference}, audited=True)
        if if_match is not None and if_match.strip() != "*" and if_match.strip() != etag(draft):
            self.drafts.audit_draft(self._entry(caller, "draft_updated", draft_id, "version-mismatch"))
            raise DraftRefused(412, "draft-version-mismatch",
                               f"the draft changed since it was read: it is at version {draft.version}",
                               {"version": draft.version}, audited=True)
        inspection = self._inspect(media_type, body, now)
        updated = replace(
            draft, kind=inspection.kind, media_type=media_type, document=body,
            warnings=tuple(_violation_json(v) for v in inspection.warnings), version=draft.version + 1,
            updated_at=now, expires_at=now + self.policy.ttl, subject_tax_code=inspection.text("f:subject/f:taxCode"),
            viewers=self._viewers(caller.user.tax_code, inspection, now),
        )
        entry = self._entry(caller, "draft_updated", draft_id, version=updated.version,
                            warnings=len(updated.warnings))
        if not self.drafts.replace_draft(updated, draft.version, entry):
            raise DraftRefused(412, "draft-version-mismatch", "the draft changed while it was being saved",
                               audited=True)
        return updated

    def read(self, caller: DraftCaller, draft_id: str, now: datetime) -> Draft:
        """Raises: DraftRefused 404 (not the caller's to read), 410 (expired)."""
        draft = self._visible(caller, draft_id, now, "draft_read")
        self.drafts.audit_draft(self._entry(caller, "draft_read", draft_id))
        return draft

    def listing(self, caller: DraftCaller, now: datetime, cursor: str | None,
                limit: int | None) -> tuple[list[Draft], str | None]:
        """The drafts the caller may read, newest first; the cursor of the next page."""
        size = min(max(limit or self.policy.page_size, 1), 200)
        self.purge(now)
        items, last = self.drafts.list_drafts(caller.portal, caller.user.tax_code, now,
                                              _position(cursor) if cursor else None, size)
        self.drafts.audit_draft(self._entry(caller, "drafts_listed", "", count=len(items)))
        return items, (_cursor(last) if last is not None else None)

    def delete(self, caller: DraftCaller, draft_id: str, now: datetime) -> None:
        """Raises: DraftRefused 404/410/403."""
        self._owned(caller, draft_id, now, "draft_deleted")
        if not self.drafts.delete_draft(draft_id, self._entry(caller, "draft_deleted", draft_id)):
            raise DraftRefused(404, "not-found", f"no draft {draft_id}", audited=True)

    def check(self, caller: DraftCaller, draft_id: str, now: datetime) -> DraftCheck:
        """Validation, authorization per recipient and each agency's message, nothing stored."""
        draft = self._visible(caller, draft_id, now, "draft_checked")
        result = self._check(caller, draft, now)
        self.drafts.audit_draft(self._entry(
            caller, "draft_checked", draft_id, "ready" if result.ready else "not-ready",
            violations=len(result.violations),
            recipients={r.agency: {"authorized": r.authorized, "messageValid": r.message_valid}
                        for r in result.recipients}))
        return result

    def _check(self, caller: DraftCaller, draft: Draft, now: datetime) -> DraftCheck:
        root: Any
        kind: str | None
        try:
            parsed = (self.validator.parse_json(draft.document) if draft.media_type == "application/json"
                      else self.validator.parse(draft.document))
            violations: list[Violation] = []
            root, kind = parsed.root, parsed.kind
        except FilingRefused as invalid:
            violations = invalid.violations
            inspection = self._inspect(draft.media_type, draft.document, now)
            root, kind = inspection.root, inspection.kind
        if root is None or kind is None:
            return DraftCheck(violations, [{"code": "no-kind", "location": "/f:filing",
                                            "detail": "the draft names no filing kind yet"}] if root is not None
                              else [], [])
        routes = self._routes.applicable(kind, root)
        if not routes:
            return DraftCheck(violations, [{"code": "no-route", "location": "/f:filing",
                                            "detail": f"no agency receives a filing of kind {kind!r}"}], [])
        refused: dict[str, tuple[str, ...]] = {}
        try:
            authorize_filing(self._identity, self._routes, kind, root, caller.user, now)
        except RecipientsNotAuthorized as exc:
            refused = {r.agency: tuple(x.detail for x in r.reasons) for r in exc.refusals}
        facts = FilingFacts(reference=PLANNING_REFERENCE, kind=kind, portal=caller.portal,
                            declarant_tax_code=child_text(root, "f:declarant/f:taxCode"),
                            declarant_role=child_text(root, "f:declarant/f:role"), received_at=now)
        general: list[dict[str, str]] = []
        try:
            planned = plan_deliveries(self._routes, root, facts)
        except (ValueError, TypeError, ArithmeticError) as exc:  # a mapping's conversion of a bad value
            general.append({"code": "mapping-failed", "location": "/f:filing", "detail": str(exc)})
            planned = []
        recipients = []
        for p in planned:
            preview = (self._previewer.preview(p.agency, p.contract_version, p.operation, p.content)
                       if self._previewer is not None else None)
            if preview is not None and preview.problem is not None and preview.problem.field:
                # Name the filing field the failing message field comes from, as intake does.
                route = next((r for r in routes if r.agency == p.agency and r.operation == p.operation), None)
                source = route.field_map.source_of(tuple(preview.problem.field.split("."))) if route else None
                preview = replace(preview, problem=replace(preview.problem, filing_field=source))
            recipients.append(RecipientCheck(agency=p.agency, operation=p.operation,
                                             authorized=p.agency not in refused,
                                             reasons=refused.get(p.agency, ()), preview=preview))
        return DraftCheck(violations, general, recipients)

    def submit(self, caller: DraftCaller, draft_id: str, now: datetime, key: str | None = None) -> Submitted:
        """Make the draft a filing through the intake of `POST /v1/filings`, once.

        Raises:
            DraftRefused: 404/410/403.
            FilingRefused, RecipientsNotAuthorized, NoRecipients: as `POST /v1/filings`.
        """
        draft = self._owned(caller, draft_id, now, "draft_submitted")
        if draft.state is DraftState.SUBMITTED:
            answer = self.drafts.submission(draft_id)
            if answer is not None:
                self.drafts.audit_draft(self._entry(caller, "draft_submitted", draft_id, "replayed",
                                                    reference=draft.reference))
                return Submitted(answer, replayed=True)
        if draft.media_type == "application/json":
            parsed = self.validator.parse_json(draft.document, today=now.astimezone(_ROME).date())
        else:
            parsed = self.validator.parse(draft.document, today=now.astimezone(_ROME).date())
        granted = authorize_filing(self._identity, self._routes, parsed.kind, parsed.root, caller.user, now)
        new = NewFiling(
            kind=parsed.kind, portal=caller.portal, subject_tax_code=parsed.subject_tax_code,
            subject_name=parsed.subject_name, declarant_tax_code=parsed.declarant_tax_code,
            declarant_role=parsed.declarant_role, document=parsed.xml, digest=parsed.digest, received_at=now,
            # One key per draft: the unique (portal, key) of filings makes a repeated or
            # concurrent submit answer the first filing instead of making a second.
            idempotency_key=f"draft:{draft.id}",
            request_digest=hashlib.sha256(f"draft\n{draft.id}".encode()).hexdigest(),
            filed_by=caller.user.tax_code, responsible_tax_code=granted.responsible_tax_code,
            authorization=granted.as_json(), viewers=granted.viewers,
            auth_context={**caller.audit_context, "draft": draft.id, **({"idempotencyKey": key} if key else {})},
        )
        accepted = accept_filing(self._intake, self._routes, parsed.root, new, self._previewer)
        body = submission_json(accepted, draft.id)
        first = self.drafts.mark_submitted(draft.id, accepted.reference, body, self._entry(
            caller, "draft_submitted", draft_id, reference=accepted.reference))
        return Submitted(body, replayed=accepted.replayed or not first)

    def purge(self, now: datetime) -> int:
        """Remove expired drafts (a bounded batch): run on each create and list."""
        return self.drafts.purge_expired_drafts(now, self.policy.purge_batch)




def etag(draft: Draft) -> str:
    """The draft's ETag: its version, quoted (RFC 9110 §8.8.3)."""
    return f'"{draft.version}"'


def submission_json(accepted: AcceptedFiling, draft_id: str) -> dict[str, Any]:
    """The submit's answer; recipients in a fixed order, so a replay's body is the same."""
    location = f"/v1/filings/{accepted.reference}"
    return {
        "reference": accepted.reference,
        "state": accepted.state,
        "recipients": sorted(accepted.recipients, key=lambda r: (r["agency"], r["operation"])),
        "draftId": draft_id,
        "links": {"self": location, "draft": f"/v1/drafts/{draft_id}"},
    }
