"""Operators' actions over real HTTP, against a running hub and the agency simulators, on SQLite
and PostgreSQL: resend, retry now under Retry-After, cancel, bulk resend, pause and resume,
and the dead-letter routes' answer without a broker. Each ends on the recipients' states, the
simulators' ledgers (exactly one effect) and the audit trail."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from domain.lockout import LockoutPolicy
from service.identity import AuditEntry
from storage.tables import audit_log
from tests.e2e.test_delivery_semantics import (  # noqa: F401 - fixtures
    DURC,
    RUNTS,
    HubFactory,
    _by_agency,
    _one_effect,
    _settled,
    _submit,
    _view,
    _wait_view,
    client_for,
    make_hub,
)
from tests.ops_support import OpsServer
from tests.support import RunningHub, wait_for

OPERATOR = {"x-test-role": "operator", "x-test-operator": "alice"}


@pytest.fixture
def ops() -> Iterator[Callable[..., httpx.Client]]:
    """`ops(hub)`: an HTTP client of the ops routes next to `hub`, as operator alice."""
    servers: list[OpsServer] = []
    clients: list[httpx.Client] = []

    def make(hub: RunningHub, **context: Any) -> httpx.Client:
        server = OpsServer(hub, **context).__enter__()
        servers.append(server)
        clients.append(httpx.Client(base_url=f"{server.base_url}/v1/ops", headers=OPERATOR, timeout=30,
                                    trust_env=False))
        return clients[-1]

    yield make
    for client in clients:
        client.close()
    for server in servers:
        server.__exit__(None, None, None)


def _audit(hub: RunningHub, action: str) -> list[Any]:
    with hub.hub.engine.connect() as conn:
        return conn.execute(select(audit_log.c.actor, audit_log.c.outcome, audit_log.c.detail)
                            .where(audit_log.c.action == action).order_by(audit_log.c.id)).all()


def _recipient(ref: str, agency: str) -> str:
    return f"/filings/{ref}/recipients/{agency}"


def test_an_operator_resends_an_undeliverable_recipient_after_the_outage(
        make_hub: HubFactory, client_for, ops, sims) -> None:  # type: ignore[no-untyped-def]
    """RUNTS down → undeliverable; the preview changes nothing; after the fault clears the
    confirmed resend protocols it, with exactly one effect, audited with the operator's name."""
    sims.set_faults("runts", [{"kind": "http_status", "status": 503}])
    with make_hub() as hub:
        client, op = client_for(hub), ops(hub)
        ref = _submit(client, RUNTS)
        before = _by_agency(_settled(client, ref, "undeliverable"))["runts"]

        preview = op.post(f"{_recipient(ref, 'runts')}/resend", json={})
        assert preview.status_code == 200, preview.text
        assert preview.json()["confirmed"] is False and preview.json()["preview"]["wouldResend"] is True
        assert _by_agency(_view(client, ref))["runts"]["state"] == "undeliverable"
        assert not _audit(hub, "recipient_resent")

        viewer = op.post(f"{_recipient(ref, 'runts')}/resend", json={"confirm": True},
                         headers={"x-test-role": "viewer"})
        assert viewer.status_code == 403

        sims.set_faults("runts", [])
        done = op.post(f"{_recipient(ref, 'runts')}/resend", json={"confirm": True, "reason": "RUNTS back up"})
        assert done.status_code == 202, done.text
        assert done.json()["recipient"]["messageId"] == before["messageId"]
        after = _by_agency(_settled(client, ref, "protocolled"))["runts"]
        assert _one_effect(sims, after, ref)["duplicates"] == 0
        (line,) = _audit(hub, "recipient_resent")
        assert line.actor == "operator:alice" and line.detail["reason"] == "RUNTS back up"

        again = op.post(f"{_recipient(ref, 'runts')}/resend", json={"confirm": True})
        assert again.status_code == 409 and again.json()["state"] == "protocolled"
        assert op.post(f"{_recipient('CRV-1900-000001', 'runts')}/resend", json={"confirm": True}).status_code == 404


def test_retry_now_is_refused_under_retry_after_unless_forced_with_a_reason(
        make_hub: HubFactory, client_for, ops, sims) -> None:  # type: ignore[no-untyped-def]
    """A 429 with an hour's Retry-After: retry now answers 409; forcing needs a reason; forced,
    the one job goes at once and the filing is protocolled with one effect."""
    sims.set_faults("inps", [{"kind": "http_status", "status": 429, "retry_after": 3600, "times": 1}])
    with make_hub() as hub:
        client, op = client_for(hub), ops(hub)
        ref = _submit(client, DURC)
        _wait_view(client, ref, lambda v: _by_agency(v)["inps"]["state"] == "retrying", what="inps retrying")
        wait_for(lambda: hub.hub.store.throttled_until("inps"), what="the throttle reported")

        preview = op.post(f"{_recipient(ref, 'inps')}/retry", json={}).json()["preview"]
        assert preview["needsForce"] is True and preview["wouldRetry"] is False
        refused = op.post(f"{_recipient(ref, 'inps')}/retry", json={"confirm": True})
        assert refused.status_code == 409, refused.text
        assert refused.json()["type"].endswith("agency-throttled") and refused.json()["throttledUntil"]
        no_reason = op.post(f"{_recipient(ref, 'inps')}/retry", json={"confirm": True, "force": True})
        assert no_reason.status_code == 400 and no_reason.headers["content-type"] == "application/problem+json"
        assert sims.ledger("inps")["calls"] == 1

        forced = op.post(f"{_recipient(ref, 'inps')}/retry",
                         json={"confirm": True, "force": True, "reason": "INPS desk confirmed by phone"})
        assert forced.status_code == 202, forced.text
        view = _settled(client, ref, "protocolled")
        _one_effect(sims, _by_agency(view)["inps"], ref)
        assert sims.ledger("inps")["calls"] == 2
        outcomes = [(a.outcome, a.detail.get("reason")) for a in _audit(hub, "recipient_retried")]
        assert outcomes == [("agency-throttled", None), ("invalid-request", None),
                            ("forced", "INPS desk confirmed by phone")]


