"""Storage tells an outage from a bug, once, on a real SQLite file: a locked or unreadable
database is `StoreUnavailable`; a missing table or a broken constraint is not."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError, OperationalError

from service.ports import StoreUnavailable
from storage.engine import build_engine
from storage.errors import translate_outages


def _engine(path: Path):  # type: ignore[no-untyped-def]
    engine = build_engine(f"sqlite:///{path}")
    # The hub waits 30 s for a busy database; this test's lock is held on purpose.
    event.listen(engine, "connect", lambda conn, _record: conn.execute("PRAGMA busy_timeout=50"))
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    return engine


def test_a_locked_database_is_store_unavailable(tmp_path: Path) -> None:
    """Another process holds the write lock: the writer's failure is an outage, with a reason
    that names the driver's error and nothing of the statement."""
    engine = _engine(tmp_path / "db.sqlite")
    holder = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable) as caught, translate_outages():
            with engine.connect().execution_options(write=True) as conn, conn.begin():
                conn.execute(text("INSERT INTO t (id) VALUES (:id)"), {"id": 1})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        engine.dispose()
    assert "database is locked" in str(caught.value)
    assert "INSERT" not in str(caught.value)
    assert isinstance(caught.value.__cause__, OperationalError)


def test_a_missing_table_or_a_constraint_is_not_an_outage(tmp_path: Path) -> None:
    """A bug or bad data passes through unchanged: retrying it would never help."""
    engine = _engine(tmp_path / "db.sqlite")
    try:
        with pytest.raises(OperationalError), translate_outages(), engine.begin() as conn:
            conn.execute(text("SELECT * FROM no_such_table"))
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t (id) VALUES (1)"))
        with pytest.raises(IntegrityError), translate_outages(), engine.begin() as conn:
            conn.execute(text("INSERT INTO t (id) VALUES (1)"))
    finally:
        engine.dispose()
