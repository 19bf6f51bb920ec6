"""A portal user's drafts over the portal API: `hub.py drafts create|update|show|list|delete|check|submit`.

The portal's options (`--url/--portal/--user/--auth/--json`) go before the draft command or
after it. `register` adds the group to `hub.py`'s root group; the work is cli/drafts.py's.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.context import settings_of as _settings
from cli.portal import session_of

if TYPE_CHECKING:
    from cli.drafts import DraftCommands

__all__ = ["register"]


@click.group()
@click.option("--url", default=None, help="Hub base URL (default from config).")
@click.option("--portal", envvar="CROCEVIA_PORTAL", default="demo", show_default=True,
              help="The portal whose key signs (env CROCEVIA_PORTAL).")
@click.option("--user", envvar="CROCEVIA_USER", default=None, metavar="TAX_CODE",
              help="The user the portal vouches for (env CROCEVIA_USER).")
@click.option("--auth", default="SPID2", show_default=True, help="How the user logged in: SPID1..3, CIE or CNS.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer (only it, on stdout).")
@click.pass_context
def drafts(ctx: click.Context, url: str | None, portal: str, user: str | None, auth: str, as_json: bool) -> None:
    """A portal user's drafts: create, update, show, list, delete, check, submit. The portal's
    options go before the command or after it, as on every other portal command."""
    ctx.obj["drafts"] = {"url": url, "portal": portal, "user": user, "auth": auth, "as_json": as_json}


def _drafts(ctx: click.Context, run: Callable[[DraftCommands], int]) -> None:
    """Run one draft command with the portal's credentials; exit with its status."""
    from cli.drafts import DraftCommands
    from cli.portal import portal_client

    opts = ctx.obj["drafts"]
    if not opts["user"]:
        raise click.UsageError("Missing option '--user' (or CROCEVIA_USER).")
    session = session_of(ctx, opts["url"], opts["portal"], opts["user"], opts["auth"], opts["as_json"])
    with portal_client(_settings(ctx), session) as client:
        code = run(DraftCommands(client, click.echo, lambda line: click.echo(line, err=True),
                                 as_json=session.as_json))
    sys.exit(code)


_FILE = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))


def _draft_option(name: str) -> Callable[[click.Context, click.Parameter, object], None]:
    """A portal option given after the draft command: it overrides the group's."""

    def given(ctx: click.Context, _param: click.Parameter, value: object) -> None:
        if value is not None and value is not False:
            ctx.obj["drafts"][name] = value

    return given


def _draft_options(fn: Callable[..., object]) -> Callable[..., object]:
    """`--url/--portal/--user/--auth/--json` after a draft command too (`drafts list --json`)."""
    for flag, name, more in (
            ("--json", "as_json", {"is_flag": True, "default": False, "help": "Print the API's JSON answer."}),
            ("--auth", "auth", {"help": "How the user logged in: SPID1..3, CIE or CNS."}),
            ("--user", "user", {"metavar": "TAX_CODE", "help": "The user the portal vouches for."}),
            ("--portal", "portal", {"help": "The portal whose key signs (default demo)."}),
            ("--url", "url", {"help": "Hub base URL (default from config)."})):
        fn = click.option(flag, name, expose_value=False, callback=_draft_option(name), **more)(fn)
    return fn


@drafts.command("create")
@_draft_options
@_FILE
@click.pass_context
def drafts_create(ctx: click.Context, file: Path) -> None:
    """Save FILE (XML or .json) as a new draft; print its warnings."""
    _drafts(ctx, lambda c: c.create(file))


@drafts.command("update")
@_draft_options
@click.argument("draft_id")
@_FILE
@click.option("--if-match", default=None, help='The ETag read ("N"); a stale one is refused.')
@click.pass_context
def drafts_update(ctx: click.Context, draft_id: str, file: Path, if_match: str | None) -> None:
    """Replace DRAFT_ID's document with FILE."""
    _drafts(ctx, lambda c: c.update(draft_id, file, if_match))


@drafts.command("show")
@_draft_options
@click.argument("draft_id")
@click.pass_context
def drafts_show(ctx: click.Context, draft_id: str) -> None:
    """One draft and its warnings."""
    _drafts(ctx, lambda c: c.show(draft_id))


@drafts.command("list")
@_draft_options
@click.option("--cursor", default=None)
@click.option("--limit", type=click.IntRange(1, 200), default=None)
@click.pass_context
def drafts_list(ctx: click.Context, cursor: str | None, limit: int | None) -> None:
    """The drafts the user may read, newest first."""
    _drafts(ctx, lambda c: c.list(cursor, limit))


@drafts.command("delete")
@_draft_options
@click.argument("draft_id")
@click.pass_context
def drafts_delete(ctx: click.Context, draft_id: str) -> None:
    """Delete DRAFT_ID."""
    _drafts(ctx, lambda c: c.delete(draft_id))


@drafts.command("check")
@_draft_options
@click.argument("draft_id")
@click.option("--preview", is_flag=True, help="Also print each agency's message as it would be sent.")
@click.pass_context
def drafts_check(ctx: click.Context, draft_id: str, preview: bool) -> None:
    """Run the whole intake on DRAFT_ID without filing it."""
    _drafts(ctx, lambda c: c.check(draft_id, preview))


@drafts.command("submit")
@_draft_options
@click.argument("draft_id")
@click.option("--idempotency-key", default=None)
@click.pass_context
def drafts_submit(ctx: click.Context, draft_id: str, idempotency_key: str | None) -> None:
    """File DRAFT_ID (once: a repeat answers the same filing)."""
    _drafts(ctx, lambda c: c.submit(draft_id, idempotency_key))


def register(cli: click.Group) -> None:
    """Add the `drafts` group to `hub.py`'s group."""
    cli.add_command(drafts)
