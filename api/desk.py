"""The portal's desk over HTTP: `GET /v1/filings` (search, keyset pages) and
`POST /v1/filings/{reference}/archive|unarchive`. ModI-signed like the status read, with the
same visibility: the portal's filings the user filed or that reach them by delegation."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import Caller, authenticate
from api.context import ApiContext, context_of
from api.ops.common import InstantInvalid, bad_parameter, parse_instant
from api.problems import json_response, problem_response, store_unavailable
from domain.states import FilingState
from domain.taxcode import tax_code_error
from service.desk import (
    ArchiveFilter,
    DeskCursorInvalid,
    DeskFilters,
    FilingDesk,
    FilingNotSettled,
    FilingUnknown,
    decode_desk_cursor,
)
from service.ports import StoreError

__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "desk_routes"]

log = structlog.get_logger("crocevia.api")

#: Default and largest page.
DEFAULT_LIMIT = 50
MAX_LIMIT = 200
#: Text filters: query parameter → (DeskFilters field, longest value accepted).
_TEXT = {"reference": ("reference", 32), "subjectTaxCode": ("subject_tax_code", 16),
         "protocolNumber": ("protocol_number", 64), "kind": ("kind", 40), "agency": ("agency", 32)}
_KNOWN = set(_TEXT) | {"state", "from", "to", "archived", "limit", "cursor"}
_STATES = sorted(s.value for s in FilingState)
_ARCHIVED = {a.value: a for a in ArchiveFilter}


class _Invalid(Exception):
    """A query parameter the search refuses: 400 malformed, 422 well-formed but not acceptable."""

    def __init__(self, status: int, name: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.name, self.detail = status, name, detail


def _printable(text: str) -> str:
    """The caller's text as the answer and the audit trail may show it: short, no control characters."""
    return "".join(c if c.isprintable() else "?" for c in text[:64])


def _instant(name: str, text: str) -> datetime:
    try:
        return parse_instant(text)
    except InstantInvalid as exc:
        raise _Invalid(400, name, f"{name!r}: {exc}") from exc


def _parse(ctx: ApiContext, params: QueryParams, caller: Caller) -> tuple[DeskFilters, int, tuple[datetime, int] | None]:
    """The filters, page size and cursor position.

    Raises:
        _Invalid: the first parameter that is unknown, repeated, malformed or out of range.
    """
    for name in params:
        if name not in _KNOWN:
            raise _Invalid(400, _printable(name), f"unknown parameter {_printable(name)!r}")
        if len(params.getlist(name)) > 1:
            raise _Invalid(400, name, f"{name!r} is given more than once")
    values: dict[str, Any] = {}
    for name, (attr, longest) in _TEXT.items():
        if name in params:
            value = params[name].strip()
            if not value or len(value) > longest:
                raise _Invalid(422, name, f"{name!r} must be 1 to {longest} characters")
            if not value.isprintable():  # a NUL or control character matches nothing (PostgreSQL refuses NUL)
                raise _Invalid(422, name, f"{name!r} has a control character")
            values[attr] = value
    if "subject_tax_code" in values:
        values["subject_tax_code"] = values["subject_tax_code"].upper()
        if (error := tax_code_error(values["subject_tax_code"])) is not None:
            raise _Invalid(422, "subjectTaxCode", f"'subjectTaxCode': {error}")
    if "kind" in values and values["kind"] not in ctx.routes.routes_by_kind:
        raise _Invalid(422, "kind", f"'kind' is one of {', '.join(sorted(ctx.routes.routes_by_kind))}")
    if "agency" in values and values["agency"] not in ctx.routes.agencies:
        raise _Invalid(422, "agency", f"'agency' is one of {', '.join(sorted(ctx.routes.agencies))}")
    if "state" in params:
        if params["state"] not in _STATES:
            raise _Invalid(422, "state", f"'state' is one of {', '.join(_STATES)}")
        values["state"] = params["state"]
    for name, attr in (("from", "filed_from"), ("to", "filed_to")):
        if name in params:
            values[attr] = _instant(name, params[name])
    if "filed_from" in values and "filed_to" in values and values["filed_from"] >= values["filed_to"]:
        raise _Invalid(422, "to", "'to' must be later than 'from'")
    if "archived" in params:
        if params["archived"] not in _ARCHIVED:
            raise _Invalid(422, "archived", "'archived' is false, true or any")
        values["archived"] = _ARCHIVED[params["archived"]]
    limit = DEFAULT_LIMIT
    if "limit" in params:
        if not (params["limit"].isascii() and params["limit"].isdigit()):
            raise _Invalid(400, "limit", "'limit' is a whole number")
        limit = int(params["limit"])
        if not 1 <= limit <= MAX_LIMIT:
            raise _Invalid(422, "limit", f"'limit' is 1 to {MAX_LIMIT}")
    after = None
    if "cursor" in params:
        if len(params["cursor"]) > 200:
            raise _Invalid(400, "cursor", "the cursor is not one this API handed out")
        try:
            after = decode_desk_cursor(params["cursor"])
        except DeskCursorInvalid as exc:
            raise _Invalid(400, "cursor", str(exc)) from exc
    assert caller.user is not None  # the guard requires a user
    return DeskFilters(portal=caller.portal, user=caller.user.tax_code, **values), limit, after


