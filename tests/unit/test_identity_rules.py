"""The pure identity rules: users and levels, delegations and sub-delegations, lockout, audit hashes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from domain.audit import GENESIS_HASH, audit_hash, canonical_line
from domain.delegation import (
    Delegation,
    FilingParties,
    authorize_recipients,
    delegation_status,
    filing_viewers,
    subdelegation_violations,
)
from domain.identity import AuthMethod, IdentityError, User, level_from_loa, normalise_user_id, parse_min_level
from domain.lockout import LockoutPolicy, locked_until, register_failure

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=timezone.utc)
SUBJECT = "06543210485"
LEGAL_REP = "CMPNNA80E59D612B"
DELEGATE = "DLGLNE88D50L219Q"
COLLABORATOR = "CLLBRT85M10F205L"


def _user(code: str, level: int = 2, method: AuthMethod = AuthMethod.SPID) -> User:
    return User(tax_code=code, auth_method=method, level=level)


def _delegation(id: str = "d1", *, delegate: str = DELEGATE, agencies: tuple[str, ...] = ("inps", "cciaa"),
                days: int = 30, parent: str | None = None, granted_by: str = LEGAL_REP,
                revoked: datetime | None = None) -> Delegation:
    return Delegation(id=id, subject_tax_code=SUBJECT, delegate_tax_code=delegate, agencies=frozenset(agencies),
                      valid_from=NOW - timedelta(days=1), valid_to=NOW + timedelta(days=days),
                      granted_by=granted_by, revoked_at=revoked, parent_id=parent)


def _parties(declarant: str) -> FilingParties:
    return FilingParties(SUBJECT, LEGAL_REP, declarant)


# -- users and levels ------------------------------------------------------------------------


def test_the_spid_tinit_form_and_plain_codes_name_the_same_person() -> None:
    """`TINIT-<code>` is how SPID states a tax code; both forms give the bare code."""
    assert normalise_user_id("TINIT-CMPNNA80E59D612B") == normalise_user_id("cmpnna80e59d612b") == LEGAL_REP


def test_a_user_id_with_a_wrong_check_character_is_refused() -> None:
    """A personal tax code is checked like everywhere else in the hub."""
    with pytest.raises(IdentityError):
        normalise_user_id("TINIT-CMPNNA80E59D612C")


@pytest.mark.parametrize(
    ("method", "loa", "expected"),
    [
        ("SPID", "SpidL1", (AuthMethod.SPID, 1)),
        ("spid", "https://www.spid.gov.it/SpidL2", (AuthMethod.SPID, 2)),
        ("SPID", "L3", (AuthMethod.SPID, 3)),
        ("CIE", None, (AuthMethod.CIE, 3)),
        ("CIE", "CieL2", (AuthMethod.CIE, 2)),
        ("CNS", "", (AuthMethod.CNS, 3)),
    ],
)
def test_levels_are_read_on_one_scale(method: str, loa: str | None, expected: tuple[AuthMethod, int]) -> None:
    """SPID states its level; a card (CIE, CNS) without one counts as the top level."""
    assert level_from_loa(method, loa) == expected


def test_spid_without_a_level_and_unknown_methods_are_refused() -> None:
    """A SPID login always has a level; only SPID, CIE and CNS exist."""
    with pytest.raises(IdentityError):
        level_from_loa("SPID", None)
    with pytest.raises(IdentityError):
        level_from_loa("password", "L2")


def test_route_minimums_order_spid_levels_below_the_cards() -> None:
    """SPID1 < SPID2 < SPID3 = CIE = CNS; no minimum is level 1."""
    assert [parse_min_level(x) for x in ("SPID1", "SPID2", "SPID3", "CIE", "CNS", None)] == [1, 2, 3, 3, 3, 1]
    with pytest.raises(IdentityError):
        parse_min_level("SPID4")


# -- authorization per recipient ---------------------------------------------------------------


def test_the_legal_representative_filing_as_declarant_is_authorized_everywhere() -> None:
    """The user is the filing's legal representative and its declarant: every recipient."""
    allowed, refused = authorize_recipients(_user(LEGAL_REP), _parties(LEGAL_REP), {"inps": 2, "cciaa": 2}, [], NOW)
    assert not refused
    assert [(g.agency, g.basis, g.responsible_tax_code) for g in allowed] == [
        ("inps", "legal_representative", LEGAL_REP), ("cciaa", "legal_representative", LEGAL_REP)]


def test_a_declarant_other_than_the_user_is_refused() -> None:
    """The person authenticated must be the one who declares."""
    _, refused = authorize_recipients(_user(LEGAL_REP), _parties(DELEGATE), {"inps": 1}, [], NOW)
    assert [r.code for r in refused[0].reasons] == ["declarant-not-user"]


def test_a_delegation_authorizes_only_its_agencies() -> None:
    """Delegated for inps and cciaa: inail is refused, by name."""
    allowed, refused = authorize_recipients(_user(DELEGATE), _parties(DELEGATE), {"inps": 2, "inail": 2},
                                            [_delegation()], NOW)
    assert [(g.agency, g.basis, g.delegation_id) for g in allowed] == [("inps", "delegation", "d1")]
    assert refused[0].agency == "inail" and refused[0].reasons[0].code == "no-valid-delegation"
    assert "does not include inail" in refused[0].reasons[0].detail


def test_a_level_below_the_route_minimum_is_refused_even_with_authority() -> None:
    """SPID1 where SPID2 is required: refused for that recipient, with the levels named."""
    _, refused = authorize_recipients(_user(LEGAL_REP, level=1), _parties(LEGAL_REP), {"inps": 2}, [], NOW)
    assert refused[0].reasons[0].code == "level-below-minimum"
    assert "SPID1" in refused[0].reasons[0].detail


