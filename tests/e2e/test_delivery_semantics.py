"""Delivery semantics over real HTTP: retries, Retry-After, the circuit, lost replies, late
outcomes (PUSH and PULL), resend, correction, ordering with hand-off, sender notifications.

Every scenario runs on SQLite and PostgreSQL and ends on the filing's state, every
recipient's state and the simulators' ledgers (exactly one effect per delivery). Where a wait
would be long (Retry-After, cool-down, maintenance), the hub's delivery clock is moved by the
test; waits are bounded joins on a condition.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr
from sqlalchemy import select

from adapters.webhook import EVENT_ID_HEADER, SIGNATURE_HEADER, verify_signature
from cli.client import PortalClient
from config.settings import PROJECT_ROOT, MaintenanceWindowSettings, Settings
from storage.tables import audit_log
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_settings, wait_for

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"
DURC = (EXAMPLES / "durc_request.xml").read_bytes()
BUSINESS_START = (EXAMPLES / "business_start.xml").read_bytes()
#: A RUNTS registration that goes to RUNTS alone (not a social enterprise: no Registro Imprese).
RUNTS = (EXAMPLES / "runts_registration.xml").read_bytes().replace(
    b"<socialEnterprise>true</socialEnterprise>", b"<socialEnterprise>false</socialEnterprise>").replace(
    b"<section>impresa_sociale</section>", b"<section>aps</section>")


class ShiftClock:
    """Real time plus an offset the test moves: the hub's delivery schedule runs on it."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


HubFactory = Callable[..., AbstractContextManager[RunningHub]]


@pytest.fixture
def make_hub(database_url: str, sims) -> HubFactory:  # type: ignore[no-untyped-def]
    """`with make_hub(agencies={"inps": {...}}, clock=..., **settings) as hub:` on this database."""

    @contextmanager
    def make(*, agencies: dict[str, dict[str, Any]] | None = None, clock: Callable[[], float] = time.time,
             **updates: Any) -> Iterator[RunningHub]:
        settings: Settings = hub_settings(database_url, {a: sims.soap_endpoint(a) for a in sims.urls})
        confs = dict(settings.agencies)
        for name, fields in (agencies or {}).items():
            conf = confs[name]
            nested = {k: getattr(conf, k).model_copy(update=v) for k, v in fields.items() if isinstance(v, dict)}
            confs[name] = conf.model_copy(update={**{k: v for k, v in fields.items() if not isinstance(v, dict)},
                                                  **nested})
        settings = settings.model_copy(update={"agencies": confs, **updates})
        with RunningHub(settings, delivery_clock=clock) as running:
            yield running

    return make


@pytest.fixture
def client_for() -> Iterator[Callable[[RunningHub], PortalClient]]:
    clients: list[PortalClient] = []

    def make(hub: RunningHub) -> PortalClient:
        clients.append(PortalClient(hub.base_url, TEST_PORTAL_KEY))
        return clients[-1]

    yield make
    for c in clients:
        c.close()


# -- helpers ---------------------------------------------------------------------------------------


def _submit(client: PortalClient, document: bytes) -> str:
    response = client.submit(document)
    assert response.status_code == 202, response.text
    return response.json()["reference"]


