"""Who may act for whom at which agency: legal representation, delegations, sub-delegations.

Pure rules over plain records; the store loads the records, the service applies the rules.

- The **legal representative** named in a filing may file it for every recipient when they
  are the authenticated user and the filing's declarant.
- A **delegation** lets a delegate act for a subject at some agencies, within a validity
  period, until revoked.
- A **sub-delegation** is granted by a delegate to a collaborator: never wider than its parent
  (agencies and period), void as soon as the parent ends, and the delegate stays responsible
  for what the collaborator files. A sub-delegation cannot be delegated further.

Validity periods are half-open: `valid_from <= at < valid_to`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from domain.identity import User

__all__ = [
    "AgencyGrant",
    "AgencyRefusal",
    "Delegation",
    "FilingParties",
    "Reason",
    "authorize_recipients",
    "delegation_status",
    "delegation_violations",
    "filing_viewers",
    "subdelegation_violations",
]

LEGAL_REPRESENTATIVE = "legal_representative"
DELEGATION = "delegation"
SUBDELEGATION = "subdelegation"


@dataclass(frozen=True, slots=True)
class Delegation:
    """A delegation, or a sub-delegation when `parent_id` is set.

    For a sub-delegation `delegate_tax_code` is the collaborator and `granted_by` the parent's
    delegate; `subject_tax_code` is copied from the parent.
    """

    id: str
    subject_tax_code: str
    delegate_tax_code: str
    agencies: frozenset[str]
    valid_from: datetime
    valid_to: datetime
    granted_by: str
    revoked_at: datetime | None = None
    parent_id: str | None = None

    @property
    def is_subdelegation(self) -> bool:
        return self.parent_id is not None


@dataclass(frozen=True, slots=True)
class FilingParties:
    """The people a filing names: for whom (subject), its legal representative, who declares."""

    subject_tax_code: str
    legal_representative_tax_code: str
    declarant_tax_code: str


@dataclass(frozen=True, slots=True)
class Reason:
    """Why one recipient is not authorized; `code` is stable, `detail` is for people."""

    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class AgencyGrant:
    """On what basis the user may file at one agency, and who answers for it."""

    agency: str
    basis: str  #: legal_representative | delegation | subdelegation
    responsible_tax_code: str  #: the user, or the delegate for a collaborator's filing
    delegation_id: str | None = None
    chain: tuple[str, ...] = ()  #: the grantors along the delegation chain, top first


@dataclass(frozen=True, slots=True)
class AgencyRefusal:
    agency: str
    reasons: tuple[Reason, ...]


def _own_status(d: Delegation, at: datetime) -> str:
    if d.revoked_at is not None and d.revoked_at <= at:
        return "revoked"
    if at < d.valid_from:
        return "not_yet_valid"
    if at >= d.valid_to:
        return "expired"
    return "active"


def delegation_status(d: Delegation, at: datetime, parent: Delegation | None = None) -> str:
    """`active`, `revoked`, `expired`, `not_yet_valid`, or `void` (a sub-delegation whose
    parent is no longer active, or unknown)."""
    own = _own_status(d, at)
    if own != "active" or not d.is_subdelegation:
        return own
    if parent is None or parent.id != d.parent_id or _own_status(parent, at) != "active":
        return "void"
    return "active"


def delegation_violations(
    *, subject: str, delegate: str, granted_by: str, agencies: Iterable[str],
    valid_from: datetime, valid_to: datetime, known_agencies: Iterable[str],
) -> list[Reason]:
    """What is wrong with a new delegation's terms (tax codes are checked by the caller)."""
    reasons: list[Reason] = []
    wanted = set(agencies)
    if not wanted:
        reasons.append(Reason("no-agencies", "a delegation names at least one agency"))
    unknown = wanted - set(known_agencies)
    if unknown:
        reasons.append(Reason("unknown-agency", f"unknown agencies: {', '.join(sorted(unknown))}"))
    if valid_to <= valid_from:
        reasons.append(Reason("empty-period", "validTo must be after validFrom"))
    if delegate == granted_by:
        reasons.append(Reason("self-delegation", "a user cannot delegate to themselves"))
    if delegate == subject:
        reasons.append(Reason("self-delegation", "the subject cannot be its own delegate"))
    return reasons


def subdelegation_violations(
    parent: Delegation, *, collaborator: str, agencies: Iterable[str],
    valid_from: datetime, valid_to: datetime, at: datetime,
) -> list[Reason]:
    """Why a sub-delegation of `parent` with these terms is refused; empty when it is within.

    A sub-delegation is within its parent when the parent is active now and is itself a
    delegation, its agencies are a subset of the parent's and its period lies inside the
    parent's.
    """
    reasons: list[Reason] = []
    if parent.is_subdelegation:
        reasons.append(Reason("nested-subdelegation", "a sub-delegation cannot be delegated further"))
    status = _own_status(parent, at)
    if status != "active":
        reasons.append(Reason("parent-not-active", f"the parent delegation is {status}"))
    wanted = set(agencies)
    if not wanted:
        reasons.append(Reason("no-agencies", "a sub-delegation names at least one agency"))
    wider = wanted - parent.agencies
    if wider:
        reasons.append(Reason(
            "wider-than-parent",
            f"agencies outside the parent delegation: {', '.join(sorted(wider))}",
        ))
    if valid_to <= valid_from:
        reasons.append(Reason("empty-period", "validTo must be after validFrom"))
    if valid_from < parent.valid_from:
        reasons.append(Reason("wider-than-parent", "it starts before the parent delegation"))
    if valid_to > parent.valid_to:
        reasons.append(Reason("wider-than-parent", "it ends after the parent delegation"))
    if collaborator in (parent.delegate_tax_code, parent.subject_tax_code):
        reasons.append(Reason("self-delegation", "the collaborator must be another person"))
    return reasons


