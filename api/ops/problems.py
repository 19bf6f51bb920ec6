"""`GET /v1/ops/problems`: open problems grouped by cause (viewer)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import context_of
from api.ops.common import InstantInvalid, bad_parameter, parse_instant, read_guarded
from api.problems import json_response
from domain.operators import Operator

__all__ = ["problems_routes"]


async def problems(request: Request) -> Response:
    """Retrying, undeliverable and held recipients grouped by agency, error class and code,
    with counts and the newest example; `since` keeps those changed since an instant."""
    ops = context_of(request).ops
    assert ops is not None  # mounted only with the read model
    unknown = set(request.query_params) - {"since"}
    if unknown:
        return bad_parameter(request, 400, sorted(unknown)[0], f"unknown parameter {sorted(unknown)[0]!r}")
    since = None
    if "since" in request.query_params:
        try:
            since = parse_instant(request.query_params["since"])
        except InstantInvalid as exc:
            return bad_parameter(request, 400, "since", str(exc))

    def read(_: Operator) -> Response:
        groups = ops.problems(since)
        return json_response({"problems": groups, "total": sum(g["count"] for g in groups)})

    return await read_guarded(request, "viewer", read)


def problems_routes() -> list[Route]:
    """`GET /problems` (viewer), under `/v1/ops`."""
    return [Route("/problems", problems, methods=["GET"])]