def _instant(text: str) -> datetime:
    """An API timestamp (RFC 3339, `Z` for UTC) as an aware datetime."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _view(client: PortalClient, reference: str) -> dict[str, Any]:
    response = client.status(reference)
    assert response.status_code == 200, response.text
    return response.json()


def _by_agency(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["agency"]: r for r in view["recipients"]}


def _wait_view(client: PortalClient, reference: str, condition: Callable[[dict[str, Any]], bool], *,
               timeout: float = 30.0, what: str = "") -> dict[str, Any]:
    box: dict[str, Any] = {}

    def check() -> bool:
        box["view"] = _view(client, reference)
        return condition(box["view"])

    try:
        wait_for(check, timeout=timeout, interval=0.05, what=what)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last view: {json.dumps(box.get('view'), indent=1)}") from None
    return box["view"]


def _recipient_is(agency: str, state: str) -> Callable[[dict[str, Any]], bool]:
    return lambda view: _by_agency(view).get(agency, {}).get("state") == state


def _settled(client: PortalClient, reference: str, state: str, timeout: float = 30.0) -> dict[str, Any]:
    return _wait_view(client, reference, lambda v: v["state"] == state, timeout=timeout,
                      what=f"{reference} {state}")


def _effects(sims, agency: str, reference: str) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    return [e for e in sims.ledger(agency)["effects"] if e["filingReference"] == reference]


def _one_effect(sims, recipient: dict[str, Any], reference: str) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """Exactly one effect for this delivery, and it is the protocol the hub recorded."""
    effects = [e for e in _effects(sims, recipient["agency"], reference) if e["messageId"] == recipient["messageId"]]
    assert len(effects) == 1, (recipient["agency"], effects)
    assert effects[0]["protocollo"] == recipient["protocolNumber"]
    return effects[0]


def _event_types(client: PortalClient, reference: str) -> list[tuple[str, Any]]:
    events = client.events(reference).json()["events"]
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    return [(e["type"], (e["data"].get("recipient") or {}).get("state") or e["data"].get("state"))
            for e in events]


# -- retries, undeliverable, resend ----------------------------------------------------------------


def test_transient_failures_then_success(make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """Two 503s, then the agency answers: protocolled after three tries, one effect, events in order."""
    sims.set_faults("inps", [{"kind": "http_status", "status": 503, "times": 2}])
    with make_hub() as hub:
        client = client_for(hub)
        ref = _submit(client, DURC)
        view = _settled(client, ref, "protocolled")
        inps = _by_agency(view)["inps"]
        assert inps["state"] == "protocolled" and inps["attempts"] == 3
        assert _one_effect(sims, inps, ref)["duplicates"] == 0
        # The short retries absorbed both failures in one pass: no `retrying` in between.
        assert _event_types(client, ref) == [
            ("filing.accepted", "in_progress"),
            ("recipient.state_changed", "protocolled"),
            ("filing.state_changed", "protocolled"),
        ]


def test_a_long_outage_ends_undeliverable_then_a_resend_succeeds(make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """INAIL down: parked undeliverable; the resend goes with the same message id, once, and the
    other recipients are not touched."""
    sims.set_faults("inail", [{"kind": "http_status", "status": 503}])
    with make_hub() as hub:
        client = client_for(hub)
        ref = _submit(client, BUSINESS_START)
        view = _settled(client, ref, "undeliverable")
        before = _by_agency(view)
        assert before["inail"]["state"] == "undeliverable" and "503" in before["inail"]["lastError"]
        assert before["cciaa"]["state"] == before["inps"]["state"] == "protocolled"
        assert not _effects(sims, "inail", ref)
        calls = {a: sims.ledger(a)["calls"] for a in ("cciaa", "inps")}

        refused = client.resend(ref, "cciaa")
        assert refused.status_code == 409 and refused.json()["state"] == "protocolled"
        assert client.resend(ref, "runts").status_code == 404

        sims.set_faults("inail", [])
        response = client.resend(ref, "inail")
        assert response.status_code == 202, response.text
        assert response.json()["recipient"]["messageId"] == before["inail"]["messageId"]
        view = _settled(client, ref, "protocolled")
        after = _by_agency(view)
        assert after["inail"]["messageId"] == before["inail"]["messageId"]
        assert _one_effect(sims, after["inail"], ref)["duplicates"] == 0
        for agency in ("cciaa", "inps"):
            assert after[agency] == {**before[agency], "nextAttemptAt": after[agency]["nextAttemptAt"]}
            assert _one_effect(sims, after[agency], ref)["duplicates"] == 0
            assert sims.ledger(agency)["calls"] == calls[agency]
        with hub.hub.engine.connect() as conn:
            audited = conn.execute(select(audit_log.c.actor, audit_log.c.detail)
                                   .where(audit_log.c.action == "recipient_resent")).all()
        assert len(audited) == 1 and audited[0].detail["agency"] == "inail"


def test_retry_after_is_respected(make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """A 429 with Retry-After 30: no call to the agency before 30 s have passed on the hub's clock."""
    clock = ShiftClock()
    sims.set_faults("inps", [{"kind": "http_status", "status": 429, "retry_after": 30, "times": 1}])
    with make_hub(clock=clock) as hub:
        client = client_for(hub)
        sent_at = clock()
        ref = _submit(client, DURC)
        view = _wait_view(client, ref, _recipient_is("inps", "retrying"), what="inps retrying")
        next_at = datetime.fromisoformat(_by_agency(view)["inps"]["nextAttemptAt"]).timestamp()
        assert next_at >= sent_at + 30
        assert sims.ledger("inps")["calls"] == 1  # the short retries stopped too

        clock.advance(20)
        # The worker runs claims with the clock past +20 s (it delivers another agency's
        # filing) and leaves INPS alone. The clock also moves with real time: the margin
        # keeps a slow machine from reaching +30 s meanwhile.
        other = _submit(client, RUNTS)
        _settled(client, other, "protocolled")
        assert clock() < sent_at + 30 and sims.ledger("inps")["calls"] == 1

        clock.advance(11)
        view = _settled(client, ref, "protocolled")
        assert sims.ledger("inps")["calls"] == 2
        _one_effect(sims, _by_agency(view)["inps"], ref)


