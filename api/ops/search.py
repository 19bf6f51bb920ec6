"""`GET /v1/ops/search`: filings and their deliveries by any field an operator knows (viewer);
cursor pages of JSON, or the same rows streamed as CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from api.context import context_of, ops_guard_of
from api.ops.common import InstantInvalid, bad_parameter, parse_instant, read_guarded
from api.problems import json_response
from domain.operators import Operator
from domain.states import DeliveryState, FilingState
from service.operations import operator_actor
from service.ops_read import SEARCH_COLUMNS, CursorInvalid, SearchFilters, decode_cursor

__all__ = ["SearchParamInvalid", "parse_search_params", "search_routes"]

#: Default and largest page.
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: Query parameter → (SearchFilters field, longest value accepted).
_TEXT_FILTERS = {
    "reference": ("reference", 32), "agency": ("agency", 32), "kind": ("kind", 40),
    "subjectTaxCode": ("subject_tax_code", 16), "portal": ("portal", 64),
    "protocolNumber": ("protocol_number", 64), "messageId": ("message_id", 32),
}
_KNOWN = set(_TEXT_FILTERS) | {"state", "filingState", "from", "to", "cursor", "limit", "format"}
_DELIVERY_STATES = {s.value for s in DeliveryState}
_FILING_STATES = {s.value for s in FilingState}


class _Refused(Exception):
    def __init__(self, status: int, name: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.name, self.detail = status, name, detail


def _filters(params: Any) -> tuple[SearchFilters, tuple[int, str] | None, int, bool]:
    """The filters, cursor position, page size and whether CSV was asked for by `format`.

    Raises:
        _Refused: 400 for a malformed or unknown parameter, 422 for a value out of range.
    """
    for name in params:
        if name not in _KNOWN:
            raise _Refused(400, name, f"unknown parameter {name!r}")
        if len(params.getlist(name)) > 1:
            raise _Refused(400, name, f"{name!r} is given more than once")
    values: dict[str, Any] = {}
    for name, (attr, longest) in _TEXT_FILTERS.items():
        if name in params:
            value = params[name].strip()
            if not value or len(value) > longest:
                raise _Refused(422, name, f"{name!r} must be 1 to {longest} characters")
            values[attr] = value.upper() if name == "subjectTaxCode" else value
    for name, attr, allowed in (("state", "state", _DELIVERY_STATES), ("filingState", "filing_state", _FILING_STATES)):
        if name in params:
            if params[name] not in allowed:
                raise _Refused(422, name, f"{name!r} is one of {', '.join(sorted(allowed))}")
            values[attr] = params[name]
    for name, attr in (("from", "created_from"), ("to", "created_to")):
        if name in params:
            try:
                values[attr] = parse_instant(params[name])
            except InstantInvalid as exc:
                raise _Refused(400, name, str(exc)) from exc
    if "created_from" in values and "created_to" in values and values["created_from"] >= values["created_to"]:
        raise _Refused(422, "to", "'to' must be later than 'from'")
    limit = DEFAULT_LIMIT
    if "limit" in params:
        if not params["limit"].isdigit():
            raise _Refused(400, "limit", "'limit' is a whole number")
        limit = int(params["limit"])
        if not 1 <= limit <= MAX_LIMIT:
            raise _Refused(422, "limit", f"'limit' is 1 to {MAX_LIMIT}")
    after = None
    if "cursor" in params:
        try:
            after = decode_cursor(params["cursor"])
        except CursorInvalid as exc:
            raise _Refused(400, "cursor", str(exc)) from exc
    fmt = params.get("format", "json")
    if fmt not in ("json", "csv"):
        raise _Refused(422, "format", "'format' is json or csv")
    return SearchFilters(**values), after, limit, fmt == "csv"


#: The same parameter rules for the console's search form (console/pages.py).
parse_search_params = _filters
SearchParamInvalid = _Refused


def _wants_csv(request: Request, by_format: bool) -> bool:
    if "format" in request.query_params:
        return by_format
    accept = request.headers.get("accept", "")
    return any(part.split(";")[0].strip().lower() == "text/csv" for part in accept.split(","))


def _csv_lines(rows: Iterator[dict[str, Any]]) -> Iterator[str]:
    """The CSV text a line at a time (RFC 4180: CRLF line ends, quoted where needed)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(SEARCH_COLUMNS)
    for row in rows:
        writer.writerow(["" if row[c] is None else row[c] for c in SEARCH_COLUMNS])
        if buffer.tell() > 16_384:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


async def search(request: Request) -> Response:
    """Search filings and deliveries; newest first, keyset cursor, CSV on request."""
    ctx = context_of(request)
    ops = ctx.ops
    assert ops is not None  # mounted only with the read model
    try:
        filters, after, limit, by_format = _filters(request.query_params)
    except _Refused as refused:
        # Guard first: an anonymous caller learns nothing, not even which parameter is wrong.
        operator = await ops_guard_of(request).require(request, "viewer")
        if isinstance(operator, Response):
            return operator
        return bad_parameter(request, refused.status, refused.name, refused.detail)
    as_csv = _wants_csv(request, by_format)

    def read(operator: Operator) -> Response:
        if as_csv:
            # An export of personal data in bulk: audited with the operator and the filters.
            ctx.store.audit(operator_actor(operator.name), "ops_search_exported", "", "ok",
                            {"filters": {k: v for k, v in request.query_params.items() if k != "cursor"}})
            explicit = limit if "limit" in request.query_params else None
            return StreamingResponse(_csv_lines(ops.search_all(filters, after, limit=explicit)),
                                     media_type="text/csv; charset=utf-8",
                                     headers={"Content-Disposition": 'attachment; filename="crocevia-search.csv"'})
        page = ops.search(filters, limit, after)
        next_link = None
        if page.next_cursor is not None:
            query = {k: v for k, v in request.query_params.items() if k != "cursor"}
            next_link = f"{request.url.path}?{urlencode({**query, 'cursor': page.next_cursor})}"
        return json_response({"items": page.rows, "count": len(page.rows), "cursor": page.next_cursor,
                              "next": next_link},
                             headers={"Link": f'<{next_link}>; rel="next"'} if next_link else None)

    return await read_guarded(request, "viewer", read)


def search_routes() -> list[Route]:
    """`GET /search` (viewer), under `/v1/ops`."""
    return [Route("/search", search, methods=["GET"])]
