"""The one timestamp spelling (domain.timestamps) and the receipt's words for each outcome."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from documents.receipt_pdf import receipt_lines
from domain.timestamps import agency_instant, epoch_rfc3339, rfc3339
from service.ports import DeliveryView, FilingView


def test_naive_store_values_are_utc_and_every_offset_becomes_z() -> None:
    """SQLite's naive UTC, PostgreSQL's aware UTC and a Rome time all read as the same instant."""
    naive = datetime(2026, 12, 5, 9, 12, 3, 120000)
    assert rfc3339(naive) == "2026-12-05T09:12:03.120000Z"
    assert rfc3339(naive.replace(tzinfo=timezone.utc)) == "2026-12-05T09:12:03.120000Z"
    assert rfc3339(datetime(2026, 12, 5, 10, 12, 3, tzinfo=timezone(timedelta(hours=1)))) == "2026-12-05T09:12:03Z"
    assert epoch_rfc3339(0) == "1970-01-01T00:00:00Z"


def test_an_agencys_protocol_date_without_offset_is_rome_time() -> None:
    """xs:dateTime without a zone from an Italian agency is civil time in Rome (CET in December,
    CEST in July); a bare date and unreadable text are kept as the agency wrote them."""
    assert agency_instant("2026-12-05T10:00:00") == "2026-12-05T09:00:00Z"
    assert agency_instant("2026-07-05T10:00:00") == "2026-07-05T08:00:00Z"
    assert agency_instant("2026-12-05T10:00:00+00:00") == "2026-12-05T10:00:00Z"
    assert agency_instant("2026-12-05") == "2026-12-05"
    assert agency_instant("ieri") == "ieri"
    assert agency_instant(None) is None


def _delivery(agency: str, state: str, protocol: str | None = None, outcome: str | None = None,
              code: str | None = None, text: str | None = None) -> DeliveryView:
    return DeliveryView(delivery_id=agency, agency=agency, operation="op", message_id=agency, state=state,
                        protocol_number=protocol, protocolled_at="2026-12-05T09:00:00Z" if protocol else None,
                        outcome_code=code, outcome_text=text, references={}, attempts=1, last_error=None,
                        next_attempt_at=None, updated_at=datetime.now(timezone.utc), outcome=outcome)


def test_the_receipt_says_each_outcome_in_words() -> None:
    """Accepted, rejected with code and reason, decision pending, undeliverable; dates in Rome time."""
    view = FilingView(reference="CRV-2026-000001", kind="business_start", portal="p", state="undeliverable",
                      created_at=datetime.now(timezone.utc), updated_at=datetime.now(timezone.utc), deliveries=[
                          _delivery("cciaa", "protocolled", "RI-1", "accepted"),
                          _delivery("inps", "protocolled", "INPS-2"),
                          _delivery("inail", "rejected", None, "rejected", "R100", "posizione non ammessa"),
                          _delivery("runts", "undeliverable")])
    lines = {line.agency: line for line in receipt_lines(view)}
    assert lines["Registro Imprese (CCIAA)"].outcome == "Accolta / Accepted"
    assert lines["Registro Imprese (CCIAA)"].protocolled_at == "05/12/2026 10:00:00 (UTC+01:00)"
    assert lines["INPS"].outcome.startswith("Protocollata, esito in attesa")
    assert lines["INAIL"].outcome == "Respinta / Rejected: R100 - posizione non ammessa"
    assert (lines["INAIL"].protocol_number, lines["INAIL"].protocolled_at) == ("-", "-")
    assert lines["RUNTS"].outcome == "Non recapitata / Undeliverable"
