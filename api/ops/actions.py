"""Operators' actions over `/v1/ops/`: resend, retry now, cancel, bulk resend, pause and
resume an agency, dead letters, lockouts.

Every action needs the `operator` role (lockouts: `admin`) and is confirmed: without
`"confirm": true` it answers 200 with a preview of what it would do and changes nothing.
What it does is audited as `operator:NAME`; a refused request changes nothing but its audit
line. Paths here are relative: `api.app.create_app` mounts them under `/v1/ops`.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from typing import Any

import orjson
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import ApiContext, context_of, ops_guard_of
from api.deliveries import _instant, recipient_json
from api.problems import json_response, problem_response, store_unavailable
from domain.operators import Operator
from domain.timestamps import rfc3339
from service.operations import (
    BULK_RESEND_MAX,
    MAX_REASON,
    AgencyThrottledNow,
    bulk_resend,
    can_cancel,
    can_retry,
    operator_actor,
    resend_preview,
)
from service.ports import NeedsCorrection, NotResendable, RecipientNotFound, StoreError
from service.relay import TransportError

__all__ = ["actions_routes"]

log = structlog.get_logger("crocevia.ops")

#: The largest action body taken (they hold a few flags and a reason).
_MAX_BODY = 16_384


class _BadRequest(Exception):
    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


async def _body(request: Request) -> dict[str, Any]:
    """The action's JSON object (an empty body is `{}`)."""
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_BODY:
            raise _BadRequest(f"the body exceeds {_MAX_BODY} bytes")
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise _BadRequest(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    return body


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise _BadRequest(f"`{name}` must be true or false", name)
    return value


def _reason(body: dict[str, Any], *, required: bool = False) -> str | None:
    value = body.get("reason")
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise _BadRequest("a `reason` is required", "reason")
        return None
    if not isinstance(value, str) or len(value) > MAX_REASON:
        raise _BadRequest(f"`reason` must be text of at most {MAX_REASON} characters", "reason")
    return value.strip()


def _when(body: dict[str, Any], name: str) -> datetime:
    value = body.get(name)
    if not isinstance(value, str):
        raise _BadRequest(f"`{name}` is required: an RFC 3339 time with its offset", name)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
    except ValueError:
        raise _BadRequest(f"`{name}` is not an RFC 3339 time: {value[:40]!r}", name) from None
    if moment.tzinfo is None:
        raise _BadRequest(f"`{name}` needs an offset (Z or +01:00)", name)
    return moment.astimezone(timezone.utc)


def _limit(body: dict[str, Any], default: int, ceiling: int) -> int:
    value = body.get("limit", default)
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= ceiling:
        raise _BadRequest(f"`limit` must be a whole number from 1 to {ceiling}", "limit")
    return value


#: An action: the request and the operator the guard admitted.
Handler = Callable[[Request, Operator], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


async def _audit_refusal(request: Request, operator: Operator, action: str, subject: str, slug: str,
                         detail: dict[str, Any]) -> None:
    try:
        await run_in_threadpool(context_of(request).store.audit, operator_actor(operator.name), action, subject,
                                slug, detail)
    except StoreError:
        log.warning("audit_unavailable", action=action)


def _guarded(role: str, action: str) -> Callable[[Handler], Endpoint]:
    """Make `handler(request, operator)` an endpoint: authenticate (the guard answers 401/403
    itself), then translate the errors every action shares into problem details; each refusal
    is audited as `action`."""

    def endpoint_of(handler: Handler) -> Endpoint:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            return await _run_guarded(request, role, action, handler)

        return endpoint

    return endpoint_of


async def _run_guarded(request: Request, role: str, action: str, handler: Handler) -> Response:
    operator = await ops_guard_of(request).require(request, role)
    if isinstance(operator, Response):
        return operator
    path = request.url.path
    subject = "/".join(str(v) for v in request.path_params.values())[:64]
    structlog.contextvars.bind_contextvars(operator=operator.name, ops_action=action)
    try:
        return await handler(request, operator)
    except _BadRequest as exc:
        await _audit_refusal(request, operator, action, subject, "invalid-request", {"detail": str(exc)})
        errors = ([{"code": "invalid", "location": f"body:{exc.field}", "detail": str(exc)}]
                  if exc.field else None)
        return problem_response(400, "invalid-request", "Bad Request", str(exc), instance=path, errors=errors)
    except RecipientNotFound as exc:
        await _audit_refusal(request, operator, action, subject, "not-found", {"detail": str(exc)})
        return problem_response(404, "not-found", "Not Found", str(exc), instance=path)
    except NeedsCorrection as exc:
        await _audit_refusal(request, operator, action, subject, "needs-correction", {"state": exc.state})
        return problem_response(409, "recipient-needs-correction", "Conflict", str(exc), instance=path,
                                extra={"agency": exc.agency, "state": exc.state})
    except NotResendable as exc:
        await _audit_refusal(request, operator, action, subject, "wrong-state", {"state": exc.state})
        return problem_response(409, "recipient-state-conflict", "Conflict", str(exc), instance=path,
                                extra={"agency": exc.agency, "state": exc.state})
    except AgencyThrottledNow as exc:
        await _audit_refusal(request, operator, action, subject, "agency-throttled", {"until": _instant(exc.until)})
        return problem_response(409, "agency-throttled", "Conflict", str(exc), instance=path,
                                extra={"agency": exc.agency, "throttledUntil": _instant(exc.until)})
    except TransportError as exc:
        log.warning("broker_unavailable", error=str(exc))
        return problem_response(503, "broker-unavailable", "Service Unavailable",
                                f"the message broker cannot be reached: {exc}", instance=path,
                                headers={"Retry-After": "5"})
    except StoreError:
        log.warning("store_unavailable", exc_info=True)
        return store_unavailable(request, "the store is not reachable; nothing was done, retry later")
    finally:
        structlog.contextvars.unbind_contextvars("operator", "ops_action")


def _known_agency(ctx: ApiContext, agency: str) -> None:
    if agency not in ctx.routes.agencies:
        raise RecipientNotFound(f"no agency {agency[:64]!r}")


def _answer(action: str, body: dict[str, Any], *, done: bool) -> Response:
    return json_response({"action": action, "confirmed": done, **body}, 202 if done else 200)


# -- one recipient ------------------------------------------------------------------------------
@_guarded("operator", "recipient_resent")
async def resend(request: Request, operator: Operator) -> Response:
    ctx = context_of(request)
    reference, agency = request.path_params["reference"], request.path_params["agency"]
    body = await _body(request)
    confirm, reason = _flag(body, "confirm"), _reason(body)
    view = await run_in_threadpool(ctx.store.ops_recipient, reference, agency)
    if view is None:
        raise RecipientNotFound(f"filing {reference} has no recipient {agency}")
    if not confirm:
        return _answer("resend", {"preview": resend_preview(view), "recipient": recipient_json(view)}, done=False)
    done = await run_in_threadpool(lambda: ctx.store.resend_recipient(
        reference, None, agency, actor=operator_actor(operator.name), detail={"reason": reason}))
    log.info("recipient_resent", filing_ref=reference, agency=agency, delivery_id=done.delivery_id)
    ctx.wake()
    return _answer("resend", {"reference": reference, "recipient": recipient_json(done)}, done=True)


@_guarded("operator", "recipient_retried")
async def retry(request: Request, operator: Operator) -> Response:
    ctx = context_of(request)
    reference, agency = request.path_params["reference"], request.path_params["agency"]
    body = await _body(request)
    confirm, force = _flag(body, "confirm"), _flag(body, "force")
    reason = _reason(body, required=force)
    if not confirm:
        view = await run_in_threadpool(ctx.store.ops_recipient, reference, agency)
        if view is None:
            raise RecipientNotFound(f"filing {reference} has no recipient {agency}")
        until = await run_in_threadpool(ctx.store.throttled_until, agency)
        retrying = can_retry(view.state)
        return _answer("retry", {"preview": {
            "wouldRetry": retrying and (until is None or force),
            "state": view.state, "dueAt": _instant(view.next_attempt_at), "throttledUntil": _instant(until),
            "needsForce": retrying and until is not None,
        }, "recipient": recipient_json(view)}, done=False)
    done = await run_in_threadpool(lambda: ctx.store.retry_recipient_now(
        reference, agency, actor=operator_actor(operator.name), force=force, reason=reason))
    log.info("recipient_retried", filing_ref=reference, agency=agency, forced=force)
    ctx.wake()
    return _answer("retry", {"reference": reference, "recipient": recipient_json(done)}, done=True)


@_guarded("operator", "recipient_cancelled")
async def cancel(request: Request, operator: Operator) -> Response:
    ctx = context_of(request)
    reference, agency = request.path_params["reference"], request.path_params["agency"]
    body = await _body(request)
    confirm, reason = _flag(body, "confirm"), _reason(body, required=True)
    assert reason is not None
    if not confirm:
        view = await run_in_threadpool(ctx.store.ops_recipient, reference, agency)
        if view is None:
            raise RecipientNotFound(f"filing {reference} has no recipient {agency}")
        return _answer("cancel", {"preview": {"wouldCancel": can_cancel(view.state), "state": view.state},
                                 "recipient": recipient_json(view)}, done=False)
    done = await run_in_threadpool(lambda: ctx.store.cancel_recipient(
        reference, agency, actor=operator_actor(operator.name), reason=reason))
    log.info("recipient_cancelled", filing_ref=reference, agency=agency)
    return _answer("cancel", {"reference": reference, "recipient": recipient_json(done)}, done=True)


# -- one agency ---------------------------------------------------------------------------------
@_guarded("operator", "agency_bulk_resend")
async def resend_undeliverable(request: Request, operator: Operator) -> Response:
    ctx = context_of(request)
    agency = request.path_params["agency"]
    _known_agency(ctx, agency)
    body = await _body(request)
    confirm, reason = _flag(body, "confirm"), _reason(body)
    start, end = _when(body, "from"), _when(body, "to")
    if end <= start:
        raise _BadRequest("`to` must be after `from`", "to")
    limit = _limit(body, BULK_RESEND_MAX, BULK_RESEND_MAX)
    result = await run_in_threadpool(lambda: bulk_resend(
        ctx.store, agency, start, end, operator=operator.name, confirm=confirm, limit=limit, reason=reason))
    if confirm and result.resent:
        ctx.wake()
    return _answer("resend-undeliverable", {
        "agency": agency, "from": rfc3339(start), "to": rfc3339(end), "matching": result.matching,
        "resent": len(result.resent), "references": result.resent, "skipped": result.skipped,
        "remaining": result.remaining,
    }, done=confirm)


@_guarded("operator", "agency_paused")
async def pause(request: Request, operator: Operator) -> Response:
    ctx = context_of(request)
    agency = request.path_params["agency"]
    _known_agency(ctx, agency)
    body = await _body(request)
    confirm, reason = _flag(body, "confirm"), _reason(body)
    paused = await run_in_threadpool(ctx.store.paused_agencies)
    if not confirm:
        return _answer("pause", {"agency": agency, "preview": {"paused": agency in paused,
                                                              "wouldPause": agency not in paused}}, done=False)
    changed = await run_in_threadpool(lambda: ctx.store.pause_agency(
        agency, actor=operator_actor(operator.name), reason=reason))
    log.info("agency_paused", agency=agency, changed=changed)
    return _answer("pause", {"agency": agency, "paused": True, "changed": changed}, done=True)


@_guarded("operator", "agency_resumed")
async def resume(request: Request, operator: Operator) -> Response:
    ctx = context_of(request)
    agency = request.path_params["agency"]
    _known_agency(ctx, agency)
    body = await _body(request)
    confirm, reason = _flag(body, "confirm"), _reason(body)
    if not confirm:
        paused = await run_in_threadpool(ctx.store.paused_agencies)
        return _answer("resume", {"agency": agency, "preview": {"paused": agency in paused,
                                                               "wouldResume": agency in paused}}, done=False)
    made_due = await run_in_threadpool(lambda: ctx.store.resume_agency(
        agency, actor=operator_actor(operator.name), reason=reason))
    log.info("agency_resumed", agency=agency, jobs_made_due=made_due)
    ctx.wake()
    return _answer("resume", {"agency": agency, "paused": False, "changed": made_due is not None,
                             "jobsMadeDue": made_due or 0}, done=True)


# -- dead letters (RabbitMQ) ----------------------------------------------------------------------
def _no_broker(request: Request, status: int) -> Response:
    return problem_response(status, "no-broker", "Not Found" if status == 404 else "Conflict",
                            "this hub runs the embedded queue: there is no broker and no dead-letter queue",
                            instance=request.url.path)


@_guarded("operator", "dead_letters_listed")
async def dead_letters(request: Request, operator: Operator) -> Response:
    ctx = context_of(request)
    if ctx.dead_letters is None:
        return _no_broker(request, 404)
    agency = request.query_params.get("agency")
    if agency is not None:
        _known_agency(ctx, agency)
    try:
        limit = int(request.query_params.get("limit", "100"))
    except ValueError:
        raise _BadRequest("`limit` must be a whole number") from None
    limit = _limit({"limit": limit}, 100, 1000)
    counts, letters = await run_in_threadpool(ctx.dead_letters.list, agency, limit)
    return json_response({"counts": counts, "total": sum(counts.values()),
                          "messages": [m.to_json() for m in letters]})


@_guarded("operator", "dead_letters_replayed")
async def replay(request: Request, operator: Operator) -> Response:
    ctx = context_of(request)
    if ctx.dead_letters is None:
        await _audit_refusal(request, operator, "dead_letters_replayed", "", "no-broker", {})
        return _no_broker(request, 409)
    body = await _body(request)
    confirm, reason = _flag(body, "confirm"), _reason(body)
    agency = body.get("agency")
    if agency is not None:
        if not isinstance(agency, str):
            raise _BadRequest("`agency` must be an agency's name", "agency")
        _known_agency(ctx, agency)
    ids = body.get("jobIds")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, int) for i in ids)):
        raise _BadRequest("`jobIds` must be a list of job ids", "jobIds")
    limit = _limit(body, 100, 1000)
    if not confirm:
        counts, letters = await run_in_threadpool(ctx.dead_letters.list, agency, 1000)
        chosen = [m for m in letters if ids is None or m.job_id in ids][:limit]
        return _answer("dead-letters-replay", {"preview": {"wouldReplay": len(chosen), "counts": counts},
                                              "messages": [m.to_json() for m in chosen]}, done=False)
    try:
        replayed = await run_in_threadpool(ctx.dead_letters.replay, agency, limit,
                                           frozenset(ids) if ids is not None else None)
    except TransportError as exc:  # what was confirmed before stays replayed: say so
        await _audit_refusal(request, operator, "dead_letters_replayed", agency or "", "broker-unavailable",
                            {"detail": str(exc)[:300], "reason": reason})
        raise
    await run_in_threadpool(ctx.store.audit, operator_actor(operator.name), "dead_letters_replayed",
                            agency or "", "replayed",
                            {"count": len(replayed), "jobIds": [m.job_id for m in replayed][:200],
                             "reason": reason})
    log.info("dead_letters_replayed", agency=agency, count=len(replayed))
    return _answer("dead-letters-replay", {"replayed": len(replayed),
                                          "messages": [m.to_json() for m in replayed]}, done=True)


