"""`hub.py filings search|show`: the operator API read over HTTP with a personal access token.
Also the client the action commands (cli/ops_actions.py) use, with their own exits.

One-line errors, never a traceback: the hub unreachable, the token refused, a bad filter.
Exit codes (sysexits.h): 0 done, 1 not found, 64 bad request, 69 hub unreachable or
unavailable, 77 refused (401/403), 70 anything else the hub answered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson

from cli.table import render_table
from config.settings import Settings

if TYPE_CHECKING:  # loaded when a client is made, not by every command line (issue 13)
    import httpx

__all__ = ["EXIT_NOT_FOUND", "EXIT_SOFTWARE", "exit_code_for", "EXIT_REFUSED", "EXIT_UNAVAILABLE", "EXIT_USAGE", "HubUnreachable", "OpsClient",
           "OpsError", "hub_url", "read_pages", "run_filings_search", "run_filings_show"]

EXIT_NOT_FOUND = 1
EXIT_USAGE = 64  # EX_USAGE: the hub refused the parameters
EXIT_SOFTWARE = 70
EXIT_UNAVAILABLE = 69  # EX_UNAVAILABLE: the hub cannot be reached, or its store is away
EXIT_REFUSED = 77  # EX_NOPERM: no valid token, or a role too low

Echo = Callable[..., None]


class OpsError(Exception):
    """A request the hub did not answer with success; `exit_code` says how the CLI ends."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _exit_code(status: int) -> int:
    if status == 404:
        return EXIT_NOT_FOUND
    if status in (400, 422):
        return EXIT_USAGE
    if status in (401, 403):
        return EXIT_REFUSED
    if status in (502, 503, 504):
        return EXIT_UNAVAILABLE
    return EXIT_SOFTWARE


#: How a command ends for the hub's HTTP status (also every portal command's, cli/portal.py).
exit_code_for = _exit_code


class HubUnreachable(Exception):
    """No answer from the hub (refused connection, timeout, DNS); `__cause__` is httpx's error."""

    def __init__(self, base: str, error: httpx.TransportError) -> None:
        super().__init__(f"cannot reach the hub at {base}: {type(error).__name__}: {error}")
        self.base = base
        self.error = error


def hub_url(settings: Settings, url: str | None = None) -> str:
    """`url`, or the hub's address from the configuration (`[api] host` and `port`)."""
    return url or f"http://{settings.api.host}:{settings.api.port}"


def read_pages(fetch: Callable[[str | None], Mapping[str, Any]], cursor: str | None, follow: bool, echo: Echo, *,
               cursor_key: str, noun: str) -> tuple[list[dict[str, Any]], str | None]:
    """The items of a page from `cursor` (with `follow`, of every page after it too) and the
    cursor that goes on; a long export says how far it got, on stderr so that stdout stays the
    result. (Also the portal's search, cli/portal_search.py.)"""
    items: list[dict[str, Any]] = []
    pages = 0
    while True:
        page = fetch(cursor)
        items.extend(page["items"])
        cursor = page.get(cursor_key)
        pages += 1
        if not follow or not cursor:
            return items, cursor
        echo(f"... page {pages}: {len(items)} {noun} so far", err=True)


