"""Drafts over real HTTP against a live hub and the agency simulators: save (with warnings),
update under If-Match, read in JSON or XML, list, delete, check with each agency's message
preview, submit once (also under two concurrent submits), visibility and expiry.

The hub's identity clock is a `FakeClock` (drafts are timed on it); portals sign on it too.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import httpx
import orjson
import pytest
from lxml import etree
from sqlalchemy import select

from cli.client import PortalClient, demo_user
from config.settings import PROJECT_ROOT
from storage.audit import verify_audit_chain
from storage.draft_tables import drafts
from storage.tables import audit_log, filings
from tests.support import FakeClock, RunningHub, hub_settings, portal_signer, wait_for

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"

ANNA = "CMPNNA80E59D612B"  # legal representative of 06543210485 (durc_request.xml)
MARCO = "FTTMRC85C14H501X"  # legal representative of 09182730581 (business_start.xml)
ELENA = "DLGLNE88D50L219Q"  # a delegate (an accountant)
BRUNO = "CLLBRT85M10F205L"  # Elena's collaborator
START_SUBJECT = "09182730581"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def _hub(database_url: str, sims, clock: FakeClock, **drafts: object) -> RunningHub:  # type: ignore[no-untyped-def]
    endpoints = {agency: sims.soap_endpoint(agency) for agency in sims.urls}
    settings = hub_settings(database_url, endpoints)
    if drafts:
        settings = settings.model_copy(update={"drafts": settings.drafts.model_copy(update=drafts)})
    return RunningHub(settings, clock=clock)


@pytest.fixture
def sqlite_url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite:///{tmp_path / 'crocevia.db'}"


@pytest.fixture
def hub(sqlite_url: str, sims, clock: FakeClock) -> Iterator[RunningHub]:  # type: ignore[no-untyped-def]
    with _hub(sqlite_url, sims, clock) as running:
        yield running


def _client(hub: RunningHub, clock: FakeClock, tax_code: str, portal: str = "test") -> PortalClient:
    return PortalClient(hub.base_url, portal_signer(portal, clock), user=demo_user(tax_code, "SPID2"))


def _example(name: str, declarant: str | None = None) -> bytes:
    doc = (EXAMPLES / name).read_text()
    if declarant is not None:
        doc = re.sub(r"<declarant>.*?</declarant>",
                     f"<declarant><taxCode>{declarant}</taxCode><givenName>Dichiarante</givenName>"
                     f"<familyName>Delegato</familyName><role>delegate</role></declarant>", doc, flags=re.S)
    return doc.encode()


def _problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"urn:crocevia:problem:{slug}" and body["status"] == status and body["detail"]
    return body


def _audit_actions(hub: RunningHub) -> list[tuple[str, str]]:
    with hub.hub.engine.connect() as conn:
        return [(r.action, r.outcome) for r in conn.execute(select(audit_log).order_by(audit_log.c.id))]


# -- save, read, update, list, delete --------------------------------------------------------------


def test_an_incomplete_draft_is_kept_with_its_open_points_as_warnings(hub: RunningHub, clock: FakeClock) -> None:
    """A DURC request without its PEC and with a wrong check digit elsewhere is saved (201) and
    each open point comes back located, in the shape of a problem's errors."""
    incomplete = re.sub(rb"<pec>.*?</pec>", b"", _example("durc_request.xml"))
    with _client(hub, clock, ANNA) as anna:
        created = anna.create_draft(incomplete)
        assert created.status_code == 201, created.text
        body = created.json()
        assert body["state"] == "draft" and body["kind"] == "durc_request"
        assert created.headers["location"] == f"/v1/drafts/{body['draftId']}"
        assert created.headers["etag"] == '"1"'
        for stamp in ("createdAt", "updatedAt", "expiresAt"):
            assert RFC3339.match(body[stamp]), body[stamp]
        expires = datetime.fromisoformat(body["expiresAt"]) - datetime.fromisoformat(body["createdAt"])
        assert expires == timedelta(days=30)
        [warning] = body["warnings"]
        assert warning["code"] == "schema" and warning["location"] == "/f:filing/f:subject/f:atecoCodes"
        assert "f:pec" in warning["detail"]

        # A wrong check digit (schema-valid) is a content warning, not a refusal.
        digits = anna.create_draft(_example("durc_request.xml").replace(b"06543210485", b"06543210480"))
        assert digits.status_code == 201, digits.text
        codes = {w["code"] for w in digits.json()["warnings"]}
        assert "tax_code_check_digit" in codes

        # A JSON draft naming only a subject: kept, its missing parts listed, no XML line numbers.
        partial = orjson.dumps({"subject": {"taxCode": "06543210485"}})
        json_draft = anna.create_draft(partial, content_type="application/json")
        assert json_draft.status_code == 201, json_draft.text
        assert json_draft.json()["kind"] is None
        assert json_draft.json()["warnings"] and all("line" not in w for w in json_draft.json()["warnings"])


