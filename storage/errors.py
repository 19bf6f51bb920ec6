"""Translate the database driver's failures into the service's `StoreUnavailable`, once.

An outage is a failure to reach the database or to get a turn at it: PostgreSQL refused or
dropped the connection, the server shuts down, a lock or serialization conflict asks for a
retry; SQLite cannot open, read or lock its file. Anything else (a constraint, a value that
does not fit its column, a missing table) is not an outage and passes through unchanged, so
the caller can tell "wait and retry" from "this data or this code is wrong".
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import ParamSpec, TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from service.ports import StoreFailed, StoreUnavailable

__all__ = ["errors_translated", "is_outage", "outages_translated", "translate_errors", "translate_outages",
           "translated"]

P = ParamSpec("P")
R = TypeVar("R")

#: SQLite's generic primary result code: a missing table, a syntax error (a bug, not an outage).
#: Its other `OperationalError`s are BUSY (5), LOCKED (6), READONLY (8), IOERR (10), FULL (13),
#: CANTOPEN (14): the file is locked, unreadable or gone (https://sqlite.org/rescode.html).
_SQLITE_ERROR = 1


def is_outage(exc: BaseException) -> bool:
    """Whether `exc` (raised by SQLAlchemy) means the database is away rather than the call wrong."""
    if isinstance(exc, PoolTimeout):
        return True  # every pooled connection is stuck waiting on the server
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, OperationalError):
        return False
    code = getattr(exc.orig, "sqlite_errorcode", None)
    return code is None or code & 0xFF != _SQLITE_ERROR


def _reason(exc: BaseException) -> str:
    # The driver's own message, first line only: SQLAlchemy's text adds the statement and
    # its parameters, which may hold personal data.
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0] if text else 'no detail'}"


@contextmanager
def translate_outages() -> Iterator[None]:
    """Raise `StoreUnavailable` (from the original) for an outage; anything else unchanged."""
    try:
        yield
    except (DBAPIError, PoolTimeout) as exc:
        if is_outage(exc):
            raise StoreUnavailable(f"the database is unavailable ({_reason(exc)})") from exc
        raise


def outages_translated(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a store method that the background loops call: an outage raises `StoreUnavailable`."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with translate_outages():
            return fn(*args, **kwargs)

    return wrapper


@contextmanager
def translate_errors() -> Iterator[None]:
    """Raise a typed store error for every database failure: `StoreUnavailable` for an outage,
    `StoreFailed` for any other refusal (both from the original).

    For the calls of the API, the console and the commands, which answer "nothing was
    recorded" either way and must not know the driver; the background loops use
    `translate_outages`, which leaves a refusal as it is.
    """
    try:
        yield
    except (DBAPIError, PoolTimeout) as exc:
        raise translated(exc) from exc


def translated(exc: BaseException) -> BaseException:
    """`exc` as `translate_errors` would raise it (its cause set), for a failure handed back
    rather than raised: a batch's outcome per item (`SqlStore.accept_filings`)."""
    if not isinstance(exc, (DBAPIError, PoolTimeout)):
        return exc
    typed = (StoreUnavailable(f"the database is unavailable ({_reason(exc)})") if is_outage(exc)
             else StoreFailed(f"the database refused the call ({_reason(exc)})"))
    typed.__cause__ = exc
    return typed


def errors_translated(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate a store method that the API, the console or a command calls (`translate_errors`)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with translate_errors():
            return fn(*args, **kwargs)

    return wrapper
