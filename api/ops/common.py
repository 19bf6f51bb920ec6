"""What the operator API's read routes share: JSON, timestamps, the guarded read, 503."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.context import OperatorGuard, ops_guard_of
from api.problems import problem_response, store_unavailable
from domain.operators import Operator
from service.ports import StoreError

__all__ = ["InstantInvalid", "OperatorGuard", "bad_parameter", "parse_instant", "read_guarded"]

log = structlog.get_logger("crocevia.api.ops")


def bad_parameter(request: Request, status: int, name: str, detail: str) -> Response:
    """400 (malformed) or 422 (well-formed, not acceptable): names the parameter."""
    return problem_response(status, "invalid-parameter", "Bad Request" if status == 400 else "Unprocessable Content",
                            detail, instance=request.url.path,
                            errors=[{"code": "invalid-parameter", "location": f"query:{name}", "detail": detail}])


class InstantInvalid(ValueError):
    """Not an RFC 3339 timestamp with an offset."""


def parse_instant(text: str) -> datetime:
    """An RFC 3339 timestamp; its offset is required (an instant, not a local time).

    Raises:
        InstantInvalid: anything else.
    """
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise InstantInvalid(f"{text[:40]!r} is not an RFC 3339 timestamp") from exc
    if moment.tzinfo is None:
        raise InstantInvalid(f"{text[:40]!r} has no offset (add Z or +01:00)")
    return moment


async def read_guarded(request: Request, role: str, read: Callable[[Operator], Response]) -> Response:
    """Require `role` of the app's operator guard, then run `read(operator)` in the thread pool;
    a store away is 503."""
    operator = await ops_guard_of(request).require(request, role)
    if isinstance(operator, Response):
        return operator
    structlog.contextvars.bind_contextvars(operator=operator.name)
    try:
        return await run_in_threadpool(read, operator)
    except StoreError:
        log.warning("store_unavailable", exc_info=True)
        return store_unavailable(request, "the store is not reachable; retry later")
