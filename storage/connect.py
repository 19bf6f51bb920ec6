"""The store as seen from outside `storage`: its engine type, a liveness ping, and start-up
failures to reach it told apart from everything else.

`bootstrap`, the probes and the CLI use these so that nothing outside `storage` imports
SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from service.ports import StoreUnavailable

__all__ = ["Engine", "ping_store", "unreachable_at_start"]


def ping_store(engine: Engine) -> None:
    """Raise whatever the driver raises unless the database answers a trivial query now."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


@contextmanager
def unreachable_at_start() -> Iterator[None]:
    """Raise `StoreUnavailable` (from the driver's error) when opening or migrating the store
    fails to reach the database; anything else passes unchanged.

    Broader than `storage.errors.is_outage` on purpose: at start-up any operational failure
    (PostgreSQL restarting, not up yet) is worth waiting out.
    """
    try:
        yield
    except OperationalError as exc:
        raise StoreUnavailable(str(exc).splitlines()[0]) from exc
