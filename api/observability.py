"""What every API response carries for operations: an `X-Request-ID`, a count in `/metrics`.

The request id is the caller's when it is sane (1 to 128 characters among letters, digits
and `-._:`), else a new one; it is bound in the structlog context of the request, so every
log line of the request names it, and it is echoed on the response (errors included).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import CONTENT_TYPE, HubMetrics

__all__ = ["REQUEST_ID_HEADER", "RequestObservation", "metrics_routes", "request_id_of"]

REQUEST_ID_HEADER = "X-Request-ID"
#: A caller's request id is taken only if it is this plain (no header or log injection).
_SANE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_of(scope: Scope) -> str | None:
    """The request's id, as the middleware chose it (None outside a request)."""
    state = scope.get("state")
    return state.get("request_id") if isinstance(state, dict) else None


class RequestObservation:
    """Pure ASGI middleware: choose the request id, bind it for logs, echo it, count the status.

    Args:
        app: the application.
        metrics: where requests are counted (None: not counted).
    """

    def __init__(self, app: ASGIApp, metrics: HubMetrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = ""
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                given = value.decode("latin-1")
                break
        request_id = given if _SANE_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            # An exception escaping here is answered 500 by the outer error handler.
            if self.metrics is not None and scope.get("path") != "/metrics":
                self.metrics.record_request(scope.get("method", ""), scope.get("path", ""), status)


def metrics_routes(metrics: HubMetrics | None) -> list[Route]:
    """`GET /metrics`: the Prometheus text format (the store's gauges are read in a thread)."""
    if metrics is None:
        return []

    async def scrape(_: Request) -> Response:
        body: Any = await run_in_threadpool(metrics.render)
        return Response(body, media_type=CONTENT_TYPE)

    return [Route("/metrics", scrape, methods=["GET"])]
