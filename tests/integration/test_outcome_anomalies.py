"""Settled facts from agencies, on SQLite and PostgreSQL: a callback changes only a delivery
that waits for it; a protocol number is never overwritten nor a final decision reversed (the
contradiction is kept as an anomaly, both sides); one number given to two messages is flagged."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from typing import Any

import pytest

from config.settings import PROJECT_ROOT
from domain.messages import Receipt
from routing.plan import PlannedDelivery
from service.ports import Completion, DeliveryView
from storage.store import SqlStore
from tests.integration.test_delivery_store import _complete, _new
from tests.integration.test_store import clock, store  # noqa: F401 - fixtures: a store on a manual clock


def _one(agency: str = "cciaa"):  # type: ignore[no-untyped-def]
    def plan(reference: str) -> list[PlannedDelivery]:
        return [PlannedDelivery(uuid.uuid4().hex, uuid.uuid4().hex, agency, "Op", {"x": 1})]

    return plan


def _recipient(store: SqlStore, reference: str, agency: str = "cciaa") -> DeliveryView:
    view = store.get_filing(reference, "test")
    assert view is not None
    [found] = [d for d in view.deliveries if d.agency == agency]
    return found


def _facts(d: DeliveryView) -> tuple[Any, ...]:
    return d.state, d.protocol_number, d.outcome, d.outcome_code


def _event_types(store: SqlStore, reference: str) -> list[str]:
    return [e.type for e in store.filing_events(reference, "test") or []]


def _acknowledged(store: SqlStore) -> tuple[str, str]:
    """A filing whose cciaa delivery the agency took in charge (its number comes by callback)."""
    reference = store.accept_filing(_new(), _one()).reference
    _complete(store, "cciaa", "acknowledged", correlation_id=f"corr-{reference}", next_attempt_at=2_000_000.0)
    return reference, _recipient(store, reference).delivery_id


# -- item 2: only a delivery waiting for the callback changes ---------------------------------------


@pytest.mark.parametrize("setup", ["undeliverable", "retrying", "pending"])
def test_a_callback_to_a_delivery_that_waits_for_none_changes_nothing(store: SqlStore, setup: str) -> None:
    """Never taken in charge (undeliverable, retrying, not yet sent): the callback is refused and
    neither the delivery, the filing, its feed nor the anomalies change. While a send may be in
    flight (pending, retrying) the refusal says "not yet", so the agency tries again once the
    hub has recorded its acknowledgment; given up is a conflict for good."""
    reference = store.accept_filing(_new(), _one()).reference
    if setup == "undeliverable":
        _complete(store, "cciaa", "undeliverable", outcome_code="RETRIES", outcome_text="gave up")
    elif setup == "retrying":
        _complete(store, "cciaa", "retrying", last_error="503", next_attempt_at=2_000_000.0)
    before, events = _recipient(store, reference), _event_types(store, reference)
    filing_state = store.get_filing(reference, "test").state  # type: ignore[union-attr]

    result = store.record_late_outcome(before.delivery_id, Receipt("RM/RI/2026/123456", outcome="ACCOLTA"))

    after = _recipient(store, reference)
    assert result == ("conflict" if setup == "undeliverable" else "not_yet")
    assert _facts(after) == _facts(before) and after.state == setup
    assert store.get_filing(reference, "test").state == filing_state  # type: ignore[union-attr]
    assert _event_types(store, reference) == events and after.anomalies == []


def test_a_synchronous_protocol_number_is_never_replaced(store: SqlStore) -> None:
    """The reply gave A; a callback saying B is a contradiction kept once as an anomaly with both."""
    reference = store.accept_filing(_new(), _one()).reference
    _complete(store, "cciaa", "protocolled", protocol_number="RM/RI/2026/000001")
    delivery_id = _recipient(store, reference).delivery_id
    forged = Receipt("RM/RI/2026/999999")

    assert store.record_late_outcome(delivery_id, forged) == "contradiction"
    assert store.record_late_outcome(delivery_id, forged) == "contradiction"  # the agency retries it

    after = _recipient(store, reference)
    assert (after.state, after.protocol_number) == ("protocolled", "RM/RI/2026/000001")
    [anomaly] = after.anomalies or []
    assert anomaly["kind"] == "protocol_number_conflict"
    assert anomaly["detail"]["recorded"]["protocolNumber"] == "RM/RI/2026/000001"
    assert anomaly["detail"]["received"]["protocolNumber"] == "RM/RI/2026/999999"
    assert _event_types(store, reference).count("recipient.anomaly") == 1
    assert [a["deliveryId"] for a in store.anomalies()] == [delivery_id]


def test_a_second_late_number_does_not_overwrite_the_first(store: SqlStore) -> None:
    """Acknowledged, then protocolled by callback: another number later is a conflict; the same
    callback again is still a duplicate."""
    reference, delivery_id = _acknowledged(store)
    first = Receipt("RM/RI/2026/000007")
    assert store.record_late_outcome(delivery_id, first) == "recorded"
    assert store.record_late_outcome(delivery_id, Receipt("RM/RI/2026/000008")) == "contradiction"
    assert store.record_late_outcome(delivery_id, first) == "duplicate"
    after = _recipient(store, reference)
    assert (after.state, after.protocol_number, after.outcome) == ("protocolled", "RM/RI/2026/000007", None)
    assert [(a["kind"], a["detail"]["received"]["protocolNumber"]) for a in after.anomalies or []] == [
        ("protocol_number_conflict", "RM/RI/2026/000008")]


def test_a_final_decision_is_not_reversed(store: SqlStore) -> None:
    """Protocolled and awaiting a decision: RESPINTA is recorded; a later ACCOLTA is a conflict
    (the delivery stays rejected, the filing too); RESPINTA again is a duplicate."""
    reference, delivery_id = _acknowledged(store)
    assert store.record_late_outcome(delivery_id, Receipt("RM/RI/2026/000011")) == "recorded"
    rejected = Receipt("RM/RI/2026/000011", outcome="RESPINTA", outcome_code="R9", outcome_text="no")
    assert store.record_late_outcome(delivery_id, rejected) == "recorded"

    assert store.record_late_outcome(delivery_id, Receipt("RM/RI/2026/000011", outcome="ACCOLTA")) == "contradiction"
    assert store.record_late_outcome(delivery_id, rejected) == "duplicate"

    after = _recipient(store, reference)
    assert _facts(after) == ("rejected", "RM/RI/2026/000011", "rejected", "R9")
    assert store.get_filing(reference, "test").state == "rejected"  # type: ignore[union-attr]
    [anomaly] = after.anomalies or []
    assert anomaly["kind"] == "decision_conflict"
    assert (anomaly["detail"]["recorded"]["outcome"], anomaly["detail"]["received"]["outcome"]) == (
        "rejected", "accepted")


def test_a_refusal_takes_no_protocol_number_later(store: SqlStore) -> None:
    """Refused outright in the reply (no number): a callback bringing a number is a conflict."""
    reference = store.accept_filing(_new(), _one()).reference
    _complete(store, "cciaa", "rejected", outcome="rejected", outcome_code="R1", outcome_text="no")
    delivery_id = _recipient(store, reference).delivery_id
    assert store.record_late_outcome(delivery_id, Receipt("RM/RI/2026/000012", outcome="ACCOLTA")) == "contradiction"
    after = _recipient(store, reference)
    assert _facts(after) == ("rejected", None, "rejected", "R1")
    assert [a["kind"] for a in after.anomalies or []] == ["decision_conflict"]


def test_a_decision_without_the_number_completes_a_protocolled_delivery(store: SqlStore) -> None:
    """The decision that follows the protocol need not repeat the number: it is recorded."""
    reference = store.accept_filing(_new(), _one()).reference
    _complete(store, "cciaa", "protocolled", protocol_number="RM/RI/2026/000013")
    delivery_id = _recipient(store, reference).delivery_id
    assert store.record_late_outcome(delivery_id, Receipt("", outcome="ACCOLTA")) == "recorded"
    assert _facts(_recipient(store, reference)) == ("protocolled", "RM/RI/2026/000013", "accepted", None)


# -- item 6: one protocol number for two messages -----------------------------------------------------


def test_a_number_already_given_to_another_message_is_flagged_on_the_second(store: SqlStore) -> None:
    """Two filings both get RM/RI/2026/777777 in their replies: both keep it, the second is
    flagged with an anomaly naming the first, and its feed says so."""
    first = store.accept_filing(_new(), _one()).reference
    _complete(store, "cciaa", "protocolled", protocol_number="RM/RI/2026/777777")
    second = store.accept_filing(_new(), _one()).reference
    _complete(store, "cciaa", "protocolled", protocol_number="RM/RI/2026/777777")

    a, b = _recipient(store, first), _recipient(store, second)
    assert a.protocol_number == b.protocol_number == "RM/RI/2026/777777"
    assert a.anomalies == [] and "recipient.anomaly" not in _event_types(store, first)
    [anomaly] = b.anomalies or []
    assert anomaly["kind"] == "duplicate_protocol_number"
    assert anomaly["detail"]["protocolNumber"] == "RM/RI/2026/777777"
    assert anomaly["detail"]["alsoGivenTo"] == [
        {"deliveryId": a.delivery_id, "messageId": a.message_id, "filingReference": first}]
    assert _event_types(store, second) == [
        "filing.accepted", "recipient.state_changed", "recipient.anomaly", "filing.state_changed"]


def test_the_later_of_two_in_one_batch_is_flagged(store: SqlStore) -> None:
    """One batch of completions gives two messages the same number: the later one is flagged."""
    refs = [store.accept_filing(_new(), _one()).reference for _ in range(2)]
    jobs = sorted(store.claim_jobs("w", ["cciaa"], 10, 60), key=lambda j: refs.index(j.filing_reference))
    store.complete_jobs([Completion(job=j, owner="w", new_state="protocolled", protocol_number="RM/RI/2026/555555")
                         for j in jobs])
    first, second = (_recipient(store, r) for r in refs)
    assert first.anomalies == []
    assert [a["detail"]["alsoGivenTo"][0]["messageId"] for a in second.anomalies or []] == [first.message_id]


def test_the_same_number_for_another_agency_or_the_same_message_is_no_anomaly(store: SqlStore) -> None:
    """Numbers are per agency; and a repeat of the same message's number is not a conflict."""
    first = store.accept_filing(_new(), _one("cciaa")).reference
    _complete(store, "cciaa", "protocolled", protocol_number="2026/000001")
    second = store.accept_filing(_new(), _one("runts")).reference
    _complete(store, "runts", "protocolled", protocol_number="2026/000001")
    delivery_id = _recipient(store, first).delivery_id
    assert store.record_late_outcome(delivery_id, Receipt("2026/000001")) == "duplicate"
    assert _recipient(store, first).anomalies == [] and _recipient(store, second, "runts").anomalies == []
    assert store.anomalies() == []


