"""`GET /v1/ops/filings/{reference}`: one filing's full history (viewer); each read audited."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.ops.common import OperatorGuard, read_guarded
from api.problems import json_response, problem_response
from service.operations import operator_actor

if TYPE_CHECKING:
    from api.app import ApiContext

__all__ = ["detail_routes"]

#: References are `CRV-YYYY-NNNNNN`; the column holds 32 characters.
_MAX_REFERENCE = 32


def detail_routes(ctx: ApiContext, guard: OperatorGuard) -> list[Route]:
    """The filing with every recipient, their attempts, the message kept and the receipt,
    anomalies and the event feed. A read of personal data: one audit line with the operator."""
    assert ctx.ops is not None

    async def filing(request: Request) -> Response:
        reference = request.path_params["reference"]
        if len(reference) > _MAX_REFERENCE:
            return problem_response(404, "not-found", "Not Found", "no such filing", instance=request.url.path)

        def read(operator: Any) -> Response:
            found = ctx.ops.filing_detail(reference)  # type: ignore[union-attr]
            ctx.store.audit(operator_actor(operator.name), "ops_filing_read", reference,
                            "ok" if found is not None else "not_found", {})
            if found is None:
                return problem_response(404, "not-found", "Not Found", f"no filing {reference}",
                                        instance=request.url.path)
            return json_response(found)

        return await read_guarded(request, guard, "viewer", read)

    return [Route("/filings/{reference}", filing, methods=["GET"])]
