"""Identity over real HTTP: ModI-signed requests, authorization per recipient, delegations,
tenant isolation, lockout and the audit chain. Each test runs on SQLite and PostgreSQL.

The hub's identity clock is a `FakeClock` the tests move; portals sign on the same clock.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from sqlalchemy import select, text, update

from cli.client import PortalClient, demo_user
from config.settings import PROJECT_ROOT
from domain.identity import User
from security.keys import generate_private_key
from security.modi import ModiSigner
from storage.audit import verify_audit_chain
from storage.identity_tables import delegations
from storage.tables import audit_log, deliveries, filings, outbox
from tests.support import FakeClock, RunningHub, hub_settings, portal_signer

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"

ANNA = "CMPNNA80E59D612B"  # legal representative of 06543210485 (durc_request.xml)
MARCO = "FTTMRC85C14H501X"  # legal representative of 09182730581 (business_start.xml)
ELENA = "DLGLNE88D50L219Q"  # a delegate (an accountant)
BRUNO = "CLLBRT85M10F205L"  # Elena's collaborator
DURC_SUBJECT = "06543210485"
START_SUBJECT = "09182730581"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hub(database_url: str, sims, clock: FakeClock) -> Iterator[RunningHub]:  # type: ignore[no-untyped-def]
    endpoints = {agency: sims.soap_endpoint(agency) for agency in sims.urls}
    with RunningHub(hub_settings(database_url, endpoints), clock=clock) as running:
        yield running


def _client(hub: RunningHub, clock: FakeClock, tax_code: str, auth: str = "SPID2",
            portal: str = "test") -> PortalClient:
    return PortalClient(hub.base_url, portal_signer(portal, clock), user=demo_user(tax_code, auth))


def _filing(example: str, declarant: str | None = None) -> bytes:
    """An example filing, declared by `declarant` as a delegate when given."""
    doc = (EXAMPLES / example).read_text()
    if declarant is not None:
        doc = re.sub(r"<declarant>.*?</declarant>",
                     f"<declarant><taxCode>{declarant}</taxCode><givenName>Dichiarante</givenName>"
                     f"<familyName>Delegato</familyName><role>delegate</role></declarant>",
                     doc, flags=re.S)
    return doc.encode()


def _nothing_stored(hub: RunningHub) -> bool:
    return (hub.count(filings), hub.count(deliveries), hub.count(outbox)) == (0, 0, 0)


def _problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"urn:crocevia:problem:{slug}" and body["status"] == status and body["detail"]
    return body


def _post_raw(hub: RunningHub, headers: dict[str, str], body: bytes) -> httpx.Response:
    return httpx.post(f"{hub.base_url}/v1/filings", content=body, trust_env=False,
                      headers={"Content-Type": "application/xml", **headers})


def _signed(signer: ModiSigner, body: bytes, user: User | None) -> dict[str, str]:
    return signer.headers(body=body, content_type="application/xml", user=user)


# -- ModI security: each refusal stores nothing ---------------------------------------------------


def test_a_forged_signature_is_refused(hub: RunningHub, clock: FakeClock) -> None:
    """A portal's name with another key: 401, nothing stored, an audit line."""
    forger = ModiSigner(issuer="test", private_key=generate_private_key("ES256"), audience="crocevia", clock=clock)
    with PortalClient(hub.base_url, forger, user=demo_user(ANNA)) as client:
        _problem(client.submit(_filing("durc_request.xml")), 401, "invalid-token")
    assert _nothing_stored(hub)
    with hub.hub.engine.connect() as conn:
        line = conn.execute(select(audit_log)).one()
    # The portal named is only a claim: the line does not make it the actor.
    assert (line.action, line.outcome, line.actor) == ("authentication_failed", "invalid-token", "anonymous")
    assert line.detail["claimedPortal"] == "test" and line.detail["caller"] == "address:127.0.0.1"


