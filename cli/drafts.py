"""`hub.py drafts ...`: a portal's drafts from the command line, with the portal's credentials.

Each command prints a readable table (or the hub's JSON with `--json`) and returns the exit
status; a refusal is one line on stderr (`cli.portal.problem_line`) with the portal side's exit
code. The hub unreachable raises httpx's error, which `cli.portal.portal_client` ends in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from cli.client import PortalClient
from cli.portal import PortalError, checked
from cli.table import render_table

__all__ = ["DraftCommands"]

Echo = Callable[[str], None]


def _media_type(path: Path) -> str:
    return "application/json" if path.suffix.lower() == ".json" else "application/xml"


def _warnings_table(items: list[dict[str, Any]]) -> str:
    return render_table(["location", "code", "detail"],
                        [[w.get("location"), w.get("code"), w.get("detail")] for w in items])


class DraftCommands:
    """The draft commands over one signed portal client.

    Args:
        client: signs as the portal and names the user.
        echo: prints a line to stdout; `error` prints one to stderr.
        as_json: print the hub's answers as JSON instead of tables.
    """

    def __init__(self, client: PortalClient, echo: Echo, error: Echo, *, as_json: bool = False) -> None:
        self._client = client
        self._echo = echo
        self._error = error
        self._json = as_json

    def _call(self, send: Callable[[], httpx.Response], show: Callable[[dict[str, Any]], None],
              ok: tuple[int, ...] = (200, 201, 202)) -> int:
        """Send one request; print its answer with `show` (or as JSON), or one error line."""
        try:
            body = checked(send(), ok)
        except PortalError as exc:
            self._error(f"error: {exc}")
            return exc.exit_code
        if self._json:
            self._echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        else:
            show(body)
        return 0

    def _show_draft(self, body: dict[str, Any]) -> None:
        rows = [["draft", body["draftId"]], ["kind", body.get("kind") or "-"], ["state", body["state"]],
                ["version", body["version"]], ["updated", body["updatedAt"]], ["expires", body["expiresAt"]]]
        if body.get("reference"):
            rows.append(["filing", body["reference"]])
        self._echo(render_table(["field", "value"], rows))
        warnings = body.get("warnings") or []
        self._echo(f"\n{len(warnings)} warning(s)" + (":\n" + _warnings_table(warnings) if warnings else ""))

    def create(self, path: Path) -> int:
        return self._call(lambda: self._client.create_draft(path.read_bytes(), content_type=_media_type(path)),
                          self._show_draft)

    def update(self, draft_id: str, path: Path, if_match: str | None = None) -> int:
        return self._call(lambda: self._client.update_draft(draft_id, path.read_bytes(),
                                                            content_type=_media_type(path), if_match=if_match),
                          self._show_draft)

    def show(self, draft_id: str) -> int:
        return self._call(lambda: self._client.draft(draft_id), self._show_draft)

    def list(self, cursor: str | None = None, limit: int | None = None) -> int:
        def show(body: dict[str, Any]) -> None:
            self._echo(render_table(
                ["draft", "kind", "state", "version", "updated", "expires", "warnings", "filing"],
                [[d["draftId"], d.get("kind") or "-", d["state"], d["version"], d["updatedAt"], d["expiresAt"],
                  len(d.get("warnings") or []), d.get("reference") or "-"] for d in body["drafts"]]))
            if body.get("nextCursor"):
                self._echo(f"\nmore: --cursor {body['nextCursor']}")

        return self._call(lambda: self._client.drafts(cursor=cursor, limit=limit), show)

    def delete(self, draft_id: str) -> int:
        def show(_body: dict[str, Any]) -> None:
            self._echo(f"draft {draft_id} deleted")

        return self._call(lambda: self._client.delete_draft(draft_id), show, ok=(204,))

    def check(self, draft_id: str, previews: bool = False) -> int:
        def show(body: dict[str, Any]) -> None:
            self._echo(f"ready: {'yes' if body['ready'] else 'no'}")
            if body["errors"]:
                self._echo(f"\n{len(body['errors'])} error(s):\n" + _warnings_table(body["errors"]))
            self._echo("\n" + render_table(
                ["recipient", "operation", "authorized", "message valid", "why not"],
                [[r["agency"], r["operation"], "yes" if r["authorized"] else "no",
                  "yes" if r["messageValid"] else "no",
                  "; ".join([r.get("reason", "")] + [f"{e.get('field')}: {e.get('detail')}" for e in r["errors"]])
                  .strip("; ")[:100]] for r in body["recipients"]]))
            for r in body["recipients"] if previews else []:
                self._echo(f"\n--- {r['agency']} {r['operation']} ({r['previewMediaType']}) ---\n{r['preview']}")

        code = self._call(lambda: self._client.check_draft(draft_id), show)
        return code

    def submit(self, draft_id: str, idempotency_key: str | None = None) -> int:
        def show(body: dict[str, Any]) -> None:
            self._echo(render_table(["filing", "state", "recipients"],
                                    [[body["reference"], body["state"],
                                      ", ".join(f"{r['agency']} {r['operation']}" for r in body["recipients"])]]))

        return self._call(lambda: self._client.submit_draft(draft_id, idempotency_key=idempotency_key), show)