def test_hard_refusals_stay_hard_and_leave_only_the_audit_line(hub: RunningHub, clock: FakeClock) -> None:
    """Malformed XML, a DTD, malformed JSON, an oversize body: the filing's problems, no draft."""
    with _client(hub, clock, ANNA) as anna:
        _problem(anna.create_draft(b"<filing><subject></filing>"), 400, "malformed-xml")
        evil = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e "boom">]><filing>&e;</filing>'
        _problem(anna.create_draft(evil), 400, "forbidden-xml-construct")
        _problem(anna.create_draft(b'{"subject": ', content_type="application/json"), 400, "malformed-json")
        _problem(anna.create_draft(b"x" * (hub.settings.api.max_body_bytes + 1)), 413, "document-too-large")
        _problem(anna.create_draft(b"hello", content_type="text/plain"), 415, "unsupported-media-type")
    assert hub.count(drafts) == 0
    refused = [a for a in _audit_actions(hub) if a[0] == "draft_refused"]
    assert {o for _, o in refused} == {"malformed-xml", "forbidden-xml-construct", "malformed-json",
                                       "document-too-large", "unsupported-media-type"}


def test_update_read_list_and_delete(hub: RunningHub, clock: FakeClock) -> None:
    """PUT with the ETag read replaces (version 2), a stale If-Match is 412; GET answers JSON by
    default and the XML document on Accept: application/xml; the list is newest first with a
    cursor; DELETE answers 204 and the draft is gone."""
    complete = _example("durc_request.xml")
    incomplete = re.sub(rb"<pec>.*?</pec>", b"", complete)
    with _client(hub, clock, ANNA) as anna:
        draft_id = anna.create_draft(incomplete).json()["draftId"]
        updated = anna.update_draft(draft_id, complete, if_match='"1"')
        assert updated.status_code == 200, updated.text
        assert updated.json()["version"] == 2 and updated.json()["warnings"] == []
        assert updated.headers["etag"] == '"2"'
        stale = _problem(anna.update_draft(draft_id, incomplete, if_match='"1"'), 412, "draft-version-mismatch")
        assert stale["version"] == 2

        as_json = anna.draft(draft_id)
        assert as_json.status_code == 200 and as_json.headers["etag"] == '"2"'
        assert as_json.json()["filing"]["subject"]["pec"] == "campionesoci@pec.example.it"
        as_xml = anna.draft(draft_id, accept="application/xml")
        assert as_xml.headers["content-type"].startswith("application/xml")
        root = etree.fromstring(as_xml.content)
        assert root.findtext("{urn:crocevia:filing:v1}subject/{urn:crocevia:filing:v1}taxCode") == "06543210485"

        others = [anna.create_draft(incomplete).json()["draftId"] for _ in range(3)]
        first = anna.drafts(limit=2)
        assert first.status_code == 200, first.text
        page = first.json()
        assert [d["draftId"] for d in page["drafts"]] == [others[2], others[1]]
        rest = anna.drafts(limit=2, cursor=page["nextCursor"]).json()
        assert [d["draftId"] for d in rest["drafts"]] == [others[0], draft_id] and rest["nextCursor"] is None
        for wrong in ("not-a-cursor", "ZDo5OTk5OTk5OTk5OTk5OTk5OTk5OTk5", "ZDotNQ"):  # d:99…9, d:-5
            _problem(anna.drafts(cursor=wrong), 400, "invalid-cursor")

        assert anna.delete_draft(draft_id).status_code == 204
        _problem(anna.draft(draft_id), 404, "not-found")
        _problem(anna.delete_draft(draft_id), 404, "not-found")
    actions = {a for a, _ in _audit_actions(hub)}
    assert {"draft_created", "draft_updated", "draft_read", "drafts_listed", "draft_deleted"} <= actions