@pytest.mark.parametrize(
    ("signer_options", "slug"),
    [({"clock_offset": -600}, "token-expired"), ({"audience": "another-hub"}, "wrong-audience")],
    ids=["expired", "wrong-audience"],
)
def test_expired_or_misaddressed_tokens_are_refused(
    hub: RunningHub, clock: FakeClock, signer_options: dict, slug: str
) -> None:
    """A token from ten minutes ago, or addressed to another service: 401, nothing stored."""
    options = dict(signer_options)  # the parameters are shared by both databases' runs
    offset = options.pop("clock_offset", 0)
    signer = portal_signer("test", lambda: clock() + offset, **options)
    with PortalClient(hub.base_url, signer, user=demo_user(ANNA)) as client:
        _problem(client.submit(_filing("durc_request.xml")), 401, slug)
    assert _nothing_stored(hub)


def test_a_replayed_token_is_refused(hub: RunningHub, clock: FakeClock) -> None:
    """The same signed request twice: the second jti is refused and stores nothing more."""
    body = _filing("durc_request.xml")
    headers = _signed(portal_signer("test", clock), body, demo_user(ANNA))
    assert _post_raw(hub, headers, body).status_code == 202
    _problem(_post_raw(hub, headers, body), 401, "token-replayed")
    assert hub.count(filings) == 1 and hub.count(deliveries) == 1


def test_a_body_changed_after_signing_is_refused(hub: RunningHub, clock: FakeClock) -> None:
    """The Digest was computed over another body: 401, nothing stored."""
    signed_for = _filing("durc_request.xml")
    headers = _signed(portal_signer("test", clock), signed_for, demo_user(ANNA))
    changed = signed_for.replace(b"appalto_pubblico", b"altro")
    _problem(_post_raw(hub, headers, changed), 401, "digest-mismatch")
    assert _nothing_stored(hub)


def test_a_request_without_tracking_evidence_is_refused(hub: RunningHub, clock: FakeClock) -> None:
    """No user named (AUDIT_REST_02 missing): 401, nothing stored."""
    body = _filing("durc_request.xml")
    _problem(_post_raw(hub, _signed(portal_signer("test", clock), body, None), body), 401,
             "tracking-evidence-missing")
    assert _nothing_stored(hub)


def test_a_level_below_the_routes_minimum_is_refused(hub: RunningHub, clock: FakeClock) -> None:
    """SPID level 1 where the INPS route asks for SPID2: 403 naming inps and the levels."""
    with _client(hub, clock, ANNA, "SPID1") as client:
        body = _problem(client.submit(_filing("durc_request.xml")), 403, "recipients-not-authorized")
    assert [(a["agency"], [r["code"] for r in a["reasons"]]) for a in body["agencies"]] == [
        ("inps", ["level-below-minimum"])]
    assert _nothing_stored(hub)
    with _client(hub, clock, ANNA, "CIE") as client:  # a CIE login reaches the top level
        assert client.submit(_filing("durc_request.xml")).status_code == 202


# -- lockout ----------------------------------------------------------------------------------------


def test_the_eleventh_failure_is_locked_out_until_the_period_ends(hub: RunningHub, clock: FakeClock) -> None:
    """Ten failures lock the caller for five minutes, the eleventh adds five more; then a new count."""
    forger = ModiSigner(issuer="test", private_key=generate_private_key("ES256"), audience="crocevia", clock=clock)
    doc = _filing("durc_request.xml")
    with PortalClient(hub.base_url, forger, user=demo_user(ANNA)) as intruder:
        for _ in range(10):
            _problem(intruder.submit(doc), 401, "invalid-token")
        eleventh = intruder.submit(doc)
        _problem(eleventh, 429, "locked-out")
        assert eleventh.headers["retry-after"] == "600"  # five minutes, plus five for the eleventh
        with _client(hub, clock, ANNA) as portal:
            # The same address, correctly signed: the portal is not the one locked out.
            assert portal.submit(doc).status_code == 202
        clock.advance(301)
        _problem(intruder.submit(doc), 429, "locked-out")
        clock.advance(900)
        _problem(intruder.submit(doc), 401, "invalid-token")  # the lock ended: a new count
    with hub.hub.engine.connect() as conn:
        outcomes = conn.execute(select(audit_log.c.outcome).order_by(audit_log.c.id)).scalars().all()
    assert outcomes[:10] == ["invalid-token"] * 10
    assert outcomes[10:] == ["locked", "locked_out", "accepted", "locked_out", "invalid-token"]


