"""The audit chain on SQLite and PostgreSQL: concurrent appends and the 0002 migration's backfill."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

from alembic import command
from sqlalchemy import func, select, text

from storage.audit import verify_audit_chain
from storage.engine import build_engine
from storage.migrate import alembic_config, upgrade_to_head
from storage.store import SqlStore
from storage.tables import audit_log


def test_concurrent_appends_form_one_unbroken_chain(database_url: str) -> None:
    """Eight threads appending at once: every line chained to the one before it, none forked."""
    engine = build_engine(database_url)
    upgrade_to_head(engine)
    store = SqlStore(engine)
    errors: list[BaseException] = []

    def append(worker: int) -> None:
        try:
            for n in range(25):
                store.audit(f"portal:w{worker}", "test_line", f"line-{n}", "ok", {"worker": worker, "n": n})
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors
        result = verify_audit_chain(engine)
        assert result.ok and result.checked == 200
        with engine.connect() as conn:
            distinct = conn.execute(select(func.count(func.distinct(audit_log.c.prev_hash)))).scalar_one()
        assert distinct == 200
    finally:
        engine.dispose()


def test_upgrading_to_0002_chains_the_lines_written_before(database_url: str) -> None:
    """Lines from before the chain existed get their hashes in the migration, in id order."""
    engine = build_engine(database_url)
    cfg = alembic_config()
    try:
        with engine.connect().execution_options(write=True) as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001")
            conn.commit()
        with engine.begin() as conn:
            for n in range(3):
                # Written as revision 0001 wrote them: no hashes.
                conn.execute(text("INSERT INTO audit_log (at, actor, action, subject, outcome, detail) "
                                  "VALUES (:at, 'portal:demo', 'filing_accepted', :s, 'accepted', :d)"),
                             {"at": datetime.now(timezone.utc), "s": f"CRV-2026-00000{n}",
                              "d": '{"recipients": ["inps"]}'})
        upgrade_to_head(engine)
        result = verify_audit_chain(engine)
        assert result.ok and result.checked == 3
        SqlStore(engine).audit("portal:demo", "filing_read", "CRV-2026-000001", "ok", {})
        assert verify_audit_chain(engine).checked == 4
    finally:
        engine.dispose()