def test_odd_but_well_formed_drafts_are_kept_and_read_back(hub: RunningHub, clock: FakeClock) -> None:
    """Well-formed documents far from a filing are drafts with warnings, never a 5xx: another
    root element, a legal representative's code too long for one, a JSON number of 60 digits
    (read back with every digit), a JSON array; a JSON draft without an XML form answers 406."""
    too_long = _example("durc_request.xml").replace(b"<taxCode>CMPNNA80E59D612B</taxCode>",
                                                    b"<taxCode>" + b"X" * 300 + b"</taxCode>", 1)
    big = b'{"subject": {"taxCode": 123456789012345678901234567890123456789012345678901234567890}}'
    with _client(hub, clock, ANNA) as anna:
        for body, ctype in ((b"<other/>", "application/xml"), (too_long, "application/xml"),
                            (big, "application/json"), (b"[1, 2]", "application/json")):
            created = anna.create_draft(body, content_type=ctype)
            assert created.status_code == 201, created.text
            assert created.json()["warnings"], body[:40]
            read = anna.draft(created.json()["draftId"])
            assert read.status_code == 200, read.text
        big_id = anna.create_draft(big, content_type="application/json").json()["draftId"]
        assert b'"taxCode":123456789012345678901234567890123456789012345678901234567890' in \
            anna.draft(big_id).content.replace(b" ", b"")
        _problem(anna.draft(big_id, accept="application/xml"), 406, "draft-not-convertible")


def test_another_users_draft_is_not_found_but_the_legal_representative_reads_it(
        hub: RunningHub, clock: FakeClock) -> None:
    """Elena's draft for Anna's company: Marco (a stranger) gets 404 everywhere, another portal
    too; Anna, the legal representative it names, may read it but not change it."""
    with _client(hub, clock, ANNA) as anna, _client(hub, clock, ELENA) as elena, \
            _client(hub, clock, MARCO) as marco, _client(hub, clock, ELENA, portal="other") as elsewhere:
        valid_to = datetime.fromtimestamp(clock() + 30 * 86_400, timezone.utc).isoformat()
        assert anna.grant_delegation(subject="06543210485", delegate=ELENA, agencies=["inps"],
                                     valid_to=valid_to).status_code == 201
        draft_id = elena.create_draft(_example("durc_request.xml", declarant=ELENA)).json()["draftId"]
        for response in (marco.draft(draft_id), marco.check_draft(draft_id), marco.submit_draft(draft_id),
                         marco.delete_draft(draft_id), marco.update_draft(draft_id, b"<x/>"),
                         elsewhere.draft(draft_id)):
            _problem(response, 404, "not-found")
        assert [d["draftId"] for d in marco.drafts().json()["drafts"]] == []
        assert anna.draft(draft_id).status_code == 200
        assert [d["draftId"] for d in anna.drafts().json()["drafts"]] == [draft_id]
        _problem(anna.delete_draft(draft_id), 403, "not-draft-owner")
        _problem(anna.submit_draft(draft_id), 403, "not-draft-owner")
        assert elena.draft(draft_id).status_code == 200


