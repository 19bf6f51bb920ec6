"""The operator API's queries on SQLite and PostgreSQL: the common search filters and the
summary use an index (0008), never a full scan of deliveries; cursors are opaque and checked."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import Engine, text

from service.ops_read import CursorInvalid, SearchFilters, decode_cursor, encode_cursor
from storage.ops_queries import OpsQueries

#: The filters an operator uses most; each must be answered from an index.
_COMMON = {
    "reference": SearchFilters(reference="CRV-2026-000001"),
    "state": SearchFilters(state="retrying"),
    "state and agency": SearchFilters(state="undeliverable", agency="runts"),
    "agency": SearchFilters(agency="inps"),
    "protocol number": SearchFilters(protocol_number="INPS.0001.2026.0000001"),
    "message id": SearchFilters(message_id="0" * 32),
    "subject": SearchFilters(subject_tax_code="RSSMRA80A01H501U"),
}


@pytest.fixture
def engine(migrated_engine: Engine) -> Engine:
    return migrated_engine


def _plan(engine: Engine, statement: object) -> str:
    """EXPLAIN of `statement` with its values sent as parameters, as the store sends them (some,
    such as infinity, cannot be written as SQL literals)."""
    compiled = statement.compile(engine, compile_kwargs={"render_postcompile": True})  # type: ignore[attr-defined]
    positions = compiled.positiontup
    params = tuple(compiled.params[name] for name in positions) if positions else compiled.params
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            # An empty table is cheapest to scan: forbid it, so a scan shows that no index fits.
            conn.execute(text("SET enable_seqscan = off"))
            return "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + str(compiled), params))
        return "\n".join(r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + str(compiled), params))


def _full_scan_of_deliveries(plan: str) -> bool:
    """SQLite: any SCAN of deliveries (even in an index's order) reads them all. PostgreSQL: a
    sequential scan, or an index scan with no condition (walking an index for its order)."""
    lines = [line.strip() for line in plan.splitlines()]
    for i, line in enumerate(lines):
        if line.startswith("SCAN deliveries") or "Seq Scan on deliveries" in line:
            return True
        if "Index Scan" in line and " on deliveries" in line and "Bitmap" not in line:
            condition = next((n for n in lines[i + 1:] if not n.startswith("Sort")), "")
            if not condition.startswith("Index Cond"):
                return True
    return False


@pytest.mark.parametrize("name", sorted(_COMMON))
def test_common_search_filters_use_an_index(engine: Engine, name: str) -> None:
    """EXPLAIN of one search page shows no full scan of deliveries."""
    query = OpsQueries(engine)._search_query(_COMMON[name]).limit(51)
    plan = _plan(engine, query)
    assert not _full_scan_of_deliveries(plan), plan


def test_the_summary_counts_use_an_index(engine: Engine) -> None:
    """The per-state counts read the (state, agency) index, not every delivery."""
    from sqlalchemy import func, select

    from storage.tables import deliveries

    query = (select(deliveries.c.agency, deliveries.c.state, func.count())
             .where(deliveries.c.state.in_(["pending", "retrying"])).group_by(deliveries.c.agency, deliveries.c.state))
    plan = _plan(engine, query)
    assert not _full_scan_of_deliveries(plan), plan


def test_the_notifiers_backlog_gauge_reads_the_undelivered_events_index(engine: Engine) -> None:
    """The per-portal count of events waiting to be pushed reads an index of undelivered events
    only (`ix_filing_events_due`, or on an empty table `ix_filing_events_open`), not every event
    ever written: 0014 dropped the index that held them all, which no other query read."""
    from storage.ops_metrics import waiting_events

    plan = _plan(engine, waiting_events(["test", "other"]))
    assert "ix_filing_events_due" in plan or "ix_filing_events_open" in plan, plan
    assert "Seq Scan on filing_events" not in plan and "SCAN filing_events" not in plan.replace(
        "SCAN filing_events USING", ""), plan


def test_an_empty_store_reads_empty(engine: Engine) -> None:
    """No filing yet: every agency has a zero line, search and problems are empty."""
    ops = OpsQueries(engine, ("inps", "runts"))
    now = datetime.now(timezone.utc)
    lines = ops.agency_summaries(now)
    assert [line["agency"] for line in lines] == ["inps", "runts"]
    assert lines[0]["counts"]["pending"] == 0 and lines[0]["lastHour"]["successRatio"] is None
    assert ops.search(SearchFilters(), 10).rows == [] and ops.problems() == []
    assert ops.filing_detail("CRV-2026-000001") is None


@pytest.mark.parametrize("cursor", ["", "abc", encode_cursor(1, "x")[:-2] + "!!", "W10", "WyJ4IiwgMV0"])
def test_a_cursor_not_handed_out_is_refused(cursor: str) -> None:
    """Garbage, a truncated cursor, or one of the wrong shape is CursorInvalid."""
    with pytest.raises(CursorInvalid):
        decode_cursor(cursor)
    assert decode_cursor(encode_cursor(42, "d" * 32)) == (42, "d" * 32)