def _post_from(hub: RunningHub, address: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST a filing from the loopback address `address` (any 127/8 source reaches the hub)."""
    transport = httpx.HTTPTransport(local_address=address)
    with httpx.Client(transport=transport, trust_env=False, timeout=10) as http:
        return http.post(f"{hub.base_url}/v1/filings", content=body,
                         headers={"Content-Type": "application/xml", **headers})


def _hub_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DATABASE__")}, "DATABASE__URL": database_url}
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "hub.py"), *args], env=env, cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=60)


def test_forged_tokens_lock_out_their_address_not_the_portal(hub: RunningHub, clock: FakeClock,
                                                             database_url: str) -> None:
    """Eleven forged tokens naming portal "test" from 127.0.0.2 lock out 127.0.0.2 only: the
    portal's correctly signed filing from 127.0.0.1 is accepted; an operator lists and lifts."""
    forger = ModiSigner(issuer="test", private_key=generate_private_key("ES256"), audience="crocevia", clock=clock)
    doc = _filing("durc_request.xml")
    for _ in range(10):
        _problem(_post_from(hub, "127.0.0.2", doc, _signed(forger, doc, demo_user(ANNA))), 401, "invalid-token")
    _problem(_post_from(hub, "127.0.0.2", doc, _signed(forger, doc, demo_user(ANNA))), 429, "locked-out")

    genuine = portal_signer("test", clock)
    assert _post_from(hub, "127.0.0.1", doc, _signed(genuine, doc, demo_user(ANNA))).status_code == 202
    start = _filing("business_start.xml")
    assert _post_from(hub, "127.0.0.2", start, _signed(genuine, start, demo_user(MARCO))).status_code == 202  # signed: served
    _problem(_post_from(hub, "127.0.0.2", doc, _signed(forger, doc, demo_user(ANNA))), 429, "locked-out")

    listed = _hub_cli(database_url, "lockouts", "list")
    assert listed.returncode == 0, listed.stderr
    assert "address:127.0.0.2" in listed.stdout and "portal:test" not in listed.stdout
    lifted = _hub_cli(database_url, "lockouts", "lift", "address:127.0.0.2", "--operator", "mrossi")
    assert lifted.returncode == 0 and "lifted" in lifted.stdout, lifted.stderr
    assert "address:127.0.0.2" not in _hub_cli(database_url, "lockouts", "list").stdout
    missing = _hub_cli(database_url, "lockouts", "lift", "address:127.0.0.9", "--operator", "mrossi")
    assert missing.returncode == 1

    # Lifted: the address starts a new count (401, not 429).
    _problem(_post_from(hub, "127.0.0.2", doc, _signed(forger, doc, demo_user(ANNA))), 401, "invalid-token")
    with hub.hub.engine.connect() as conn:
        lifts = conn.execute(select(audit_log).where(audit_log.c.action == "lockout_lifted")
                             .order_by(audit_log.c.id)).all()
    assert [(x.actor, x.subject, x.outcome) for x in lifts] == [
        ("operator:mrossi", "address:127.0.0.2", "lifted"), ("operator:mrossi", "address:127.0.0.9", "not_found")]
    assert lifts[0].detail["wasLocked"] is True and lifts[0].detail["failures"] == 12
    assert verify_audit_chain(hub.hub.engine).ok


def test_signed_but_refused_requests_lock_out_that_portal_and_user(hub: RunningHub, clock: FakeClock,
                                                                   database_url: str) -> None:
    """A replayed token is the portal's own: replays count against the portal and that user,
    whatever the address; other users of the portal, and the user elsewhere, are served."""
    doc = _filing("durc_request.xml")
    headers = _signed(portal_signer("test", clock), doc, demo_user(ANNA))
    assert _post_from(hub, "127.0.0.1", doc, headers).status_code == 202
    for i in range(10):
        address = f"127.0.0.{2 + i % 3}"  # from anywhere: the count is the portal's and user's
        _problem(_post_from(hub, address, doc, headers), 401, "token-replayed")
    _problem(_post_from(hub, "127.0.0.1", doc, headers), 429, "locked-out")

    with _client(hub, clock, ANNA) as anna:
        _problem(anna.submit(doc), 429, "locked-out")  # freshly signed: ANNA at "test" is locked
    with _client(hub, clock, ANNA, portal="other") as anna_elsewhere:
        assert anna_elsewhere.submit(doc).status_code == 202
    with _client(hub, clock, MARCO) as marco:
        assert marco.submit(_filing("business_start.xml")).status_code == 202

    key = f"portal:test/user:{ANNA}"
    listed = _hub_cli(database_url, "lockouts", "list")
    assert key in listed.stdout and "address:" not in listed.stdout, listed.stdout
    assert _hub_cli(database_url, "lockouts", "lift", key, "--operator", "mrossi").returncode == 0
    with _client(hub, clock, ANNA) as anna:
        assert anna.submit(doc).status_code == 202


def test_the_lock_answers_with_retry_after(hub: RunningHub, clock: FakeClock) -> None:
    """429 carries Retry-After with the seconds left."""
    forger = ModiSigner(issuer="test", private_key=generate_private_key("RS256"), audience="crocevia", clock=clock)
    with PortalClient(hub.base_url, forger, user=demo_user(ANNA)) as intruder:
        for _ in range(10):
            assert intruder.submit(_filing("durc_request.xml")).status_code == 401
        clock.advance(60)
        response = intruder.submit(_filing("durc_request.xml"))
        assert response.status_code == 429 and response.headers["retry-after"] == "540"


# -- authorization per recipient -------------------------------------------------------------------


def _grant(client: PortalClient, subject: str, delegate: str, agencies: list[str], days: int = 30) -> dict:
    valid_to = (datetime.now(timezone.utc) + timedelta(days=days)).isoformat()
    response = client.grant_delegation(subject=subject, delegate=delegate, agencies=agencies, valid_to=valid_to)
    assert response.status_code == 201, response.text
    return response.json()


def test_a_delegate_files_within_the_delegation(hub: RunningHub, clock: FakeClock) -> None:
    """Anna delegates INPS to Elena; Elena files the DURC; the basis is recorded; both can read it."""
    with _client(hub, clock, ANNA) as anna, _client(hub, clock, ELENA) as elena:
        delegation = _grant(anna, DURC_SUBJECT, ELENA, ["inps"])
        assert delegation["status"] == "active" and delegation["grantedBy"] == ANNA
        response = elena.submit(_filing("durc_request.xml", declarant=ELENA))
        assert response.status_code == 202, response.text
        reference = response.json()["reference"]
        assert elena.status(reference).status_code == 200
        assert anna.status(reference).status_code == 200  # the grantor sees it too
        listed = anna.delegations(DURC_SUBJECT).json()["delegations"]
        assert [d["id"] for d in listed] == [delegation["id"]]
    with hub.hub.engine.connect() as conn:
        row = conn.execute(select(filings).where(filings.c.reference == reference)).one()
    assert (row.filed_by, row.responsible_tax_code) == (ELENA, ELENA)
    assert row.authorization["inps"] == {"basis": "delegation", "delegation": delegation["id"], "responsible": ELENA}


def test_a_filing_with_one_unauthorized_agency_is_refused_naming_it(hub: RunningHub, clock: FakeClock) -> None:
    """Delegated for CCIAA and INPS only, a business start also goes to INAIL: 403 naming inail."""
    with _client(hub, clock, MARCO) as marco, _client(hub, clock, ELENA) as elena:
        _grant(marco, START_SUBJECT, ELENA, ["cciaa", "inps"])
        body = _problem(elena.submit(_filing("business_start.xml", declarant=ELENA)), 403,
                        "recipients-not-authorized")
    assert [a["agency"] for a in body["agencies"]] == ["inail"]
    assert body["agencies"][0]["reasons"][0]["code"] == "no-valid-delegation"
    assert [e["location"] for e in body["errors"]] == ["agency:inail"]
    assert _nothing_stored(hub)


def test_a_stranger_is_refused_at_every_agency(hub: RunningHub, clock: FakeClock) -> None:
    """Neither legal representative nor delegate: every recipient refused."""
    with _client(hub, clock, ELENA) as elena:
        body = _problem(elena.submit(_filing("business_start.xml", declarant=ELENA)), 403,
                        "recipients-not-authorized")
    assert sorted(a["agency"] for a in body["agencies"]) == ["cciaa", "inail", "inps"]


def test_subdelegations_stay_within_their_parent_and_end_with_it(hub: RunningHub, clock: FakeClock) -> None:
    """Wider than the parent: refused. Within: Bruno files, Elena answers. Parent revoked: void."""
    with _client(hub, clock, ANNA) as anna, _client(hub, clock, ELENA) as elena, \
            _client(hub, clock, BRUNO) as bruno:
        parent = _grant(anna, DURC_SUBJECT, ELENA, ["inps"])
        wider = elena.subdelegate(parent["id"], collaborator=BRUNO, agencies=["inps", "inail"])
        problem = _problem(wider, 422, "subdelegation-wider-than-parent")
        assert "inail" in problem["detail"]
        longer = elena.subdelegate(parent["id"], collaborator=BRUNO,
                                   valid_to=(datetime.now(timezone.utc) + timedelta(days=90)).isoformat())
        _problem(longer, 422, "subdelegation-wider-than-parent")
        _problem(bruno.subdelegate(parent["id"], collaborator=ANNA), 404, "not-found")  # not Bruno's

        sub = elena.subdelegate(parent["id"], collaborator=BRUNO, agencies=["inps"])
        assert sub.status_code == 201, sub.text
        assert sub.json()["parent"] == parent["id"] and sub.json()["grantedBy"] == ELENA

        filed = bruno.submit(_filing("durc_request.xml", declarant=BRUNO))
        assert filed.status_code == 202, filed.text
        reference = filed.json()["reference"]
        assert elena.status(reference).status_code == 200  # the responsible delegate reads it

        assert anna.revoke_delegation(parent["id"]).json()["status"] == "revoked"
        statuses = {d["id"]: d["status"] for d in elena.delegations(DURC_SUBJECT).json()["delegations"]}
        assert statuses == {parent["id"]: "revoked", sub.json()["id"]: "void"}
        refused = _problem(bruno.submit(_filing("durc_request.xml", declarant=BRUNO)), 403,
                           "recipients-not-authorized")
        assert "void" in refused["agencies"][0]["reasons"][0]["detail"]
    with hub.hub.engine.connect() as conn:
        row = conn.execute(select(filings).where(filings.c.reference == reference)).one()
        actions = conn.execute(select(audit_log.c.action, audit_log.c.actor, audit_log.c.detail)
                               .where(audit_log.c.subject == reference)).all()
    assert (row.filed_by, row.responsible_tax_code) == (BRUNO, ELENA)
    accepted = next(a for a in actions if a.action == "filing_accepted")
    assert accepted.actor == BRUNO and accepted.detail["responsible"] == ELENA


def test_a_revoked_delegation_authorizes_nothing_and_only_its_parties_may_revoke(
    hub: RunningHub, clock: FakeClock
) -> None:
    """A stranger cannot even see it (404); after revocation the delegate is refused."""
    with _client(hub, clock, ANNA) as anna, _client(hub, clock, ELENA) as elena, \
            _client(hub, clock, BRUNO) as bruno:
        delegation = _grant(anna, DURC_SUBJECT, ELENA, ["inps"])
        _problem(bruno.revoke_delegation(delegation["id"]), 404, "not-found")
        assert anna.revoke_delegation(delegation["id"]).status_code == 200
        _problem(anna.revoke_delegation(delegation["id"]), 409, "already-revoked")
        _problem(elena.submit(_filing("durc_request.xml", declarant=ELENA)), 403, "recipients-not-authorized")
        assert bruno.delegations(DURC_SUBJECT).json()["delegations"] == []


def test_delegation_validity_follows_the_clock(hub: RunningHub, clock: FakeClock) -> None:
    """A delegation ending in a day no longer authorizes two days later."""
    with _client(hub, clock, ANNA) as anna, _client(hub, clock, ELENA) as elena:
        valid_to = datetime.fromtimestamp(clock() + 86_400, timezone.utc).isoformat()
        assert anna.grant_delegation(subject=DURC_SUBJECT, delegate=ELENA, agencies=["inps"],
                                     valid_to=valid_to).status_code == 201
        assert elena.submit(_filing("durc_request.xml", declarant=ELENA)).status_code == 202
        clock.advance(2 * 86_400)
        body = _problem(elena.submit(_filing("durc_request.xml", declarant=ELENA)), 403, "recipients-not-authorized")
        assert "expired" in body["agencies"][0]["reasons"][0]["detail"]


# -- tenant isolation -------------------------------------------------------------------------------


def test_a_filing_is_not_found_for_another_portal_or_another_user(hub: RunningHub, clock: FakeClock) -> None:
    """Another portal, even for the same user, and another user of the same portal: 404."""
    with _client(hub, clock, ANNA) as anna:
        reference = anna.submit(_filing("durc_request.xml")).json()["reference"]
        assert anna.status(reference).status_code == 200
    with _client(hub, clock, ANNA, portal="other") as other_portal:
        _problem(other_portal.status(reference), 404, "not-found")
    with _client(hub, clock, MARCO) as stranger:
        _problem(stranger.status(reference), 404, "not-found")


# -- the audit chain ----------------------------------------------------------------------------------


def test_editing_one_audit_line_is_found_by_audit_verify(hub: RunningHub, clock: FakeClock,
                                                        database_url: str) -> None:
    """Every operation leaves a chained line; an UPDATE by SQL breaks the chain at that line."""
    with _client(hub, clock, ANNA) as anna:
        reference = anna.submit(_filing("durc_request.xml")).json()["reference"]
        anna.status(reference)
        _grant(anna, DURC_SUBJECT, ELENA, ["inps"])
    engine = hub.hub.engine
    with engine.connect() as conn:
        lines = conn.execute(select(audit_log.c.id, audit_log.c.action).order_by(audit_log.c.id)).all()
    assert [a for _, a in lines] == ["filing_accepted", "filing_read", "delegation_granted"]
    assert verify_audit_chain(engine).ok

    command = [sys.executable, str(PROJECT_ROOT / "hub.py"), "audit", "verify"]
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DATABASE__")}, "DATABASE__URL": database_url}
    ok = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("OK: 3 audit lines"), ok.stderr

    edited = lines[1].id
    with engine.begin() as conn:
        conn.execute(update(audit_log).where(audit_log.c.id == edited).values(outcome="not_found"))
    result = verify_audit_chain(engine)
    assert (result.ok, result.broken_id) == (False, edited)
    broken = subprocess.run(command, env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
    assert broken.returncode == 1 and f"BROKEN at audit line {edited}" in broken.stderr


def test_deleting_an_audit_line_is_found_at_the_next_one(hub: RunningHub, clock: FakeClock) -> None:
    """A deleted line leaves the next line's prev_hash pointing at nothing."""
    with _client(hub, clock, ANNA) as anna:
        reference = anna.submit(_filing("durc_request.xml")).json()["reference"]
        anna.status(reference)
        anna.status(reference)
    engine = hub.hub.engine
    with engine.connect() as conn:
        ids = conn.execute(select(audit_log.c.id).order_by(audit_log.c.id)).scalars().all()
    # A transaction of its own, writing first: on SQLite one that read first could not take
    # the write lock while the hub's worker holds it (refused at once, not waited for).
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM audit_log WHERE id = :id"), {"id": ids[1]})
    result = verify_audit_chain(engine)
    assert (result.ok, result.broken_id) == (False, ids[2])


def test_delegations_are_stored_with_their_grantor_and_portal(hub: RunningHub, clock: FakeClock) -> None:
    """The delegation row keeps who granted it, through which portal, and its agencies."""
    with _client(hub, clock, ANNA) as anna:
        made = _grant(anna, DURC_SUBJECT, ELENA, ["inps"])
    with hub.hub.engine.connect() as conn:
        row = conn.execute(select(delegations).where(delegations.c.id == made["id"])).one()
    assert (row.granted_by, row.portal, row.agencies, row.parent_id) == (ANNA, "test", ["inps"], None)


def test_an_operator_can_list_lockouts_before_the_hub_ever_started(database_url: str) -> None:
    """`hub.py lockouts list` on a store the hub has not yet created: an empty list, exit 0."""
    listed = _hub_cli(database_url, "lockouts", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == "no caller is locked out"


def test_lockouts_list_as_json_and_one_line_when_the_store_is_away(database_url: str) -> None:
    """`--json` prints a JSON list; a store that cannot be reached is one line and exit 1."""
    listed = _hub_cli(database_url, "lockouts", "list", "--json")
    assert listed.returncode == 0 and listed.stdout.strip() == "[]", listed.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    away = _hub_cli(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test", "lockouts", "list")
    assert away.returncode == 1
    assert away.stdout.strip() == "error: the store is not reachable (OperationalError)"
    assert "Traceback" not in away.stderr
