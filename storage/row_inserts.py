"""Many rows of one table inserted by the driver, without SQLAlchemy's per-row layers.

On PostgreSQL through psycopg the rows go straight to the driver's executemany as tuples, with
a prebuilt `INSERT … VALUES (%s, …)`: SQLAlchemy's executemany processed every parameter of
every row (its compiled-statement and parameter layers were the largest part of the intake's
commit). The values are still processed by each column's SQLAlchemy type (a JSON column's
serializer and its NULL rule), columns missing from the rows get their scalar default as
`insert()` gives them, and errors are translated as SQLAlchemy would. psycopg runs one INSERT
per row, in order (inside `storage.pipelining`'s pipeline when there is one), so rows are
numbered in the order given.

Tried and dropped: one `INSERT … SELECT * FROM unnest(%s::type[], …)` per table. psycopg
dumps arrays in Python, element by element (text escaping included): it cost more CPU than
the per-row executemany it replaced.

Other databases and drivers run SQLAlchemy's INSERT as an executemany, as they did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Insert, Table, insert
from sqlalchemy.engine import Dialect

__all__ = ["RowsInsert"]


class RowsInsert:
    """INSERT rows of `table` (all with the same keys) in the caller's transaction.

    Columns missing from the rows get their SQLAlchemy scalar default, as `insert()` gives
    them; the others (server defaults, autoincrement ids) are left to the database.
    """

    def __init__(self, table: Table) -> None:
        self._table = table
        # Inline: no implicit RETURNING of new ids, which nobody reads (and a pipeline could not give).
        self._insert: Insert = insert(table).inline()
        self._prepared: dict[tuple[str, ...], tuple[str, tuple[str, ...], tuple[Any, ...],
                                                    tuple[Callable[[Any], Any] | None, ...]]] = {}

    @staticmethod
    def by_driver(dialect: Dialect) -> bool:
        """Whether rows go to the driver directly (PostgreSQL through psycopg), rather than
        through SQLAlchemy's executemany."""
        return dialect.name == "postgresql" and dialect.driver == "psycopg"

    def __call__(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        if not self.by_driver(conn.dialect):
            conn.execute(self._insert, list(rows))
            return
        sql, keys, defaults, processors = self._statement(conn.dialect, tuple(rows[0]))
        if any(processors):
            params = [tuple(row[k] if p is None else p(row[k]) for k, p in zip(keys, processors, strict=True))
                      + defaults for row in rows]
        else:
            params = [tuple(row[k] for k in keys) + defaults for row in rows]
        driver = conn.connection.driver_connection
        assert driver is not None  # a checked-out connection
        cursor = driver.cursor()
        try:
            cursor.executemany(sql, params)
        except conn.dialect.loaded_dbapi.Error as exc:
            # Outside a pipeline the error comes here: translated as SQLAlchemy would have.
            conn._handle_dbapi_exception(exc, sql, params, cursor, None)  # noqa: SLF001 - SQLAlchemy's own translation
        finally:
            cursor.close()

    def _statement(self, dialect: Dialect, keys: tuple[str, ...]) -> tuple[
            str, tuple[str, ...], tuple[Any, ...], tuple[Callable[[Any], Any] | None, ...]]:
        """The SQL for rows with `keys`, the defaults appended after them, and each key's bind
        processor (built once per set of keys)."""
        known = self._prepared.get(keys)
        if known is not None:
            return known
        table = self._table
        defaulted = [c for c in table.columns
                     if c.key not in keys and c.default is not None and c.default.is_scalar]
        defaults = tuple(c.default.arg for c in defaulted)  # type: ignore[union-attr]  # is_scalar: a ScalarElementColumnDefault
        columns = [table.c[k] for k in keys] + defaulted
        processors = tuple(table.c[k].type.dialect_impl(dialect).bind_processor(dialect) for k in keys)
        quote = dialect.identifier_preparer.quote
        names = ", ".join(quote(c.name) for c in columns)
        sql = (f"INSERT INTO {dialect.identifier_preparer.format_table(table)} ({names})"
               f" VALUES ({', '.join(['%s'] * len(columns))})")
        known = (sql, keys, defaults, processors)
        self._prepared[keys] = known
        return known
