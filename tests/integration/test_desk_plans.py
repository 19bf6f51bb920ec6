"""The portals' search over 12,000 filings is served by indexes (0011), on PostgreSQL and SQLite.

The store is seeded in bulk with a realistic spread (three portals, sixty users, four kinds,
two years of filings, one to three recipients each, a fifth archived), its statistics gathered
with ANALYZE as autovacuum and `PRAGMA optimize` would; then every filter's query plan, and the
retention pass's, is read with EXPLAIN: no sequential scan of filings or deliveries on
PostgreSQL, no full SCAN of either table on SQLite. The planner is not steered
(no `enable_seqscan`): the indexes must win on cost.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, insert, text
from sqlalchemy.sql import Select

from service.desk import SETTLED_FILING_STATES, ArchiveFilter, DeskFilters, decode_desk_cursor, encode_desk_cursor
from storage.engine import build_engine
from storage.identity_tables import filing_viewers
from storage.migrate import upgrade_to_head
from storage.portal_desk import PortalDesk
from storage.retention import RetentionStore
from storage.tables import deliveries, filings

FILINGS = 12_000
PORTALS = ("test", "other", "third")
USERS = [f"USR{n:03d}XX80A01H501" [:16] for n in range(60)]
SUBJECTS = [f"{n:011d}" for n in range(10_000_000_000, 10_000_000_000 + 400)]
KINDS = {"business_start": ("cciaa", "inps", "inail"), "runts_registration": ("runts", "cciaa"),
         "durc_request": ("inps",), "responsibility_declaration": ("inps",)}
STATES = ["protocolled"] * 7 + ["partially_rejected", "rejected", "undeliverable", "in_progress", "partially_protocolled"]
START = datetime.now(timezone.utc) - timedelta(days=730)
#: The retention pass runs every hour: filings settled before the period (but its last day)
#: were purged by earlier passes, as in a hub that has been running for two years.
CUTOFF = datetime.now(timezone.utc) - timedelta(days=365)
USER = USERS[7]


def _seed(engine: Engine) -> dict[str, Any]:
    """12,000 filings with their recipients and readers, in bulk; what the queries will look for."""
    rng = random.Random(14)
    rows, recipients, readers = [], [], []
    for fid in range(1, FILINGS + 1):
        kind = rng.choice(list(KINDS))
        state = rng.choice(STATES)
        created = START + timedelta(minutes=fid * 87 + rng.randint(0, 60))
        user = rng.choice(USERS)
        purged = state in SETTLED_FILING_STATES and created + timedelta(days=1) < CUTOFF
        rows.append({"id": fid, "payload_purged_at": created + timedelta(days=365) if purged else None, "reference": f"CRV-2025-{fid:06d}", "kind": kind, "portal": rng.choice(PORTALS),
                     "state": state, "subject_tax_code": rng.choice(SUBJECTS), "subject_name": "Impresa Srl",
                     "declarant_tax_code": user, "declarant_role": "legal_representative",
                     "document": b"<filing/>", "digest": "0" * 64, "created_at": created,
                     "updated_at": created + timedelta(hours=2), "filed_by": user,
                     "archived_at": created + timedelta(days=30) if state in SETTLED_FILING_STATES and rng.random() < 0.2
                     else None})
        readers.append({"filing_id": fid, "tax_code": user})
        for n, agency in enumerate(KINDS[kind]):
            protocolled = state == "protocolled" or (state.startswith("partially") and n == 0)
            recipients.append({
                "id": f"D{fid:08d}{n}", "filing_id": fid, "agency": agency, "operation": "submit",
                "message_id": f"M{fid:08d}{n}", "state": "protocolled" if protocolled else "pending",
                "content": {"x": 1}, "protocol_number": f"{agency.upper()}-{fid:07d}" if protocolled else None,
                "attempts": 1, "rounds": 1, "created_at": created, "updated_at": created})
    with engine.begin() as conn:
        for table, batch in ((filings, rows), (deliveries, recipients), (filing_viewers, readers)):
            for start in range(0, len(batch), 2_000):
                conn.execute(insert(table), batch[start:start + 2_000])
        if conn.dialect.name == "postgresql":
            # Identity columns were given explicitly: move the sequence past them.
            conn.execute(text("SELECT setval(pg_get_serial_sequence('filings', 'id'), :n)"), {"n": FILINGS})
    mine = [r for r in rows if r["filed_by"] == USER and r["portal"] == "test"]
    assert len(mine) > 20
    middle = mine[len(mine) // 2]
    protocol = next(d["protocol_number"] for d in recipients if d["filing_id"] == middle["id"] and d["protocol_number"])
    return {"reference": middle["reference"], "subject": middle["subject_tax_code"], "protocol": protocol,
            "at": middle["created_at"], "id": middle["id"]}


@pytest.fixture
def seeded(database_url: str) -> Iterator[tuple[Engine, dict[str, Any]]]:
    engine = build_engine(database_url)
    try:
        upgrade_to_head(engine)
        found = _seed(engine)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for table in ("filings", "deliveries", "filing_viewers"):  # this schema's, not the whole server's
                conn.execute(text(f"ANALYZE {table}"))
        yield engine, found
    finally:
        engine.dispose()


def _plan(conn: Connection, statement: Select[Any]) -> list[str]:
    """The plan the database chooses for `statement`, with its real bound parameters."""
    prefix = "EXPLAIN QUERY PLAN " if conn.dialect.name == "sqlite" else "EXPLAIN "

    def explain(_conn: Any, _cursor: Any, sql: str, params: Any, _context: Any, _many: bool) -> tuple[str, Any]:
        return prefix + sql, params

    event.listen(conn, "before_cursor_execute", explain, retval=True)
    try:
        rows = conn.execute(statement).cursor.fetchall()
    finally:
        event.remove(conn, "before_cursor_execute", explain)
    return [str(r[-1]) if conn.dialect.name == "sqlite" else str(r[0]) for r in rows]


def _full_scans(dialect: str, plan: list[str]) -> list[str]:
    if dialect == "postgresql":
        return [line for line in plan if "Seq Scan on filings" in line or "Seq Scan on deliveries" in line]
    return [line for line in plan
            if line.strip().startswith(("SCAN filings", "SCAN deliveries")) and "USING" not in line]


def test_every_filter_is_served_by_an_index_over_12000_filings(seeded: tuple[Engine, dict[str, Any]]) -> None:
    """Each filter alone, the default list, the archive, a later page and the retention pass:
    no sequential (PostgreSQL) or full-table (SQLite) scan of filings or deliveries."""
    engine, found = seeded
    desk = PortalDesk(engine, engine.connect)
    at: datetime = found["at"]
    cases: dict[str, tuple[dict[str, Any], tuple[datetime, int] | None]] = {
        "default list": ({}, None),
        "reference": ({"reference": found["reference"]}, None),
        "subjectTaxCode": ({"subject_tax_code": found["subject"]}, None),
        "protocolNumber": ({"protocol_number": found["protocol"]}, None),
        "kind": ({"kind": "durc_request"}, None),
        "state": ({"state": "rejected"}, None),
        "agency": ({"agency": "runts"}, None),
        "from/to": ({"filed_from": at - timedelta(days=20), "filed_to": at + timedelta(days=20)}, None),
        "archived=true": ({"archived": ArchiveFilter.ARCHIVED}, None),
        "archived=any": ({"archived": ArchiveFilter.ANY}, None),
        "a later page": ({}, decode_desk_cursor(encode_desk_cursor(at, found["id"]))),
    }
    offending: dict[str, list[str]] = {}
    plans: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for name, (fields, after) in cases.items():
            statement = desk.statement(DeskFilters(portal="test", user=USER, **fields), 51, after)
            plans[name] = plan = _plan(conn, statement)
            if scans := _full_scans(engine.dialect.name, plan):
                offending[name] = scans
        retention = RetentionStore._due(CUTOFF, 200)
        plans["retention"] = plan = _plan(conn, retention)
        if scans := _full_scans(engine.dialect.name, plan):
            offending["retention"] = scans
        # The query itself answers, and the filter narrows to the seeded filing.
        page = desk.search(DeskFilters(portal="test", user=USER, protocol_number=found["protocol"]), 50)
        assert [i["reference"] for i in page.items] == [found["reference"]]
    assert not offending, "\n\n".join(f"{name}:\n" + "\n".join(plans[name]) for name in offending)
    # Every plan reads filings through an index (a search, a range or an ordered walk).
    for name, plan in plans.items():
        assert any("index" in line.lower() and "filings" in line for line in plan), (name, plan)
