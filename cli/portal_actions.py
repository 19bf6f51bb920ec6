"""Portals' commands over the portal API, ModI-signed with the portal's key as `submit` and
`status` find it: `hub.py events REF`, `hub.py delegations list|grant|subdelegate|revoke`,
`status --wait`, and `hub.py resend REF AGENCY` when `--portal`/`--user` are given instead of an
operator's `--token` (cli/ops_actions.py hands over to `run_resend`).

Each names the user the portal vouches for (`--user`, `--auth`). `--json` prints the API's
answer as is; otherwise a table; progress goes to stderr. Failures end in one line with the
portal side's exit codes (cli/portal.py). Never a traceback.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from cli.portal import (EXIT_TIMEOUT, PortalError, PortalSession, checked, portal_client, portal_options,
                        print_json, progress, session_of)
from cli.table import filings_table, render_table

if TYPE_CHECKING:  # the signed client (httpx, jwt, lxml) loads when a command runs (issue 13)
    import httpx

    from cli.client import PortalClient

__all__ = ["PortalSession", "portal_options", "register", "run_resend", "run_status"]


@contextmanager
def _client(ctx: click.Context, session: PortalSession) -> Iterator[PortalClient]:
    """The session's signed client (cli/portal.py): any failure inside is one line."""
    with portal_client(ctx.obj["settings"], session) as client:
        yield client


