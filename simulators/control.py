"""The `/_sim/*` control API that every simulator serves (docs/agency-contracts.md)."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from simulators.desk import AgencyDesk
from simulators.faults import InvalidRuleError, parse_rules
from simulators.httpio import BodyTooLargeError, read_body

__all__ = ["control_routes"]


def control_routes(desk: AgencyDesk) -> list[Route]:
    """Ledger, faults, reset and health for one simulated agency."""

    async def ledger(request: Request) -> JSONResponse:
        return JSONResponse(desk.ledger.to_json(desk.agency))

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "agency": desk.agency})

    async def faults(request: Request) -> JSONResponse:
        if request.method == "GET":
            return JSONResponse(desk.rules.to_json())
        try:
            rules = parse_rules(orjson.loads(await read_body(request)), desk.operations)
        except (orjson.JSONDecodeError, BodyTooLargeError, InvalidRuleError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        desk.rules.runtime = rules
        return JSONResponse({"status": "ok", **desk.rules.to_json()})

    async def reset(request: Request) -> JSONResponse:
        desk.reset()
        return JSONResponse({"status": "ok"})

    return [
        Route("/_sim/ledger", ledger, methods=["GET"]),
        Route("/_sim/health", health, methods=["GET"]),
        Route("/_sim/faults", faults, methods=["GET", "POST"]),
        Route("/_sim/reset", reset, methods=["POST"]),
    ]
