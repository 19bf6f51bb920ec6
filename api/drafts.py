"""The drafts API: save a filing before it is complete, check it, submit it.

Every request is ModI-signed like a filing and names the user; every outcome is audited.

    POST   /v1/drafts                     XML or JSON body → 201 {draftId, ..., warnings[]}
    GET    /v1/drafts?cursor=&limit=      the drafts the user may read, newest first
    GET    /v1/drafts/{draftId}           JSON (default) or, with Accept: application/xml, the XML
    PUT    /v1/drafts/{draftId}           replace (If-Match: the ETag read; 412 when stale)
    DELETE /v1/drafts/{draftId}           204
    POST   /v1/drafts/{draftId}/check     the whole intake, nothing accepted
    POST   /v1/drafts/{draftId}/submit    a filing through the intake of POST /v1/filings, once
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import Caller, authenticate
from api.bodies import read_bounded
from api.context import ApiContext, context_of
from api.deliveries import recipient_problem_json, refusal_errors
from api.problems import json_response, problem_response, store_unavailable
from domain.drafts import Draft, DraftRefused
from domain.intake import FilingRefused, SchemaViolation
from schemas.drafts import draft_as_json, draft_as_xml
from service.drafts import DraftCaller, DraftCheck, DraftDesk, NoRecipients, etag
from service.identity import AuditEntry, RecipientsNotAuthorized
from service.ports import StoreError

__all__ = ["draft_routes"]

log = structlog.get_logger("crocevia.api")

_TITLES = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 406: "Not Acceptable", 409: "Conflict",
           410: "Gone", 412: "Precondition Failed", 413: "Content Too Large", 415: "Unsupported Media Type",
           422: "Unprocessable Content"}

#: A draft use case: blocking, run in the thread pool once the caller is known.
Work = Callable[[ApiContext, DraftDesk, Request, DraftCaller, bytes], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower().replace("text/xml",
                                                                                          "application/xml")


def _instant(value: Any) -> str:
    return str(value.isoformat(timespec="seconds"))


def draft_json(draft: Draft) -> dict[str, Any]:
    """A draft's metadata and open points (without its document)."""
    body: dict[str, Any] = {
        "draftId": draft.id,
        "kind": draft.kind,
        "state": draft.state.value,
        "version": draft.version,
        "contentType": draft.media_type,
        "createdAt": _instant(draft.created_at),
        "updatedAt": _instant(draft.updated_at),
        "expiresAt": _instant(draft.expires_at),
        "warnings": list(draft.warnings),
        "links": {"self": f"/v1/drafts/{draft.id}"},
    }
    if draft.reference:
        body["reference"] = draft.reference
        body["links"]["filing"] = f"/v1/filings/{draft.reference}"
    return body


def check_json(draft_id: str, result: DraftCheck) -> dict[str, Any]:
    """`POST /v1/drafts/{id}/check`'s answer."""
    errors = [{"code": v.code, "location": v.location, "detail": v.detail, **({"line": v.line} if v.line else {})}
              for v in result.violations] + list(result.general)
    recipients = []
    for r in result.recipients:
        item: dict[str, Any] = {
            "agency": r.agency,
            "operation": r.operation,
            "authorized": r.authorized,
            "messageValid": r.message_valid,
            "preview": r.preview.text if r.preview is not None else None,
            "previewMediaType": r.preview.media_type if r.preview is not None else None,
            "errors": ([recipient_problem_json(r.preview.problem)]
                       if r.preview is not None and r.preview.problem is not None else []),
        }
        if r.reasons:
            item["reason"] = "; ".join(r.reasons)
        recipients.append(item)
    return {"draftId": draft_id, "ready": result.ready, "errors": errors, "recipients": recipients}