def test_a_late_number_already_given_to_another_message_is_recorded_and_flagged(store: SqlStore) -> None:
    """By callback too: the acknowledged delivery gets the number (200 recorded) and the flag."""
    first = store.accept_filing(_new(), _one()).reference
    _complete(store, "cciaa", "protocolled", protocol_number="RM/RI/2026/777777")
    second, delivery_id = _acknowledged(store)
    assert store.record_late_outcome(delivery_id, Receipt("RM/RI/2026/777777")) == "recorded"
    after = _recipient(store, second)
    assert (after.state, after.protocol_number) == ("protocolled", "RM/RI/2026/777777")
    assert [(a["kind"], a["detail"]["alsoGivenTo"][0]["filingReference"]) for a in after.anomalies or []] == [
        ("duplicate_protocol_number", first)]
    assert [a["kind"] for a in store.anomalies(agency="cciaa")] == ["duplicate_protocol_number"]
    assert store.anomalies(agency="inps") == []


def test_operators_list_the_anomalies_with_hub_py(store: SqlStore, database_url: str) -> None:
    """`hub.py anomalies` lists what was kept, newest first, filtered by agency on request."""
    reference = store.accept_filing(_new(), _one()).reference
    _complete(store, "cciaa", "protocolled", protocol_number="RM/RI/2026/000001")
    store.record_late_outcome(_recipient(store, reference).delivery_id, Receipt("RM/RI/2026/999999"))
    env = {**os.environ, "DATABASE__URL": database_url}

    def run(*args: str) -> list[str]:
        done = subprocess.run([sys.executable, str(PROJECT_ROOT / "hub.py"), "anomalies", *args], env=env,
                              cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    header, _, *lines = run()
    assert header.split() == ["createdAt", "agency", "kind", "filingReference", "messageId", "detail"]
    [line] = lines
    assert line.split()[1:4] == ["cciaa", "protocol_number_conflict", reference]
    assert "RM/RI/2026/000001" in line and "RM/RI/2026/999999" in line
    assert run("--agency", "inps")[2:] == []