def test_retry_now_without_a_throttle_ignores_the_backoff(make_hub: HubFactory, client_for, ops, sims,  # type: ignore[no-untyped-def]
                                                         ) -> None:
    """A 503 schedules the next try minutes away; retry now makes it due at once."""
    sims.set_faults("inps", [{"kind": "http_status", "status": 503, "times": 3}])
    with make_hub(agencies={"inps": {"schedule": {"initial_delay": 600.0, "max_delay": 600.0}}}) as hub:
        client, op = client_for(hub), ops(hub)
        ref = _submit(client, DURC)
        _wait_view(client, ref, lambda v: _by_agency(v)["inps"]["state"] == "retrying", what="inps retrying")
        done = op.post(f"{_recipient(ref, 'inps')}/retry", json={"confirm": True})
        assert done.status_code == 202, done.text
        _settled(client, ref, "protocolled", timeout=20)


def test_cancel_with_a_reason_then_a_resend_revives_it(make_hub: HubFactory, client_for, ops, sims) -> None:  # type: ignore[no-untyped-def]
    """A retrying recipient is cancelled (reason required): no more calls, its job closed, the
    filing re-aggregated; a later resend sends it again and it is protocolled."""
    sims.set_faults("inps", [{"kind": "http_status", "status": 503}])
    with make_hub(agencies={"inps": {"schedule": {"initial_delay": 600.0, "max_delay": 600.0}}}) as hub:
        client, op = client_for(hub), ops(hub)
        ref = _submit(client, DURC)
        _wait_view(client, ref, lambda v: _by_agency(v)["inps"]["state"] == "retrying", what="inps retrying")

        assert op.post(f"{_recipient(ref, 'inps')}/cancel", json={"confirm": True}).status_code == 400
        preview = op.post(f"{_recipient(ref, 'inps')}/cancel", json={"reason": "duplicate filing"})
        assert preview.status_code == 200 and preview.json()["preview"]["wouldCancel"] is True
        done = op.post(f"{_recipient(ref, 'inps')}/cancel", json={"confirm": True, "reason": "duplicate filing"})
        assert done.status_code == 202, done.text
        view = _view(client, ref)
        inps = _by_agency(view)["inps"]
        assert inps["state"] == "cancelled" and inps["outcomeText"] == "duplicate filing"
        assert view["state"] != "in_progress"
        assert hub.hub.store.pending_jobs() == 0  # its job closed
        lines = _audit(hub, "recipient_cancelled")
        assert [a.outcome for a in lines] == ["invalid-request", "cancelled"]
        assert lines[1].actor == "operator:alice" and lines[1].detail["reason"] == "duplicate filing"
        assert op.post(f"{_recipient(ref, 'inps')}/cancel",
                       json={"confirm": True, "reason": "again"}).status_code == 409

        sims.set_faults("inps", [])
        assert op.post(f"{_recipient(ref, 'inps')}/resend", json={"confirm": True}).status_code == 202
        _one_effect(sims, _by_agency(_settled(client, ref, "protocolled"))["inps"], ref)


def test_bulk_resend_shows_the_count_then_resends_them_all(make_hub: HubFactory, client_for, ops, sims) -> None:  # type: ignore[no-untyped-def]
    """Two RUNTS filings undeliverable in the outage: the preview counts them and changes
    nothing; confirmed, both are resent and protocolled, one effect each."""
    sims.set_faults("runts", [{"kind": "http_status", "status": 503}])
    with make_hub() as hub:
        client, op = client_for(hub), ops(hub)
        start = datetime.now(timezone.utc) - timedelta(minutes=1)
        refs = [_submit(client, RUNTS) for _ in range(2)]
        for ref in refs:
            _settled(client, ref, "undeliverable")
        window = {"from": start.isoformat(), "to": (datetime.now(timezone.utc) + timedelta(minutes=1))
                  .isoformat().replace("+00:00", "Z")}

        bad = op.post("/agencies/runts/resend-undeliverable", json={"from": "yesterday", "to": window["to"]})
        assert bad.status_code == 400 and bad.json()["errors"][0]["location"] == "body:from"
        assert op.post("/agencies/nowhere/resend-undeliverable", json=window).status_code == 404
        preview = op.post("/agencies/runts/resend-undeliverable", json=window)
        assert preview.status_code == 200, preview.text
        assert preview.json()["matching"] == 2 and preview.json()["resent"] == 0
        assert all(_view(client, ref)["state"] == "undeliverable" for ref in refs)

        sims.set_faults("runts", [])
        done = op.post("/agencies/runts/resend-undeliverable", json={**window, "confirm": True})
        assert done.status_code == 202, done.text
        assert done.json()["resent"] == 2 and sorted(done.json()["references"]) == sorted(refs)
        for ref in refs:
            _one_effect(sims, _by_agency(_settled(client, ref, "protocolled"))["runts"], ref)
        assert len(_audit(hub, "recipient_resent")) == 2
        lines = _audit(hub, "agency_bulk_resend")  # the refused requests are audited too
        assert [a.outcome for a in lines] == ["invalid-request", "not-found", "done"]
        assert lines[-1].actor == "operator:alice" and lines[-1].detail["matching"] == 2


