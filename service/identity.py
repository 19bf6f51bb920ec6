"""Use cases of identity: authorize a filing per recipient; grant, list and revoke delegations.

The rules are the domain's (`domain.delegation`); this module loads the records through the
`IdentityStore` port, applies the rules and stores the outcome with its audit line.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from lxml import etree

from domain.delegation import (
    SUBDELEGATION,
    AgencyGrant,
    AgencyRefusal,
    Delegation,
    FilingParties,
    Reason,
    authorize_recipients,
    delegation_status,
    delegation_violations,
    filing_viewers,
    subdelegation_violations,
)
from domain.identity import IdentityError, User, normalise_user_id
from domain.lockout import Lockout, LockoutPolicy
from domain.taxcode import tax_code_error
from domain.timestamps import rfc3339
from routing.routes import RouteTable
from schemas.child_paths import child_text

__all__ = [
    "Admission",
    "AuditEntry",
    "DelegationRefused",
    "FilingAuthorization",
    "IdentityStore",
    "RecipientsNotAuthorized",
    "authorize_filing",
    "grant_delegation",
    "grant_subdelegation",
    "list_delegations",
    "revoke_delegation",
]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One audit line to append together with a change."""

    actor: str
    action: str
    subject: str
    outcome: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Admission:
    """`ok`, `locked` (with `locked_until`) or `replayed` (the token id was seen before)."""

    outcome: str
    locked_until: float | None = None


class IdentityStore(Protocol):
    """What the identity use cases and the request guard need from storage."""

    def admit(self, caller: str, issuer: str, jti: str, keep_until: float, now: float) -> Admission: ...

    def record_failure(self, caller: str, now: float, policy: LockoutPolicy,
                       entry: AuditEntry) -> tuple[bool, float | None]: ...

    def audit(self, entry: AuditEntry) -> None: ...

    def lockouts(self, now: float, *, counting: bool = False) -> list[Lockout]: ...

    def lift_lockout(self, key: str, now: float, operator: str) -> Lockout | None: ...

    def add_delegation(self, d: Delegation, portal: str, entry: AuditEntry) -> None: ...

    def get_delegation(self, delegation_id: str) -> Delegation | None: ...

    def revoke_delegation(self, delegation_id: str, at: datetime, by: str, entry: AuditEntry) -> bool: ...

    def grants_for(self, user: str, subject: str) -> list[Delegation]: ...

    def delegations_of_subject(self, subject: str, involving: str) -> tuple[list[Delegation], dict[str, Delegation]]: ...


# -- filings ------------------------------------------------------------------------------------


class RecipientsNotAuthorized(Exception):
    """At least one recipient may not receive this filing from this user."""

    def __init__(self, refusals: list[AgencyRefusal]) -> None:
        self.refusals = refusals
        names = ", ".join(r.agency for r in refusals)
        super().__init__(f"the user is not authorized to file at: {names}")


@dataclass(frozen=True, slots=True)
class FilingAuthorization:
    grants: list[AgencyGrant]
    responsible_tax_code: str
    viewers: tuple[str, ...]

    def as_json(self) -> dict[str, Any]:
        """Per recipient: the basis, the delegation used and who answers for it."""
        return {
            g.agency: {"basis": g.basis, "delegation": g.delegation_id, "responsible": g.responsible_tax_code}
            for g in self.grants
        }


def filing_parties(root: etree._Element) -> FilingParties:
    return FilingParties(
        subject_tax_code=child_text(root, "f:subject/f:taxCode"),
        legal_representative_tax_code=child_text(root, "f:legalRepresentative/f:taxCode"),
        declarant_tax_code=child_text(root, "f:declarant/f:taxCode"),
    )


def authorize_filing(identity: IdentityStore, routes: RouteTable, kind: str, root: etree._Element,
                     user: User, at: datetime) -> FilingAuthorization:
    """Check that `user` may file this filing at every recipient its routes choose.

    Raises:
        RecipientsNotAuthorized: naming every recipient refused, and why.
    """
    parties = filing_parties(root)
    min_levels: dict[str, int] = {}
    for route in routes.applicable(kind, root):
        min_levels[route.agency] = max(min_levels.get(route.agency, 1), route.min_level)
    grants = (
        []
        if user.tax_code == parties.legal_representative_tax_code
        else identity.grants_for(user.tax_code, parties.subject_tax_code)
    )
    allowed, refused = authorize_recipients(user, parties, min_levels, grants, at)
    if refused:
        raise RecipientsNotAuthorized(refused)
    delegates = sorted({g.responsible_tax_code for g in allowed if g.basis == SUBDELEGATION})
    return FilingAuthorization(
        grants=allowed,
        responsible_tax_code=delegates[0] if delegates else user.tax_code,
        viewers=tuple(sorted(filing_viewers(user, parties, allowed))),
    )


# -- delegations --------------------------------------------------------------------------------


class DelegationRefused(Exception):
    """A delegation command that cannot be carried out; maps to a problem document."""

    def __init__(self, status: int, slug: str, detail: str, reasons: Iterable[Reason] = ()) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.reasons = list(reasons)


def _person(value: str, what: str) -> str:
    try:
        return normalise_user_id(value)
    except IdentityError as exc:
        raise DelegationRefused(422, "invalid-delegation", f"{what}: {exc}") from None


def _subject(value: str) -> str:
    code = value.strip().upper()
    reason = tax_code_error(code)
    if reason is not None:
        raise DelegationRefused(422, "invalid-delegation", f"subject: {reason}")
    return code