# -- lockouts (admin) -------------------------------------------------------------------------------
@_guarded("admin", "lockouts_listed")
async def lockouts(request: Request, operator: Operator) -> Response:
    ctx = context_of(request)
    now = ctx.guard.now().timestamp()  # the lockout clock: epoch seconds
    counting = request.query_params.get("all") in ("1", "true")
    found = await run_in_threadpool(lambda: ctx.identity.lockouts(now, counting=counting))
    return json_response({"lockouts": [{
        "key": lock.key, "locked": lock.locked_at(now), "failures": lock.state.failures,
        "lastFailureAt": _instant(lock.state.last_failure_at), "lockedUntil": _instant(lock.state.locked_until),
    } for lock in found]})


@_guarded("admin", "lockout_lifted")
async def lift(request: Request, operator: Operator) -> Response:
    ctx = context_of(request)
    key = request.path_params["key"]
    body = await _body(request)
    confirm = _flag(body, "confirm")
    now = ctx.guard.now().timestamp()  # the lockout clock: epoch seconds
    if not confirm:
        found = await run_in_threadpool(lambda: ctx.identity.lockouts(now, counting=True))
        match = next((lock for lock in found if lock.key == key), None)
        if match is None:
            raise RecipientNotFound(f"no lockout or failures on record for {key[:128]!r}")
        return _answer("lift-lockout", {"key": key, "preview": {"locked": match.locked_at(now),
                                                               "failures": match.state.failures}}, done=False)
    lifted = await run_in_threadpool(ctx.identity.lift_lockout, key, now, operator.name)
    if lifted is None:  # audited by the store too
        return problem_response(404, "not-found", "Not Found",
                                f"no lockout or failures on record for {key[:128]!r}", instance=request.url.path)
    return _answer("lift-lockout", {"key": key, "wasLocked": lifted.locked_at(now),
                                   "failures": lifted.state.failures}, done=True)


_RECIPIENT = "/filings/{reference}/recipients/{agency}"


def actions_routes() -> list[Route]:
    """The routes of the operators' actions (relative to `/v1/ops`)."""
    return [
        Route(f"{_RECIPIENT}/resend", resend, methods=["POST"]),
        Route(f"{_RECIPIENT}/retry", retry, methods=["POST"]),
        Route(f"{_RECIPIENT}/cancel", cancel, methods=["POST"]),
        Route("/agencies/{agency}/resend-undeliverable", resend_undeliverable, methods=["POST"]),
        Route("/agencies/{agency}/pause", pause, methods=["POST"]),
        Route("/agencies/{agency}/resume", resume, methods=["POST"]),
        Route("/dead-letters", dead_letters, methods=["GET"]),
        Route("/dead-letters/replay", replay, methods=["POST"]),
        Route("/lockouts", lockouts, methods=["GET"]),
        Route("/lockouts/{key:path}/lift", lift, methods=["POST"]),
    ]
