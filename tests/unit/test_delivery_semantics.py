"""The pure parts of the delivery semantics: circuit, maintenance windows, settling late
outcomes and deferrals, aggregation, hand-off mapping and route checks, callback signatures."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from lxml import etree

from adapters.webhook import sign_body, verify_signature
from domain.errors import AgencyRejected, AgencyUnreachable, DeliveryError
from domain.messages import Receipt
from domain.states import DeliveryState as D
from domain.states import FilingState as F
from routing.aggregate import aggregate_filing_state
from routing.mapping import MappingError, compile_field_map
from routing.plan import fill_handoffs
from routing.routes import load_route_table
from service.circuit import CircuitBreaker, CircuitState
from service.delivery_port import DeliveryResult, TryRecord
from service.maintenance import MaintenanceCalendar, MaintenanceWindow, parse_days
from service.ports import ClaimedJob
from service.schedule import LateOutcomePolicy, SchedulePolicy
from service.settle import defer, settle

ROME = ZoneInfo("Europe/Rome")


# -- circuit breaker ----------------------------------------------------------------------------


def test_the_circuit_opens_after_consecutive_transient_failures() -> None:
    """N failures in a row open it; an answer in between resets the count."""
    breaker = CircuitBreaker(failure_threshold=3, cool_down=10)
    breaker.record([False, False, True, False], now=0)
    assert breaker.state is CircuitState.CLOSED and breaker.failures == 1
    assert breaker.record([False, False], now=1)
    assert breaker.state is CircuitState.OPEN and breaker.open_until == 11
    admission = breaker.admit(5)
    assert not admission.allowed and admission.retry_at == 11


def test_after_the_cool_down_a_single_probe_decides() -> None:
    """Half-open lets exactly one pass through; its failure reopens, its answer closes."""
    breaker = CircuitBreaker(failure_threshold=1, cool_down=10, probe_wait=0.5)
    breaker.record([False], now=0)
    probe = breaker.admit(10)
    assert probe.allowed and probe.probe and breaker.state is CircuitState.HALF_OPEN
    other = breaker.admit(10.1)
    assert not other.allowed and other.retry_at == pytest.approx(10.6)
    breaker.record([False], now=11, probe=True)
    assert breaker.state is CircuitState.OPEN and breaker.open_until == 21
    assert breaker.admit(21).probe
    breaker.record([True], now=22, probe=True)
    assert breaker.state is CircuitState.CLOSED and breaker.admit(22).allowed


def test_retry_after_pauses_every_call_to_the_agency() -> None:
    """Throttled: no admission before the agency's time, whatever the circuit says."""
    breaker = CircuitBreaker()
    breaker.throttle(30)
    assert not breaker.admit(29).allowed and breaker.admit(29).retry_at == 30
    assert breaker.admit(30).allowed


# -- maintenance windows ----------------------------------------------------------------------------


def _epoch(*args: int) -> float:
    return datetime(*args, tzinfo=ROME).timestamp()


def test_days_parse_names_ranges_and_wraps() -> None:
    """mon-fri, sat,sun, fri-mon (wrapping) and * all read as weekday sets."""
    assert parse_days("mon-fri") == {0, 1, 2, 3, 4}
    assert parse_days("sat,sun") == {5, 6}
    assert parse_days("fri-mon") == {4, 5, 6, 0}
    assert parse_days("*") == set(range(7))
    with pytest.raises(ValueError):
        parse_days("funday")


def test_a_job_due_inside_a_window_resumes_at_its_end() -> None:
    """Sunday 02:00-04:00 Rome: 02:30 resumes at 04:00; 04:00 itself is outside."""
    window = MaintenanceWindow.parse("sun", "02:00", "04:00", "Europe/Rome")
    calendar = MaintenanceCalendar([window])
    assert calendar.resume_at(_epoch(2026, 11, 29, 2, 30)) == _epoch(2026, 11, 29, 4, 0)
    assert calendar.resume_at(_epoch(2026, 11, 29, 4, 0)) is None
    assert calendar.resume_at(_epoch(2026, 11, 28, 2, 30)) is None  # a Saturday


def test_a_window_across_midnight_and_chained_windows() -> None:
    """23:00-01:00 covers the small hours of the next day; adjacent windows chain."""
    night = MaintenanceWindow.parse("sat", "23:00", "01:00")
    early = MaintenanceWindow.parse("sun", "01:00", "02:00")
    calendar = MaintenanceCalendar([night, early])
    assert calendar.resume_at(_epoch(2026, 11, 29, 0, 30)) == _epoch(2026, 11, 29, 2, 0)


# -- settling ------------------------------------------------------------------------------------------


def _Result(receipt: Receipt | None, error: DeliveryError | None = None) -> DeliveryResult:
    return DeliveryResult(receipt, error, [TryRecord(1, datetime.now(timezone.utc), 1.0, error)])


