"""The console's reading pages: login and logout, the dashboard per agency, search, a filing's
detail and problems by cause. Each reads through the operator API's read model (`ctx.ops`)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

import orjson
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from api.context import context_of, ops_guard_of
from api.ops.auth import TokenOrSessionGuard
from api.ops.search import SearchParamInvalid, parse_search_params
from domain.states import DeliveryState, FilingState
from service.operations import can_cancel, can_resend, can_retry, operator_actor
from service.operators import LoginRefused, OperatorAccounts, SessionRecord
from service.ops_read import OpsReader, rfc3339
from service.ports import StoreError
from console.i18n import ZONE
from console.web import BASE, console_of

__all__ = ["page_routes"]

log = structlog.get_logger("crocevia.console")

#: The search form's text fields (the operator API's query names).
SEARCH_FIELDS = ("reference", "protocolNumber", "subjectTaxCode", "messageId", "kind", "portal")


def _day_bound(text: str, *, end: bool) -> str:
    """A `YYYY-MM-DD` day from the form (a day in Italy) as the API's instant (start of that
    day, or of the next one for `to`, so the last day is included)."""
    day = date.fromisoformat(text) + timedelta(days=1 if end else 0)
    return datetime.combine(day, time(), ZONE).isoformat()


def _search_params(form: Any) -> dict[str, str]:
    """The API's query parameters from the form: blank fields dropped, days made instants."""
    params = {k: v.strip() for k, v in form.items() if k != "lang" and isinstance(v, str) and v.strip()}
    for name in ("from", "to"):
        if name in params:
            try:
                params[name] = _day_bound(params[name], end=name == "to")
            except ValueError:
                pass  # left as typed: the API's rule names it precisely
    return params


def _ops(request: Request) -> OpsReader:
    ops = context_of(request).ops
    assert ops is not None  # the console is mounted only with the read model
    return ops


def _accounts(request: Request) -> OperatorAccounts:
    accounts = context_of(request).operators
    assert accounts is not None  # the console is mounted only with operator accounts
    return accounts


def _session_guard(request: Request) -> TokenOrSessionGuard:
    guard = ops_guard_of(request)
    assert isinstance(guard, TokenOrSessionGuard)  # console sessions are that guard's
    return guard


async def login_page(request: Request) -> Response:
    console = console_of(request)
    return console.render(request, "login.html", ended=request.query_params.get("ended") == "1",
                          next=_local(request.query_params.get("next")), failed=None)


async def login(request: Request) -> Response:
    console = console_of(request)
    accounts = _accounts(request)
    guard = _session_guard(request)
    form = await console.form(request)
    if isinstance(form, Response):
        return form
    name, password, totp = form.get("name", "").strip().lower(), form.get("password", ""), form.get("totp")
    target = _local(form.get("next"))
    if not name or not password or len(password) > 1024:
        return console.render(request, "login.html", 400, ended=False, next=target, failed="missing")
    client = request.client.host if request.client else "unknown"
    try:
        session = await run_in_threadpool(accounts.login, name, password, totp.strip() or None if totp else None,
                                          client)
    except LoginRefused as refused:
        log.info("operator_login_failed", reason=refused.reason)
        locked = refused.retry_after is not None
        return console.render(request, "login.html", 429 if locked else 401, ended=False, next=target,
                              failed="locked" if locked else "invalid")
    except StoreError:
        log.warning("store_unavailable", exc_info=True)
        return console.refused(request, 503, "store-unavailable", "")
    log.info("operator_logged_in", operator=session.operator.name, via="console")
    response = RedirectResponse(target, status_code=303)
    guard.set_cookie(response, session.cookie)
    return response


async def logout(request: Request) -> Response:
    console = console_of(request)
    accounts = _accounts(request)
    guard = _session_guard(request)
    operator = await console.operator(request, "viewer")
    if isinstance(operator, Response):
        return operator
    record: SessionRecord | None = getattr(request.state, "operator_session", None)
    if record is not None:
        await run_in_threadpool(accounts.logout, record)
    response = RedirectResponse(f"{BASE}/login", status_code=303)
    guard.clear_cookie(response)
    return response


