"""Retention over a live hub, on SQLite and PostgreSQL: `hub.py retention run [--dry-run]` and
the workers' periodic pass purge the payloads of filings settled before the period, each with a
`payload_purged` audit line carrying the removed payloads' SHA-256; `hub.py audit verify` still
verifies the chain, and the filing still answers with its states and protocol numbers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import select, update

from config.settings import PROJECT_ROOT, RetentionSettings
from storage.tables import attempts, audit_log, deliveries, filings
from tests.e2e.test_delivery_semantics import (  # noqa: F401 - fixtures
    BUSINESS_START,
    DURC,
    HubFactory,
    _settled,
    _submit,
    _view,
    client_for,
    make_hub,
)
from tests.support import RunningHub, wait_for


def _hub_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`hub.py ARGS` in its own process, on the test's database."""
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "hub.py"), *args],
                          env={**os.environ, "DATABASE__URL": database_url}, capture_output=True, text=True,
                          timeout=120, cwd=PROJECT_ROOT)


def _settled_long_ago(hub: RunningHub, reference: str, days: int) -> None:
    """The test's arrangement: this filing settled `days` ago."""
    with hub.hub.engine.begin() as conn:
        conn.execute(update(filings).where(filings.c.reference == reference)
                     .values(updated_at=datetime.now(timezone.utc) - timedelta(days=days)))


def _stored(hub: RunningHub, reference: str) -> dict[str, Any]:
    with hub.hub.engine.connect() as conn:
        filing = conn.execute(select(filings).where(filings.c.reference == reference)).one()
        messages = conn.execute(select(deliveries.c.content).where(deliveries.c.filing_id == filing.id)).scalars().all()
        bodies = conn.execute(select(attempts.c.request_body, attempts.c.reply_body)
                              .join(deliveries, deliveries.c.id == attempts.c.delivery_id)
                              .where(deliveries.c.filing_id == filing.id)).all()
    return {"document": bytes(filing.document), "name": filing.subject_name, "messages": list(messages),
            "bodies": [b for row in bodies for b in row if b is not None], "purgedAt": filing.payload_purged_at}


def _purge_lines(hub: RunningHub) -> list[Any]:
    with hub.hub.engine.connect() as conn:
        return conn.execute(select(audit_log).where(audit_log.c.action == "payload_purged")
                            .order_by(audit_log.c.id)).all()


def test_retention_run_purges_old_settled_payloads_and_the_chain_verifies(
        make_hub: HubFactory, client_for, database_url: str) -> None:  # type: ignore[no-untyped-def]
    """A business start settled 400 days ago loses its document, messages and bodies; a DURC
    settled today keeps them; the dry run lists without changing; the audit chain verifies."""
    with make_hub() as hub:
        client = client_for(hub)
        old, recent = _submit(client, BUSINESS_START), _submit(client, DURC)
        before = _settled(client, old, "protocolled")
        _settled(client, recent, "protocolled")
        _settled_long_ago(hub, old, 400)
        kept = _stored(hub, old)
        assert kept["document"] and kept["name"] and all(kept["messages"]) and kept["bodies"]

        dry = _hub_cli(database_url, "retention", "run", "--dry-run", "--json")
        assert dry.returncode == 0, dry.stderr
        listed = json.loads(dry.stdout)
        assert listed["dryRun"] is True and [f["reference"] for f in listed["filings"]] == [old]
        assert _stored(hub, old) == kept and _purge_lines(hub) == []

        run = _hub_cli(database_url, "retention", "run", "--json")
        assert run.returncode == 0, run.stderr
        purged = json.loads(run.stdout)["filings"]
        assert [f["reference"] for f in purged] == [old]
        assert purged[0]["sha256"] == listed["filings"][0]["sha256"]  # the same payloads hashed
        assert purged[0]["removed"]["messages"] == 3 and purged[0]["removed"]["documentBytes"] == len(kept["document"])

        after = _stored(hub, old)
        assert after["document"] == b"" and after["name"] == "" and after["messages"] == [{}, {}, {}]
        assert after["bodies"] == [] and after["purgedAt"] is not None
        assert _stored(hub, recent)["document"] and _stored(hub, recent)["purgedAt"] is None

        # The filing still answers with its states and protocol numbers, saying when it was purged.
        view = _view(client, old)
        assert view["state"] == "protocolled" and view["payloadPurgedAt"].endswith("Z")
        assert {r["agency"]: r["protocolNumber"] for r in view["recipients"]} == {
            r["agency"]: r["protocolNumber"] for r in before["recipients"]}
        assert _view(client, recent)["payloadPurgedAt"] is None

        [line] = _purge_lines(hub)
        assert line.actor == "system:retention" and line.subject == old and line.outcome == "ok"
        assert line.detail["sha256"] == purged[0]["sha256"] and line.detail["retentionDays"] == 365
        assert line.detail["removed"]["attemptBodies"] == len(kept["bodies"])
        # No personal data in the audit line: sizes and a hash, not the content.
        assert "Marco" not in json.dumps(line.detail) and kept["name"] not in json.dumps(line.detail)

        verify = _hub_cli(database_url, "audit", "verify")
        assert verify.returncode == 0 and "chain intact" in verify.stdout, verify.stdout + verify.stderr

        again = _hub_cli(database_url, "retention", "run", "--json")  # nothing left to purge
        assert again.returncode == 0 and json.loads(again.stdout)["filings"] == []
        assert len(_purge_lines(hub)) == 1

        # A purged recipient cannot be resent: its message is gone.
        refused = client.resend(old, "inps")
        assert refused.status_code == 409, refused.text


def test_the_workers_periodic_pass_purges_when_the_period_has_passed(
        make_hub: HubFactory, client_for, database_url: str) -> None:  # type: ignore[no-untyped-def]
    """`[retention]` 30 days, a pass every 0.2 s: a filing settled 31 days ago is purged by the
    worker without any command; one settled 29 days ago is not."""
    with make_hub(retention=RetentionSettings(settled_payload_days=30, interval_seconds=0.2)) as hub:
        client = client_for(hub)
        old, young = _submit(client, DURC), _submit(client, DURC)
        for ref in (old, young):
            _settled(client, ref, "protocolled")
        _settled_long_ago(hub, young, 29)
        _settled_long_ago(hub, old, 31)
        wait_for(lambda: _stored(hub, old)["purgedAt"] is not None, timeout=20, what="the worker's purge")
        assert _stored(hub, old)["document"] == b""
        assert [(line.subject, line.detail["retentionDays"]) for line in _purge_lines(hub)] == [(old, 30)]
        assert _stored(hub, young)["purgedAt"] is None and _stored(hub, young)["document"]
    verify = _hub_cli(database_url, "audit", "verify")
    assert verify.returncode == 0 and "chain intact" in verify.stdout