def test_a_paused_agency_gets_no_call_until_it_is_resumed(make_hub: HubFactory, client_for, ops, sims) -> None:  # type: ignore[no-untyped-def]
    """Paused INPS: a new filing's recipient waits (no call, nothing lost, no pass counted);
    other agencies are delivered; resuming makes it due and it is protocolled."""
    with make_hub() as hub:
        client, op = client_for(hub), ops(hub)
        assert op.post("/agencies/inps/pause", json={"reason": "INPS maintenance"}).json()["preview"] == {
            "paused": False, "wouldPause": True}
        paused = op.post("/agencies/inps/pause", json={"confirm": True, "reason": "INPS maintenance"})
        assert paused.status_code == 202 and paused.json()["changed"] is True
        ref = _submit(client, DURC)
        # The worker met the job and moved it (deferred: no call, no pass counted).
        _wait_view(client, ref, lambda v: _by_agency(v)["inps"]["nextAttemptAt"] is not None,
                   what="inps held by the pause")
        other = _submit(client, RUNTS)
        _settled(client, other, "protocolled")
        assert sims.ledger("inps")["calls"] == 0
        inps = _by_agency(_view(client, ref))["inps"]
        assert inps["state"] == "pending" and inps["attempts"] == 0

        resumed = op.post("/agencies/inps/resume", json={"confirm": True})
        assert resumed.status_code == 202 and resumed.json()["jobsMadeDue"] >= 1
        view = _settled(client, ref, "protocolled", timeout=20)
        _one_effect(sims, _by_agency(view)["inps"], ref)
        assert [(a.actor, a.outcome) for a in _audit(hub, "agency_paused")] == [("operator:alice", "paused")]
        assert [(a.actor, a.outcome) for a in _audit(hub, "agency_resumed")] == [("operator:alice", "resumed")]


def test_dead_letters_without_a_broker_and_lockouts_need_admin(make_hub: HubFactory, ops) -> None:  # type: ignore[no-untyped-def]
    """The embedded queue has no dead-letter queue: listing answers 404 and replay 409, both
    problem details; lockouts need the admin role and list through the same identity store."""
    with make_hub() as hub:
        op = ops(hub)
        listing = op.get("/dead-letters")
        assert listing.status_code == 404 and listing.json()["type"].endswith("no-broker")
        replay = op.post("/dead-letters/replay", json={"confirm": True})
        assert replay.status_code == 409 and replay.json()["type"].endswith("no-broker")
        assert op.get("/lockouts").status_code == 403
        admin = op.get("/lockouts", headers={"x-test-role": "admin"})
        assert admin.status_code == 200 and admin.json() == {"lockouts": []}
        admin_headers = {"x-test-role": "admin", "x-test-operator": "carol"}
        missing = op.post("/lockouts/portal:test/user:XYZ/lift", json={"confirm": True}, headers=admin_headers)
        assert missing.status_code == 404

        key = "portal:test/user:RSSMRA80A01H501U"
        for _ in range(10):  # the agencies' rule: ten failures lock the caller out
            hub.hub.identity.record_failure(key, time.time(), LockoutPolicy(),
                                            AuditEntry("portal:test", "authentication_failed", key, "refused", {}))
        (locked,) = op.get("/lockouts", headers=admin_headers).json()["lockouts"]
        assert locked["key"] == key and locked["locked"] is True and locked["failures"] == 10
        assert op.post(f"/lockouts/{key}/lift", json={}, headers=admin_headers).json()["preview"]["locked"] is True
        assert op.post(f"/lockouts/{key}/lift", json={"confirm": True}).status_code == 403  # operator < admin
        lifted = op.post(f"/lockouts/{key}/lift", json={"confirm": True}, headers=admin_headers)
        assert lifted.status_code == 202 and lifted.json()["wasLocked"] is True
        assert op.get("/lockouts", headers=admin_headers).json() == {"lockouts": []}
        assert [(a.actor, a.outcome) for a in _audit(hub, "lockout_lifted")] == [
            ("operator:carol", "not_found"), ("operator:carol", "lifted")]
