"""Several statements that return nothing, sent to PostgreSQL in one round trip.

psycopg 3 runs each executemany in a pipeline of its own: it enters pipeline mode, sends the
rows, and waits for the server's answer to a Sync before returning. Writes that need no
answer back (the intake's deliveries, outbox, events, viewers and audit lines) can share one
pipeline: each executemany rides it, and one Sync at its end waits for them all. A statement
that fails is then raised at that Sync, translated here as SQLAlchemy would have.

A statement whose rows are wanted can ride a pipeline too (`queued`): it is sent on a driver
cursor of its own, and its rows are read from that cursor once the pipeline has ended. The
intake's group commit reads all it must know before writing this way, in one round trip
(`storage.intake_reads`). And the commit can ride the writes' pipeline (`queue_commit`), so
that a transaction's writes and its end cost one round trip.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

__all__ = ["DriverStatement", "announce", "pipelined", "queue_commit", "queued"]


@contextmanager
def pipelined(conn: Connection) -> Iterator[None]:
    """Run the block's statements in one psycopg pipeline (others: as they are).

    Only statements whose results nobody reads belong in the block: a result is not there
    until the block ends.

    Raises:
        DBAPIError: a statement of the block failed (the transaction is then to roll back).
    """
    driver = conn.connection.driver_connection
    if driver is None or conn.dialect.driver != "psycopg" or not hasattr(driver, "pipeline"):
        yield
        return
    dbapi = conn.dialect.loaded_dbapi
    try:
        with driver.pipeline():
            yield
    except dbapi.Error as exc:
        invalidated = conn.dialect.is_disconnect(exc, driver, None)
        if invalidated:
            conn.invalidate(exc)
        raise DBAPIError.instance(None, None, exc, dbapi.Error, connection_invalidated=invalidated,
                                  dialect=conn.dialect) from exc


def announce(conn: Connection, sql: str, params: Any, many: bool) -> tuple[str, Any]:
    """Show a statement sent to the driver directly to the engine's `before_cursor_execute`
    listeners (those that count or log statements), as SQLAlchemy would; returns the
    statement and parameters they give back."""
    if conn._has_events or conn.engine._has_events:  # noqa: SLF001 - as SQLAlchemy tests it
        for listener in conn.dispatch.before_cursor_execute:
            sql, params = listener(conn, None, sql, params, None, many)
    return sql, params


def queued(conn: Connection, sql: str, params: Sequence[Any] | Mapping[str, Any]) -> Any:
    """`sql` (the driver's own paramstyle) sent on a new cursor of the connection's driver:
    inside `pipelined`, its rows are on the returned cursor once the block has ended.

    The caller closes the cursor. Errors are raised by the block's end (`pipelined`).
    """
    sql, params = announce(conn, sql, params, False)
    driver = conn.connection.driver_connection
    assert driver is not None  # a checked-out connection
    cursor = driver.cursor()
    cursor.execute(sql, params)
    return cursor


def queue_commit(conn: Connection) -> None:
    """End the transaction inside `pipelined`, so that the commit rides the writes' round trip.

    A statement that fails before it leaves the transaction aborted (the COMMIT then does
    nothing), and the block's end raises as for any failed statement. SQLAlchemy's own commit
    afterwards finds the transaction ended: psycopg sends nothing when the server reports it
    idle. Elsewhere (not psycopg) it does nothing: SQLAlchemy's commit ends the transaction.
    """
    if conn.dialect.driver == "psycopg":
        queued(conn, "COMMIT", ()).close()


class DriverStatement:
    """An SQLAlchemy statement whose rows are read straight from the driver, so that it can
    ride `pipelined` (PostgreSQL through psycopg): compiled once per dialect, its parameters
    processed by their types as SQLAlchemy would, its rows plain tuples in the order of its
    columns. Only for columns whose values the driver gives as SQLAlchemy would (numbers, text,
    timestamps): no result processing is done.
    """

    def __init__(self, statement: ClauseElement) -> None:
        self._statement = statement
        # The dialect last compiled for, with what it gave (one attribute: threads share it).
        self._prepared: tuple[Dialect | None, Any, dict[str, Any]] = (None, None, {})

    def send(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """Send the statement (inside `pipelined`: its rows are on the returned cursor once the
        block has ended; elsewhere at once). The caller closes the cursor."""
        known, compiled, processors = self._prepared
        if known is not conn.dialect:
            compiled = cast(SQLCompiler, self._statement.compile(dialect=conn.dialect))
            if conn.dialect.paramstyle != "pyformat" or compiled.literal_execute_params or compiled.post_compile_params:
                raise TypeError(f"not a statement the driver can take as it is: {compiled.string}")
            processors = {name: p for name, bind in compiled.binds.items()
                          if (p := bind.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)) is not None}
            self._prepared = (conn.dialect, compiled, processors)
        values = {name: processors[name](value) if name in processors else value
                  for name, value in compiled.construct_params(params).items()}
        return queued(conn, compiled.string, values)