def test_a_collaborators_draft_is_read_along_the_delegation_chain(hub: RunningHub, clock: FakeClock) -> None:
    """Bruno files under Elena's sub-delegation of Anna's delegation: Elena (the responsible
    delegate) and Anna (the grantor) read and check his draft; Marco does not see it."""
    with _client(hub, clock, ANNA) as anna, _client(hub, clock, ELENA) as elena, \
            _client(hub, clock, BRUNO) as bruno, _client(hub, clock, MARCO) as marco:
        valid_to = datetime.fromtimestamp(clock() + 30 * 86_400, timezone.utc).isoformat()
        parent = anna.grant_delegation(subject="06543210485", delegate=ELENA, agencies=["inps"], valid_to=valid_to)
        assert elena.subdelegate(parent.json()["id"], collaborator=BRUNO).status_code == 201
        draft_id = bruno.create_draft(_example("durc_request.xml", declarant=BRUNO)).json()["draftId"]
        for reader in (anna, elena, bruno):
            assert reader.draft(draft_id).status_code == 200
            assert [d["draftId"] for d in reader.drafts().json()["drafts"]] == [draft_id]
        assert bruno.check_draft(draft_id).json()["ready"] is True
        _problem(marco.draft(draft_id), 404, "not-found")


# -- check ----------------------------------------------------------------------------------------


def test_check_previews_each_agency_message_and_shows_unauthorized_recipients(
        hub: RunningHub, clock: FakeClock) -> None:
    """Elena holds Marco's delegation for INPS only: checking her business start shows INPS
    authorized and CCIAA/INAIL not, each with its message as it would be sent, valid against
    the agency's schema and carrying the mapped values; nothing is stored but audit lines."""
    with _client(hub, clock, MARCO) as marco, _client(hub, clock, ELENA) as elena:
        valid_to = datetime.fromtimestamp(clock() + 30 * 86_400, timezone.utc).isoformat()
        assert marco.grant_delegation(subject=START_SUBJECT, delegate=ELENA, agencies=["inps"],
                                      valid_to=valid_to).status_code == 201
        draft_id = elena.create_draft(_example("business_start.xml", declarant=ELENA)).json()["draftId"]
        checked = elena.check_draft(draft_id)
        assert checked.status_code == 200, checked.text
        result = checked.json()
    assert result["ready"] is False and result["errors"] == []
    by_agency = {r["agency"]: r for r in result["recipients"]}
    assert set(by_agency) == {"cciaa", "inps", "inail"}
    assert by_agency["inps"]["authorized"] is True and "reason" not in by_agency["inps"]
    for agency in ("cciaa", "inail"):
        assert by_agency[agency]["authorized"] is False
        assert "delegation" in by_agency[agency]["reason"]
    for agency, recipient in by_agency.items():
        assert recipient["messageValid"] is True and recipient["errors"] == [], recipient
        assert recipient["previewMediaType"] == "text/xml"
        # The agency's own message: its namespace, its operation's request, the mapped subject.
        assert f"urn:crocevia:agency:{agency}:v1" in recipient["preview"]
        assert f"{recipient['operation']}Request" in recipient["preview"]
        assert START_SUBJECT in recipient["preview"] and "CRV-2000-000000" in recipient["preview"]
    cciaa = by_agency["cciaa"]
    assert cciaa["operation"] == "IscrizioneImpresa"
    envelope = etree.fromstring(cciaa["preview"].encode())
    assert etree.QName(envelope).localname == "Envelope"
    # The mapped values: name, office, legal representative, as the mapping puts them.
    for value in ("Alfa Esempio S.r.l.", "H501", "00184", MARCO):
        assert value in cciaa["preview"], value
    assert hub.count(filings) == 0
    assert ("draft_checked", "not-ready") in _audit_actions(hub)