def _job(state: str = "pending", *, polls: int = 0, acked_ago: float | None = None, poll_url: str | None = None,
         age: float = 0.0) -> ClaimedJob:
    now = datetime.now(timezone.utc)
    return ClaimedJob(1, "d" * 32, 1, "CRV-2026-000001", "inps", "RichiestaDurc", "m" * 32, state, {}, 0,
                      now - timedelta(seconds=age), correlation_id="c1", poll_url=poll_url, polls=polls,
                      acknowledged_at=None if acked_ago is None else now - timedelta(seconds=acked_ago))


def test_an_acknowledgment_waits_for_the_late_outcome() -> None:
    """202 with Location: acknowledged, next poll soon; without: a callback check much later."""
    now = datetime.now(timezone.utc).timestamp()
    late = LateOutcomePolicy(poll_initial=1, poll_max=8, callback_timeout=60)
    pull = settle(_job(), _Result(Receipt.acknowledgment(correlation_id="c9", poll_url="http://a/esiti/c9")),
                  SchedulePolicy(), owner="w", now=now, late=late)
    assert (pull.new_state, pull.poll_url, pull.correlation_id) == ("acknowledged", "http://a/esiti/c9", "c9")
    assert pull.next_attempt_at == pytest.approx(now + 1) and not pull.polled
    push = settle(_job(), _Result(Receipt.acknowledgment(correlation_id="c9")), SchedulePolicy(), owner="w",
                  now=now, late=late)
    assert push.next_attempt_at == pytest.approx(now + 60)


def test_polls_back_off_and_do_not_count_as_attempts() -> None:
    """A pending poll doubles the wait up to the cap and records no attempt; a result protocols."""
    now = datetime.now(timezone.utc).timestamp()
    late = LateOutcomePolicy(poll_initial=1, poll_max=8)
    job = _job("acknowledged", polls=5, acked_ago=10, poll_url="http://a/esiti/c1")
    pending = settle(job, _Result(Receipt.acknowledgment(poll_url="http://a/esiti/c1")), SchedulePolicy(),
                     owner="w", now=now, late=late, poll=True)
    assert pending.polled and pending.attempts == [] and pending.next_attempt_at == pytest.approx(now + 8)
    done = settle(job, _Result(Receipt("INPS.0001.2026.0000001", outcome="ACCOLTA")), SchedulePolicy(),
                  owner="w", now=now, late=late, poll=True)
    assert (done.new_state, done.outcome, done.attempts) == ("protocolled", "accepted", [])


def test_no_outcome_within_the_bound_parks_the_delivery() -> None:
    """Acknowledged for longer than max_wait: undeliverable, for operations to look at."""
    now = datetime.now(timezone.utc).timestamp()
    job = _job("acknowledged", acked_ago=100, poll_url="http://a/esiti/c1")
    c = settle(job, _Result(Receipt.acknowledgment(poll_url="http://a/esiti/c1")), SchedulePolicy(), owner="w",
               now=now, late=LateOutcomePolicy(max_wait_seconds=50), poll=True)
    assert c.new_state == "undeliverable" and c.outcome_code == "NO_OUTCOME"


def test_a_receipt_that_says_respinta_rejects_after_the_protocol() -> None:
    """The protocol number is kept; the decision and its reason are recorded."""
    receipt = Receipt("INAIL/2026/00000001", outcome="RESPINTA", outcome_code="R042", outcome_text="esiste")
    c = settle(_job(), _Result(receipt), SchedulePolicy(), owner="w", now=0)
    assert (c.new_state, c.protocol_number, c.outcome, c.outcome_code) == (
        "rejected", "INAIL/2026/00000001", "rejected", "R042")


def test_a_sync_rejection_records_the_decision() -> None:
    """AgencyRejected: rejected with outcome `rejected`."""
    c = settle(_job(), _Result(None, AgencyRejected("no", code="R001")), SchedulePolicy(), owner="w", now=0)
    assert (c.new_state, c.outcome) == ("rejected", "rejected")


def test_a_failed_poll_stays_acknowledged() -> None:
    """The agency has the message: a transient failure while polling does not make it retrying."""
    now = datetime.now(timezone.utc).timestamp()
    c = settle(_job("acknowledged", acked_ago=1, poll_url="http://a"), _Result(None, AgencyUnreachable("503")),
               SchedulePolicy(), owner="w", now=now, poll=True)
    assert c.new_state == "acknowledged" and c.next_attempt_at > now and not c.polled


def test_a_deferral_counts_no_pass_until_the_age_bound() -> None:
    """Circuit open: the job moves, nothing else; past max_age the delivery is undeliverable."""
    now = datetime.now(timezone.utc).timestamp()
    c = defer(_job("retrying"), now + 30, "circuit open", SchedulePolicy(), owner="w", now=now)
    assert c.deferred and c.new_state == "retrying" and c.next_attempt_at == now + 30 and c.attempts == []
    old = defer(_job("retrying", age=100), now + 30, "circuit open", SchedulePolicy(max_age_seconds=50),
                owner="w", now=now)
    assert old.new_state == "undeliverable" and not old.deferred


