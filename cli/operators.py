"""`hub.py operators ...`: operator accounts and personal access tokens, on the store directly.

Run where the store is reachable (as `hub.py migrate`); each change is audited with the
acting person as `operator:<name>` (`--operator`, default the OS user). Secrets are printed
once and never again: the TOTP provisioning URI at `add --totp`, the token at `token`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime

import orjson

from bootstrap import migrated_engine, operator_accounts
from cli.table import render_table
from config.settings import Settings
from domain.operators import OperatorError
from domain.timestamps import rfc3339
from service.operators import OperatorAccounts, account_json
from service.ports import StoreError
from storage.errors import translate_errors

__all__ = ["run_operators_add", "run_operators_disable", "run_operators_list", "run_operators_revoke_token",
           "run_operators_role", "run_operators_token", "run_operators_tokens"]

Echo = Callable[[str], None]


@contextmanager
def _accounts(settings: Settings, clock: Callable[[], float]) -> Iterator[OperatorAccounts]:
    # The first admin is often made on a fresh database; opening and migrating it fail in the
    # driver's terms, translated here like every store call.
    with translate_errors(), migrated_engine(settings) as engine:
        yield operator_accounts(settings, engine, clock=clock)


def _when(at: datetime | None) -> str:
    return rfc3339(at.replace(microsecond=0)) if at else "-"


def _run(settings: Settings, echo: Echo, clock: Callable[[], float],
         action: Callable[[OperatorAccounts], int]) -> int:
    """Run one command; a refusal or an unreachable store is one line and exit status 1."""
    try:
        with _accounts(settings, clock) as accounts:
            return action(accounts)
    except OperatorError as exc:
        echo(f"error: {exc.detail}")
    except StoreError as exc:
        # The driver's own error class (its message may hold the URL).
        driver = getattr(exc.__cause__, "orig", None)
        echo(f"error: the store is not reachable ({type(driver).__name__ if driver else 'database error'})")
    return 1


def run_operators_add(settings: Settings, name: str, role: str, actor: str, echo: Echo, *,
                      password: str | None, totp: bool, clock: Callable[[], float] = time.time) -> int:
    """Add an account; print the TOTP provisioning URI once when `totp`."""
    def act(accounts: OperatorAccounts) -> int:
        account, uri = accounts.add(name, role, actor, password=password, totp=totp)
        echo(f"operator {account.name} added as {account.role}"
             + ("" if password else " (no password: it can use personal access tokens only)"))
        if uri:
            echo("TOTP provisioning URI (shown once; load it in an authenticator app):")
            echo(uri)
        return 0
    return _run(settings, echo, clock, act)


def run_operators_list(settings: Settings, echo: Echo, *, as_json: bool = False,
                       clock: Callable[[], float] = time.time) -> int:
    def act(accounts: OperatorAccounts) -> int:
        found = accounts.list()
        if as_json:
            echo(orjson.dumps([account_json(a) for a in found]).decode())
        elif not found:
            echo("no operator accounts: add one with `hub.py operators add NAME --role admin --password-stdin`")
        else:
            echo(render_table(["name", "role", "state", "password", "totp", "created"], [
                [a.name, a.role, "disabled" if a.disabled else "active", "yes" if a.password_hash else "no",
                 "yes" if a.has_totp else "no", _when(a.created_at)] for a in found]))
        return 0
    return _run(settings, echo, clock, act)


def run_operators_role(settings: Settings, name: str, role: str, actor: str, echo: Echo, *,
                       clock: Callable[[], float] = time.time) -> int:
    def act(accounts: OperatorAccounts) -> int:
        account = accounts.set_role(name, role, actor)
        echo(f"operator {account.name} is now {account.role}")
        return 0
    return _run(settings, echo, clock, act)


def run_operators_disable(settings: Settings, name: str, actor: str, echo: Echo, *,
                          clock: Callable[[], float] = time.time) -> int:
    def act(accounts: OperatorAccounts) -> int:
        account = accounts.disable(name, actor)
        echo(f"operator {account.name} disabled: its sessions ended, its tokens no longer work")
        return 0
    return _run(settings, echo, clock, act)


def run_operators_token(settings: Settings, name: str, actor: str, echo: Echo, *, label: str = "",
                        days: int | None = None, clock: Callable[[], float] = time.time) -> int:
    """Issue a personal access token and print it once."""
    def act(accounts: OperatorAccounts) -> int:
        issued = accounts.issue_token(name, actor, label=label, days=days)
        echo(f"token id {issued.id} for {name}, expires {_when(issued.expires_at)}")
        echo("the token (shown once, only its hash is kept):")
        echo(issued.token)
        return 0
    return _run(settings, echo, clock, act)


def run_operators_tokens(settings: Settings, name: str, echo: Echo, *, as_json: bool = False,
                         clock: Callable[[], float] = time.time) -> int:
    def act(accounts: OperatorAccounts) -> int:
        found = accounts.tokens(name)
        rows = [{"id": t.id, "label": t.label, "createdAt": _when(t.created_at), "expiresAt": _when(t.expires_at),
                 "lastUsedAt": _when(t.last_used_at), "revokedAt": _when(t.revoked_at)} for t in found]
        if as_json:
            echo(orjson.dumps(rows).decode())
        else:
            columns = ["id", "label", "createdAt", "expiresAt", "lastUsedAt", "revokedAt"]
            echo(render_table(columns, [[r[c] for c in columns] for r in rows]))
        return 0
    return _run(settings, echo, clock, act)


def run_operators_revoke_token(settings: Settings, token_id: str, actor: str, echo: Echo, *,
                               clock: Callable[[], float] = time.time) -> int:
    def act(accounts: OperatorAccounts) -> int:
        revoked = accounts.revoke_token(token_id, actor)
        echo(f"token {revoked.id} of {revoked.operator} revoked")
        return 0
    return _run(settings, echo, clock, act)