def _describe(d: Delegation, status: str) -> dict[str, Any]:
    return {
        "id": d.id,
        "parent": d.parent_id,
        "subject": d.subject_tax_code,
        "delegate": d.delegate_tax_code,
        "agencies": sorted(d.agencies),
        "validFrom": rfc3339(d.valid_from),
        "validTo": rfc3339(d.valid_to),
        "grantedBy": d.granted_by,
        "revokedAt": rfc3339(d.revoked_at) if d.revoked_at else None,
        "status": status,
    }


def _entry(user: User, portal: str, action: str, d: Delegation, extra: dict[str, Any] | None = None) -> AuditEntry:
    return AuditEntry(
        actor=user.tax_code, action=action, subject=d.id, outcome="ok",
        detail={"portal": portal, "assurance": user.assurance, "location": user.location,
                "subject": d.subject_tax_code, "delegate": d.delegate_tax_code,
                "agencies": sorted(d.agencies), "parent": d.parent_id, **(extra or {})},
    )


def grant_delegation(identity: IdentityStore, *, user: User, portal: str, subject: str, delegate: str,
                     agencies: Iterable[str], valid_from: datetime, valid_to: datetime,
                     known_agencies: Iterable[str], at: datetime) -> dict[str, Any]:
    """The user, as the subject's legal representative, delegates `agencies` to `delegate`.

    Raises:
        DelegationRefused: 422 with every reason the terms are refused.
    """
    subject_code = _subject(subject)
    delegate_code = _person(delegate, "delegate")
    wanted = frozenset(agencies)
    reasons = delegation_violations(subject=subject_code, delegate=delegate_code, granted_by=user.tax_code,
                                    agencies=wanted, valid_from=valid_from, valid_to=valid_to,
                                    known_agencies=known_agencies)
    if reasons:
        raise DelegationRefused(422, "invalid-delegation", "; ".join(r.detail for r in reasons), reasons)
    d = Delegation(id=uuid.uuid4().hex, subject_tax_code=subject_code, delegate_tax_code=delegate_code,
                   agencies=wanted, valid_from=valid_from, valid_to=valid_to, granted_by=user.tax_code)
    identity.add_delegation(d, portal, _entry(user, portal, "delegation_granted", d))
    return _describe(d, delegation_status(d, at))


def grant_subdelegation(identity: IdentityStore, *, user: User, portal: str, parent_id: str,
                        collaborator: str, agencies: Iterable[str] | None, valid_from: datetime | None,
                        valid_to: datetime | None, at: datetime) -> dict[str, Any]:
    """The parent's delegate extends it to a collaborator, within the parent's scope.

    Omitted agencies or dates are the parent's.

    Raises:
        DelegationRefused: 404 when the user cannot see the parent, 403 when they are not its
            delegate, 422 when the terms are wider than the parent's.
    """
    parent = identity.get_delegation(parent_id)
    if parent is None or user.tax_code not in (parent.delegate_tax_code, parent.granted_by):
        raise DelegationRefused(404, "not-found", f"no delegation {parent_id}")
    if user.tax_code != parent.delegate_tax_code:
        raise DelegationRefused(403, "not-the-delegate", "only the delegate may sub-delegate")
    collaborator_code = _person(collaborator, "collaborator")
    wanted = frozenset(agencies) if agencies is not None else parent.agencies
    start = valid_from or max(at, parent.valid_from)
    end = valid_to or parent.valid_to
    reasons = subdelegation_violations(parent, collaborator=collaborator_code, agencies=wanted,
                                       valid_from=start, valid_to=end, at=at)
    if reasons:
        slug = "subdelegation-wider-than-parent" if any(r.code == "wider-than-parent" for r in reasons) \
            else "invalid-delegation"
        raise DelegationRefused(422, slug, "; ".join(r.detail for r in reasons), reasons)
    d = Delegation(id=uuid.uuid4().hex, subject_tax_code=parent.subject_tax_code,
                   delegate_tax_code=collaborator_code, agencies=wanted, valid_from=start, valid_to=end,
                   granted_by=user.tax_code, parent_id=parent.id)
    identity.add_delegation(d, portal, _entry(user, portal, "subdelegation_granted", d,
                                              {"responsible": parent.delegate_tax_code}))
    return _describe(d, delegation_status(d, at, parent))


def revoke_delegation(identity: IdentityStore, *, user: User, portal: str, delegation_id: str,
                      at: datetime) -> dict[str, Any]:
    """Revoke a delegation (its sub-delegations end with it) or a sub-delegation.

    Its grantor, its delegate (renouncing) or, for a sub-delegation, the grantor of the parent
    may revoke it.

    Raises:
        DelegationRefused: 404 for anyone else (they cannot see it), 409 when already revoked.
    """
    d = identity.get_delegation(delegation_id)
    parent = identity.get_delegation(d.parent_id) if d is not None and d.parent_id else None
    allowed = {d.granted_by, d.delegate_tax_code} if d is not None else set()
    if parent is not None:
        allowed.add(parent.granted_by)
    if d is None or user.tax_code not in allowed:
        raise DelegationRefused(404, "not-found", f"no delegation {delegation_id}")
    action = "subdelegation_revoked" if d.is_subdelegation else "delegation_revoked"
    if not identity.revoke_delegation(d.id, at, user.tax_code, _entry(user, portal, action, d)):
        raise DelegationRefused(409, "already-revoked", f"delegation {delegation_id} was already revoked")
    revoked = replace(d, revoked_at=at)
    return _describe(revoked, delegation_status(revoked, at, parent))


def list_delegations(identity: IdentityStore, *, user: User, subject: str, at: datetime) -> list[dict[str, Any]]:
    """The subject's delegations the user takes part in, each with its status now."""
    visible, known = identity.delegations_of_subject(_subject(subject), user.tax_code)
    return [_describe(d, delegation_status(d, at, known.get(d.parent_id or ""))) for d in visible]
