"""Recording an outcome reads only the rows it concerns, however many deliveries an agency has.

Every outcome batch reads its filings' deliveries together with the deliveries that already hold
the protocol numbers the agencies just gave (the duplicate-number check). On PostgreSQL that
lookup was planned on the agency alone: with a young table's statistics (a new hub, or a
benchmark's fresh schema, before autovacuum's first ANALYZE) the planner took an index that
starts with `agency` and filtered the numbers, reading every delivery of the agency at every
batch: 1.8 million rows for 3,500 deliveries in `bench/rabbitmq_e2e.py`, a third of
PostgreSQL's CPU. The plan is read with EXPLAIN ANALYZE on the table as a new hub has it (no
ANALYZE); the planner is not steered.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, insert

from storage.delivery_ops import _deliveries_read
from storage.tables import deliveries, filings

FILINGS = 3_000


def _seed(engine: Engine) -> None:
    """`FILINGS` filings, each with one INPS delivery that holds its protocol number."""
    now = datetime.now(timezone.utc)
    rows = [{"id": fid, "reference": f"CRV-2026-{fid:06d}", "kind": "durc_request", "portal": "test",
             "state": "protocolled", "subject_tax_code": "12345678903", "subject_name": "Impresa Srl",
             "declarant_tax_code": "RSSMRA80A01H501U", "declarant_role": "legal_representative",
             "document": b"<filing/>", "digest": "0" * 64, "created_at": now, "updated_at": now}
            for fid in range(1, FILINGS + 1)]
    recipients = [{"id": f"D{fid:08d}", "filing_id": fid, "agency": "inps", "operation": "submit",
                   "message_id": f"M{fid:08d}", "state": "protocolled", "content": {"x": 1},
                   "protocol_number": f"INPS-{fid:07d}", "attempts": 1, "rounds": 1,
                   "created_at": now, "updated_at": now}
                  for fid in range(1, FILINGS + 1)]
    with engine.begin() as conn:
        conn.execute(insert(filings), rows)
        conn.execute(insert(deliveries), recipients)


@pytest.fixture
def young_engine(migrated_engine: Engine) -> Iterator[Engine]:
    _seed(migrated_engine)
    yield migrated_engine


def _rows_read(plan: dict[str, Any], table: str) -> int:
    """Rows the plan's scans of `table` returned or filtered out, over all their loops."""
    read = 0
    if plan.get("Relation Name") == table:
        per_loop = plan["Actual Rows"] + plan.get("Rows Removed by Filter", 0) + plan.get("Rows Removed by Index Recheck", 0)
        read += per_loop * plan["Actual Loops"]
    return read + sum(_rows_read(child, table) for child in plan.get("Plans", []))


def _explained(conn: Connection) -> list[dict[str, Any]]:
    """Turn every statement `conn` runs into its EXPLAIN ANALYZE; the plans are collected."""
    plans: list[dict[str, Any]] = []

    def explain(_conn: Any, _cursor: Any, sql: str, params: Any, _context: Any, _many: bool) -> tuple[str, Any]:
        return "EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params

    def collect(_conn: Any, cursor: Any, *_: Any) -> None:
        [[document]] = cursor.fetchall()
        plans.append((json.loads(document) if isinstance(document, str) else document)[0]["Plan"])

    event.listen(conn, "before_cursor_execute", explain, retval=True)
    event.listen(conn, "after_cursor_execute", collect)
    return plans


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_the_number_holders_are_looked_up_by_number_not_read_per_agency(young_engine: Engine) -> None:
    """An outcome batch for one filing, whose agency gave a number another delivery holds and
    one nobody holds, reads a handful of deliveries, not the agency's 3,000."""
    with young_engine.connect() as conn, conn.begin():
        plans = _explained(conn)
        conn.execute(*_deliveries_read(conn, [FILINGS], [("inps", "INPS-0001500"), ("inps", "INPS-9999999")]))
    [plan] = plans
    assert _rows_read(plan, "deliveries") <= 10, json.dumps(plan, indent=1)
