"""Build the SQLAlchemy engine for a configured URL (SQLite in WAL mode, or PostgreSQL)."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

__all__ = ["IDLE_PING_SECONDS", "build_engine", "is_sqlite"]

#: A pooled PostgreSQL connection idle longer than this is pinged before it is handed out.
#: One used moments ago is not: under load a ping per checkout was a round trip per
#: statement group (a tenth of the API's time), and a connection that died since its last
#: use fails its first statement instead, which invalidates the whole pool (SQLAlchemy's
#: "disconnect" handling), so only the requests already in flight see the outage.
IDLE_PING_SECONDS = 5.0


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _tune_sqlite(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    # A writing transaction takes the write lock at BEGIN: one that reads first and upgrades
    # later can fail with "database is locked" without waiting for busy_timeout.
    if conn.get_execution_options().get("write"):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def _note_checkin(_dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry) -> None:
    record.info["checked_in_at"] = time.monotonic()


def _ping_if_idle(engine: Engine) -> None:
    """Ping a connection on checkout only when it sat idle in the pool (see IDLE_PING_SECONDS)."""

    def checkout(dbapi_connection: DBAPIConnection, record: ConnectionPoolEntry,
                 _proxy: PoolProxiedConnection) -> None:
        idle_since = record.info.get("checked_in_at")
        if idle_since is None or time.monotonic() - idle_since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out (or opens) another.
            raise DisconnectionError("an idle pooled connection did not answer its ping") from exc

    event.listen(engine, "checkin", _note_checkin)
    event.listen(engine, "checkout", checkout)


def _json_text(value: object) -> str:
    """JSON columns' text, written by orjson: a fifth of the stdlib's cost on the hot path."""
    return orjson.dumps(value).decode()


def _plan_once_per_connection(engine: Engine) -> None:
    """Every new connection plans a prepared statement once, not at each execution.

    psycopg prepares a statement run often; PostgreSQL then plans it again at every execution
    whenever a plan for the values at hand looks cheaper than one for any values. For a
    lookup by a list of keys (`id = ANY($1)`, the worker's reads) it always does: a generic
    plan is costed for ten keys, a custom one for the one or few given. Set on the session,
    committed: the pool's rollbacks keep it.
    """

    def connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("SET plan_cache_mode = force_generic_plan")
        finally:
            cursor.close()
        dbapi_connection.commit()

    event.listen(engine, "connect", connect)


def build_engine(url: str, *, base_dir: Path | None = None, pool_size: int = 10, echo: bool = False,
                 generic_plans: bool = False) -> Engine:
    """Relative SQLite paths are taken from `base_dir`; the file's folder is created.

    `generic_plans`: on PostgreSQL, each connection plans a prepared statement once
    (`_plan_once_per_connection`), for a process whose statements all look rows up by key.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not Path(database).is_absolute():
            database = str((base_dir or Path.cwd()) / database)
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        parsed = parsed.set(database=database)
        engine = create_engine(
            parsed,
            echo=echo,
            connect_args={"check_same_thread": False, "timeout": 30, "isolation_level": None},
            pool_size=pool_size,
            max_overflow=pool_size,
            hide_parameters=True,
            json_serializer=_json_text,
            json_deserializer=orjson.loads,
        )
        event.listen(engine, "connect", _tune_sqlite)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    # hide_parameters: a database error's text (logged with its traceback) never carries the
    # statement's values, which may be personal data.
    engine = create_engine(parsed, echo=echo, pool_size=pool_size, max_overflow=pool_size, hide_parameters=True,
                           json_serializer=_json_text, json_deserializer=orjson.loads)
    _ping_if_idle(engine)
    if generic_plans and parsed.get_backend_name() == "postgresql":
        _plan_once_per_connection(engine)
    return engine
