"""The delegation API: grant, list and revoke delegations and sub-delegations.

Every request is ModI-signed like a filing and names the user; every outcome is audited.

    POST /v1/delegations                          {subject, delegate, agencies, validFrom?, validTo}
    GET  /v1/delegations?subject=<tax code>       the subject's delegations the user takes part in
    POST /v1/delegations/{id}/subdelegations      {collaborator, agencies?, validFrom?, validTo?}
    POST /v1/delegations/{id}/revoke
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import orjson
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import Caller, authenticate
from api.context import ApiContext, context_of
from api.problems import json_response, problem_response, store_unavailable
from service.identity import (
    AuditEntry,
    DelegationRefused,
    grant_delegation,
    grant_subdelegation,
    list_delegations,
    revoke_delegation,
)
from service.ports import StoreError

__all__ = ["delegation_routes"]

log = structlog.get_logger("crocevia.api")

#: A delegation request is a few hundred bytes.
_MAX_BODY = 16_384


class _BadRequest(Exception):
    def __init__(self, detail: str, status: int = 400, slug: str = "invalid-request") -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug


def _instant(value: Any, field: str) -> datetime | None:
    """An ISO 8601 date or date-time; without a zone it is UTC."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise _BadRequest(f"{field} must be an ISO 8601 date or date-time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _BadRequest(f"{field} must be an ISO 8601 date or date-time") from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def _agencies(value: Any, required: bool) -> list[str] | None:
    if value is None and not required:
        return None
    if not isinstance(value, list) or not all(isinstance(a, str) for a in value):
        raise _BadRequest("agencies must be a list of agency names")
    return value


def _text(data: dict[str, Any], field: str) -> str:
    value = data.get(field)
    if not isinstance(value, str) or not value.strip():
        raise _BadRequest(f"{field} is required")
    return value


