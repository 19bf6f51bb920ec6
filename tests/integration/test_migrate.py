"""Migration at start: a fresh database is brought to head; one already there is recognised by a
plain query, without loading alembic (issue 13: every process checks at start)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from alembic.script import ScriptDirectory

from storage.migrate import alembic_config, head_revision

ROOT = Path(__file__).resolve().parents[2]

#: Starts like a process of the hub: upgrade_to_head on the URL given, then reports the
#: revision it left and whether alembic had to be imported.
_START = """
import sys
from sqlalchemy import text
from storage.engine import build_engine
from storage.migrate import upgrade_to_head
engine = build_engine(sys.argv[1])
upgrade_to_head(engine)
with engine.connect() as conn:
    print(conn.execute(text("SELECT version_num FROM alembic_version")).scalar_one(), "alembic" in sys.modules)
"""


def _start(url: str) -> tuple[str, bool]:
    out = subprocess.run([sys.executable, "-c", _START, url], cwd=ROOT, check=True, capture_output=True, text=True)
    revision, loaded = out.stdout.split()
    return revision, loaded == "True"


def test_the_head_read_from_the_scripts_is_alembics_head() -> None:
    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_a_fresh_database_is_migrated_and_a_migrated_one_is_checked_without_alembic(database_url: str) -> None:
    assert _start(database_url) == (head_revision(), True)
    assert _start(database_url) == (head_revision(), False)


def test_the_whole_upgrade_is_one_transaction_so_no_process_sees_a_half_migrated_database(
        database_url: str) -> None:
    """SQLite included: alembic commits after every migration there by default, and a process
    starting beside the migrating one could take the write lock between two of them, find the
    schema half-way and run the next migration too ("table attachments already exists")."""
    from sqlalchemy import event

    from storage.engine import build_engine
    from storage.migrate import upgrade_to_head

    engine = build_engine(database_url)
    commits: list[int] = []
    event.listen(engine, "commit", lambda _conn: commits.append(1))
    try:
        upgrade_to_head(engine)
        assert len(commits) == 1
        with engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one() == head_revision()
    finally:
        engine.dispose()


def test_a_migrated_database_has_every_index_the_tables_declare_partial_ones_with_their_condition(
        database_url: str) -> None:
    """The queries are written against `storage.tables`' indexes: one declared there and missing
    from the migrations would leave a migrated database scanning where the code expects a probe
    (the notifier's claim, quadratic in its backlog without `ix_filing_events_open`). And it has
    no other: an index the tables no longer declare is one no query reads, and every write
    still pays for it (`ix_filing_events_pending`, dropped by 0014)."""
    from sqlalchemy import inspect

    import storage.attachment_tables  # noqa: F401 - each module registers its tables
    import storage.delivery_tables  # noqa: F401
    import storage.draft_tables  # noqa: F401
    import storage.identity_tables  # noqa: F401
    import storage.operator_tables  # noqa: F401
    from storage.engine import build_engine
    from storage.migrate import upgrade_to_head
    from storage.tables import metadata

    engine = build_engine(database_url)
    try:
        upgrade_to_head(engine)
        inspector = inspect(engine)
        for table in metadata.sorted_tables:
            migrated = {ix["name"]: ix for ix in inspector.get_indexes(table.name)}
            for index in table.indexes:
                assert index.name in migrated, f"{table.name}: {index.name} is declared but not migrated"
                assert migrated[index.name]["column_names"] == [c.name for c in index.columns], index.name
                declared_where = index.dialect_options[engine.dialect.name].get("where")
                if engine.dialect.name == "postgresql":
                    where = migrated[index.name].get("dialect_options", {}).get("postgresql_where")
                    assert (where is not None) == (declared_where is not None), index.name
            undeclared = {name for name in migrated if name and name.startswith("ix_")} - {
                index.name for index in table.indexes}
            assert not undeclared, f"{table.name}: {sorted(undeclared)} migrated but not declared"
        assert "ix_filing_events_open" in {ix["name"] for ix in inspector.get_indexes("filing_events")}
    finally:
        engine.dispose()
