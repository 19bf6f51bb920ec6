"""A trickling agency end to end (issue 10, item 4): the simulator records the message, then
sends its reply one byte every 250 ms, each gap well inside the 2 s read timeout.

Each call must end at the agency's call deadline (1.5 s here) as outcome-unknown, with either
HTTP transport; the job's lease (3.5 s, longer than the worst pass by construction) never runs
out under a pass, so the agency receives the message exactly as often as the retry policy
allows: tries per pass x passes. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from cli.client import PortalClient
from config.settings import HttpSettings
from tests.e2e.test_delivery_semantics import DURC, RUNTS, _by_agency, _settled, _submit
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_settings

DEADLINE = 1.5
TRIES = 2
PASSES = 2
LEASE = 3.5
TRICKLE = {"kind": "trickle", "delay_ms": 250}


@contextmanager
def _hub(database_url: str, sims, pool: str) -> Iterator[tuple[RunningHub, PortalClient]]:  # type: ignore[no-untyped-def]
    settings = hub_settings(database_url, {a: sims.soap_endpoint(a) for a in sims.urls}, lease_seconds=LEASE)
    agencies = {
        name: conf.model_copy(update={
            "call_deadline": DEADLINE,
            "retry": conf.retry.model_copy(update={"attempts": TRIES}),
            "schedule": conf.schedule.model_copy(update={"max_rounds": PASSES}),
        })
        for name, conf in settings.agencies.items()
    }
    settings = settings.model_copy(update={"agencies": agencies, "http": HttpSettings(pool=pool)})  # type: ignore[arg-type]
    with RunningHub(settings) as hub, PortalClient(hub.base_url, TEST_PORTAL_KEY) as client:
        yield hub, client


@pytest.mark.parametrize("pool", ["aiohttp", "httpx"])
def test_a_trickling_soap_agency_is_cut_at_each_deadline_and_called_only_as_the_policy_allows(
    database_url: str, sims, pool: str  # type: ignore[no-untyped-def]
) -> None:
    """INPS trickles every reply: 2 tries x 2 passes = 4 calls, each cut at 1.5 s, then the
    delivery is undeliverable with the reason; no call more from a lease running out."""
    sims.set_faults("inps", [{**TRICKLE, "operation": "*"}])
    with _hub(database_url, sims, pool) as (_, client):
        started = time.monotonic()
        ref = _submit(client, DURC)
        view = _settled(client, ref, "undeliverable", timeout=30)
        elapsed = time.monotonic() - started
        inps = _by_agency(view)["inps"]
        assert inps["state"] == "undeliverable" and inps["attempts"] == TRIES * PASSES
        assert "deadline" in (inps["outcomeText"] or "")
        ledger = sims.ledger("inps")
        assert ledger["calls"] == TRIES * PASSES
        [effect] = [e for e in ledger["effects"] if e["filingReference"] == ref]
        assert effect["messageId"] == inps["messageId"] and effect["duplicates"] == TRIES * PASSES - 1
        # Four calls of 1.5 s plus the short waits: nowhere near the minutes the reply takes.
        assert TRIES * PASSES * DEADLINE <= elapsed < TRIES * PASSES * DEADLINE + 6
        assert _by_agency(client.status(ref).json())["inps"]["attempts"] == TRIES * PASSES


@pytest.mark.parametrize("pool", ["aiohttp", "httpx"])
def test_a_rest_agency_that_trickles_twice_protocols_on_the_next_pass_with_one_effect(
    database_url: str, sims, pool: str  # type: ignore[no-untyped-def]
) -> None:
    """RUNTS trickles both tries of the first pass (outcome unknown); the next pass sends the
    same message id and gets the first receipt: 3 calls, one effect, protocolled."""
    sims.set_faults("runts", [{**TRICKLE, "times": TRIES}])
    with _hub(database_url, sims, pool) as (_, client):
        ref = _submit(client, RUNTS)
        view = _settled(client, ref, "protocolled", timeout=30)
        runts = _by_agency(view)["runts"]
        assert runts["attempts"] == TRIES + 1
        ledger = sims.ledger("runts")
        assert ledger["calls"] == TRIES + 1
        [effect] = [e for e in ledger["effects"] if e["filingReference"] == ref]
        assert effect["protocollo"] == runts["protocolNumber"] and effect["duplicates"] == TRIES
