"""Portals' filing commands over the portal API, ModI-signed with the portal's key:
`hub.py submit FILE...`, `hub.py status REF...`, `hub.py receipt REF -o FILE`.

`register` adds them to `hub.py`'s root group. Imports stay lazy (inside each command) so that
`hub.py --help` and the service commands do not pay for the portal client.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from cli.context import settings_of as _settings
from cli.portal import portal_options, session_of

__all__ = ["register"]


@click.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--url", default=None, help="Hub base URL (default from config).")
@click.option("--portal", envvar="CROCEVIA_PORTAL", default="demo", show_default=True,
              help="The portal whose key signs (env CROCEVIA_PORTAL).")
@click.option("--idempotency-key", default=None)
@click.option("--user", default=None, metavar="TAX_CODE",
              help="The user the portal vouches for (default: each filing's declarant, as the demo portal).")
@click.option("--auth", default="SPID2", show_default=True, help="How the user logged in: SPID1..3, CIE or CNS.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer (only it, on stdout).")
@click.pass_context
def submit(ctx: click.Context, files: tuple[str, ...], url: str | None, portal: str, idempotency_key: str | None,
           user: str | None, auth: str, as_json: bool) -> None:
    """Submit filings (XML or JSON files) to a running hub, ModI-signed; print each filing's
    reference and recipients. A refused file is one line on stderr; the others still go."""
    from cli.client import declarant_of
    from cli.portal import EXIT_USAGE, PortalError, checked, make_user, portal_client, print_json
    from cli.table import render_table

    session = session_of(ctx, url, portal, user, auth, as_json)
    answers: list[dict[str, Any]] = []
    code = 0
    with portal_client(_settings(ctx), session) as client:
        for name in files:
            data = Path(name).read_bytes()
            ctype = "application/json" if name.endswith(".json") else "application/xml"
            try:
                tax_code = user or declarant_of(data, ctype)
                if not tax_code:
                    raise PortalError("no declarant tax code found; name the user with --user", EXIT_USAGE)
                body = checked(client.submit(data, content_type=ctype, idempotency_key=idempotency_key,
                                             user=make_user(tax_code, auth)))
            except PortalError as exc:
                click.echo(f"error: {name}: {exc}", err=True)
                code = code or exc.exit_code
                continue
            answers.append({"file": name, **body})
    if as_json:
        print_json(answers[0] if len(files) == 1 and answers else answers)
    elif answers:
        click.echo(render_table(["file", "filing", "state", "recipients"], [
            [a["file"], a.get("reference"), a.get("state"),
             ", ".join(f"{r.get('agency')} {r.get('operation')}" for r in a.get("recipients") or [])]
            for a in answers]))
    sys.exit(code)


@click.command()
@click.argument("references", nargs=-1, required=True)
@click.option("--wait", is_flag=True, help="Poll until each filing settles (a progress line on stderr).")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="How long --wait waits.")
@portal_options
@click.pass_context
def status(ctx: click.Context, references: tuple[str, ...], url: str | None, portal: str, user: str, auth: str,
           wait: bool, timeout: float, as_json: bool) -> None:
    """Show filings and every recipient's state."""
    from cli.portal_actions import run_status

    run_status(ctx, session_of(ctx, url, portal, user, auth, as_json), references, wait=wait, timeout=timeout)


@click.command()
@click.argument("reference")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, writable=True),
              help="Where to write the PDF.")
@portal_options
@click.pass_context
def receipt(ctx: click.Context, reference: str, output: str, url: str | None, portal: str, user: str,
            auth: str, as_json: bool) -> None:
    """Save a settled filing's PDF receipt (each agency's protocol number, date and outcome)."""
    from cli.portal import EXIT_CANNOT_WRITE, PortalError, checked, portal_client, print_json

    with portal_client(_settings(ctx), session_of(ctx, url, portal, user, auth, as_json)) as client:
        response = client.receipt(reference)
        if response.status_code != 200:
            checked(response)  # the refusal, in one line
        try:
            Path(output).write_bytes(response.content)
        except OSError as exc:
            raise PortalError(f"cannot write {output}: {exc.strerror}", EXIT_CANNOT_WRITE) from None
    if as_json:
        print_json({"reference": reference, "file": output, "bytes": len(response.content)})
    else:
        click.echo(f"{reference}: receipt saved to {output} ({len(response.content)} bytes)")



def register(cli: click.Group) -> None:
    """Add `submit`, `status` and `receipt` to `hub.py`'s group."""
    for command in (submit, status, receipt):
        cli.add_command(command)
