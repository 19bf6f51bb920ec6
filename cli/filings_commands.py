"""`hub.py filings search|show|archive|unarchive`: operators search every filing and show one's
full history (`--token`, over the operator API); portals search their user's filings (`--user`)
and archive or unarchive them (ModI-signed, over the portal API).

`register` adds the group to `hub.py`'s root group; imports of the clients stay lazy.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from cli.context import settings_of as _settings
from cli.portal import portal_options, session_of

if TYPE_CHECKING:
    from cli.ops_client import OpsClient
    from cli.portal import PortalSession

__all__ = ["register"]


@click.group()
def filings() -> None:
    """Search filings (operators: every one, with a token; portals: the user's, with --user),
    show one's full history (operators), archive and unarchive (portals)."""


def _ops_client(ctx: click.Context, url: str | None, token: str | None) -> OpsClient:
    from cli.ops_client import OpsClient, hub_url

    if not token:
        raise click.UsageError("a personal access token is needed: --token or CROCEVIA_OPERATOR_TOKEN")
    return OpsClient(hub_url(_settings(ctx), url), token)


_OPS_URL = click.option("--url", default=None, help="Hub base URL (default from config).")
_OPS_TOKEN = click.option("--token", envvar="CROCEVIA_OPERATOR_TOKEN", default=None, show_envvar=True,
                          help="The operator's personal access token.")


@filings.command("search")
@click.option("--reference", default=None)
@click.option("--state", default=None, help="Operators: the recipient's state (pending, retrying, undeliverable, ...).")
@click.option("--filing-state", default=None, help="The filing's state (in_progress, protocolled, ...).")
@click.option("--agency", default=None)
@click.option("--kind", default=None)
@click.option("--subject", "subject_tax_code", default=None, metavar="TAX_CODE")
@click.option("--portal", default=None,
              help="Operators: only this portal's filings. With --user: the portal that signs (default demo).")
@click.option("--protocol-number", default=None)
@click.option("--message-id", default=None, help="Operators only.")
@click.option("--from", "from_", default=None, metavar="RFC3339", help="Filed at or after (with offset).")
@click.option("--to", default=None, metavar="RFC3339", help="Filed before (with offset).")
@click.option("--archived", type=click.Choice(["false", "true", "any"]), default=None,
              help="Portals: archived filings too (any) or only them (true); default false.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", default=None, help="Start after this cursor (printed under a page).")
@click.option("--all", "follow", is_flag=True, help="Follow the cursor through every page.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--user", default=None, metavar="TAX_CODE",
              help="Search as a portal for this user (their own and delegated filings), ModI-signed.")
@click.option("--auth", default="SPID2", show_default=True, help="With --user: SPID1..3, CIE or CNS.")
@_OPS_URL
@_OPS_TOKEN
@click.pass_context
def filings_search(ctx: click.Context, url: str | None, token: str | None, limit: int, follow: bool,
                   as_json: bool, user: str | None, auth: str, archived: str | None, **filters: str | None) -> None:
    """Search filings, newest first: as an operator (--token: every filing and its recipients)
    or as a portal (--user: the user's own and delegated filings)."""
    if user is not None:
        sys.exit(_portal_search(ctx, url, user, auth, limit, follow, as_json, archived, filters))
    if archived is not None:
        raise click.UsageError("--archived is a portal's filter: name the user with --user")
    from cli.ops_client import run_filings_search

    names = {"reference": "reference", "state": "state", "filing_state": "filingState", "agency": "agency",
             "kind": "kind", "subject_tax_code": "subjectTaxCode", "portal": "portal",
             "protocol_number": "protocolNumber", "message_id": "messageId", "from_": "from", "to": "to",
             "cursor": "cursor"}
    params = {names[k]: v for k, v in filters.items() if v is not None}
    client = _ops_client(ctx, url, token)
    try:
        code = run_filings_search(client, params, click.echo, as_json=as_json, limit=limit, follow=follow)
    finally:
        client.close()
    sys.exit(code)


def _portal_search(ctx: click.Context, url: str | None, user: str, auth: str, limit: int, follow: bool,
                   as_json: bool, archived: str | None, filters: dict[str, str | None]) -> int:
    from cli.portal import portal_client
    from cli.portal_search import run_portal_search

    for operator_only in ("state", "message_id"):
        if filters.get(operator_only) is not None:
            flag = "--" + operator_only.replace("_", "-")
            raise click.UsageError(f"{flag} is an operator's filter; portals search by --filing-state")
    if limit > 200:
        raise click.UsageError("--limit: a portal's page is 1 to 200 filings")
    names = {"reference": "reference", "filing_state": "state", "agency": "agency", "kind": "kind",
             "subject_tax_code": "subjectTaxCode", "protocol_number": "protocolNumber", "from_": "from",
             "to": "to", "cursor": "cursor"}
    params = {names[k]: v for k, v in filters.items() if k in names and v is not None}
    if archived is not None:
        params["archived"] = archived
    session = session_of(ctx, url, filters.get("portal") or "demo", user, auth, as_json)
    with portal_client(_settings(ctx), session) as client:
        return run_portal_search(client, params, click.echo, as_json=as_json, limit=limit, follow=follow)


@filings.command("archive")
@click.argument("reference")
@portal_options
@click.pass_context
def filings_archive(ctx: click.Context, reference: str, url: str | None, portal: str, user: str, auth: str,
                    as_json: bool) -> None:
    """Archive a settled filing (it leaves the desk's default search list, stays findable)."""
    _archive(ctx, session_of(ctx, url, portal, user, auth, as_json), reference, True)


@filings.command("unarchive")
@click.argument("reference")
@portal_options
@click.pass_context
def filings_unarchive(ctx: click.Context, reference: str, url: str | None, portal: str, user: str, auth: str,
                      as_json: bool) -> None:
    """Put an archived filing back on the desk's default search list."""
    _archive(ctx, session_of(ctx, url, portal, user, auth, as_json), reference, False)


def _archive(ctx: click.Context, session: PortalSession, reference: str, archived: bool) -> None:
    from cli.portal import portal_client
    from cli.portal_search import run_portal_archive

    with portal_client(_settings(ctx), session) as client:
        code = run_portal_archive(client, reference, archived, click.echo, as_json=session.as_json)
    sys.exit(code)



@filings.command("show")
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True)
@_OPS_URL
@_OPS_TOKEN
@click.pass_context
def filings_show(ctx: click.Context, reference: str, url: str | None, token: str | None, as_json: bool) -> None:
    """One filing: every recipient, its attempts, anomalies and events."""
    from cli.ops_client import run_filings_show

    client = _ops_client(ctx, url, token)
    try:
        code = run_filings_show(client, reference, click.echo, as_json=as_json)
    finally:
        client.close()
    sys.exit(code)



def register(cli: click.Group) -> None:
    """Add the `filings` group to `hub.py`'s group."""
    cli.add_command(filings)
