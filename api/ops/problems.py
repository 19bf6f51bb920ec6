"""`GET /v1/ops/problems`: open problems grouped by cause (viewer)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.ops.common import InstantInvalid, OperatorGuard, bad_parameter, parse_instant, read_guarded
from api.problems import json_response

if TYPE_CHECKING:
    from api.app import ApiContext

__all__ = ["problems_routes"]


def problems_routes(ctx: ApiContext, guard: OperatorGuard) -> list[Route]:
    """Retrying, undeliverable and held recipients grouped by agency, error class and code,
    with counts and the newest example; `since` keeps those changed since an instant."""
    assert ctx.ops is not None

    async def problems(request: Request) -> Response:
        unknown = set(request.query_params) - {"since"}
        if unknown:
            return bad_parameter(request, 400, sorted(unknown)[0], f"unknown parameter {sorted(unknown)[0]!r}")
        since = None
        if "since" in request.query_params:
            try:
                since = parse_instant(request.query_params["since"])
            except InstantInvalid as exc:
                return bad_parameter(request, 400, "since", str(exc))

        def read(_: Any) -> Response:
            groups = ctx.ops.problems(since)  # type: ignore[union-attr]
            return json_response({"problems": groups, "total": sum(g["count"] for g in groups)})

        return await read_guarded(request, guard, "viewer", read)

    return [Route("/problems", problems, methods=["GET"])]
