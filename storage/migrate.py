"""Bring a database to the latest schema with Alembic (`alembic upgrade head`).

Every process calls `upgrade_to_head` at start, but a database is migrated once and read for
years: whether it is already at head is answered with one plain query against the head read from
the migration scripts' text, so alembic and mako (~10 MiB resident, issue 13) are imported only
when a migration actually runs.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = ["alembic_config", "at_head", "head_revision", "upgrade_to_head"]

_SCRIPTS = Path(__file__).resolve().parent / "alembic"
#: Key of the PostgreSQL advisory lock that serialises migrations ("crocevia" in ASCII).
_MIGRATION_LOCK = 0x63726F6365766961
_REVISION = re.compile(r"""^revision\s*(?::\s*str\s*)?=\s*['"]([^'"]+)['"]""", re.MULTILINE)
_DOWN_REVISION = re.compile(r"""^down_revision\s*(?::[^=]*)?=\s*(?:None|['"]([^'"]+)['"])""", re.MULTILINE)


def alembic_config(url: str | None = None) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


@cache
def head_revision() -> str | None:
    """The one revision no script names as its `down_revision`, read without importing alembic;
    None when the scripts do not read as one plain chain (then alembic decides)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for script in (_SCRIPTS / "versions").glob("*.py"):
        source = script.read_text(encoding="utf-8")
        revision, down = _REVISION.search(source), _DOWN_REVISION.search(source)
        if revision is None or down is None:
            return None
        revisions.add(revision.group(1))
        if down.group(1):
            parents.add(down.group(1))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def at_head(engine: Engine) -> bool:
    """Whether the database's recorded revision is the scripts' head (False on a fresh one)."""
    head = head_revision()
    if head is None:
        return False
    try:
        with engine.connect() as conn:
            recorded = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    except DBAPIError:  # no alembic_version table yet (or no database): the upgrade decides
        return False
    return recorded == [head]


def upgrade_to_head(engine: Engine) -> None:
    """Idempotent: a database already at head is left as it is.

    Processes that start together on an empty database (an API, a relay and workers) take
    turns: PostgreSQL through an advisory lock held until the migration commits, SQLite
    through the write lock its `BEGIN IMMEDIATE` takes. The later ones find it at head.
    """
    if at_head(engine):
        return
    from alembic import command

    cfg = alembic_config()
    with engine.connect().execution_options(write=True) as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()
