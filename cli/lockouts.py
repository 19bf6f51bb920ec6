"""`hub.py lockouts list|lift`: operators see who is locked out after failed authentications,
and lift a lock (audited with their name)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import orjson

from bootstrap import migrated_engine
from cli.table import render_table
from config.settings import Settings
from domain.lockout import Lockout
from domain.timestamps import epoch_rfc3339
from service.ports import StoreError
from storage.errors import translate_errors
from storage.identity import SqlIdentityStore
from storage.store import SqlStore

__all__ = ["run_lockouts_lift", "run_lockouts_list"]


def _instant(epoch: float | None) -> str:
    return epoch_rfc3339(round(epoch)) if epoch else "-"


@contextmanager
def _identity(settings: Settings) -> Iterator[SqlIdentityStore]:
    # An operator may look before the hub first started on this store: migrated first. Opening
    # and migrating fail in the driver's terms: translated here like every store call.
    with translate_errors(), migrated_engine(settings) as engine:
        # The store's own writer: on SQLite it begins IMMEDIATE, so a lift beside a running
        # hub waits for the write lock instead of failing at once.
        yield SqlIdentityStore(engine, SqlStore(engine).writer)


def _rows(found: list[Lockout], now: float) -> list[list[str]]:
    return [[lock.key, "locked" if lock.locked_at(now) else "counting", str(lock.state.failures),
             _instant(lock.state.last_failure_at), _instant(lock.state.locked_until)] for lock in found]


def _lockout_json(lock: Lockout, now: float) -> dict[str, object]:
    return {"caller": lock.key, "state": "locked" if lock.locked_at(now) else "counting",
            "failures": lock.state.failures, "lastFailureAt": _instant(lock.state.last_failure_at),
            "lockedUntil": _instant(lock.state.locked_until) if lock.state.locked_until else None}


def _unreachable(echo: Callable[[str], None], exc: StoreError) -> int:
    # The database library's error class names the failure (its message may hold the URL).
    echo(f"error: the store is not reachable ({type(exc.__cause__ or exc).__name__})")
    return 1


def run_lockouts_list(settings: Settings, echo: Callable[[str], None], *, counting: bool = False,
                      as_json: bool = False, clock: Callable[[], float] = time.time) -> int:
    """Print the callers locked out now (with `counting`, also those with failures on record).

    Returns:
        0 (an empty list is not an error); 1 when the store cannot be reached (one line).
    """
    now = clock()
    try:
        with _identity(settings) as identity:
            found = identity.lockouts(now, counting=counting)
    except StoreError as exc:
        return _unreachable(echo, exc)
    if as_json:
        echo(orjson.dumps([_lockout_json(lock, now) for lock in found]).decode())
        return 0
    if not found:
        echo("no caller is locked out" if not counting else "no authentication failures on record")
        return 0
    echo(render_table(["caller", "state", "failures", "last failure", "locked until"], _rows(found, now)))
    return 0


def run_lockouts_lift(settings: Settings, key: str, operator: str, echo: Callable[[str], None],
                      *, clock: Callable[[], float] = time.time) -> int:
    """Lift `key`'s lock and forget its failures, audited as done by `operator`.

    Returns:
        0 when `key` had a record, 1 when it had none (the attempt is audited too) or the
        store cannot be reached.
    """
    now = clock()
    try:
        with _identity(settings) as identity:
            lifted = identity.lift_lockout(key, now, operator)
    except StoreError as exc:
        return _unreachable(echo, exc)
    if lifted is None:
        echo(f"no lockout or failures on record for {key!r} (see `hub.py lockouts list --all`)")
        return 1
    was = "lock lifted" if lifted.locked_at(now) else "not locked; failure count cleared"
    echo(f"{key}: {was} ({lifted.state.failures} failures), by {operator}")
    return 0
