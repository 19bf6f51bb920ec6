"""Operator accounts and lockouts, straight on the store: `hub.py operators add|list|role|disable|
token|tokens|revoke-token` and `hub.py lockouts list|lift`. Each change is audited under
`operator:<name>` (`--operator`, or the OS user).

`register` adds both groups to `hub.py`'s root group; the work is cli/operators.py's and
cli/lockouts.py's, imported only when a command runs.
"""

from __future__ import annotations

import sys

import click

from cli.context import settings_of as _settings

__all__ = ["register"]


@click.group()
def lockouts() -> None:
    """Callers locked out after repeated authentication failures."""


@lockouts.command("list")
@click.option("--all", "counting", is_flag=True, help="Also callers with failures on record but not locked.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_context
def lockouts_list(ctx: click.Context, counting: bool, as_json: bool) -> None:
    """List locked callers: `address:<ip>` (signatures that did not verify),
    `portal:<id>/user:<tax code>` (signed requests refused) or `operator:<name>` (failed logins)."""
    from cli.lockouts import run_lockouts_list

    sys.exit(run_lockouts_list(_settings(ctx), click.echo, counting=counting, as_json=as_json))


@lockouts.command("lift")
@click.argument("key")
@click.option("--operator", default=None, metavar="NAME",
              help="Who lifts it, for the audit trail (default: the OS user).")
@click.pass_context
def lockouts_lift(ctx: click.Context, key: str, operator: str | None) -> None:
    """Lift KEY's lock (as `lockouts list` shows it) and clear its failures; audited."""
    from cli.lockouts import run_lockouts_lift

    sys.exit(run_lockouts_lift(_settings(ctx), key, _operator_name(operator), click.echo))


def _operator_name(operator: str | None) -> str:
    """Who acts, for the audit trail: `--operator`, or the OS user."""
    import getpass

    name = (operator or getpass.getuser()).strip()
    if not name:
        raise click.BadParameter("the operator's name is empty", param_hint="--operator")
    return name


def _actor(operator: str | None) -> str:
    """`operator:<name>` for the audit trail: `--operator`, or the OS user."""
    return f"operator:{_operator_name(operator)}"


_ACTOR_OPTION = click.option("--operator", "acting", default=None, metavar="NAME",
                             help="Who does it, for the audit trail (default: the OS user).")
_ROLE = click.Choice(["viewer", "operator", "admin"])


@click.group()
def operators() -> None:
    """Operator accounts (console and operator API) and their personal access tokens."""


@operators.command("add")
@click.argument("name")
@click.option("--role", type=_ROLE, required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--totp", is_flag=True, help="Enrol a TOTP second factor; prints its provisioning URI once.")
@_ACTOR_OPTION
@click.pass_context
def operators_add(ctx: click.Context, name: str, role: str, password_stdin: bool, totp: bool,
                  acting: str | None) -> None:
    """Add operator NAME (without --password-stdin: tokens only, no console login)."""
    from cli.operators import run_operators_add

    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("--password-stdin: stdin gave no password")
    sys.exit(run_operators_add(_settings(ctx), name, role, _actor(acting), click.echo, password=password,
                               totp=totp))


@operators.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_context
def operators_list(ctx: click.Context, as_json: bool) -> None:
    """List operator accounts with role and state."""
    from cli.operators import run_operators_list

    sys.exit(run_operators_list(_settings(ctx), click.echo, as_json=as_json))


@operators.command("role")
@click.argument("name")
@click.argument("role", type=_ROLE)
@_ACTOR_OPTION
@click.pass_context
def operators_role(ctx: click.Context, name: str, role: str, acting: str | None) -> None:
    """Give operator NAME the role ROLE."""
    from cli.operators import run_operators_role

    sys.exit(run_operators_role(_settings(ctx), name, role, _actor(acting), click.echo))


@operators.command("disable")
@click.argument("name")
@_ACTOR_OPTION
@click.pass_context
def operators_disable(ctx: click.Context, name: str, acting: str | None) -> None:
    """Disable operator NAME: sessions end, tokens stop working (the account is kept)."""
    from cli.operators import run_operators_disable

    sys.exit(run_operators_disable(_settings(ctx), name, _actor(acting), click.echo))


@operators.command("token")
@click.argument("name")
@click.option("--label", default="", help="What the token is for (shown in `operators tokens`).")
@click.option("--days", type=click.IntRange(min=1), default=None, help="Lifetime (default from config).")
@_ACTOR_OPTION
@click.pass_context
def operators_token(ctx: click.Context, name: str, label: str, days: int | None, acting: str | None) -> None:
    """Issue a personal access token for NAME; it is printed once."""
    from cli.operators import run_operators_token

    sys.exit(run_operators_token(_settings(ctx), name, _actor(acting), click.echo, label=label, days=days))


@operators.command("tokens")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_context
def operators_tokens(ctx: click.Context, name: str, as_json: bool) -> None:
    """List NAME's tokens (ids, labels, expiry, last use, revocation; never the tokens)."""
    from cli.operators import run_operators_tokens

    sys.exit(run_operators_tokens(_settings(ctx), name, click.echo, as_json=as_json))


@operators.command("revoke-token")
@click.argument("token_id")
@_ACTOR_OPTION
@click.pass_context
def operators_revoke_token(ctx: click.Context, token_id: str, acting: str | None) -> None:
    """Revoke the token TOKEN_ID (as `operators token` printed it)."""
    from cli.operators import run_operators_revoke_token

    sys.exit(run_operators_revoke_token(_settings(ctx), token_id, _actor(acting), click.echo))



def register(cli: click.Group) -> None:
    """Add the `operators` and `lockouts` groups to `hub.py`'s group."""
    cli.add_command(operators)
    cli.add_command(lockouts)