def test_the_circuit_opens_then_a_single_probe_closes_it(make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """Three failures open INPS's circuit: no calls, other agencies unaffected; after the cool-down
    one probe (a failing one reopens it), then a successful probe closes it."""
    clock = ShiftClock()
    sims.set_faults("inps", [{"kind": "http_status", "status": 503}])
    with make_hub(clock=clock, agencies={"inps": {"circuit": {"failure_threshold": 3, "cool_down": 60.0},
                                                  "schedule": {"max_rounds": 20}}}) as hub:
        client = client_for(hub)

        def inps_circuit() -> dict[str, Any]:
            return {a["agency"]: a for a in client.agencies().json()["agencies"]}["inps"]

        def parked_until_the_circuit_reopens(*refs: str) -> bool:
            """Every INPS delivery waits in the queue for the cool-down's end: no pass is under
            way, so a jump of the clock (past any job's lease) retakes none."""
            until = inps_circuit()["openUntil"]
            waits = [_by_agency(_view(client, ref))["inps"]["nextAttemptAt"] for ref in refs]
            return until is not None and all(w is not None and _instant(w) >= _instant(until) for w in waits)

        first = _submit(client, DURC)
        wait_for(lambda: inps_circuit()["circuit"] == "open", what="inps circuit open")
        assert sims.ledger("inps")["calls"] == 3
        second = _submit(client, DURC)
        _wait_view(client, second, lambda v: _by_agency(v)["inps"]["nextAttemptAt"] is not None,
                   what="second filing deferred")
        other = _submit(client, RUNTS)  # RUNTS's circuit is its own
        _settled(client, other, "protocolled")
        assert sims.ledger("inps")["calls"] == 3
        assert _by_agency(_view(client, second))["inps"]["attempts"] == 0

        wait_for(lambda: parked_until_the_circuit_reopens(first, second), what="both deferred to the cool-down's end")
        opened = inps_circuit()["openUntil"]
        clock.advance(61)  # one probe, which fails: open again, and nothing else was called
        wait_for(lambda: inps_circuit()["openUntil"] not in (None, opened), what="circuit reopened")
        assert inps_circuit()["circuit"] == "open"
        assert sims.ledger("inps")["calls"] == 4

        wait_for(lambda: parked_until_the_circuit_reopens(first, second), what="both deferred to the new cool-down's end")
        sims.set_faults("inps", [])
        clock.advance(61)
        for ref in (first, second):
            view = _settled(client, ref, "protocolled")
            _one_effect(sims, _by_agency(view)["inps"], ref)
        assert inps_circuit()["circuit"] == "closed"
        assert sims.ledger("inps")["calls"] == 6  # 3 failures, 1 failed probe, 2 deliveries


def test_a_maintenance_window_holds_calls_until_its_end(make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """Inside INPS's Sunday 02:00-04:00 window nothing is sent to INPS; at 04:00 it goes."""
    rome = ZoneInfo("Europe/Rome")
    today = datetime.now(rome).date()
    last_sunday = today - timedelta(days=(today.weekday() + 1) % 7 + 7)
    inside = datetime(last_sunday.year, last_sunday.month, last_sunday.day, 2, 30, tzinfo=rome)
    clock = ShiftClock(inside.timestamp() - time.time())
    window = MaintenanceWindowSettings(days="sun", start="02:00", end="04:00", tz="Europe/Rome")
    with make_hub(clock=clock, agencies={"inps": {"maintenance": [window]}}) as hub:
        client = client_for(hub)
        ref = _submit(client, DURC)
        view = _wait_view(client, ref, lambda v: _by_agency(v)["inps"]["nextAttemptAt"] is not None,
                          what="deferred to the window's end")
        resume = datetime.fromisoformat(_by_agency(view)["inps"]["nextAttemptAt"]).astimezone(rome)
        assert (resume.hour, resume.minute, resume.weekday()) == (4, 0, 6)
        other = _submit(client, RUNTS)
        _settled(client, other, "protocolled")
        assert sims.ledger("inps")["calls"] == 0
        clock.advance(90 * 60 + 1)
        view = _settled(client, ref, "protocolled")
        _one_effect(sims, _by_agency(view)["inps"], ref)
        assert sims.ledger("inps")["calls"] == 1


# -- outcome unknown ----------------------------------------------------------------------------------


def test_a_read_timeout_after_the_agency_recorded_the_message_makes_no_duplicate(make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """The reply is lost after INPS protocolled: the retry carries the same message id and
    INPS answers with its first receipt."""
    sims.set_faults("inps", [{"kind": "timeout", "delay_ms": 4000, "after_effect": True, "times": 1}])
    with make_hub() as hub:  # read timeout 2 s
        client = client_for(hub)
        ref = _submit(client, DURC)
        view = _settled(client, ref, "protocolled")
        inps = _by_agency(view)["inps"]
        effect = _one_effect(sims, inps, ref)
        assert effect["duplicates"] == 1 and sims.ledger("inps")["calls"] == 2
        assert inps["attempts"] == 2


# -- late outcomes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("agency", "document"), [("inps", DURC), ("runts", RUNTS)], ids=["soap", "rest"])
def test_push_late_outcome_then_decision(make_hub: HubFactory, client_for, sims, agency: str, document: bytes) -> None:  # type: ignore[no-untyped-def]
    """202 now; the agency calls back with the protocol number, later with its decision."""
    sims.set_faults(agency, [{"kind": "async_push", "delay_ms": 400, "decision": "accepted",
                              "decision_delay_ms": 300}])
    with make_hub() as hub:
        client = client_for(hub)
        ref = _submit(client, document)
        view = _wait_view(client, ref, lambda v: _by_agency(v)[agency]["outcome"] == "accepted",
                          what="decision recorded")
        recipient = _by_agency(view)[agency]
        assert view["state"] == "protocolled" and recipient["state"] == "protocolled"
        effect = _one_effect(sims, recipient, ref)
        assert effect["mode"] == "push" and effect["esito"] == "ACCOLTA"
        assert [c["status"] for c in effect["callbacks"]] == [200, 200]
        assert recipient["attempts"] == 1 and sims.ledger(agency)["calls"] == 1
        # The history, from the feed: acknowledged, then protocolled, then the decision.
        assert [s for t, s in _event_types(client, ref) if t == "recipient.state_changed"] == [
            "acknowledged", "protocolled", "protocolled"]


@pytest.mark.parametrize(("agency", "document"), [("inps", DURC), ("runts", RUNTS)], ids=["soap", "rest"])
def test_pull_late_outcome(make_hub: HubFactory, client_for, sims, agency: str, document: bytes) -> None:  # type: ignore[no-untyped-def]
    """202 with Location; the hub polls the status resource until 303, then reads the result."""
    sims.set_faults(agency, [{"kind": "async_pull", "delay_ms": 500}])
    with make_hub() as hub:
        client = client_for(hub)
        ref = _submit(client, document)
        view = _settled(client, ref, "protocolled")
        recipient = _by_agency(view)[agency]
        effect = _one_effect(sims, recipient, ref)
        assert effect["mode"] == "pull"
        assert [s for t, s in _event_types(client, ref) if t == "recipient.state_changed"] == [
            "acknowledged", "protocolled"]
        ledger = sims.ledger(agency)
        assert ledger["polls"] >= 2 and ledger["calls"] == 1 and recipient["attempts"] == 1


# -- rejection and correction ----------------------------------------------------------------------------


def test_a_rejection_is_corrected_and_resent(make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """INPS refuses the DURC for its purpose; the corrected filing goes as a new message that
    names the refused one."""
    sims.set_faults("inps", [{"kind": "reject", "code": "R017", "text": "motivo non ammesso",
                              "match": {"motivo": "appalto_pubblico"}}])
    with make_hub() as hub:
        client = client_for(hub)
        ref = _submit(client, DURC)
        rejected = _by_agency(_settled(client, ref, "rejected"))["inps"]
        assert (rejected["outcome"], rejected["outcomeCode"]) == ("rejected", "R017")
        assert client.resend(ref, "inps").status_code == 409  # a plain resend would be refused again

        corrected = DURC.replace(b"<purpose>appalto_pubblico</purpose>", b"<purpose>appalto_privato</purpose>")
        response = client.resend(ref, "inps", corrected=corrected)
        assert response.status_code == 202, response.text
        view = _settled(client, ref, "protocolled")
        assert len(view["recipients"]) == 1
        inps = _by_agency(view)["inps"]
        assert inps["messageId"] != rejected["messageId"]
        assert inps["corrects"]["messageId"] == rejected["messageId"]
        effect = _one_effect(sims, inps, ref)
        assert effect["corrects"] == {"messageId": rejected["messageId"]}
        assert [r["messageId"] for r in sims.ledger("inps")["rejected"] if r["filingReference"] == ref] == [
            rejected["messageId"]]


def test_a_late_rejection_is_corrected_without_touching_the_others(make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """INAIL protocols, then rejects: the correction is linked to its protocol number; the
    Registro Imprese and INPS, which accepted, are left alone."""
    sims.set_faults("inail", [{"kind": "async_push", "delay_ms": 100, "decision": "rejected",
                               "decision_delay_ms": 200, "code": "R042", "text": "posizione esistente",
                               "times": 1}])
    with make_hub() as hub:
        client = client_for(hub)
        ref = _submit(client, BUSINESS_START)
        view = _settled(client, ref, "partially_rejected")
        before = _by_agency(view)
        inail = before["inail"]
        assert inail["state"] == "rejected" and inail["protocolNumber"] and inail["outcomeCode"] == "R042"
        calls = {a: sims.ledger(a)["calls"] for a in ("cciaa", "inps")}

        response = client.resend(ref, "inail", corrected=BUSINESS_START)
        assert response.status_code == 202, response.text
        view = _settled(client, ref, "protocolled")
        after = _by_agency(view)
        assert after["inail"]["corrects"] == {"deliveryId": after["inail"]["corrects"]["deliveryId"],
                                              "messageId": inail["messageId"],
                                              "protocolNumber": inail["protocolNumber"]}
        effect = _one_effect(sims, after["inail"], ref)
        assert effect["corrects"] == {"messageId": inail["messageId"], "protocolNumber": inail["protocolNumber"]}
        assert len(_effects(sims, "inail", ref)) == 2  # one per delivery: the refused and the corrected
        for agency in ("cciaa", "inps"):
            assert after[agency] == {**before[agency], "nextAttemptAt": after[agency]["nextAttemptAt"]}
            assert _one_effect(sims, after[agency], ref)["duplicates"] == 0
            assert sims.ledger(agency)["calls"] == calls[agency]


# -- ordering and hand-off -----------------------------------------------------------------------


def test_business_start_hands_the_rea_number_to_inps_and_inail(make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """INPS and INAIL wait for the Registro Imprese, then carry the REA number it assigned."""
    with make_hub() as hub:
        client = client_for(hub)
        ref = _submit(client, BUSINESS_START)
        view = _settled(client, ref, "protocolled")
        accepted = client.events(ref).json()["events"][0]
        assert accepted["type"] == "filing.accepted"
        assert {r["agency"]: (r["state"], r.get("waitsFor")) for r in accepted["data"]["recipients"]} == {
            "cciaa": ("pending", None), "inps": ("waiting", "cciaa"), "inail": ("waiting", "cciaa")}
        recipients = _by_agency(view)
        rea = recipients["cciaa"]["references"]["numeroREA"]
        assert _one_effect(sims, recipients["cciaa"], ref)
        for agency in ("inps", "inail"):
            assert _one_effect(sims, recipients[agency], ref)["received"] == {"numeroREA": rea}


def test_a_registro_imprese_rejection_holds_inps_and_inail_until_corrected(make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]
    """on_reject = "hold": INPS and INAIL are held, nothing reaches them; the corrected
    registration releases them with the new REA number."""
    sims.set_faults("cciaa", [{"kind": "reject", "code": "R100", "text": "denominazione non ammessa", "times": 1}])
    with make_hub() as hub:
        client = client_for(hub)
        ref = _submit(client, BUSINESS_START)
        view = _settled(client, ref, "rejected")
        recipients = _by_agency(view)
        assert recipients["cciaa"]["state"] == "rejected"
        assert recipients["inps"]["state"] == recipients["inail"]["state"] == "held"
        assert not _effects(sims, "inps", ref) and not _effects(sims, "inail", ref)
        assert client.resend(ref, "inps").status_code == 409

        assert client.resend(ref, "cciaa", corrected=BUSINESS_START).status_code == 202
        view = _settled(client, ref, "protocolled")
        recipients = _by_agency(view)
        rea = recipients["cciaa"]["references"]["numeroREA"]
        for agency in ("cciaa", "inps", "inail"):
            effect = _one_effect(sims, recipients[agency], ref)
        for agency in ("inps", "inail"):
            effect = _one_effect(sims, recipients[agency], ref)
            assert effect["received"] == {"numeroREA": rea}
        states = [s for _, s in _event_types(client, ref)]
        assert states.count("held") == 2 and states.count("waiting") == 2


def test_a_registro_imprese_rejection_cancels_when_the_route_says_so(make_hub: HubFactory, client_for, sims,  # type: ignore[no-untyped-def]
                                                                      tmp_path: Path) -> None:
    """on_reject = "cancel": INPS and INAIL end cancelled and receive nothing."""
    routes = (PROJECT_ROOT / "config" / "routes.toml").read_text().replace('on_reject = "hold"', 'on_reject = "cancel"')
    routes_file = tmp_path / "routes.toml"
    routes_file.write_text(routes)
    sims.set_faults("cciaa", [{"kind": "reject", "code": "R100"}])
    with make_hub(routes_file=str(routes_file), mappings_dir=str(PROJECT_ROOT / "config" / "mappings")) as hub:
        client = client_for(hub)
        ref = _submit(client, BUSINESS_START)
        view = _settled(client, ref, "rejected")
        recipients = _by_agency(view)
        assert recipients["inps"]["state"] == recipients["inail"]["state"] == "cancelled"
        assert not _effects(sims, "inps", ref) and not _effects(sims, "inail", ref)
        assert not _effects(sims, "cciaa", ref) and len(sims.ledger("cciaa")["rejected"]) == 1
        refused = client.resend(ref, "inail")  # what it waits for is still rejected
        assert refused.status_code == 409 and "cciaa" in refused.json()["detail"]


# -- sender notifications ----------------------------------------------------------------------------


class _PortalCallbacks:
    """A portal's callback server: fails the first `failures` requests, then accepts."""

    def __init__(self, failures: int) -> None:
        self.received: list[tuple[int, dict[str, str], bytes]] = []
        self._failures = failures
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with outer._lock:
                    status = 500 if outer._failures > 0 else 200
                    outer._failures -= 1
                    outer.received.append((status, dict(self.headers), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/crocevia/events"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> _PortalCallbacks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def test_the_portal_receives_every_event_in_order_with_stable_ids(make_hub: HubFactory, client_for, sims, database_url: str) -> None:  # type: ignore[no-untyped-def]
    """The callback fails twice then accepts: every event arrives, in order, signed; the
    repeats carry the same id; the feed serves the same events."""
    secret = "portal-callback-secret-for-tests"
    with _PortalCallbacks(failures=2) as portal:
        base = hub_settings(database_url, {})
        portals = dict(base.portals)
        portals["test"] = portals["test"].model_copy(update={"callback_url": portal.url,
                                                             "callback_secret": SecretStr(secret)})
        with make_hub(portals=portals) as hub:
            client = client_for(hub)
            ref = _submit(client, BUSINESS_START)
            _settled(client, ref, "protocolled")
            feed = client.events(ref).json()["events"]
            wait_for(lambda: sum(status == 200 for status, _, _ in portal.received) == len(feed),
                     what="every event accepted by the portal")
    arrivals = [(status, json.loads(body), headers, body) for status, headers, body in portal.received]
    for _, event, headers, body in arrivals:
        assert verify_signature(secret.encode(), headers[SIGNATURE_HEADER], body)
        assert headers[EVENT_ID_HEADER] == event["id"]
    assert [s for s, *_ in arrivals[:3]] == [500, 500, 200]
    assert len({e["id"] for _, e, *_ in arrivals[:3]}) == 1  # the same event, recognisable
    accepted = [event for status, event, *_ in arrivals if status == 200]
    assert accepted == feed  # all of them, in sequence order, nothing ahead of an earlier one
    assert [e["sequence"] for e in accepted] == list(range(1, len(feed) + 1))
    assert accepted[0]["type"] == "filing.accepted" and accepted[-1]["data"]["state"] == "protocolled"