def _refusal(ctx: ApiContext, desk: DraftDesk, request: Request, caller: Caller, action: str,
             exc: Exception) -> Response:
    """Audit a refused draft request (blocking) and answer its problem."""
    subject = request.path_params.get("draftId", "")
    instance = request.url.path
    if isinstance(exc, DraftRefused):
        slug, status = exc.slug, exc.status
        response = problem_response(status, slug, _TITLES.get(status, "Bad Request"), exc.detail,
                                    instance=instance, extra=exc.extra or None)
        if exc.audited:  # the use case wrote its line with the change it refused
            return response
    elif isinstance(exc, FilingRefused):
        slug, status, errors = exc.problem, exc.status, refusal_errors(exc, lines=True)
        response = problem_response(status, slug, exc.title, str(exc), instance=instance, errors=errors)
    elif isinstance(exc, RecipientsNotAuthorized):
        slug, status = "recipients-not-authorized", 403
        errors = [{"code": x.code, "location": f"agency:{r.agency}", "detail": x.detail}
                  for r in exc.refusals for x in r.reasons]
        response = problem_response(status, slug, "Forbidden", str(exc), instance=instance, errors=errors,
                                    # The same `agencies` as the intake's refusal: one problem type, one shape.
                                    extra={"agencies": [
                                        {"agency": r.agency,
                                         "reasons": [{"code": x.code, "detail": x.detail} for x in r.reasons]}
                                        for r in exc.refusals]})
    else:
        slug, status = "no-route", 422
        response = problem_response(status, slug, "Unprocessable Content", str(exc), instance=instance)
    assert caller.user is not None
    desk.drafts.audit_draft(AuditEntry(caller.user.tax_code, action, subject, slug,
                                       {"status": status, **caller.audit_context()}))
    return response


def _handler(action: str) -> Callable[[Work], Endpoint]:
    """An endpoint that reads (bounded) and authenticates the request, runs `work` in the
    thread pool and answers its refusals (audited as `action`) as problems."""

    def endpoint_of(work: Work) -> Endpoint:
        async def handle(request: Request) -> Response:
            ctx = context_of(request)
            desk = ctx.drafts
            assert desk is not None  # the routes are mounted only with a desk
            body = await read_bounded(request, ctx.max_body_bytes)
            # A body past the bound is not kept, so its Digest cannot be checked: the caller is
            # known from the token and the tracking evidence alone, as for a filing too large.
            caller = await authenticate(ctx.guard, request, body or b"")
            if isinstance(caller, Response):
                return caller
            assert caller.user is not None
            structlog.contextvars.bind_contextvars(portal=caller.portal)
            who = DraftCaller(caller.portal, caller.user, caller.audit_context())
            try:
                if body is None:
                    raise DraftRefused(413, "document-too-large", f"the draft exceeds {ctx.max_body_bytes} bytes")
                return await run_in_threadpool(work, ctx, desk, request, who, body)
            except (DraftRefused, FilingRefused, RecipientsNotAuthorized, NoRecipients) as exc:
                try:
                    return await run_in_threadpool(_refusal, ctx, desk, request, caller, action, exc)
                except StoreError:
                    log.warning("audit_unavailable", exc_info=True)
                    return store_unavailable(request, "the store is not reachable; nothing was recorded")
            except StoreError:
                log.warning("store_unavailable", exc_info=True)
                return store_unavailable(request, "the store is not reachable; nothing was recorded")

        return handle

    return endpoint_of


def _saved(draft: Draft, status: int) -> Response:
    return json_response(draft_json(draft), status, {"Location": f"/v1/drafts/{draft.id}", "ETag": etag(draft)})


@_handler("draft_refused")
def create(ctx: ApiContext, desk: DraftDesk, request: Request, caller: DraftCaller, body: bytes) -> Response:
    draft = desk.create(caller, _media_type(request), body, ctx.guard.now())
    log.info("draft_created", draft_id=draft.id, kind=draft.kind, warnings=len(draft.warnings))
    return _saved(draft, 201)


@_handler("draft_update_refused")
def update(ctx: ApiContext, desk: DraftDesk, request: Request, caller: DraftCaller, body: bytes) -> Response:
    draft = desk.replace(caller, request.path_params["draftId"], request.headers.get("if-match"),
                         _media_type(request), body, ctx.guard.now())
    log.info("draft_updated", draft_id=draft.id, version=draft.version)
    return _saved(draft, 200)