# -- aggregation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("states", "expected"),
    [
        ([D.PENDING, D.WAITING, D.WAITING], F.IN_PROGRESS),
        ([D.PROTOCOLLED, D.ACKNOWLEDGED], F.PARTIALLY_PROTOCOLLED),
        ([D.REJECTED, D.HELD, D.HELD], F.REJECTED),
        ([D.REJECTED, D.CANCELLED], F.REJECTED),
        ([D.UNDELIVERABLE, D.HELD], F.UNDELIVERABLE),
        ([D.PROTOCOLLED, D.CANCELLED], F.PARTIALLY_REJECTED),
    ],
)
def test_new_delivery_states_aggregate(states: list[D], expected: F) -> None:
    """Waiting and acknowledged are open; held and cancelled are settled, not protocolled."""
    assert aggregate_filing_state(states) is expected


# -- hand-off mapping and route checks ------------------------------------------------------------------


def test_from_recipient_fields_are_left_out_then_filled() -> None:
    """At planning the field is absent; at release it takes the predecessor's reference."""
    field_map = compile_field_map({"name": "f:name", "nested": {"rea": {"from_recipient": "cciaa",
                                                                        "reference": "numeroREA"}}})
    root = etree.fromstring(b"<f:filing xmlns:f='urn:crocevia:filing:v1'><f:name>X</f:name></f:filing>")
    assert field_map.apply(root) == {"name": "X"}
    [handoff] = field_map.handoffs()
    content, missing = fill_handoffs({"name": "X"}, [handoff.to_json()], {"numeroREA": "RM-0000001"})
    assert content == {"name": "X", "nested": {"rea": "RM-0000001"}} and missing == []
    assert fill_handoffs({"name": "X"}, [handoff.to_json()], {}) == ({"name": "X"}, ["numeroREA"])


def test_from_recipient_needs_an_agency_and_a_reference() -> None:
    with pytest.raises(MappingError):
        compile_field_map({"rea": {"from_recipient": "cciaa"}})


def _routes(tmp_path: Path, body: str) -> Path:
    (tmp_path / "m.toml").write_text('[fields]\nname = "f:subject/f:name"\n'
                                     'rea = { from_recipient = "cciaa", reference = "numeroREA" }\n')
    (tmp_path / "plain.toml").write_text('[fields]\nname = "f:subject/f:name"\n')
    path = tmp_path / "routes.toml"
    path.write_text(body)
    return path


def test_a_hand_off_without_waiting_for_its_source_is_refused(tmp_path: Path) -> None:
    """from_recipient names an agency the route does not wait for: refused at load."""
    path = _routes(tmp_path, '[[route]]\nkind="k"\nagency="cciaa"\noperation="A"\nmapping="plain"\n'
                             '[[route]]\nkind="k"\nagency="inps"\noperation="B"\nmapping="m"\n')
    with pytest.raises(MappingError, match="needs after"):
        load_route_table(path, tmp_path)


def test_ordering_cycles_and_bad_policies_are_refused(tmp_path: Path) -> None:
    path = _routes(tmp_path, '[[route]]\nkind="k"\nagency="cciaa"\noperation="A"\nmapping="plain"\nafter="inps"\n'
                             '[[route]]\nkind="k"\nagency="inps"\noperation="B"\nmapping="plain"\nafter="cciaa"\n')
    with pytest.raises(MappingError, match="cycle"):
        load_route_table(path, tmp_path)
    path = _routes(tmp_path, '[[route]]\nkind="k"\nagency="cciaa"\noperation="A"\nmapping="plain"\n'
                             '[[route]]\nkind="k"\nagency="inps"\noperation="B"\nmapping="m"\nafter="cciaa"\n'
                             'on_reject="ignore"\n')
    with pytest.raises(MappingError, match="on_reject"):
        load_route_table(path, tmp_path)


# -- callback signatures ------------------------------------------------------------------------------


def test_a_signature_verifies_only_for_its_body_secret_and_time() -> None:
    """The portal's check: same secret and body, not older than the tolerance."""
    header = sign_body(b"secret", b'{"id":"e1"}', 1_000_000)
    assert verify_signature(b"secret", header, b'{"id":"e1"}', now=1_000_010)
    assert not verify_signature(b"other", header, b'{"id":"e1"}', now=1_000_010)
    assert not verify_signature(b"secret", header, b'{"id":"e2"}', now=1_000_010)
    assert not verify_signature(b"secret", header, b'{"id":"e1"}', now=1_001_000)
    assert not verify_signature(b"secret", None, b"", now=0)