def _desk(ctx: ApiContext) -> FilingDesk:
    if ctx.desk is None:
        raise RuntimeError("the desk routes are mounted without a desk")
    return ctx.desk


def _unavailable(request: Request) -> Response:
    return store_unavailable(request, "the filing store is not reachable; nothing was changed, retry later")


def _audited_filters(params: Mapping[str, str]) -> dict[str, str]:
    return {k: v[:64] for k, v in params.items() if k != "cursor"}


async def search(request: Request) -> Response:
    """`GET /v1/filings`: the caller's filings, newest first, by any filter; keyset pages."""
    ctx = context_of(request)
    caller = await authenticate(ctx.guard, request, await request.body())
    if isinstance(caller, Response):
        return caller
    structlog.contextvars.bind_contextvars(portal=caller.portal)
    return await run_in_threadpool(_search, ctx, request, caller)


def _search(ctx: ApiContext, request: Request, caller: Caller) -> Response:
    params = request.query_params
    try:
        try:
            filters, limit, after = _parse(ctx, params, caller)
        except _Invalid as bad:
            ctx.store.audit(caller.actor, "filings_searched", "", "invalid-parameter",
                            {"parameter": bad.name, **caller.audit_context()})
            return bad_parameter(request, bad.status, bad.name, bad.detail)
        page = _desk(ctx).search(filters, limit, after)
        ctx.store.audit(caller.actor, "filings_searched", "", "ok",
                        {"filters": _audited_filters(params), "found": len(page.items), **caller.audit_context()})
    except StoreError:
        log.warning("store_unavailable", exc_info=True)
        return _unavailable(request)
    headers = None
    if page.next_cursor is not None:
        query = {k: v for k, v in params.items() if k != "cursor"}
        headers = {"Link": f'<{request.url.path}?{urlencode({**query, "cursor": page.next_cursor})}>; rel="next"'}
    return json_response({"items": page.items, "nextCursor": page.next_cursor}, headers=headers)


async def archive(request: Request) -> Response:
    """`POST /v1/filings/{reference}/archive`: a settled filing leaves the desk's default list."""
    return await _set_archived(request, True)


async def unarchive(request: Request) -> Response:
    """`POST /v1/filings/{reference}/unarchive`: the filing is back on the desk's default list."""
    return await _set_archived(request, False)


async def _set_archived(request: Request, archived: bool) -> Response:
    ctx = context_of(request)
    caller = await authenticate(ctx.guard, request, await request.body())
    if isinstance(caller, Response):
        return caller
    structlog.contextvars.bind_contextvars(portal=caller.portal)
    return await run_in_threadpool(_archive, ctx, request, caller, archived)


def _archive(ctx: ApiContext, request: Request, caller: Caller, archived: bool) -> Response:
    reference = request.path_params["reference"]
    action = "filing_archived" if archived else "filing_unarchived"
    path = request.url.path
    assert caller.user is not None
    try:
        if len(reference) > 32 or not reference.isprintable():  # no filing has such a reference
            shown = _printable(reference)  # the audit trail takes text only
            ctx.store.audit(caller.actor, action, shown, "not_found", caller.audit_context())
            return problem_response(404, "not-found", "Not Found", f"no filing {shown}", instance=path)
        try:
            item, changed = _desk(ctx).set_archived(reference, caller.portal, caller.user.tax_code, archived,
                                                    actor=caller.actor, context=caller.audit_context())
        except FilingUnknown:
            ctx.store.audit(caller.actor, action, reference, "not_found", caller.audit_context())
            return problem_response(404, "not-found", "Not Found", f"no filing {reference}", instance=path)
        except FilingNotSettled as exc:
            ctx.store.audit(caller.actor, action, reference, "not_settled",
                            {"state": exc.state, **caller.audit_context()})
            return problem_response(409, "filing-not-settled", "Conflict", str(exc), instance=path,
                                    extra={"reference": reference, "state": exc.state})
        if not changed:  # a repeat: the answer is the same, the trail says it was asked again
            ctx.store.audit(caller.actor, action, reference, "unchanged", caller.audit_context())
    except StoreError:
        log.warning("store_unavailable", exc_info=True)
        return _unavailable(request)
    if changed:
        log.info(action, filing_ref=reference)
    return json_response(item)


def desk_routes() -> list[Route]:
    """The desk's routes (`GET /v1/filings` beside the intake's POST on the same path)."""
    return [
        Route("/v1/filings", search, methods=["GET"]),
        Route("/v1/filings/{reference}/archive", archive, methods=["POST"]),
        Route("/v1/filings/{reference}/unarchive", unarchive, methods=["POST"]),
    ]