def test_check_reports_invalid_fields_and_agency_message_problems(hub: RunningHub, clock: FakeClock) -> None:
    """An incomplete draft checked: not ready, the filing's violations listed; a complete one
    by its legal representative: ready, every recipient authorized and valid."""
    with _client(hub, clock, ANNA) as anna:
        draft_id = anna.create_draft(re.sub(rb"<pec>.*?</pec>", b"", _example("durc_request.xml"))).json()["draftId"]
        result = anna.check_draft(draft_id).json()
        assert result["ready"] is False and result["errors"][0]["location"] == "/f:filing/f:subject/f:atecoCodes"
        ready_id = anna.create_draft(_example("durc_request.xml")).json()["draftId"]
        ready = anna.check_draft(ready_id).json()
    assert ready["ready"] is True and ready["errors"] == []
    [inps] = ready["recipients"]
    assert inps["agency"] == "inps" and inps["authorized"] and inps["messageValid"]
    assert "Campione e Soci S.n.c." in inps["preview"] and "appalto_pubblico" in inps["preview"]


def test_check_shows_each_agency_message_that_would_fail_its_schema(hub: RunningHub, clock: FakeClock) -> None:
    """A business start without activityStartDate passes the filing schema but not the three
    agency schemas: check names, per recipient, the agency field, the filing field and why,
    with the mapped message still shown; submit is refused 422 recipient-message-invalid."""
    doc = _example("business_start.xml")
    without = re.sub(rb"\s*<activityStartDate>[^<]*</activityStartDate>", b"", doc)
    with _client(hub, clock, MARCO) as marco:
        draft_id = marco.create_draft(without).json()["draftId"]
        result = marco.check_draft(draft_id).json()
        body = _problem(marco.submit_draft(draft_id), 422, "recipient-message-invalid")
    assert result["ready"] is False and result["errors"] == []
    for recipient in result["recipients"]:
        assert recipient["authorized"] is True and recipient["messageValid"] is False
        [error] = recipient["errors"]
        assert error["agency"] == recipient["agency"] and error["field"] == "dataInizioAttivita"
        assert error["filingField"] == "f:subject/f:activityStartDate"
        assert START_SUBJECT in recipient["preview"]
    assert {e["agency"] for e in body["errors"]} == {"cciaa", "inps", "inail"}
    assert hub.count(filings) == 0


# -- submit ---------------------------------------------------------------------------------------


def test_submit_makes_one_filing_and_a_second_submit_answers_the_same(hub: RunningHub, clock: FakeClock) -> None:
    """202 with a reference; the draft shows `submitted` and the reference; a repeat answers the
    same body; the filing is delivered like one posted to /v1/filings."""
    with _client(hub, clock, ANNA) as anna:
        draft_id = anna.create_draft(_example("durc_request.xml")).json()["draftId"]
        first = anna.submit_draft(draft_id)
        assert first.status_code == 202, first.text
        reference = first.json()["reference"]
        assert re.fullmatch(r"CRV-\d{4}-\d{6}", reference)
        again = anna.submit_draft(draft_id, idempotency_key="retry-1")
        assert again.status_code == 202 and again.json() == first.json()
        assert again.headers.get("idempotent-replayed") == "true"
        shown = anna.draft(draft_id).json()
        assert shown["state"] == "submitted" and shown["reference"] == reference
        _problem(anna.update_draft(draft_id, _example("durc_request.xml")), 409, "draft-submitted")
        views = anna.wait_settled([reference], timeout=30)
    assert views[reference]["state"] == "protocolled"
    assert hub.count(filings) == 1


def test_submit_refuses_as_the_filing_intake_does(hub: RunningHub, clock: FakeClock) -> None:
    """An incomplete draft submitted: 422 schema-violation with every error; nothing filed."""
    with _client(hub, clock, ANNA) as anna:
        draft_id = anna.create_draft(re.sub(rb"<pec>.*?</pec>", b"", _example("durc_request.xml"))).json()["draftId"]
        body = _problem(anna.submit_draft(draft_id), 422, "schema-violation")
        assert body["errors"][0]["location"] == "/f:filing/f:subject/f:atecoCodes"
        assert anna.draft(draft_id).json()["state"] == "draft"
    assert hub.count(filings) == 0
    assert ("draft_submit_refused", "schema-violation") in _audit_actions(hub)