class OpsClient:
    """The operator API at `url` (paths under `/v1/ops`), with a personal access token (Bearer) when given."""

    def __init__(self, url: str, token: str | None, *, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        import httpx

        self._base = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=self._base, headers=headers, timeout=timeout, trust_env=False,
                                    transport=transport)

    def close(self) -> None:
        self._client.close()

    def call(self, method: str, path: str, *, body: dict[str, Any] | None = None,
             params: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None) -> httpx.Response:
        """One request, whatever the hub answers.

        Raises:
            HubUnreachable: the hub did not answer.
        """
        import httpx

        try:
            return self._client.request(method, path, json=body, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise HubUnreachable(self._base, exc) from exc

    def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        """GET a JSON resource of the operator API.

        Raises:
            OpsError: the hub could not be reached, or answered a problem.
        """
        try:
            response = self.call("GET", path, params=params, headers={"Accept": "application/json"})
        except HubUnreachable as exc:
            raise OpsError(f"cannot reach the hub at {self._base} ({type(exc.error).__name__})",
                           EXIT_UNAVAILABLE) from exc.error
        if response.status_code >= 400:
            try:
                problem = orjson.loads(response.content)
                detail = problem.get("detail") or problem.get("title") or ""
                errors = problem.get("errors") or []
                where = f" ({errors[0].get('location')})" if errors and errors[0].get("location") else ""
            except (orjson.JSONDecodeError, AttributeError):
                detail, where = response.text[:200], ""
            raise OpsError(f"the hub answered {response.status_code}: {detail}{where}",
                           _exit_code(response.status_code))
        return response.json()


def _dump(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


def run_filings_search(client: OpsClient, filters: Mapping[str, str], echo: Echo, *, as_json: bool = False,
                       limit: int = 50, follow: bool = False) -> int:
    """Print the matching deliveries as a table (or JSON); with `follow`, every page.

    Returns:
        0, or the exit code of the failure (printed as one line on stderr).
    """
    params = {k: v for k, v in filters.items() if v is not None}
    params["limit"] = str(limit)
    try:
        rows, cursor = read_pages(lambda at: client.get("/v1/ops/search", {**params, **({"cursor": at} if at else {})}),
                                  None, follow, echo, cursor_key="cursor", noun="rows")
    except OpsError as exc:
        echo(str(exc), err=True)
        return exc.exit_code
    if as_json:
        echo(_dump({"items": rows, "cursor": cursor}))
        return 0
    if not rows:
        echo("no filing matches")
        return 0
    echo(render_table(
        ["filing", "kind", "created", "recipient", "state", "protocol number", "attempts", "last error"],
        [[r["reference"], r["kind"], (r["createdAt"] or "")[:19], r["agency"], r["state"],
          r["protocolNumber"] or "-", r["attempts"], (r["lastError"] or "")[:60]] for r in rows],
    ))
    if cursor:
        echo(f"more rows: --cursor {cursor} (or --all)")
    return 0


def run_filings_show(client: OpsClient, reference: str, echo: Echo, *, as_json: bool = False) -> int:
    """Print one filing's recipients, attempts, anomalies and events.

    Returns:
        0, or the exit code of the failure (printed as one line on stderr).
    """
    try:
        filing = client.get(f"/v1/ops/filings/{reference}")
    except OpsError as exc:
        echo(str(exc), err=True)
        return exc.exit_code
    if as_json:
        echo(_dump(filing))
        return 0
    echo(f"{filing['reference']}  {filing['kind']}  {filing['state']}  portal {filing['portal']}  "
         f"subject {filing['subject']['taxCode']}  created {filing['createdAt']}")
    echo("")
    recipients = filing["recipients"]
    echo(render_table(
        ["recipient", "operation", "message id", "state", "protocol number", "outcome", "attempts"],
        [[r["agency"], r["operation"], r["messageId"], r["state"], r["receipt"]["protocolNumber"] or "-",
          r["receipt"]["outcome"] or "-", r["attemptCount"]] for r in recipients],
    ))
    tries = [(r["agency"], a) for r in recipients for a in r["attempts"]]
    if tries:
        echo("")
        echo(render_table(
            ["recipient", "#", "started", "ms", "result", "class", "http", "code", "error"],
            [[agency, a["number"], a["startedAt"], f"{a['durationMs']:.0f}", a["result"], a.get("errorClass") or "",
              a.get("httpStatus") or "", a["errorCode"] or "", (a["errorText"] or "")[:60]] for agency, a in tries],
        ))
    flagged = [(r["agency"], a) for r in recipients for a in r["anomalies"]]
    if flagged:
        echo("")
        echo(render_table(["recipient", "anomaly", "at"], [[agency, a["kind"], a["createdAt"]] for agency, a in flagged]))
    if filing["events"]:
        echo("")
        echo(render_table(["#", "event", "at", "notified"],
                          [[e["seq"], e["type"], e["createdAt"], e["notifiedAt"] or "-"] for e in filing["events"]]))
    return 0