def _wants_xml(request: Request) -> bool:
    """Content negotiation on Accept: the first of JSON or XML named wins; JSON by default."""
    for part in request.headers.get("accept", "").split(","):
        kind = part.split(";")[0].strip().lower()
        if kind in ("application/xml", "text/xml"):
            return True
        if kind in ("application/json", "*/*", "application/*"):
            return False
    return False


@_handler("draft_read_refused")
def read(ctx: ApiContext, desk: DraftDesk, request: Request, caller: DraftCaller, body: bytes) -> Response:
    draft = desk.read(caller, request.path_params["draftId"], ctx.guard.now())
    headers = {"ETag": etag(draft)}
    if _wants_xml(request):
        try:
            xml = draft_as_xml(desk.validator, draft.document, draft.media_type)
        except SchemaViolation as exc:
            return problem_response(406, "draft-not-convertible", "Not Acceptable",
                                    "this JSON draft has no XML form yet: " + str(exc), instance=request.url.path,
                                    errors=refusal_errors(exc, lines=False))
        return Response(xml, media_type="application/xml", headers=headers)
    # The document is spliced in as JSON text: a JSON draft is answered with its numbers as sent.
    meta = orjson.dumps(draft_json(draft))
    filing = draft_as_json(desk.validator, draft.document, draft.media_type)
    return Response(meta[:-1] + b',"filing":' + filing + b"}", media_type="application/json", headers=headers)


@_handler("drafts_list_refused")
def listing(ctx: ApiContext, desk: DraftDesk, request: Request, caller: DraftCaller, body: bytes) -> Response:
    limit = request.query_params.get("limit")
    if limit is not None and not limit.isdigit():
        raise DraftRefused(400, "invalid-limit", "limit must be a positive whole number")
    items, cursor = desk.listing(caller, ctx.guard.now(), request.query_params.get("cursor"),
                                 int(limit) if limit else None)
    return json_response({"drafts": [draft_json(d) for d in items], "nextCursor": cursor})


@_handler("draft_delete_refused")
def remove(ctx: ApiContext, desk: DraftDesk, request: Request, caller: DraftCaller, body: bytes) -> Response:
    desk.delete(caller, request.path_params["draftId"], ctx.guard.now())
    log.info("draft_deleted", draft_id=request.path_params["draftId"])
    return Response(status_code=204)


@_handler("draft_check_refused")
def check(ctx: ApiContext, desk: DraftDesk, request: Request, caller: DraftCaller, body: bytes) -> Response:
    draft_id = request.path_params["draftId"]
    result = desk.check(caller, draft_id, ctx.guard.now())
    return json_response(check_json(draft_id, result))


@_handler("draft_submit_refused")
def submit(ctx: ApiContext, desk: DraftDesk, request: Request, caller: DraftCaller, body: bytes) -> Response:
    key = request.headers.get("idempotency-key")
    if key is not None and not (1 <= len(key) <= 255):
        raise DraftRefused(400, "invalid-idempotency-key", "Idempotency-Key must be 1 to 255 characters")
    done = desk.submit(caller, request.path_params["draftId"], ctx.guard.now(), key)
    headers = {"Location": done.body["links"]["self"]}
    if done.replayed:
        headers["Idempotent-Replayed"] = "true"
    else:
        log.info("draft_submitted", draft_id=done.body["draftId"], filing_ref=done.body["reference"])
        ctx.wake()
    return Response(orjson.dumps(done.body), status_code=202, media_type="application/json", headers=headers)


def draft_routes(ctx: ApiContext) -> list[Route]:
    """The draft endpoints, when the context has a draft desk."""
    if ctx.drafts is None:
        return []
    return [
        Route("/v1/drafts", create, methods=["POST"]),
        Route("/v1/drafts", listing, methods=["GET"]),
        Route("/v1/drafts/{draftId}", read, methods=["GET"]),
        Route("/v1/drafts/{draftId}", update, methods=["PUT"]),
        Route("/v1/drafts/{draftId}", remove, methods=["DELETE"]),
        Route("/v1/drafts/{draftId}/check", check, methods=["POST"]),
        Route("/v1/drafts/{draftId}/submit", submit, methods=["POST"]),
    ]
