"""Rows written through the driver (`storage.row_inserts`) read back as SQLAlchemy's INSERT and
UPDATE wrote them.

On PostgreSQL the intake's rows go as one array per column; what a reader sees must not
change: JSON values and their NULL rule, column defaults, a too-long value refused rather
than cut, database errors raised as SQLAlchemy's, audit lines numbered in chain order.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import JSON, BigInteger, Engine, Update, bindparam, event, func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from storage.audit import AuditLine, append_audit_lines, verify_audit_chain
from storage.engine import build_engine
from storage.migrate import upgrade_to_head
from storage.binds import values_in
from storage.pipelining import DriverStatement, pipelined
from storage.row_inserts import RowsInsert, RowsUpdate, by_driver
from storage.tables import audit_log, deliveries, filings, outbox

AT = datetime(2026, 5, 1, 12, 30, tzinfo=timezone.utc)


@pytest.fixture
def engine(migrated_engine: Engine) -> Engine:
    return migrated_engine


def _filing(n: int, **extra: Any) -> dict[str, Any]:
    return {"id": n, "reference": f"CRV-2026-{n:06d}", "kind": "durc_request", "portal": "portal",
            "state": "in_progress", "subject_tax_code": "01234567890", "subject_name": f"Acme {n}",
            "declarant_tax_code": "CMPNNA80E59D612B", "declarant_role": "legal_representative",
            "document": b"\x00<filing/>", "digest": f"{n:064x}", "idempotency_key": None,
            "request_digest": None, "created_at": AT, "updated_at": AT, "filed_by": None,
            "responsible_tax_code": None, "authorization": None, **extra}


def _delivery(n: int, filing_id: int, **extra: Any) -> dict[str, Any]:
    return {"id": f"d-{n}", "filing_id": filing_id, "agency": "inps", "operation": "durc",
            "message_id": f"m-{n}", "state": "pending", "content": {"n": n, "text": "è"}, "attempts": 0,
            "rounds": 0, "polls": 0, "created_at": AT, "updated_at": AT, "depends_on": None,
            "on_reject": None, "handoff": None, "contract_version": "v1", **extra}


def test_rows_read_back_as_sqlalchemy_insert_wrote_them(engine: Engine) -> None:
    """Same values, JSON `None` stored as SQLAlchemy stores it, the `forced` default filled in."""
    with engine.begin() as conn:
        conn.execute(insert(filings), [_filing(1)])
        RowsInsert(filings)(conn, [_filing(2), _filing(3, authorization={"inps": "self"})])
        conn.execute(insert(deliveries), [_delivery(1, 1)])
        RowsInsert(deliveries)(conn, [_delivery(2, 2), _delivery(3, 3, handoff=[{"path": "a"}], depends_on="inps")])
        RowsInsert(outbox)(conn, [{"delivery_id": "d-2", "agency": "inps", "available_at": 1.5, "claims": 0,
                                   "created_at": 1.5}])
    with engine.connect() as conn:
        got = {r.id: r for r in conn.execute(select(filings))}
        sent = {r.id: r for r in conn.execute(select(deliveries))}
        # Whether a JSON None is SQL NULL or JSON null: SQLAlchemy's rule, row by row.
        null_handoff = {r.id: r.is_null for r in conn.execute(
            select(deliveries.c.id, deliveries.c.handoff.is_(None).label("is_null")))}
        job = conn.execute(select(outbox)).one()
    # Every column as the other filing's, but for what differs between the two rows.
    differs = {k: v for k, v in _filing(2).items() if v != _filing(1)[k]}
    assert got[2]._mapping == {**got[1]._mapping, **differs}  # noqa: SLF001 - Row's mapping view
    assert got[2].document == b"\x00<filing/>"
    assert got[3].authorization == {"inps": "self"}
    assert sent["d-2"].content == {"n": 2, "text": "è"} and sent["d-2"].handoff is None
    assert sent["d-3"].handoff == [{"path": "a"}] and sent["d-3"].depends_on == "inps"
    assert null_handoff["d-2"] == null_handoff["d-1"]
    assert job.forced is False and job.available_at == 1.5 and job.published_at is None


def test_a_value_too_long_for_its_column_is_refused_not_cut(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite does not bound VARCHAR")
    engine = build_engine(database_url)
    upgrade_to_head(engine)
    try:
        with pytest.raises(DBAPIError), engine.begin() as conn:
            RowsInsert(filings)(conn, [_filing(1, subject_tax_code="X" * 17)])
        with engine.connect() as conn:
            assert conn.execute(select(filings.c.id)).all() == []
    finally:
        engine.dispose()


def test_a_duplicate_raises_sqlalchemys_integrity_error_in_and_out_of_a_pipeline(engine: Engine) -> None:
    with engine.begin() as conn:
        RowsInsert(filings)(conn, [_filing(1)])
    with pytest.raises(IntegrityError), engine.begin() as conn:
        RowsInsert(filings)(conn, [_filing(1)])
    with pytest.raises(IntegrityError), engine.begin() as conn, pipelined(conn):
        RowsInsert(filings)(conn, [_filing(2), _filing(1)])
    with engine.connect() as conn:
        assert [r.id for r in conn.execute(select(filings.c.id))] == [1]


def test_audit_lines_appended_together_are_numbered_in_chain_order(engine: Engine) -> None:
    lines = [AuditLine(at=AT, actor=f"portal:p{i}", action="filing_accepted", subject=f"CRV-{i}",
                       outcome="accepted", detail={"i": i, "recipients": ["inps"]}) for i in range(40)]
    with engine.begin() as conn:
        hashes = append_audit_lines(conn, lines[:1])
    with engine.begin() as conn:
        hashes += append_audit_lines(conn, lines[1:])
    with engine.connect() as conn:
        stored = [(r.subject, r.hash) for r in conn.execute(select(audit_log).order_by(audit_log.c.id))]
    assert stored == [(f"CRV-{i}", h) for i, h in enumerate(hashes)]
    assert verify_audit_chain(engine).ok


#: An UPDATE as the completions run one per row: JSON None written as SQL NULL, `content` kept
#: where its parameter is NULL (it was not read).
_UPDATE: Update = update(deliveries).where(deliveries.c.id == bindparam("b_id")).values(
    state=bindparam("b_state"),
    references=bindparam("b_references", type_=JSON(none_as_null=True)),
    content=func.coalesce(bindparam("b_content", type_=JSON(none_as_null=True)), deliveries.c.content),
    updated_at=bindparam("b_updated_at", type_=deliveries.c.updated_at.type),
    attempts=bindparam("b_attempts"),
)
_KEYS = {"b_id": "id", "b_state": "state", "b_references": "references", "b_content": "content",
         "b_updated_at": "updated_at", "b_attempts": "attempts"}
LATER = datetime(2026, 5, 2, 8, 0, tzinfo=timezone.utc)


def _changes(n: int) -> list[dict[str, Any]]:
    """For deliveries `d-n` and `d-(n+1)`: one numbered (its content not read: kept), one
    written back without references (SQL NULL) and with a new content."""
    return [{"id": f"d-{n}", "state": "protocolled", "references": {"numeroREA": "è1"}, "content": None,
             "updated_at": LATER, "attempts": 2},
            {"id": f"d-{n + 1}", "state": "retrying", "references": None, "content": {"new": n},
             "updated_at": LATER, "attempts": 1}]


def test_rows_updated_read_back_as_sqlalchemys_update_wrote_them(engine: Engine) -> None:
    """Same values as SQLAlchemy's executemany writes, JSON None as SQL NULL, an unread content
    kept, the rows not named untouched."""
    with engine.begin() as conn:
        conn.execute(insert(filings), [_filing(1)])
        conn.execute(insert(deliveries), [_delivery(n, 1, references={"old": n}) for n in range(1, 6)])
        conn.execute(_UPDATE, [{name: row[key] for name, key in _KEYS.items()} for row in _changes(1)])
        RowsUpdate(_UPDATE, _KEYS)(conn, _changes(3))
    with engine.connect() as conn:
        got = {r.id: r._mapping for r in conn.execute(select(deliveries))}  # noqa: SLF001 - Row's mapping view
        null_references = {r.id for r in conn.execute(select(deliveries.c.id).where(deliveries.c.references.is_(None)))}
    for ours, theirs in (("d-3", "d-1"), ("d-4", "d-2")):
        differs = {"id", "message_id", "content"}
        assert {k: v for k, v in got[ours].items() if k not in differs} == \
            {k: v for k, v in got[theirs].items() if k not in differs}
    assert got["d-3"]["state"] == "protocolled" and got["d-3"]["references"] == {"numeroREA": "è1"}
    assert got["d-3"]["content"] == {"n": 3, "text": "è"}  # not read: kept
    assert got["d-4"]["content"] == {"new": 3} and got["d-4"]["attempts"] == 1
    assert got["d-4"]["updated_at"] == LATER or got["d-4"]["updated_at"] == LATER.replace(tzinfo=None)
    assert null_references == {"d-2", "d-4"}
    assert got["d-5"]["state"] == "pending" and got["d-5"]["references"] == {"old": 5}


def test_an_update_refused_raises_sqlalchemys_integrity_error_in_and_out_of_a_pipeline(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(insert(filings), [_filing(1)])
        conn.execute(insert(deliveries), [_delivery(n, 1) for n in range(1, 3)])
    refused = [*_changes(1)]
    refused[1] = {**refused[1], "state": None}  # NOT NULL
    with pytest.raises(IntegrityError), engine.begin() as conn:
        RowsUpdate(_UPDATE, _KEYS)(conn, refused)
    with pytest.raises(IntegrityError), engine.begin() as conn, pipelined(conn):
        RowsUpdate(_UPDATE, _KEYS)(conn, refused)
    with engine.connect() as conn:
        assert conn.execute(select(deliveries.c.state)).scalars().all() == ["pending", "pending"]


def test_rows_sent_to_the_driver_are_seen_by_the_engines_statement_listeners(engine: Engine) -> None:
    """What counts or logs the statements (a `before_cursor_execute` listener) sees every write."""
    seen: list[str] = []

    def listen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(" ".join(statement.split()[:2]))

    with engine.begin() as conn:
        conn.execute(insert(filings), [_filing(1)])
        conn.execute(insert(deliveries), [_delivery(n, 1) for n in range(1, 3)])
        event.listen(engine, "before_cursor_execute", listen)
        try:
            RowsInsert(outbox)(conn, [{"delivery_id": "d-1", "agency": "inps", "available_at": 1.5, "claims": 0,
                                       "created_at": 1.5}])
            RowsUpdate(_UPDATE, _KEYS)(conn, _changes(1))
        finally:
            event.remove(engine, "before_cursor_execute", listen)
    assert seen == ["INSERT INTO", "UPDATE deliveries"]


def test_a_statement_sent_by_the_driver_in_a_pipeline_reads_what_sqlalchemy_reads(engine: Engine) -> None:
    """`DriverStatement` (PostgreSQL): a SELECT with an array of ids, a timestamp and a literal,
    and an UPDATE … RETURNING that writes a JSON value as its type does, both riding one
    pipeline with the transaction's BEGIN, give SQLAlchemy's rows, and the UPDATE is made."""
    if not by_driver(engine.dialect):
        pytest.skip("only PostgreSQL through psycopg sends statements by the driver")
    with engine.begin() as conn:
        RowsInsert(filings)(conn, [_filing(n, authorization={"inps": f"self-{n}"}) for n in (1, 2, 3)])
    chosen = (select(filings.c.id, filings.c.reference, filings.c.state)
              .where(values_in(filings.c.id, "ids", BigInteger, True),
                     filings.c.created_at == bindparam("at", type_=filings.c.created_at.type),
                     filings.c.kind == "durc_request")
              .order_by(filings.c.id))
    moved = (update(filings).where(filings.c.id == bindparam("b_id"))
             .values(state=bindparam("b_state"), authorization=bindparam("b_auth", type_=filings.c.authorization.type))
             .returning(filings.c.id, filings.c.state))
    params = {"ids": [1, 3, 9], "at": AT}
    with engine.connect() as conn:
        expected = [tuple(r) for r in conn.execute(chosen, params)]
    with engine.begin() as conn:
        with pipelined(conn):
            selected = DriverStatement(chosen).send(conn, params)
            updated = DriverStatement(moved).send(conn, {"b_id": 3, "b_state": "protocolled", "b_auth": {"inps": "è"}})
        assert selected.fetchall() == expected == [(1, "CRV-2026-000001", "in_progress"),
                                                   (3, "CRV-2026-000003", "in_progress")]
        assert updated.fetchall() == [(3, "protocolled")]
    with engine.connect() as conn:
        row = conn.execute(select(filings.c.state, filings.c.authorization).where(filings.c.id == 3)).one()
    assert tuple(row) == ("protocolled", {"inps": "è"})
