"""`hub.py filings search|archive|unarchive` as a portal: the desk's API (`GET /v1/filings`,
`POST .../archive`) with the portal's ModI credentials and the user it vouches for.

A refusal raises `cli.portal.PortalError`, which the command's `portal_client` ends in one line
with the portal side's exit code (the operators' for the same answer, cli/portal.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from cli.client import PortalClient
from cli.ops_client import read_pages
from cli.portal import checked
from cli.table import render_table

__all__ = ["run_portal_archive", "run_portal_search", "run_retention"]

Echo = Callable[..., None]


def _dump(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def _recipients(item: Mapping[str, Any]) -> str:
    return ", ".join(f"{r['agency']}:{r['state']}" + (f" {r['protocolNumber']}" if r.get("protocolNumber") else "")
                     for r in item.get("recipients", []))


def run_portal_search(client: PortalClient, filters: Mapping[str, str], echo: Echo, *,
                      as_json: bool = False, limit: int = 50, follow: bool = False) -> int:
    """Print the user's matching filings as a table (or JSON); with `follow`, every page.

    Returns:
        0 (a refusal raises `PortalError`).
    """
    params = {k: v for k, v in filters.items() if v is not None}
    params["limit"] = str(limit)
    items, cursor = read_pages(lambda at: checked(client.search({**params, **({"cursor": at} if at else {})})),
                               params.pop("cursor", None), follow, echo, cursor_key="nextCursor", noun="filings")
    if as_json:
        echo(_dump({"items": items, "nextCursor": cursor}))
        return 0
    if not items:
        echo("no filing matches")
        return 0
    echo(render_table(
        ["filing", "kind", "state", "subject", "filed", "archived", "recipients (state, protocol number)"],
        [[i["reference"], i["kind"], i["state"], i["subjectTaxCode"], (i["createdAt"] or "")[:19],
          "yes" if i.get("archived") else "", _recipients(i)] for i in items],
    ))
    if cursor:
        echo(f"more filings: --cursor {cursor} (or --all)")
    return 0


def run_portal_archive(client: PortalClient, reference: str, archived: bool, echo: Echo, *,
                       as_json: bool = False) -> int:
    """Archive (or unarchive) one filing and print it.

    Returns:
        0 (a refusal raises `PortalError`).
    """
    item = checked(client.archive(reference) if archived else client.unarchive(reference))
    if as_json:
        echo(_dump(item))
    else:
        echo(f"{item['reference']}: {item['state']}, {'archived ' + item['archivedAt'] if item['archived'] else 'on the desk'}")
    return 0


def run_retention(report: Any, echo: Echo, *, as_json: bool = False) -> int:
    """Print a retention pass (`service.retention.RetentionReport`): one line per filing."""
    rows = [{"reference": p.reference, "settledAt": p.settled_at.isoformat(), "removed": p.removed,
             "sha256": p.sha256} for p in report.filings]
    if as_json:
        echo(_dump({"cutoff": report.cutoff.isoformat(), "dryRun": report.dry_run, "filings": rows}))
        return 0
    verb = "would purge" if report.dry_run else "purged"
    if rows:
        echo(render_table(["filing", "settled", "document bytes", "messages", "bodies", "sha-256"],
                          [[r["reference"], r["settledAt"][:19], r["removed"]["documentBytes"],
                            r["removed"]["messages"], r["removed"]["attemptBodies"], r["sha256"][:16]] for r in rows]))
    echo(f"{verb} the payloads of {len(rows)} settled filing(s) settled before {report.cutoff.isoformat()}")
    return 0
