"""RFC 9457 problem details: every refusal answers `application/problem+json`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["PROBLEM_TYPE_BASE", "json_response", "problem_response", "store_unavailable"]

PROBLEM_TYPE_BASE = "urn:crocevia:problem:"


def problem_response(
    status: int,
    slug: str,
    title: str,
    detail: str,
    *,
    instance: str | None = None,
    errors: Iterable[Mapping[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + slug,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors is not None:
        body["errors"] = list(errors)
    if extra:
        body.update(extra)
    return Response(
        orjson.dumps(body),
        status_code=status,
        media_type="application/problem+json",
        headers=dict(headers or {}),
    )


def store_unavailable(request: Request, detail: str) -> Response:
    """503 when the store is not reachable: `detail` says what was (not) done; retry in 5 s."""
    return problem_response(503, "store-unavailable", "Service Unavailable", detail, instance=request.url.path,
                            headers={"Retry-After": "5"})


#: A datetime that reaches an answer unformatted still reads as RFC 3339 with `Z` (naive: UTC,
#: as the store keeps every instant), like domain.timestamps.rfc3339 spells it.
_DATETIMES = orjson.OPT_NAIVE_UTC | orjson.OPT_UTC_Z


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body, option=_DATETIMES), status_code=status, media_type="application/json",
                    headers=headers)