def _answer(session: PortalSession, response: httpx.Response, show: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """The answer's JSON, printed (as JSON, or by `show`); a refusal ends the command in one line."""
    body = checked(response)
    if session.as_json:
        print_json(body)
    else:
        show(body)
    return dict(body)


def _progress(view: dict[str, Any]) -> str:
    recipients = ", ".join(f"{r['agency']} {r['state']}" for r in view.get("recipients", []))
    return f"... {view.get('reference')}: {view.get('state')} ({recipients})"


def _view(client: PortalClient, reference: str) -> dict[str, Any]:
    """The filing's status answer (a refusal ends the command), not printed."""
    return dict(checked(client.status(reference)))


def _wait_settled(session: PortalSession, client: PortalClient, reference: str, timeout: float) -> dict[str, Any]:
    """Poll the filing until it settles, a progress line on stderr at each change."""
    from cli.client import TERMINAL_FILING_STATES

    deadline = time.monotonic() + timeout
    last, interval = "", 0.1
    while True:
        view = _view(client, reference)
        line = _progress(view)
        if line != last:
            progress(line)
            last = line
        if view.get("state") in TERMINAL_FILING_STATES:
            return view
        if time.monotonic() > deadline:
            raise PortalError(f"{reference} has not settled after {timeout:g} s (state {view.get('state')})",
                                 EXIT_TIMEOUT)
        time.sleep(interval)  # polling a remote hub: the interval between asks, not a synchronisation
        interval = min(interval * 2, 1.0)


def run_status(ctx: click.Context, session: PortalSession, references: tuple[str, ...], *, wait: bool,
               timeout: float) -> None:
    """`hub.py status REF...`: each filing and its recipients; `--wait` until each settles."""
    with _client(ctx, session) as client:
        views = [_wait_settled(session, client, reference, timeout) if wait else _view(client, reference)
                 for reference in references]
    if session.as_json:
        print_json(views if len(views) > 1 else views[0])
    else:
        click.echo(filings_table(views))


def _show_resent(body: dict[str, Any]) -> None:
    r = body.get("recipient") or {}
    click.echo(render_table(["filing", "agency", "state", "message id", "corrects", "attempts"], [[
        body.get("reference"), r.get("agency"), r.get("state"), r.get("messageId"),
        (r.get("corrects") or {}).get("messageId", "-"), r.get("attempts")]]))


def run_resend(ctx: click.Context, session: PortalSession, reference: str, agency: str,
               corrected: Path | None) -> None:
    """`hub.py resend REF AGENCY --portal P --user CF [--corrected FILE]`: the portal's resend."""
    content: bytes | None = None
    content_type = "application/xml"
    if corrected is not None:
        content = corrected.read_bytes()
        content_type = "application/json" if corrected.suffix.lower() == ".json" else "application/xml"
    with _client(ctx, session) as client:
        _answer(session, client.resend(reference, agency, corrected=content, content_type=content_type),
                _show_resent)


def _event_line(event: dict[str, Any]) -> str:
    """One event as a fixed-width line (a table row that can be printed as it arrives)."""
    what = " ".join(f"{k}={v}" for k, v in _event_facts(event.get("data") or {}).items())
    return f"{event.get('sequence', ''):>5}  {event.get('createdAt', ''):<32}  {event.get('type', ''):<26}  {what[:90]}"


def _event_facts(data: dict[str, Any]) -> dict[str, Any]:
    """What a reader looks for in an event: its plain values, and of the recipient it names the
    agency, state, protocol number and outcome code; of a recipient list, the agencies."""
    facts = {k: v for k, v in data.items() if isinstance(v, (str, int, float)) and v != ""}
    recipient = data.get("recipient")
    if isinstance(recipient, dict):
        for key in ("agency", "state", "protocolNumber", "outcomeCode"):
            if recipient.get(key):
                facts[key] = recipient[key]
    recipients = data.get("recipients")
    if isinstance(recipients, list):
        facts["recipients"] = ",".join(str(r.get("agency")) for r in recipients if isinstance(r, dict))
    return facts


_EVENTS_HEADER = f"{'seq':>5}  {'at':<32}  {'event':<26}  data\n{'-' * 5}  {'-' * 32}  {'-' * 26}  {'-' * 4}"


def _show_events(body: dict[str, Any]) -> None:
    click.echo(_EVENTS_HEADER)
    for event in body.get("events", []):
        click.echo(_event_line(event))


def _run_events(ctx: click.Context, session: PortalSession, reference: str, after: int, follow: bool,
                timeout: float) -> None:
    from cli.client import TERMINAL_FILING_STATES

    with _client(ctx, session) as client:
        if not follow:
            _answer(session, client.events(reference, after=after), _show_events)
            return
        # Follow: print each new event as it comes (a table row, or one JSON object a line),
        # until the filing has settled and its feed is read to the end.
        deadline = time.monotonic() + timeout
        if not session.as_json:
            click.echo(_EVENTS_HEADER)
        last, interval, settled = "", 0.1, False
        while True:
            events = checked(client.events(reference, after=after)).get("events", [])
            for event in events:
                click.echo(orjson.dumps(event).decode() if session.as_json else _event_line(event))
                after = max(after, int(event.get("sequence") or after))
            # Settled at the previous read, and the feed read to its end since: nothing more comes.
            if settled and not events:
                return
            view = _view(client, reference)
            settled = view.get("state") in TERMINAL_FILING_STATES
            line = _progress(view)
            if line != last:
                progress(line)
                last = line
            if time.monotonic() > deadline:
                raise PortalError(f"{reference} has not settled after {timeout:g} s (state {view.get('state')})",
                                 EXIT_TIMEOUT)
            if not events and not settled:
                time.sleep(interval)  # polling a remote feed: the interval between asks
                interval = min(interval * 2, 1.0)


def _show_delegations(body: dict[str, Any]) -> None:
    items = body.get("delegations")
    if items is None:  # one delegation (grant, subdelegate, revoke)
        items = [body]
    click.echo(render_table(
        ["id", "parent", "subject", "delegate", "agencies", "valid from", "valid to", "status", "granted by"],
        [[d.get("id"), d.get("parent") or "-", d.get("subject"), d.get("delegate"), ",".join(d.get("agencies") or []),
          d.get("validFrom"), d.get("validTo"), d.get("status"), d.get("grantedBy")] for d in items]))


def _delegations(ctx: click.Context, session: PortalSession, call: Callable[[PortalClient], Any]) -> None:
    """One delegations request: its answer as a table (or JSON), a failure in one line."""
    with _client(ctx, session) as client:
        _answer(session, call(client), _show_delegations)


def register(cli: click.Group) -> None:
    """Add `events` and `delegations …` to `hub.py`'s group."""

    @cli.command("events")
    @click.argument("reference")
    @click.option("--after", type=click.IntRange(min=0), default=0, show_default=True,
                  help="Only events after this sequence number.")
    @click.option("--follow", is_flag=True, help="Keep reading new events until the filing settles.")
    @click.option("--timeout", type=float, default=120.0, show_default=True, help="How long --follow waits.")
    @portal_options
    @click.pass_context
    def events(ctx: click.Context, reference: str, after: int, follow: bool, timeout: float, url: str | None,
               portal: str, user: str, auth: str, as_json: bool) -> None:
        """A filing's events (the feed its portal callback receives)."""
        _run_events(ctx, session_of(ctx, url, portal, user, auth, as_json), reference, after, follow, timeout)

    @cli.group("delegations")
    def delegations() -> None:
        """Delegations and sub-delegations, as the portal's user."""

    @delegations.command("list")
    @click.option("--subject", required=True, metavar="TAX_CODE", help="The business or person represented.")
    @portal_options
    @click.pass_context
    def list_(ctx: click.Context, subject: str, url: str | None, portal: str, user: str, auth: str,
              as_json: bool) -> None:
        """The subject's delegations the user takes part in."""
        _delegations(ctx, session_of(ctx, url, portal, user, auth, as_json), lambda client: client.delegations(subject))

    @delegations.command("grant")
    @click.option("--subject", required=True, metavar="TAX_CODE")
    @click.option("--delegate", required=True, metavar="TAX_CODE")
    @click.option("--agency", "agencies", multiple=True, required=True, help="Repeatable.")
    @click.option("--valid-from", default=None, metavar="DATE")
    @click.option("--valid-to", required=True, metavar="DATE")
    @portal_options
    @click.pass_context
    def grant(ctx: click.Context, subject: str, delegate: str, agencies: tuple[str, ...], valid_from: str | None,
              valid_to: str, url: str | None, portal: str, user: str, auth: str, as_json: bool) -> None:
        """The user (the subject's legal representative) delegates DELEGATE at some agencies."""
        _delegations(ctx, session_of(ctx, url, portal, user, auth, as_json), lambda client: client.grant_delegation(
            subject=subject, delegate=delegate, agencies=list(agencies), valid_from=valid_from, valid_to=valid_to))

    @delegations.command("subdelegate")
    @click.argument("delegation_id")
    @click.option("--collaborator", required=True, metavar="TAX_CODE")
    @click.option("--agency", "agencies", multiple=True, help="Repeatable (default: the parent's).")
    @click.option("--valid-from", default=None, metavar="DATE")
    @click.option("--valid-to", default=None, metavar="DATE")
    @portal_options
    @click.pass_context
    def subdelegate(ctx: click.Context, delegation_id: str, collaborator: str, agencies: tuple[str, ...],
                    valid_from: str | None, valid_to: str | None, url: str | None, portal: str, user: str,
                    auth: str, as_json: bool) -> None:
        """The delegate passes part of DELEGATION_ID to a collaborator."""
        _delegations(ctx, session_of(ctx, url, portal, user, auth, as_json), lambda client: client.subdelegate(
            delegation_id, collaborator=collaborator, agencies=list(agencies) or None, valid_from=valid_from,
            valid_to=valid_to))

    @delegations.command("revoke")
    @click.argument("delegation_id")
    @portal_options
    @click.pass_context
    def revoke(ctx: click.Context, delegation_id: str, url: str | None, portal: str, user: str, auth: str,
               as_json: bool) -> None:
        """End DELEGATION_ID (and the sub-delegations under it)."""
        _delegations(ctx, session_of(ctx, url, portal, user, auth, as_json),
                     lambda client: client.revoke_delegation(delegation_id))