#: A delegation use case: blocking, run in the thread pool once the caller is known.
Work = Callable[[ApiContext, Request, Caller, bytes], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


async def _read(request: Request) -> bytes | Response:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():  # stop reading as soon as the bound is passed
        size += len(chunk)
        if size > _MAX_BODY:
            return problem_response(413, "document-too-large", "Content Too Large",
                                    f"a delegation request is at most {_MAX_BODY} bytes",
                                    instance=request.url.path)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(request: Request, body: bytes) -> dict[str, Any]:
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        raise _BadRequest("send the request as application/json", 415, "unsupported-media-type")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("number "):
            # orjson refuses a number beyond a double ("number is infinity when parsed as
            # double"): well-formed JSON that no field here takes.
            raise _BadRequest("a number in the body is out of range; no field of a delegation "
                              "is a number", 422, "number-out-of-range") from None
        raise _BadRequest("the body is not JSON") from None
    if not isinstance(data, dict):
        raise _BadRequest("the body must be a JSON object")
    return data


def _refused(ctx: ApiContext, request: Request, caller: Caller, exc: DelegationRefused, action: str,
             subject: str) -> Response:
    ctx.identity.audit(AuditEntry(
        actor=caller.actor, action=action, subject=subject, outcome=exc.slug,
        detail={"status": exc.status, "reasons": [r.code for r in exc.reasons], **caller.audit_context()},
    ))
    return problem_response(
        exc.status, exc.slug, {403: "Forbidden", 404: "Not Found", 409: "Conflict"}.get(
            exc.status, "Unprocessable Content"),
        exc.detail, instance=request.url.path,
        errors=[{"code": r.code, "location": "delegation", "detail": r.detail} for r in exc.reasons],
    )


def _handler(action: str) -> Callable[[Work], Endpoint]:
    """An endpoint that reads and authenticates the request, runs `work` in the thread pool
    and answers its refusals (audited as `action`) as problems."""

    def endpoint_of(work: Work) -> Endpoint:
        async def handle(request: Request) -> Response:
            ctx = context_of(request)
            body = await _read(request)
            if isinstance(body, Response):
                return body
            caller = await authenticate(ctx.guard, request, body)
            if isinstance(caller, Response):
                return caller
            structlog.contextvars.bind_contextvars(portal=caller.portal)
            subject = request.path_params.get("delegation_id", "")
            try:
                return await run_in_threadpool(work, ctx, request, caller, body)
            except _BadRequest as exc:
                title = {415: "Unsupported Media Type", 422: "Unprocessable Content"}.get(exc.status, "Bad Request")
                return problem_response(exc.status, exc.slug, title, str(exc),
                                        instance=request.url.path)
            except DelegationRefused as exc:
                return await run_in_threadpool(_refused, ctx, request, caller, exc, action, subject)
            except StoreError:
                log.warning("store_unavailable", exc_info=True)
                return store_unavailable(request, "the store is not reachable; nothing was recorded")

        return handle

    return endpoint_of


@_handler("delegation_refused")
def grant(ctx: ApiContext, request: Request, caller: Caller, body: bytes) -> Response:
    data = _parse(request, body)
    assert caller.user is not None
    now = ctx.guard.now()
    valid_to = _instant(data.get("validTo"), "validTo")
    if valid_to is None:
        raise _BadRequest("validTo is required")
    made = grant_delegation(
        ctx.identity, user=caller.user, portal=caller.portal, subject=_text(data, "subject"),
        delegate=_text(data, "delegate"), agencies=_agencies(data.get("agencies"), True) or [],
        valid_from=_instant(data.get("validFrom"), "validFrom") or now, valid_to=valid_to,
        known_agencies=ctx.routes.agencies, at=now,
    )
    log.info("delegation_granted", delegation_id=made["id"])
    return json_response(made, 201, {"Location": f"/v1/delegations/{made['id']}"})


@_handler("subdelegation_refused")
def subdelegate(ctx: ApiContext, request: Request, caller: Caller, body: bytes) -> Response:
    data = _parse(request, body)
    assert caller.user is not None
    made = grant_subdelegation(
        ctx.identity, user=caller.user, portal=caller.portal,
        parent_id=request.path_params["delegation_id"], collaborator=_text(data, "collaborator"),
        agencies=_agencies(data.get("agencies"), False),
        valid_from=_instant(data.get("validFrom"), "validFrom"),
        valid_to=_instant(data.get("validTo"), "validTo"), at=ctx.guard.now(),
    )
    log.info("subdelegation_granted", delegation_id=made["id"], parent_id=made["parent"])
    return json_response(made, 201, {"Location": f"/v1/delegations/{made['id']}"})


@_handler("revocation_refused")
def revoke(ctx: ApiContext, request: Request, caller: Caller, body: bytes) -> Response:
    assert caller.user is not None
    done = revoke_delegation(ctx.identity, user=caller.user, portal=caller.portal,
                             delegation_id=request.path_params["delegation_id"], at=ctx.guard.now())
    log.info("delegation_revoked", delegation_id=done["id"])
    return json_response(done)


@_handler("delegations_listed")
def listing(ctx: ApiContext, request: Request, caller: Caller, body: bytes) -> Response:
    assert caller.user is not None
    subject = request.query_params.get("subject")
    if not subject:
        raise _BadRequest("the subject query parameter is required")
    items = list_delegations(ctx.identity, user=caller.user, subject=subject, at=ctx.guard.now())
    ctx.identity.audit(AuditEntry(actor=caller.actor, action="delegations_listed",
                                  subject=subject.strip().upper()[:64], outcome="ok",
                                  detail={"count": len(items), **caller.audit_context()}))
    return json_response({"subject": subject.strip().upper(), "delegations": items})


def delegation_routes() -> list[Route]:
    """The delegation endpoints (store, guard and identity store from the app's context)."""
    return [
        Route("/v1/delegations", grant, methods=["POST"]),
        Route("/v1/delegations", listing, methods=["GET"]),
        Route("/v1/delegations/{delegation_id}/subdelegations", subdelegate, methods=["POST"]),
        Route("/v1/delegations/{delegation_id}/revoke", revoke, methods=["POST"]),
    ]
