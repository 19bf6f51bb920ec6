"""`GET /v1/ops/agencies`: what each agency's queue looks like now (viewer)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.ops.common import OperatorGuard, read_guarded
from api.problems import json_response
from service.ops_read import rfc3339

if TYPE_CHECKING:
    from api.app import ApiContext

__all__ = ["summary_routes"]


def summary_routes(ctx: ApiContext, guard: OperatorGuard) -> list[Route]:
    """Per agency: pending, retrying, acknowledged, waiting, held, undeliverable and anomaly
    counts, the circuit and since when, the oldest open delivery's age, the last hour."""
    assert ctx.ops is not None

    async def agencies(request: Request) -> Response:
        def read(_: Any) -> Response:
            now = datetime.now(timezone.utc)
            return json_response({"at": rfc3339(now), "agencies": ctx.ops.agency_summaries(now)})  # type: ignore[union-attr]

        return await read_guarded(request, guard, "viewer", read)

    return [Route("/agencies", agencies, methods=["GET"])]
