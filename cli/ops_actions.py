"""Operators' action commands over the operator API (HTTP): `hub.py resend|retry|cancel REF
AGENCY`, `hub.py agencies pause|resume|resend-undeliverable AGENCY`, `hub.py dlq list|replay`.
(`resend` with `--portal`/`--user` instead of `--token` is the portal's: cli/portal_actions.py.)

Each authenticates with a personal access token (`--token` or `CROCEVIA_OPERATOR_TOKEN`).
Without `--yes` an action only shows its preview; `--json` prints the API's answer as is.
When the hub cannot be reached the command says so in one line (exit 2); a refusal prints
the problem's title and detail (exit 1).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from cli.ops_client import HubUnreachable, OpsClient, hub_url
from cli.table import render_table

if TYPE_CHECKING:
    import httpx

__all__ = ["register"]

#: Exit statuses: the hub refused the request; the hub could not be reached.
EXIT_REFUSED = 1
EXIT_UNREACHABLE = 2


@dataclass(frozen=True)
class _Connection:
    """Where and as whom a command asks (`--url`, `--token`), and whether it prints JSON (`--json`)."""

    url: str
    token: str | None
    as_json: bool


def _finish(conn: _Connection, response: httpx.Response, show: Callable[[dict[str, Any]], None]) -> None:
    """Print the answer (JSON or readable) and exit with its status."""
    try:
        body = response.json()
    except ValueError:
        body = {"title": f"HTTP {response.status_code}", "detail": response.text[:200]}
    if conn.as_json:
        click.echo(json.dumps(body, indent=2, ensure_ascii=False))
    elif response.is_success:
        show(body)
        if body.get("confirmed") is False:
            click.echo("(preview only: nothing was done; add --yes to do it)")
    else:
        click.echo(f"error: {response.status_code} {body.get('title', '')}: {body.get('detail', '')}", err=True)
    sys.exit(0 if response.is_success else EXIT_REFUSED)


def _run(conn: _Connection, method: str, path: str, show: Callable[[dict[str, Any]], None], *,
         body: dict[str, Any] | None = None, params: dict[str, Any] | None = None) -> None:
    client = OpsClient(conn.url, conn.token)
    try:
        response = client.call(method, f"/v1/ops{path}", body=body, params=params)
    except HubUnreachable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_UNREACHABLE)
    finally:
        client.close()
    _finish(conn, response, show)


def _show_recipient(body: dict[str, Any]) -> None:
    r = body.get("recipient") or {}
    preview = body.get("preview")
    if preview:
        click.echo(render_table(["field", "value"], sorted(preview.items())))
    click.echo(render_table(["agency", "state", "message id", "attempts", "next attempt", "notes"], [[
        r.get("agency"), r.get("state"), r.get("messageId"), r.get("attempts"), r.get("nextAttemptAt") or "-",
        (r.get("outcomeText") or r.get("lastError") or "")[:60]]]))


def _show_fields(body: dict[str, Any]) -> None:
    shown = {k: v for k, v in {**body.pop("preview", {}), **body}.items()
             if k not in ("action", "confirmed", "messages", "references", "skipped")}
    click.echo(render_table(["field", "value"], sorted((k, json.dumps(v) if isinstance(v, (dict, list)) else v)
                                                       for k, v in shown.items())))


def _show_letters(body: dict[str, Any]) -> None:
    counts = body.get("counts") or (body.get("preview") or {}).get("counts") or {}
    if counts:
        click.echo(render_table(["agency", "dead letters"], sorted(counts.items())))
    messages = body.get("messages") or []
    if messages:
        click.echo(render_table(["agency", "job", "delivery", "reason", "dead-lettered at"], [
            [m["agency"], m["jobId"], m["deliveryId"], m["reason"], m["deadLetteredAt"]] for m in messages]))
    if "replayed" in body:
        click.echo(f"replayed {body['replayed']} message(s)")


def _action(confirm: bool, reason: str | None, **more: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"confirm": confirm, **more}
    if reason:
        body["reason"] = reason
    return body


def _recipient(reference: str, agency: str) -> str:
    return f"/filings/{reference}/recipients/{agency}"


_yes = click.option("--yes", "confirm", is_flag=True, help="Do it (without: only the preview).")
_reason = click.option("--reason", default=None, help="Why (kept in the audit trail).")


def _resend_as_portal(ctx: click.Context, reference: str, agency: str, url: str | None, token: str | None,
                      as_json: bool, portal: str | None, user: str | None, auth: str, corrected: Path | None,
                      reason: str | None) -> None:
    """The portal's resend (cli/portal_actions.py): its credentials, never an operator's token."""
    from click.core import ParameterSource

    from cli.portal import session_of
    from cli.portal_actions import run_resend

    if token and ctx.get_parameter_source("token") is not ParameterSource.ENVIRONMENT:
        raise click.UsageError("--token is an operator's credential, --portal/--user a portal's: give one or the other")
    if not user:
        raise click.UsageError("a portal's resend names the user it vouches for: --user TAX_CODE")
    if reason:
        raise click.UsageError("--reason is for operators (their audit trail); a portal's resend has none")
    run_resend(ctx, session_of(ctx, url, portal or "demo", user, auth, as_json), reference, agency, corrected)


def register(cli: click.Group) -> None:
    """Add the action commands to `hub.py`'s group; the connection options go on each command."""

    def connection(fn: Callable[..., Any]) -> Callable[..., Any]:
        fn = click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")(fn)
        fn = click.option("--token", envvar="CROCEVIA_OPERATOR_TOKEN", default=None,
                          help="Personal access token (env CROCEVIA_OPERATOR_TOKEN).")(fn)
        fn = click.option("--url", envvar="CROCEVIA_OPERATOR_URL", default=None,
                          help="The hub's address (default: the configured API host and port).")(fn)
        return fn

    def setup(ctx: click.Context, url: str | None, token: str | None, as_json: bool) -> _Connection:
        return _Connection(hub_url(ctx.obj["settings"], url), token, as_json)

    @cli.command("resend")
    @click.argument("reference")
    @click.argument("agency")
    @_yes
    @_reason
    @connection
    @click.option("--portal", default=None, help="Resend as this portal (its key, as `submit` finds it).")
    @click.option("--user", default=None, metavar="TAX_CODE", help="As a portal: the user it vouches for.")
    @click.option("--auth", default="SPID2", show_default=True, help="As a portal: SPID1..3, CIE or CNS.")
    @click.option("--corrected", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                  help="As a portal: a corrected filing (XML or JSON) for a rejected recipient.")
    @click.pass_context
    def resend(ctx: click.Context, reference: str, agency: str, confirm: bool, reason: str | None,
               url: str | None, token: str | None, as_json: bool, portal: str | None, user: str | None,
               auth: str, corrected: Path | None) -> None:
        """Send a recipient's message again (same message id). An operator (--token) resends an
        undeliverable or cancelled one; a portal (--portal/--user) its own, or a corrected one."""
        if portal or user:
            _resend_as_portal(ctx, reference, agency, url, token, as_json, portal, user, auth, corrected, reason)
            return
        if corrected is not None:
            raise click.UsageError("--corrected is a portal's resend: name --portal and --user")
        conn = setup(ctx, url, token, as_json)
        _run(conn, "POST", f"{_recipient(reference, agency)}/resend", _show_recipient, body=_action(confirm, reason))

    @cli.command("retry")
    @click.argument("reference")
    @click.argument("agency")
    @_yes
    @_reason
    @click.option("--force", is_flag=True, help="Even before the agency's Retry-After (needs --reason).")
    @connection
    @click.pass_context
    def retry(ctx: click.Context, reference: str, agency: str, confirm: bool, reason: str | None, force: bool,
              url: str | None, token: str | None, as_json: bool) -> None:
        """Make a retrying recipient's next attempt due now, ignoring its backoff."""
        conn = setup(ctx, url, token, as_json)
        _run(conn, "POST", f"{_recipient(reference, agency)}/retry", _show_recipient,
             body=_action(confirm, reason, force=force))

    @cli.command("cancel")
    @click.argument("reference")
    @click.argument("agency")
    @_yes
    @click.option("--reason", required=True, help="Why (required; kept in the audit trail).")
    @connection
    @click.pass_context
    def cancel(ctx: click.Context, reference: str, agency: str, confirm: bool, reason: str,
               url: str | None, token: str | None, as_json: bool) -> None:
        """Cancel a recipient: no more calls to its agency (a resend revives it)."""
        conn = setup(ctx, url, token, as_json)
        _run(conn, "POST", f"{_recipient(reference, agency)}/cancel", _show_recipient, body=_action(confirm, reason))

    @cli.group("agencies")
    def agencies() -> None:
        """Act on one agency: pause, resume, resend its undeliverable recipients."""

    for verb, helptext in (("pause", "Pause calls to AGENCY (its jobs wait; nothing is lost)."),
                           ("resume", "Resume calls to AGENCY; the jobs the pause held become due.")):
        def make(verb: str = verb) -> Callable[..., None]:
            @_yes
            @_reason
            @connection
            @click.argument("agency")
            @click.pass_context
            def command(ctx: click.Context, agency: str, confirm: bool, reason: str | None,
                        url: str | None, token: str | None, as_json: bool) -> None:
                conn = setup(ctx, url, token, as_json)
                _run(conn, "POST", f"/agencies/{agency}/{verb}", _show_fields, body=_action(confirm, reason))

            return command

        agencies.command(verb, help=helptext)(make())

    @agencies.command("resend-undeliverable")
    @click.argument("agency")
    @click.option("--from", "start", required=True, help="RFC 3339 time, e.g. 2026-03-01T08:00:00+01:00.")
    @click.option("--to", "end", required=True, help="RFC 3339 time (exclusive).")
    @_yes
    @_reason
    @connection
    @click.pass_context
    def resend_undeliverable(ctx: click.Context, agency: str, start: str, end: str, confirm: bool,
                             reason: str | None, url: str | None, token: str | None, as_json: bool) -> None:
        """Resend AGENCY's recipients that became undeliverable in [--from, --to): count first."""
        conn = setup(ctx, url, token, as_json)
        _run(conn, "POST", f"/agencies/{agency}/resend-undeliverable", _show_fields,
             body=_action(confirm, reason, **{"from": start, "to": end}))

    @cli.group("dlq")
    def dlq() -> None:
        """RabbitMQ's dead-letter queues: list and replay."""

    @dlq.command("list")
    @click.option("--agency", default=None, help="Only this agency's queue.")
    @click.option("--limit", type=int, default=100, show_default=True)
    @connection
    @click.pass_context
    def dlq_list(ctx: click.Context, agency: str | None, limit: int, url: str | None, token: str | None,
                 as_json: bool) -> None:
        """Show the dead-lettered messages (nothing moves)."""
        conn = setup(ctx, url, token, as_json)
        params: dict[str, Any] = {"limit": limit}
        if agency:
            params["agency"] = agency
        _run(conn, "GET", "/dead-letters", _show_letters, params=params)

    @dlq.command("replay")
    @click.option("--agency", default=None, help="Only this agency's queue.")
    @click.option("--job", "jobs", type=int, multiple=True, help="Only this job id (repeatable).")
    @click.option("--limit", type=int, default=100, show_default=True)
    @_yes
    @_reason
    @connection
    @click.pass_context
    def dlq_replay(ctx: click.Context, agency: str | None, jobs: tuple[int, ...], limit: int, confirm: bool,
                   reason: str | None, url: str | None, token: str | None, as_json: bool) -> None:
        """Move dead-lettered messages back to their agency's queue."""
        conn = setup(ctx, url, token, as_json)
        more: dict[str, Any] = {"limit": limit}
        if agency:
            more["agency"] = agency
        if jobs:
            more["jobIds"] = list(jobs)
        _run(conn, "POST", "/dead-letters/replay", _show_letters, body=_action(confirm, reason, **more))
