"""Liveness and readiness: `/healthz` (alias `/health`) says the process answers; `/readyz` says
it can do its work.

`/readyz` answers 503 (RFC 9457 problem details) naming each failing component — a dead
background task, an unreachable store — so that a load balancer stops sending filings to a
process that could not deliver them. Reasons are short names, never connection strings.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from api.problems import problem_response

__all__ = ["ReadinessCheck", "health_routes"]

#: What is failing now: component → short reason (empty: ready).
ReadinessCheck = Callable[[], Awaitable[Mapping[str, str]]]


def health_routes(readiness: ReadinessCheck | None) -> list[Route]:
    """`GET /healthz` and `/health` (liveness: no dependency asked) and `GET /readyz` (readiness)."""

    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        failing = dict(await readiness()) if readiness is not None else {}
        if not failing:
            return JSONResponse({"status": "ready"})
        names = ", ".join(f"{name} ({why})" for name, why in sorted(failing.items()))
        return problem_response(503, "not-ready", "Service Unavailable", f"not ready: {names}",
                                instance=request.url.path, headers={"Retry-After": "5"},
                                extra={"components": failing})

    return [Route("/healthz", health, methods=["GET"]), Route("/health", health, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"])]
