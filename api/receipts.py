"""`GET /v1/filings/{reference}/receipt.pdf`: the PDF receipt of a settled filing.

Signed and scoped like the filing's status: another portal's or user's filing is as absent as an
unknown one. A filing whose agencies are still answering has no receipt yet (409).
"""

from __future__ import annotations

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import authenticate
from api.context import context_of
from api.problems import problem_response, store_unavailable
from domain.states import FilingState
from service.ports import StoreError

__all__ = ["receipt_routes"]

log = structlog.get_logger("crocevia.api")

#: Filing states in which some agency may still answer: no receipt yet.
_OPEN_FILING_STATES = frozenset({FilingState.IN_PROGRESS, FilingState.PARTIALLY_PROTOCOLLED})


async def get_receipt(request: Request) -> Response:
    """The receipt as `application/pdf`; 404 outside the caller's scope, 409 until settled."""
    ctx = context_of(request)
    caller = await authenticate(ctx.guard, request, await request.body())
    if isinstance(caller, Response):
        return caller
    assert caller.user is not None
    structlog.contextvars.bind_contextvars(portal=caller.portal)
    reference = request.path_params["reference"]
    try:
        view = await run_in_threadpool(ctx.store.get_filing, reference, caller.portal, caller.user.tax_code)
        outcome = "not_found" if view is None else "not_settled" if view.state in _OPEN_FILING_STATES else "ok"
        await run_in_threadpool(ctx.store.audit, caller.actor, "receipt_read", reference, outcome,
                                caller.audit_context())
    except StoreError:
        return store_unavailable(request, "the filing store is not reachable; retry later")
    if view is None:
        return problem_response(404, "not-found", "Not Found", f"no filing {reference}", instance=request.url.path)
    if outcome == "not_settled":
        return problem_response(
            409, "filing-not-settled", "Conflict",
            f"filing {reference} is {view.state}: the receipt is ready once every agency has answered",
            instance=request.url.path, extra={"state": view.state},
        )
    # fpdf2 (with Pillow and fontTools, ~20 MiB) loads with the first receipt, not in every API process.
    from documents.receipt_pdf import render_receipt

    pdf = await run_in_threadpool(render_receipt, view, ctx.guard.now())
    log.info("receipt_rendered", filing_ref=reference, size=len(pdf))
    return Response(pdf, media_type="application/pdf", headers={
        "Content-Disposition": f'inline; filename="ricevuta-{reference}.pdf"',
        # It names people and tax codes: no shared cache keeps it.
        "Cache-Control": "no-store",
    })


def receipt_routes() -> list[Route]:
    """The receipt route, mounted beside the filing's status."""
    return [Route("/v1/filings/{reference}/receipt.pdf", get_receipt, methods=["GET"])]
