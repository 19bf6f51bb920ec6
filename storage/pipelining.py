"""Several statements that return nothing, sent to PostgreSQL in one round trip.

psycopg 3 runs each executemany in a pipeline of its own: it enters pipeline mode, sends the
rows, and waits for the server's answer to a Sync before returning. Writes that need no
answer back (the intake's deliveries, outbox, events, viewers and audit lines) can share one
pipeline: each executemany rides it, and one Sync at its end waits for them all. A statement
that fails is then raised at that Sync, translated here as SQLAlchemy would have.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

__all__ = ["pipelined"]


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
