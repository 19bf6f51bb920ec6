"""`GET /v1/ops/agencies`: what each agency's queue looks like now (viewer)."""

from __future__ import annotations

from datetime import datetime, timezone
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import context_of
from api.ops.common import read_guarded
from api.problems import json_response
from domain.operators import Operator
from service.ops_read import rfc3339

__all__ = ["summary_routes"]


async def agencies(request: Request) -> Response:
    """Per agency: pending, retrying, acknowledged, waiting, held, undeliverable and anomaly
    counts, the circuit and since when, the oldest open delivery's age, the last hour."""
    ops = context_of(request).ops
    assert ops is not None  # mounted only with the read model

    def read(_: Operator) -> Response:
        now = datetime.now(timezone.utc)
        return json_response({"at": rfc3339(now), "agencies": ops.agency_summaries(now)})

    return await read_guarded(request, "viewer", read)


def summary_routes() -> list[Route]:
    """`GET /agencies` (viewer), under `/v1/ops`."""
    return [Route("/agencies", agencies, methods=["GET"])]
