"""Status resources of late outcomes (AgID NONBLOCK_PULL), served by every simulator.

`GET /esiti/{id}` answers 200 while the agency works and 303 to `/esiti/{id}/risultato` once
the outcome is out; the result is the receipt the agency would have answered at once.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from simulators.desk import AgencyDesk

__all__ = ["late_routes", "status_path"]


def status_path(correlation_id: str) -> str:
    """Where the 202's Location points (relative: the caller resolves it against its request)."""
    return f"/esiti/{correlation_id}"


def _not_found() -> Response:
    body = {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "esito sconosciuto"}
    return Response(orjson.dumps(body), status_code=404, media_type="application/problem+json")


def late_routes(desk: AgencyDesk) -> list[Route]:
    async def status(request: Request) -> Response:
        effect = desk.late.get(request.path_params["correlation_id"])
        desk.ledger.polls += 1
        if effect is None or effect.mode != "pull":
            return _not_found()
        if desk.refresh(effect).status == "acknowledged":
            body = {"stato": "IN_ELABORAZIONE", "correlationId": effect.correlation_id}
            return Response(orjson.dumps(body), status_code=200, media_type="application/json")
        return Response(b"", status_code=303,
                        headers={"Location": f"{status_path(effect.correlation_id or '')}/risultato"})

    async def result(request: Request) -> Response:
        effect = desk.late.get(request.path_params["correlation_id"])
        if effect is None or effect.mode != "pull" or desk.refresh(effect).status == "acknowledged":
            return _not_found()
        assert desk.replies is not None
        return desk.replies.receipt(effect, False)

    return [
        Route("/esiti/{correlation_id}", status, methods=["GET"]),
        Route("/esiti/{correlation_id}/risultato", result, methods=["GET"]),
    ]
