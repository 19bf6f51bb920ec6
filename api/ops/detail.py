"""`GET /v1/ops/filings/{reference}`: one filing's full history (viewer); each read audited."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import context_of
from api.ops.common import read_guarded
from api.problems import json_response, problem_response
from domain.operators import Operator
from service.operations import operator_actor

__all__ = ["detail_routes"]

#: References are `CRV-YYYY-NNNNNN`; the column holds 32 characters.
_MAX_REFERENCE = 32


async def filing(request: Request) -> Response:
    """The filing with every recipient, their attempts, the message kept and the receipt,
    anomalies and the event feed. A read of personal data: one audit line with the operator."""
    ctx = context_of(request)
    reference = request.path_params["reference"]
    if len(reference) > _MAX_REFERENCE:
        return problem_response(404, "not-found", "Not Found", "no such filing", instance=request.url.path)
    ops = ctx.ops
    assert ops is not None  # mounted only with the read model

    def read(operator: Operator) -> Response:
        found = ops.filing_detail(reference)
        ctx.store.audit(operator_actor(operator.name), "ops_filing_read", reference,
                        "ok" if found is not None else "not_found", {})
        if found is None:
            return problem_response(404, "not-found", "Not Found", f"no filing {reference}",
                                    instance=request.url.path)
        return json_response(found)

    return await read_guarded(request, "viewer", read)


def detail_routes() -> list[Route]:
    """`GET /filings/{reference}` (viewer), under `/v1/ops`."""
    return [Route("/filings/{reference}", filing, methods=["GET"])]
