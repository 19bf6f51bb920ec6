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

`RowsUpdate` does the same for an UPDATE run once per row (the completions' writes of the
deliveries they changed): SQLAlchemy's own statement, compiled once for the connection's
dialect (its casts and each parameter's bind processor kept), its named parameters made
positional, the rows' values sent as tuples.

Other databases and drivers run SQLAlchemy's statement as an executemany, as they did.
Statements sent to the driver are still shown to the engine's `before_cursor_execute`
listeners (those that count or log statements), when there are any.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Insert, Table, Update, insert
from sqlalchemy.engine import Dialect

from storage.pipelining import announce

__all__ = ["RowsInsert", "RowsUpdate", "by_driver"]

#: A named parameter as SQLAlchemy renders it for a `pyformat` driver (psycopg), `%(name)s`,
#: or a literal percent sign (`%%`, the same in the positional SQL), matched first.
_NAMED = re.compile(r"%%|%\((\w+)\)s")
#: A statement for the driver: its SQL, the row key of each parameter, each one's bind processor.
_Prepared = tuple[str, tuple[str, ...], tuple[Callable[[Any], Any] | None, ...]]


def by_driver(dialect: Dialect) -> bool:
    """Whether rows go to the driver directly (PostgreSQL through psycopg), rather than
    through SQLAlchemy's executemany."""
    return dialect.name == "postgresql" and dialect.driver == "psycopg"


def _driver_executemany(conn: Connection, sql: str, params: list[tuple[Any, ...]]) -> None:
    """`sql` run once per tuple of `params` by psycopg's executemany on the connection's
    driver connection (in `storage.pipelining`'s pipeline when there is one)."""
    sql, params = announce(conn, sql, params, True)
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

    def __call__(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        if not by_driver(conn.dialect):
            conn.execute(self._insert, list(rows))
            return
        sql, keys, defaults, processors = self._statement(conn.dialect, tuple(rows[0]))
        if any(processors):
            params = [tuple(row[k] if p is None else p(row[k]) for k, p in zip(keys, processors, strict=True))
                      + defaults for row in rows]
        else:
            params = [tuple(row[k] for k in keys) + defaults for row in rows]
        _driver_executemany(conn, sql, params)

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


class RowsUpdate:
    """An UPDATE run once per row, in the caller's transaction: `statement`'s bind parameter
    `name` takes `row[keys[name]]`.

    On PostgreSQL through psycopg, SQLAlchemy's compiled SQL of `statement` (compiled once
    per dialect) goes to the driver's executemany with each row's values as a tuple, each
    processed by its parameter's type; elsewhere SQLAlchemy runs it as an executemany. The
    rowcount is not given: psycopg's executemany does not sum it.
    """

    def __init__(self, statement: Update, keys: Mapping[str, str]) -> None:
        self._statement = statement
        self._keys = dict(keys)
        # The dialect last compiled for, with what it gave (one attribute: threads share it).
        self._prepared: tuple[Dialect | None, _Prepared] = (None, ("", (), ()))

    def __call__(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        if not rows:
            return
        keys = self._keys
        if not by_driver(conn.dialect):
            conn.execute(self._statement, [{name: row[key] for name, key in keys.items()} for row in rows])
            return
        sql, order, processors = self._compiled(conn.dialect)
        params = [tuple(row[k] if p is None else p(row[k]) for k, p in zip(order, processors, strict=True))
                  for row in rows]
        _driver_executemany(conn, sql, params)

    def _compiled(self, dialect: Dialect) -> _Prepared:
        """The positional SQL, the row key of each of its parameters in order, and each one's
        bind processor (compiled again only for another dialect)."""
        known, prepared = self._prepared
        if dialect is known:
            return prepared
        compiled = self._statement.compile(dialect=dialect)
        if dialect.paramstyle != "pyformat" or compiled.literal_execute_params or compiled.post_compile_params:
            raise TypeError(f"not a statement the driver can take as it is: {compiled.string}")
        names: list[str] = []

        def positional(match: re.Match[str]) -> str:
            if match.group(1) is None:
                return "%%"
            names.append(match.group(1))
            return "%s"

        sql = _NAMED.sub(positional, compiled.string)
        if set(names) != set(compiled.binds) or set(names) != set(self._keys):
            raise TypeError(f"the rows' keys {sorted(self._keys)} do not name the parameters of {compiled.string}")
        processors = tuple(compiled.binds[n].type.dialect_impl(dialect).bind_processor(dialect) for n in names)
        prepared = (sql, tuple(self._keys[n] for n in names), processors)
        self._prepared = (dialect, prepared)
        return prepared
