"""Bind parameters for a list of values whose statement text does not depend on their number."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ARRAY, ColumnElement, any_, bindparam

__all__ = ["values_in"]


def values_in(column: ColumnElement[Any], name: str, item: Any, postgresql: bool) -> ColumnElement[bool]:
    """`column IN :name`. On PostgreSQL the values are one array parameter (`= ANY`): the
    statement's text and parameter count stay the same whatever their number, so psycopg
    converts it once (it caches only queries of at most 4096 characters and 50 parameters)
    and prepares it after a few runs. SQLite has no arrays: it expands the list."""
    if postgresql:
        return column == any_(bindparam(name, type_=ARRAY(item)))
    return column.in_(bindparam(name, expanding=True))
