"""The intake and status API (Starlette).

Parsing, validation and the checks run in the intake's threads; a checked filing's commit is
awaited on the event loop, batched with the others (`api.commit_batches`).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from api.admission import SubmissionAdmission
from api.agency_health import agency_health_routes
from api.attachments import attachment_routes
from api.auth import Caller, admit_deferred, authenticate, authenticate_sync, refuse_token
from api.bodies import read_bounded
from api.commit_batches import CommitBatches
from api.context import ApiContext, attach_context, context_of
from api.delegations import delegation_routes
from api.desk import desk_routes
from api.drafts import draft_routes
from api.deliveries import delivery_routes, in_sender_terms, recipient_json, refusal_errors
from api.ops.actions import actions_routes
from api.ops.auth import session_routes
from api.ops.detail import detail_routes
from api.ops.operators import operator_routes
from api.ops.problems import problems_routes
from api.ops.search import search_routes
from api.ops.summary import summary_routes
from api.openapi import openapi_routes
from api.observability import RequestObservation, metrics_routes, request_id_of
from api.problems import json_response, problem_response, store_unavailable
from api.readiness import health_routes
from api.receipts import receipt_routes
from api.threads import IntakeThreads
from console import console_mount
from domain.intake import FilingRefused
from domain.timestamps import rfc3339
from service.attachments import verify_references
from service.identity import RecipientsNotAuthorized, authorize_filing
from service.intake import NoRecipients, plan_filing
from service.ports import AcceptedFiling, FilingView, IdempotencyConflict, NewFiling, StoreError, TokenNotAdmitted
from service.store_ports import IntakeItem

__all__ = ["ApiContext", "create_app"]  # ApiContext: re-exported from api.context

log = structlog.get_logger("crocevia.api")

_XML_TYPES = {"application/xml", "text/xml"}
_JSON_TYPES = {"application/json"}


def _filing_json(view: FilingView) -> dict[str, Any]:
    return {
        "reference": view.reference,
        "kind": view.kind,
        "state": view.state,
        "createdAt": rfc3339(view.created_at),
        "updatedAt": rfc3339(view.updated_at),
        "recipients": [recipient_json(d) for d in view.deliveries],
        # The desk (api/desk.py): archived, and the payloads purged after the retention period.
        "archivedAt": rfc3339(view.archived_at) if view.archived_at else None,
        "payloadPurgedAt": rfc3339(view.payload_purged_at) if view.payload_purged_at else None,
    }


def _not_authorized(request: Request, exc: RecipientsNotAuthorized) -> Response:
    return problem_response(
        403, "recipients-not-authorized", "Forbidden", str(exc), instance=request.url.path,
        errors=[
            {"code": reason.code, "location": f"agency:{refusal.agency}", "detail": reason.detail}
            for refusal in exc.refusals for reason in refusal.reasons
        ],
        extra={"agencies": [
            {"agency": r.agency, "reasons": [{"code": x.code, "detail": x.detail} for x in r.reasons]}
            for r in exc.refusals
        ]},
    )


def _unavailable(request: Request) -> Response:
    return store_unavailable(request, "the filing store is not reachable; nothing was recorded, retry later")


@dataclass(frozen=True, slots=True)
class _Checked:
    """A filing that passed every check before the store: what its commit and its answer need."""

    caller: Caller
    item: IntakeItem
    referenced: list[str]  # ids of the attachments it names

    @property
    def kind(self) -> str:
        return self.item[0].kind


#: The refusals a commit can give a checked filing (then answered in a thread: they write).
_COMMIT_REFUSALS = (TokenNotAdmitted, IdempotencyConflict, StoreError)


async def submit_filing(request: Request,
                        in_thread: Callable[..., Awaitable[Any]] = run_in_threadpool,
                        commits: CommitBatches[IntakeItem, AcceptedFiling] | None = None) -> Response:
    """`POST /v1/filings`: a ModI-signed filing, XML or JSON; 202 with its reference.

    `in_thread` runs the blocking checks (`FilingSubmissions` passes its own threads); the
    checked filing's commit is awaited in `commits` (the application's own by default), on
    no thread, batched with the filings checked meanwhile."""
    ctx = context_of(request)
    # The body is read first: its Digest is part of the signature (INTEGRITY_REST_01).
    body = await read_bounded(request, ctx.max_body_bytes)
    # Authentication, parsing and the checks are blocking: one hand-off to a thread runs
    # them all, rather than one per step.
    checked = await in_thread(_submit, ctx, request, body)
    if isinstance(checked, Response):
        return checked
    structlog.contextvars.bind_contextvars(portal=checked.caller.portal)
    try:
        accepted = await (commits or request.app.state.intake_commits).submit(checked.item)
    except _COMMIT_REFUSALS as refused:
        return await in_thread(_not_committed, ctx, request, checked, refused)
    return await _accepted(ctx, checked, accepted, in_thread)


def _submit(ctx: ApiContext, request: Request, body: bytes | None) -> Response | _Checked:
    # The token's admission (replay and lockout check) is deferred into the accept
    # transaction: one commit per filing. Every other answer admits it on its own first.
    caller = authenticate_sync(ctx.guard, request, body or b"", defer_admission=True)
    if isinstance(caller, Response):
        return caller
    return _submit_verified(ctx, request, caller, body)


def _submit_verified(ctx: ApiContext, request: Request, caller: Caller, body: bytes | None) -> Response | _Checked:
    portal = caller.portal
    structlog.contextvars.bind_contextvars(portal=portal)  # request_id: api.observability
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in _XML_TYPES | _JSON_TYPES:
        if (denied := admit_deferred(ctx.guard, request, caller)) is not None:
            return denied
        return problem_response(
            415,
            "unsupported-media-type",
            "Unsupported Media Type",
            "send the filing as application/xml or application/json",
            instance=request.url.path,
        )
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key is not None and not (1 <= len(idempotency_key) <= 255):
        if (denied := admit_deferred(ctx.guard, request, caller)) is not None:
            return denied
        return problem_response(
            400, "invalid-idempotency-key", "Bad Request",
            "Idempotency-Key must be 1 to 255 characters", instance=request.url.path,
        )
    if body is None:
        if (denied := admit_deferred(ctx.guard, request, caller)) is not None:
            return denied
        return _refuse_sync(ctx, request, caller, 413, "document-too-large", "Content Too Large",
                            f"the filing exceeds {ctx.max_body_bytes} bytes", [])
    try:
        return _check(ctx, request, caller, media_type, body, idempotency_key)
    except (FilingRefused, RecipientsNotAuthorized) as exc:
        if (denied := admit_deferred(ctx.guard, request, caller)) is not None:
            return denied
        if isinstance(exc, FilingRefused):
            exc = in_sender_terms(exc, json_body=body if media_type in _JSON_TYPES else None)
        return _refused(ctx, request, caller, exc)
    except StoreError:
        log.warning("store_unavailable", exc_info=True)
        return _unavailable(request)


def _refused(ctx: ApiContext, request: Request, caller: Caller,
             exc: FilingRefused | RecipientsNotAuthorized) -> Response:
    if isinstance(exc, FilingRefused):
        refused = exc
        return _refuse_sync(ctx, request, caller, refused.status, refused.problem, refused.title, str(refused),
                            refusal_errors(refused, lines=True))
    _refuse_sync(ctx, request, caller, 403, "recipients-not-authorized", "Forbidden", str(exc),
                 [{"code": x.code, "location": f"agency:{r.agency}"}
                  for r in exc.refusals for x in r.reasons])
    return _not_authorized(request, exc)


def _check(ctx: ApiContext, request: Request, caller: Caller, media_type: str, body: bytes,
           key: str | None) -> Response | _Checked:
    """Everything before the store: parse, attachments, authority, plan and messages."""
    portal = caller.portal
    if media_type in _JSON_TYPES:
        parsed = ctx.validator.parse_json(body)
    else:
        parsed = ctx.validator.parse(body)
    assert caller.user is not None  # filings always name the user
    # Attachments named by id must be this user's uploads, with the hashes the filing declares.
    referenced = verify_references(ctx.attachments.store if ctx.attachments else None, parsed.root,
                                   portal, caller.user.tax_code)
    granted = authorize_filing(ctx.identity, ctx.routes, parsed.kind, parsed.root, caller.user,
                               ctx.guard.now())
    new = NewFiling(
        kind=parsed.kind,
        portal=portal,
        subject_tax_code=parsed.subject_tax_code,
        subject_name=parsed.subject_name,
        declarant_tax_code=parsed.declarant_tax_code,
        declarant_role=parsed.declarant_role,
        document=parsed.xml,
        digest=parsed.digest,
        received_at=datetime.now(timezone.utc),
        idempotency_key=key,
        # The same key from another user is another request, not a replay.
        request_digest=hashlib.sha256(
            media_type.encode() + b"\n" + caller.user.tax_code.encode() + b"\n" + body
        ).hexdigest() if key else None,
        filed_by=caller.user.tax_code,
        responsible_tax_code=granted.responsible_tax_code,
        authorization=granted.as_json(),
        viewers=granted.viewers,
        auth_context=caller.audit_context(),
        token=caller.claim,
    )
    try:
        item = plan_filing(ctx.routes, parsed.root, new, ctx.message_check)
    except NoRecipients as exc:
        if (denied := admit_deferred(ctx.guard, request, caller)) is not None:
            return denied
        return problem_response(422, "no-route", "Unprocessable Content", str(exc), instance=request.url.path)
    return _Checked(caller=caller, item=item, referenced=[r.id for r in referenced])


def _not_committed(ctx: ApiContext, request: Request, checked: _Checked, refused: Exception) -> Response:
    """The answer to a checked filing that its commit refused (blocking: it may write)."""
    caller = checked.caller
    if isinstance(refused, TokenNotAdmitted):
        return refuse_token(ctx.guard, request, caller, refused)
    if isinstance(refused, IdempotencyConflict):
        # Rolled back with the filing: the token is admitted on its own.
        if (denied := admit_deferred(ctx.guard, request, caller)) is not None:
            return denied
        return problem_response(
            422, "idempotency-key-reused", "Unprocessable Content", str(refused),
            instance=request.url.path, extra={"reference": refused.reference},
        )
    log.warning("store_unavailable", exc_info=refused)
    return _unavailable(request)


async def _accepted(ctx: ApiContext, checked: _Checked, accepted: AcceptedFiling,
                    in_thread: Callable[..., Awaitable[Any]]) -> Response:
    """The 202 of a committed filing (or of the one an Idempotency-Key replays)."""
    location = f"/v1/filings/{accepted.reference}"
    headers = {"Location": location}
    if accepted.replayed:
        headers["Idempotent-Replayed"] = "true"
    else:
        log.info("filing_accepted", filing_ref=accepted.reference, kind=checked.kind,
                 recipients=[r["agency"] for r in accepted.recipients])
        ctx.wake()
        if checked.referenced and ctx.attachments is not None:
            await in_thread(_mark_referenced, ctx, checked.referenced, accepted.reference)
    return json_response(
        {
            "reference": accepted.reference,
            "state": accepted.state,
            "recipients": accepted.recipients,
            "links": {"self": location},
        },
        202,
        headers,
    )


def _mark_referenced(ctx: ApiContext, ids: list[str], reference: str) -> None:
    """Referenced attachments no longer expire (the filing is accepted either way)."""
    assert ctx.attachments is not None
    try:
        ctx.attachments.store.mark_referenced(ids, reference)
    except StoreError:
        log.warning("attachment_reference_unrecorded", filing_ref=reference, exc_info=True)


def _refuse_sync(ctx: ApiContext, request: Request, caller: Caller, status: int, slug: str, title: str,
                 detail: str, errors: list[dict[str, Any]]) -> Response:
    """Audit a refused filing (blocking: runs in the thread pool) and answer the problem."""
    log.info("filing_refused", problem=slug, violations=len(errors))
    try:
        ctx.store.audit(
            caller.actor, "filing_refused", "", slug,
            {"status": status, "violations": [e.get("code") for e in errors][:50],
             "agencies": sorted({e["location"][7:] for e in errors
                                 if str(e.get("location", "")).startswith("agency:")}),
             **caller.audit_context()},
        )
    except StoreError:
        log.warning("audit_unavailable", exc_info=True)
    return problem_response(status, slug, title, detail, instance=request.url.path, errors=errors)


async def get_filing(request: Request) -> Response:
    """`GET /v1/filings/{reference}`: the filing's state and its recipients (the caller's only)."""
    ctx = context_of(request)
    caller = await authenticate(ctx.guard, request, await request.body())
    if isinstance(caller, Response):
        return caller
    assert caller.user is not None
    reference = request.path_params["reference"]
    try:
        # Another portal's or another user's filing is as absent as an unknown one.
        view = await run_in_threadpool(ctx.store.get_filing, reference, caller.portal, caller.user.tax_code)
        await run_in_threadpool(ctx.store.audit, caller.actor, "filing_read", reference,
                                "ok" if view is not None else "not_found", caller.audit_context())
    except StoreError:
        return _unavailable(request)
    if view is None:
        return problem_response(404, "not-found", "Not Found", f"no filing {reference}", instance=request.url.path)
    return json_response(_filing_json(view))


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return problem_response(exc.status_code, f"http-{exc.status_code}", str(exc.detail), str(exc.detail),
                            instance=request.url.path)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.error("request_failed", exc_info=exc)
    request_id = request_id_of(request.scope)
    return problem_response(500, "internal-error", "Internal Server Error",
                            "the hub failed to process the request; nothing was recorded",
                            instance=request.url.path,
                            headers={"X-Request-ID": request_id} if request_id else None)


#: The intake's threads when no admission bound sizes them (anyio's default thread limit).
_DEFAULT_THREADS = 40


class FilingSubmissions:
    """Pure ASGI middleware: `POST /v1/filings` straight to `submit_filing`.

    The busiest route skips Starlette's exception middleware, router and endpoint wrapper
    (three layers of calls and a send wrapper per request); it answers as its route would.
    An HTTPException gets `_http_error`'s answer, as the exception middleware gives it; any
    other exception reaches the server-error handler outside, as from the route. Its
    blocking part runs in `api.threads.IntakeThreads`.

    Args:
        app: the application.
        threads: the intake's threads (`intake_threads`); admitted filings beyond them wait
            for one.
    """

    def __init__(self, app: ASGIApp, threads: IntakeThreads,
                 commits: CommitBatches[IntakeItem, AcceptedFiling]) -> None:
        self.app = app
        self._threads = threads
        self._commits = commits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/filings" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await submit_filing(request, self._threads.run, self._commits)
        except HTTPException as exc:
            response = await _http_error(request, exc)
        await response(scope, receive, send)


def intake_threads(ctx: ApiContext) -> IntakeThreads:
    """The intake's threads: `[api] threads`, else the admission's `max_inflight`, else 40
    (anyio's default)."""
    limits = ctx.admission
    return IntakeThreads(ctx.intake_threads or (limits.max_inflight if limits else 0) or _DEFAULT_THREADS)


def create_app(ctx: ApiContext) -> Starlette:
    """The application: routes, middleware and error handlers over `ctx` (kept on its state).

    Its intake threads and commit thread end with the application's lifespan, or at `close_app`
    where the server runs without one (`api.server`).
    """
    threads = intake_threads(ctx)
    commits: CommitBatches[IntakeItem, AcceptedFiling] = CommitBatches(ctx.store.accept_filings)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            _close(threads, commits)

    app = Starlette(
        lifespan=lifespan,
        routes=[
            Route("/v1/filings", submit_filing, methods=["POST"]),
            Route("/v1/filings/{reference}", get_filing, methods=["GET"]),
            *receipt_routes(),
            *(desk_routes() if ctx.desk is not None else []),
            *delegation_routes(),
            *draft_routes(ctx),
            *(attachment_routes() if ctx.attachments is not None else []),
            *agency_health_routes(ctx.agency_health),
            *delivery_routes(),
            *health_routes(ctx.readiness),
            *openapi_routes(ctx.validator.xml_to_json),
            *_ops_mount(ctx),
            *metrics_routes(ctx.metrics),
            *console_mount(ctx),
        ],
        middleware=[Middleware(RequestObservation, metrics=ctx.metrics),
                    Middleware(SubmissionAdmission, limits=ctx.admission),
                    Middleware(FilingSubmissions, threads=threads, commits=commits)],
        exception_handlers={HTTPException: _http_error, Exception: _server_error},
    )
    attach_context(app, ctx)
    app.state.intake_threads = threads
    app.state.intake_commits = commits
    return app


def close_app(app: Starlette) -> None:
    """End what the application started for itself (its intake threads and its commit thread)
    once its server has stopped: the server runs without a lifespan."""
    _close(app.state.intake_threads, app.state.intake_commits)


def _close(threads: IntakeThreads, commits: CommitBatches[IntakeItem, AcceptedFiling]) -> None:
    """The checks' threads, then the commits' thread (once the batches in hand are stored)."""
    threads.close()
    commits.close()


def _ops_mount(ctx: ApiContext) -> list[Mount]:
    """The operator API under `/v1/ops`, when an operator guard is wired."""
    guard = ctx.ops_guard
    if guard is None:
        return []
    routes = []
    if ctx.operators is not None:
        routes += [*session_routes(guard), *operator_routes()]
    if ctx.ops is not None:
        routes += [*summary_routes(), *search_routes(), *detail_routes(), *problems_routes()]
    routes += actions_routes()
    return [Mount("/v1/ops", routes=routes)]
