"""`GET /v1/agencies/health`: each agency's state for portals, so they can warn users before they file."""

from __future__ import annotations

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import authenticate
from api.context import context_of
from api.problems import json_response, store_unavailable
from service.agency_health import AgencyHealthFeed
from service.ports import StoreError

__all__ = ["agency_health_routes"]

log = structlog.get_logger("crocevia.api")


async def health(request: Request) -> Response:
    """The feed, ModI-signed like every portal request."""
    ctx = context_of(request)
    feed = ctx.agency_health
    assert feed is not None  # mounted only with a feed
    caller = await authenticate(ctx.guard, request, await request.body())
    if isinstance(caller, Response):
        return caller
    structlog.contextvars.bind_contextvars(portal=caller.portal)
    try:
        body = await run_in_threadpool(feed.read)
    except StoreError:
        log.warning("store_unavailable", exc_info=True)
        return store_unavailable(request, "the hub's store is not reachable; retry later")
    # Portals may cache it as long as the hub does.
    return json_response(body, headers={"Cache-Control": f"private, max-age={int(feed.ttl)}"})


def agency_health_routes(feed: AgencyHealthFeed | None) -> list[Route]:
    """`GET /v1/agencies/health`; none when no feed is configured."""
    return [] if feed is None else [Route("/v1/agencies/health", health, methods=["GET"])]