async def dashboard(request: Request) -> Response:
    ctx = context_of(request)
    console = console_of(request)
    ops = _ops(request)
    operator = await console.operator(request, "viewer")
    if isinstance(operator, Response):
        return operator

    def read() -> Response:
        now = datetime.now().astimezone()
        return console.render(request, "dashboard.html", at=rfc3339(now), agencies=ops.agency_summaries(now),
                              paused=ctx.store.paused_agencies())

    return await console.read(request, read)


async def search(request: Request) -> Response:
    ctx = context_of(request)
    console = console_of(request)
    ops = _ops(request)
    operator = await console.operator(request, "viewer")
    if isinstance(operator, Response):
        return operator
    params = _search_params(request.query_params)
    form = {k: v for k, v in request.query_params.items() if k not in ("cursor", "lang")}
    base: dict[str, Any] = {"form": form, "fields": SEARCH_FIELDS, "states": [s.value for s in DeliveryState],
                            "filing_states": [s.value for s in FilingState], "agencies": sorted(ctx.routes.agencies)}
    if not any(k != "cursor" for k in params):
        return console.render(request, "search.html", rows=None, error=None, next=None, **base)
    try:
        filters, after, limit, _ = parse_search_params(_Params(params))
    except SearchParamInvalid as refused:
        return console.render(request, "search.html", 422, rows=None, next=None,
                              error={"field": refused.name, "detail": refused.detail}, **base)

    def read() -> Response:
        page = ops.search(filters, limit, after)
        next_link = None
        if page.next_cursor is not None:
            next_link = f"{BASE}/search?{urlencode({**form, 'cursor': page.next_cursor})}"
        return console.render(request, "search.html", rows=page.rows, error=None, next=next_link, **base)

    return await console.read(request, read)


async def filing(request: Request) -> Response:
    ctx = context_of(request)
    console = console_of(request)
    ops = _ops(request)
    operator = await console.operator(request, "viewer")
    if isinstance(operator, Response):
        return operator
    reference = request.path_params["reference"][:32]

    def read() -> Response:
        found = ops.filing_detail(reference)
        # A read of personal data, audited as the operator API's detail is.
        ctx.store.audit(operator_actor(operator.name), "ops_filing_read", reference,
                        "ok" if found is not None else "not_found", {"via": "console"})
        if found is None:
            return console.refused(request, 404, "not-found", reference)
        for recipient in found["recipients"]:
            recipient["contentText"] = orjson.dumps(recipient["message"]["content"],
                                                    option=orjson.OPT_INDENT_2).decode()
            state = recipient["state"]
            current = not recipient.get("supersededBy")  # a corrected message's old delivery is history
            recipient["can"] = {"resend": current and can_resend(state), "retry": current and can_retry(state),
                                "cancel": current and can_cancel(state)}
        return console.render(request, "filing.html", filing=found, done=request.query_params.get("done"))

    return await console.read(request, read)


async def problems(request: Request) -> Response:
    console = console_of(request)
    ops = _ops(request)
    operator = await console.operator(request, "viewer")
    if isinstance(operator, Response):
        return operator

    def read() -> Response:
        groups = ops.problems(None)
        return console.render(request, "problems.html", groups=groups, total=sum(g["count"] for g in groups))

    return await console.read(request, read)


def page_routes() -> list[Route]:
    """Login, logout and the reading pages (viewer and above)."""
    return [
        Route("/", dashboard, methods=["GET"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/search", search, methods=["GET"]),
        Route("/filings/{reference}", filing, methods=["GET"]),
        Route("/problems", problems, methods=["GET"]),
    ]


class _Params(dict[str, str]):
    """A plain dict with the `getlist` the API's parameter rules ask of query parameters."""

    def getlist(self, name: str) -> list[str]:
        return [self[name]] if name in self else []


def _local(target: str | None) -> str:
    """Where to go after login: a console path only (never another site)."""
    if target and target.startswith(f"{BASE}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{BASE}/"