def _explain(candidates: Sequence[Delegation], parents: Mapping[str, Delegation],
             agency: str, at: datetime) -> str:
    """One line on why none of the user's delegations for the subject covers `agency`."""
    parts = []
    for d in candidates:
        kind = "sub-delegation" if d.is_subdelegation else "delegation"
        status = delegation_status(d, at, parents.get(d.parent_id or ""))
        if status == "void":
            parts.append(f"{kind} {d.id} is void: its parent delegation ended")
        elif status != "active":
            parts.append(f"{kind} {d.id} is {status.replace('_', ' ')}")
        elif agency not in d.agencies:
            parts.append(f"{kind} {d.id} does not include {agency}")
        else:
            parent = parents.get(d.parent_id or "")
            if parent is not None and agency not in parent.agencies:
                parts.append(f"{kind} {d.id}: its parent does not include {agency}")
    return "; ".join(parts)


def _grant_for(user: User, parties: FilingParties, agency: str, grants: Sequence[Delegation],
               parents: Mapping[str, Delegation], at: datetime) -> AgencyGrant | Reason:
    if user.tax_code == parties.legal_representative_tax_code:
        return AgencyGrant(agency, LEGAL_REPRESENTATIVE, user.tax_code)
    candidates = [
        d for d in grants
        if d.subject_tax_code == parties.subject_tax_code and d.delegate_tax_code == user.tax_code
    ]
    # A direct delegation first: then the user answers for the filing themselves.
    for d in sorted(candidates, key=lambda d: (d.is_subdelegation, d.valid_from, d.id)):
        parent = parents.get(d.parent_id or "")
        if delegation_status(d, at, parent) != "active" or agency not in d.agencies:
            continue
        if parent is None:
            return AgencyGrant(agency, DELEGATION, user.tax_code, d.id, (d.granted_by,))
        if agency in parent.agencies:  # never wider than the parent, even if stored so
            return AgencyGrant(agency, SUBDELEGATION, parent.delegate_tax_code, d.id,
                               (parent.granted_by, d.granted_by))
    why = _explain(candidates, parents, agency, at)
    if not candidates:
        return Reason(
            "not-authorized",
            f"the user is not the legal representative of {parties.subject_tax_code} "
            f"and holds no delegation for it at {agency}",
        )
    return Reason("no-valid-delegation", f"no valid delegation for {agency}: {why}")


def authorize_recipients(
    user: User,
    parties: FilingParties,
    min_levels: Mapping[str, int],
    grants: Sequence[Delegation],
    at: datetime,
) -> tuple[list[AgencyGrant], list[AgencyRefusal]]:
    """Decide, for every recipient, whether `user` may file there for the filing's subject.

    Args:
        user: the authenticated user.
        parties: the subject, legal representative and declarant named by the filing.
        min_levels: recipient agency → minimum assurance level of its route.
        grants: the user's delegations and sub-delegations for the subject, plus the parents
            of those sub-delegations (which may belong to someone else).
        at: now.

    Returns:
        The grants of the authorized recipients and the refusals of the others, each in the
        order of `min_levels`.
    """
    parents = {d.id: d for d in grants}
    allowed: list[AgencyGrant] = []
    refused: list[AgencyRefusal] = []
    for agency, min_level in min_levels.items():
        reasons: list[Reason] = []
        if user.level < min_level:
            reasons.append(Reason(
                "level-below-minimum",
                f"authenticated with {user.assurance}; {agency} requires level {min_level} or higher",
            ))
        if parties.declarant_tax_code != user.tax_code:
            reasons.append(Reason(
                "declarant-not-user", "the filing's declarant is not the authenticated user",
            ))
        outcome = _grant_for(user, parties, agency, grants, parents, at)
        if isinstance(outcome, Reason):
            reasons.append(outcome)
        if reasons:
            refused.append(AgencyRefusal(agency, tuple(reasons)))
        else:
            assert isinstance(outcome, AgencyGrant)
            allowed.append(outcome)
    return allowed, refused


def filing_viewers(user: User, parties: FilingParties, grants: Iterable[AgencyGrant]) -> set[str]:
    """Who may read an accepted filing: its filer, the subject's legal representative it
    names, and everyone along the delegation chains it used (grantors, responsible delegates)."""
    viewers = {user.tax_code, parties.legal_representative_tax_code}
    for grant in grants:
        viewers.add(grant.responsible_tax_code)
        viewers.update(grant.chain)
    return {v for v in viewers if v}