def test_an_unauthorized_submit_answers_the_intakes_problem_in_the_same_shape(hub: RunningHub,
                                                                              clock: FakeClock) -> None:
    """Elena holds Marco's delegation for INPS only: submitting her business start as a draft is
    refused exactly as `POST /v1/filings` refuses it (403 recipients-not-authorized), with
    `agencies` naming each refused agency and its reasons, as the document describes; nothing filed."""
    with _client(hub, clock, MARCO) as marco, _client(hub, clock, ELENA) as elena:
        valid_to = datetime.fromtimestamp(clock() + 30 * 86_400, timezone.utc).isoformat()
        assert marco.grant_delegation(subject=START_SUBJECT, delegate=ELENA, agencies=["inps"],
                                      valid_to=valid_to).status_code == 201
        document = _example("business_start.xml", declarant=ELENA)
        draft_id = elena.create_draft(document).json()["draftId"]
        from_draft = _problem(elena.submit_draft(draft_id), 403, "recipients-not-authorized")
        direct = _problem(elena.submit(document), 403, "recipients-not-authorized")
    assert from_draft["agencies"] == direct["agencies"]
    assert sorted(a["agency"] for a in from_draft["agencies"]) == ["cciaa", "inail"]
    for refused in from_draft["agencies"]:
        assert refused["reasons"] and all(r["code"] and r["detail"] for r in refused["reasons"]), refused
    assert hub.count(filings) == 0