def test_expired_and_revoked_delegations_authorize_nothing() -> None:
    """A delegation past validTo or revoked is named as such in the refusal."""
    expired = _delegation(days=-0)
    revoked = _delegation("d2", revoked=NOW - timedelta(hours=1))
    _, refused = authorize_recipients(_user(DELEGATE), _parties(DELEGATE), {"inps": 1}, [expired, revoked], NOW)
    detail = refused[0].reasons[0].detail
    assert "d1 is expired" in detail and "d2 is revoked" in detail


def test_a_subdelegation_authorizes_the_collaborator_and_the_delegate_answers() -> None:
    """The collaborator files; the delegate who granted the sub-delegation is responsible."""
    parent = _delegation()
    sub = _delegation("s1", delegate=COLLABORATOR, agencies=("inps",), parent="d1", granted_by=DELEGATE)
    allowed, refused = authorize_recipients(_user(COLLABORATOR), _parties(COLLABORATOR), {"inps": 2},
                                            [parent, sub], NOW)
    assert not refused
    grant = allowed[0]
    assert (grant.basis, grant.responsible_tax_code, grant.delegation_id) == ("subdelegation", DELEGATE, "s1")
    assert filing_viewers(_user(COLLABORATOR), _parties(COLLABORATOR), allowed) == {
        COLLABORATOR, DELEGATE, LEGAL_REP}


def test_a_subdelegation_is_void_when_its_parent_is_revoked_or_expired() -> None:
    """The parent ends, the sub-delegation ends with it."""
    sub = _delegation("s1", delegate=COLLABORATOR, agencies=("inps",), parent="d1", granted_by=DELEGATE)
    for parent in (_delegation(revoked=NOW - timedelta(minutes=1)), _delegation(days=0)):
        assert delegation_status(sub, NOW, parent) == "void"
        _, refused = authorize_recipients(_user(COLLABORATOR), _parties(COLLABORATOR), {"inps": 1},
                                          [parent, sub], NOW)
        assert "void" in refused[0].reasons[0].detail


def test_a_subdelegation_wider_than_its_parent_is_refused() -> None:
    """More agencies, or a longer period, than the parent: each excess named."""
    parent = _delegation(agencies=("inps",))
    reasons = subdelegation_violations(parent, collaborator=COLLABORATOR, agencies={"inps", "inail"},
                                       valid_from=parent.valid_from - timedelta(days=1),
                                       valid_to=parent.valid_to + timedelta(days=1), at=NOW)
    assert [r.code for r in reasons] == ["wider-than-parent"] * 3
    assert "inail" in reasons[0].detail


def test_a_subdelegation_within_its_parent_has_no_violations() -> None:
    """A subset of agencies within the parent's period is fine."""
    parent = _delegation()
    assert subdelegation_violations(parent, collaborator=COLLABORATOR, agencies={"inps"},
                                    valid_from=NOW, valid_to=parent.valid_to, at=NOW) == []


def test_a_subdelegation_cannot_be_delegated_further() -> None:
    """One level only: a collaborator cannot extend their sub-delegation."""
    sub = _delegation("s1", delegate=COLLABORATOR, agencies=("inps",), parent="d1", granted_by=DELEGATE)
    reasons = subdelegation_violations(sub, collaborator="RSSMRA80A01H501U", agencies={"inps"},
                                       valid_from=NOW, valid_to=sub.valid_to, at=NOW)
    assert "nested-subdelegation" in [r.code for r in reasons]


# -- lockout --------------------------------------------------------------------------------------


def test_ten_failures_lock_for_five_minutes_and_each_further_one_adds_five() -> None:
    """The agencies' rule: the tenth failure locks; failing while locked extends the lock."""
    policy = LockoutPolicy()
    state = None
    for second in range(10):
        assert locked_until(state, 1000.0 + second) is None
        state = register_failure(state, 1000.0 + second, policy)
    assert locked_until(state, 1009.0) == 1309.0
    state = register_failure(state, 1010.0, policy)
    assert locked_until(state, 1010.0) == 1609.0
    assert locked_until(state, 1609.0) is None


def test_a_failure_after_the_lock_or_the_window_starts_a_new_count() -> None:
    """Old failures do not add up with new ones."""
    policy = LockoutPolicy(threshold=3, lock_seconds=60, window_seconds=60)
    state = register_failure(register_failure(None, 0.0, policy), 1.0, policy)
    assert register_failure(state, 500.0, policy).failures == 1
    locked = register_failure(state, 2.0, policy)
    assert locked.locked_until == 62.0
    assert register_failure(locked, 100.0, policy).failures == 1


# -- audit hashes ---------------------------------------------------------------------------------


def test_the_audit_hash_covers_every_field_and_the_previous_hash() -> None:
    """Changing any field, or the predecessor, changes the hash; naive UTC equals aware UTC."""
    line = dict(at=NOW, actor=LEGAL_REP, action="filing_accepted", subject="CRV-2026-000001",
                outcome="accepted", detail={"recipients": ["inps"]})
    base = audit_hash(GENESIS_HASH, canonical_line(**line))
    assert base == audit_hash(GENESIS_HASH, canonical_line(**{**line, "at": NOW.replace(tzinfo=None)}))
    for field, value in (("actor", DELEGATE), ("outcome", "refused"), ("detail", {"recipients": []}),
                         ("at", NOW + timedelta(microseconds=1))):
        assert audit_hash(GENESIS_HASH, canonical_line(**{**line, field: value})) != base
    assert audit_hash(base, canonical_line(**line)) != base
