"""Bring a database to the latest schema with Alembic (`alembic upgrade head`)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

__all__ = ["alembic_config", "upgrade_to_head"]

_SCRIPTS = Path(__file__).resolve().parent / "alembic"
#: Key of the PostgreSQL advisory lock that serialises migrations ("crocevia" in ASCII).
_MIGRATION_LOCK = 0x63726F6365766961


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_SCRIPTS))
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def upgrade_to_head(engine: Engine) -> None:
    """Idempotent: a database already at head is left as it is.

    Processes that start together on an empty database (an API, a relay and workers) take
    turns: PostgreSQL through an advisory lock held until the migration commits, SQLite
    through the write lock its `BEGIN IMMEDIATE` takes. The later ones find it at head.
    """
    cfg = alembic_config()
    with engine.connect().execution_options(write=True) as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()