def test_two_concurrent_submits_file_once(database_url: str, sims, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    """Two submits of one draft at the same moment (SQLite and PostgreSQL): one filing, both
    answers name it."""
    with _hub(database_url, sims, clock) as hub, _client(hub, clock, ANNA) as anna:
        draft_id = anna.create_draft(_example("durc_request.xml")).json()["draftId"]
        start = threading.Barrier(2)
        answers: list[httpx.Response] = []

        def submit() -> None:
            with _client(hub, clock, ANNA) as own:
                start.wait(10)
                answers.append(own.submit_draft(draft_id))

        threads = [threading.Thread(target=submit) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert [a.status_code for a in answers] == [202, 202], [a.text for a in answers]
        assert answers[0].json()["reference"] == answers[1].json()["reference"]
        assert answers[0].json() == answers[1].json()
        assert hub.count(filings) == 1
        assert verify_audit_chain(hub.hub.engine).ok


# -- expiry ---------------------------------------------------------------------------------------


def test_expired_drafts_answer_gone_and_are_purged(sqlite_url: str, sims, clock: FakeClock) -> None:  # type: ignore[no-untyped-def]
    """With ttl_days = 1: a day later the draft answers 410 and is deleted; another expired
    draft is purged by the next create; the per-user cap counts live drafts only (409)."""
    with _hub(sqlite_url, sims, clock, ttl_days=1, max_per_user=2) as hub, _client(hub, clock, ANNA) as anna:
        incomplete = re.sub(rb"<pec>.*?</pec>", b"", _example("durc_request.xml"))
        kept = anna.create_draft(incomplete).json()["draftId"]
        anna.create_draft(incomplete)
        _problem(anna.create_draft(incomplete), 409, "too-many-drafts")
        clock.advance(86_400 + 1)
        _problem(anna.draft(kept), 410, "draft-expired")
        _problem(anna.draft(kept), 404, "not-found")
        assert anna.create_draft(incomplete).status_code == 201  # the other expired one is purged
        assert hub.count(drafts) == 1
        assert ("drafts_purged", "ok") in _audit_actions(hub)


# -- the command line -----------------------------------------------------------------------------


def test_the_draft_commands_print_tables_json_and_one_line_errors(hub: RunningHub, clock: FakeClock,
                                                                  tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`hub.py drafts` (cli/drafts.py) against the live hub: create shows the warnings table,
    check the recipients, submit the reference; a refusal is one line on stderr, with the portal
    side's exit code (404: 1, a stale If-Match: 70)."""
    from cli.drafts import DraftCommands

    out: list[str] = []
    err: list[str] = []
    draft_file = tmp_path / "durc.xml"
    draft_file.write_bytes(re.sub(rb"<pec>.*?</pec>", b"", _example("durc_request.xml")))
    complete = tmp_path / "durc_complete.xml"
    complete.write_bytes(_example("durc_request.xml"))
    with _client(hub, clock, ANNA) as anna:
        commands = DraftCommands(anna, out.append, err.append)
        assert commands.create(draft_file) == 0
        text = "\n".join(out)
        assert "durc_request" in text and "1 warning(s)" in text and "/f:filing/f:subject/f:atecoCodes" in text
        draft_id = re.search(r"draft\s+([0-9a-f]{32})", text).group(1)

        out.clear()
        assert commands.check(draft_id, previews=True) == 0
        assert "ready: no" in out[0] and any("inps" in line and "RichiestaDurc" in line for line in out)

        out.clear()
        assert commands.update(draft_id, complete, if_match='"1"') == 0
        assert commands.update(draft_id, complete, if_match='"1"') == 70
        assert len(err) == 1 and err[0].startswith("error: 412 ")

        out.clear()
        assert DraftCommands(anna, out.append, err.append, as_json=True).list() == 0
        assert orjson.loads("\n".join(out))["drafts"][0]["draftId"] == draft_id

        out.clear()
        assert commands.submit(draft_id) == 0
        assert re.search(r"CRV-\d{4}-\d{6}", "\n".join(out)) and "inps RichiestaDurc" in "\n".join(out)

        err.clear()
        assert commands.show("0" * 32) == 1
        assert len(err) == 1 and err[0].startswith("error: 404 ") and err[0].endswith(f"no draft {'0' * 32}")


def test_hub_py_drafts_runs_the_commands_with_the_portals_credentials(sqlite_url: str, sims, clock: FakeClock,
                                                                      tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`hub.py drafts` end to end, signed with the demo portal's key as `submit` signs: exit 0
    with tables, --json, and exit 1 with one line on stderr (no traceback) for a refusal."""
    from click.testing import CliRunner

    from config.settings import load_settings
    from hub import cli

    settings = hub_settings(sqlite_url, {agency: sims.soap_endpoint(agency) for agency in sims.urls})
    settings = settings.model_copy(update={"portals": {**settings.portals, "demo": load_settings().portals["demo"]}})
    draft_file = tmp_path / "durc.xml"
    draft_file.write_bytes(_example("durc_request.xml"))
    runner = CliRunner()
    with RunningHub(settings, clock=clock) as hub:
        base = ["drafts", "--url", hub.base_url, "--user", ANNA]
        # (The hub runs in this process: its log lines share the captured stdout.)
        created = runner.invoke(cli, [*base, "--json", "create", str(draft_file)])
        assert created.exit_code == 0, created.output + created.stderr
        draft_id = re.search(r'"draftId": "([0-9a-f]{32})"', created.stdout).group(1)
        assert '"warnings": []' in created.stdout

        checked = runner.invoke(cli, [*base, "check", draft_id])
        assert checked.exit_code == 0, checked.stderr
        assert "ready: yes" in checked.stdout and "RichiestaDurc" in checked.stdout

        submitted = runner.invoke(cli, [*base, "submit", draft_id])
        assert submitted.exit_code == 0, submitted.stderr
        assert re.search(r"CRV-\d{4}-\d{6}", submitted.stdout)

        listed = runner.invoke(cli, [*base, "list"])
        assert listed.exit_code == 0 and draft_id in listed.stdout and "submitted" in listed.stdout

        refused = runner.invoke(cli, [*base, "delete", "0" * 32])
        assert refused.exit_code == 1
        assert refused.stderr.startswith("error: 404 ") and refused.stderr.count("\n") == 1
        assert refused.stderr.strip().endswith(f"no draft {'0' * 32}")
        assert "Traceback" not in refused.output + refused.stderr
