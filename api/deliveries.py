"""Routes of the delivery semantics: resend and correct one recipient, the filing's event
feed, agencies' late-outcome callbacks, and the agencies' circuit status."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.auth import Caller, authenticate
from api.bodies import read_bounded
from api.callbacks import CallbackRefused
from api.context import ApiContext, context_of
from api.problems import json_response, problem_response, store_unavailable
from domain.intake import FilingRefused, MessageProblem, RecipientMessagesInvalid, Violation
from domain.timestamps import agency_instant, epoch_rfc3339, rfc3339
from schemas.json_locations import field_pointer, json_pointer
from service.attachments import verify_references
from service.identity import RecipientsNotAuthorized, authorize_filing
from service.ports import DeliveryView, FilingEvent, NeedsCorrection, NotResendable, RecipientNotFound, StoreError
from service.recipients import CallbackUnreadable, CorrectionRefused, correct_recipient, record_callback

__all__ = ["delivery_routes", "in_sender_terms", "recipient_json", "recipient_problem_json", "refusal_errors"]

log = structlog.get_logger("crocevia.api")

_XML_TYPES = {"application/xml", "text/xml"}
_JSON_TYPES = {"application/json"}
#: The header of the AgID non-blocking patterns that names the exchange (ModI guidelines).
_CORRELATION = "x-correlation-id"
#: The longest correlation id taken (and kept in the audit trail), and agency name.
_MAX_CORRELATION = 128
_MAX_AGENCY = 64
#: The largest event sequence number (the store's column is a 32-bit integer).
_MAX_SEQUENCE = 2**31 - 1


def _instant(epoch: float | None) -> str | None:
    return epoch_rfc3339(epoch) if epoch else None


def recipient_json(d: DeliveryView) -> dict[str, Any]:
    """A recipient in the status API."""
    item: dict[str, Any] = {
        "agency": d.agency,
        "operation": d.operation,
        "messageId": d.message_id,
        "state": d.state,
        "protocolNumber": d.protocol_number,
        "protocolledAt": agency_instant(d.protocolled_at),
        "outcome": d.outcome,
        "outcomeCode": d.outcome_code,
        "outcomeText": d.outcome_text,
        "references": d.references,
        "attempts": d.attempts,
        "lastError": d.last_error,
        "nextAttemptAt": _instant(d.next_attempt_at),
    }
    if d.waits_for:
        item["waitsFor"] = d.waits_for
    if d.corrects:
        item["corrects"] = d.corrects
    if d.anomalies is not None:
        item["anomalies"] = d.anomalies
    return item


def recipient_problem_json(p: MessageProblem) -> dict[str, Any]:
    """One recipient's message that would fail its agency schema, as a problem's error."""
    item = {"code": "agency-schema", "location": f"agency:{p.agency}", "agency": p.agency,
            "operation": p.operation, "field": p.field, "detail": p.detail}
    if p.filing_field:
        item["filingField"] = p.filing_field
    return item


def _violation_json(v: Violation, *, line: bool) -> dict[str, Any]:
    item: dict[str, Any] = {"code": v.code, "location": v.location, "detail": v.detail}
    if line and v.line is not None:
        item["line"] = v.line
    return item


def in_sender_terms(refused: FilingRefused, *, json_body: bytes | None) -> FilingRefused:
    """The refusal as the sender wrote the filing. `json_body`: the JSON the sender sent (None for
    XML). The parser already locates its own violations by JSON Pointer (schemas.filing); what is
    refused after parsing (attachments, a recipient's message) still names XML paths, and
    becomes a pointer here too (`/subject/activityStartDate`, not `f:subject/f:activityStartDate`)."""
    if json_body is None:
        return refused
    if isinstance(refused, RecipientMessagesInvalid):
        return RecipientMessagesInvalid([
            replace(p, filing_field=field_pointer(p.filing_field)) if p.filing_field else p
            for p in refused.problems
        ])
    if not any(v.location.startswith("/f:filing") for v in refused.violations):
        return refused
    sent = orjson.loads(json_body)  # it parsed once already, or the parser would have refused it
    return refused.relocated(lambda location: json_pointer(location, sent))


def refusal_errors(refused: FilingRefused, *, lines: bool) -> list[dict[str, Any]]:
    """A refused filing's problem errors: each recipient's message that would fail its agency
    schema, or each violation (with its line when `lines`: the intake route shows them)."""
    if isinstance(refused, RecipientMessagesInvalid):
        return [recipient_problem_json(p) for p in refused.problems]
    return [_violation_json(v, line=lines) for v in refused.violations]


def _unavailable(request: Request) -> Response:
    return store_unavailable(request, "the filing store is not reachable; nothing was recorded, retry later")


def _too_large(request: Request) -> Response:
    return problem_response(413, "document-too-large", "Content Too Large",
                            f"the body exceeds {context_of(request).max_body_bytes} bytes", instance=request.url.path)


async def _caller_for(request: Request, body: bytes) -> Caller | Response:
    caller = await authenticate(context_of(request).guard, request, body)
    if isinstance(caller, Response):
        return caller
    structlog.contextvars.bind_contextvars(portal=caller.portal)
    return caller


def _visible(ctx: ApiContext, caller: Caller, reference: str) -> bool:
    user = caller.user.tax_code if caller.user is not None else None
    return ctx.store.get_filing(reference, caller.portal, user) is not None


# -- resend / correct-and-resend ----------------------------------------------------------
async def resend(request: Request) -> Response:
    """`POST /v1/filings/{reference}/recipients/{agency}/resend`: the same message again, or
    (with a body) a corrected filing's message for that agency."""
    ctx = context_of(request)
    body = await read_bounded(request, ctx.max_body_bytes)
    if body is None:
        return _too_large(request)
    caller = await _caller_for(request, body)
    if isinstance(caller, Response):
        return caller
    reference, agency = request.path_params["reference"], request.path_params["agency"]
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body.strip() and media_type not in _XML_TYPES | _JSON_TYPES:
        return problem_response(415, "unsupported-media-type", "Unsupported Media Type",
                                "send the corrected filing as application/xml or application/json",
                                instance=request.url.path)
    try:
        return await run_in_threadpool(_resend, ctx, request, caller, reference, agency, media_type, body)
    except StoreError:
        log.warning("store_unavailable", exc_info=True)
        return _unavailable(request)


def _resend(ctx: ApiContext, request: Request, caller: Caller, reference: str, agency: str, media_type: str,
            body: bytes) -> Response:
    path = request.url.path
    if not _visible(ctx, caller, reference):
        return problem_response(404, "not-found", "Not Found", f"no filing {reference}", instance=path)
    correcting = bool(body.strip())
    try:
        if correcting:
            parsed = ctx.validator.parse_json(body) if media_type in _JSON_TYPES else ctx.validator.parse(body)
            if caller.user is not None:
                # A corrected filing's attachments are checked as a new filing's are.
                referenced = verify_references(ctx.attachments.store if ctx.attachments else None, parsed.root,
                                               caller.portal, caller.user.tax_code)
                authorize_filing(ctx.identity, ctx.routes, parsed.kind, parsed.root, caller.user, ctx.guard.now())
            view = correct_recipient(ctx.store, ctx.routes, parsed, reference, caller.portal, agency,
                                     actor=caller.actor, check=ctx.message_check)
            if caller.user is not None and referenced and ctx.attachments is not None:
                ctx.attachments.store.mark_referenced([r.id for r in referenced], reference)
        else:
            view = ctx.store.resend_recipient(reference, caller.portal, agency, actor=caller.actor)
    except RecipientNotFound as exc:
        return problem_response(404, "not-found", "Not Found", str(exc), instance=path)
    except NeedsCorrection as exc:
        return problem_response(409, "needs-correction", "Conflict", str(exc), instance=path,
                                extra={"agency": exc.agency, "state": exc.state})
    except NotResendable as exc:
        return problem_response(409, "recipient-not-resendable", "Conflict", str(exc), instance=path,
                                extra={"agency": exc.agency, "state": exc.state})
    except FilingRefused as exc:
        refused = in_sender_terms(exc, json_body=body if correcting and media_type in _JSON_TYPES else None)
        return problem_response(refused.status, refused.problem, refused.title, str(refused), instance=path,
                                errors=refusal_errors(refused, lines=False))
    except CorrectionRefused as exc:
        return problem_response(422, "correction-refused", "Unprocessable Content", str(exc), instance=path)
    except RecipientsNotAuthorized as exc:
        return problem_response(403, "recipients-not-authorized", "Forbidden", str(exc), instance=path)
    log.info("recipient_corrected" if correcting else "recipient_resent", filing_ref=reference, agency=agency,
             delivery_id=view.delivery_id, state=view.state)
    ctx.wake()
    return json_response({"reference": reference, "recipient": recipient_json(view),
                          "links": {"filing": f"/v1/filings/{reference}"}}, 202)


# -- the event feed -------------------------------------------------------------------------
async def events(request: Request) -> Response:
    """`GET /v1/filings/{reference}/events?after=N`: the filing's event feed."""
    ctx = context_of(request)
    caller = await _caller_for(request, await request.body())
    if isinstance(caller, Response):
        return caller
    reference = request.path_params["reference"]
    raw_after = request.query_params.get("after", "0")
    # Sequence numbers are the store's 32-bit integers: a larger one is a 400, not a store error.
    if not (raw_after.isascii() and raw_after.isdigit()) or int(raw_after) > _MAX_SEQUENCE:
        return problem_response(400, "invalid-request", "Bad Request",
                                f"`after` is a sequence number, 0 to {_MAX_SEQUENCE}", instance=request.url.path)
    after = int(raw_after)

    def read() -> list[FilingEvent] | None:
        if not _visible(ctx, caller, reference):
            return None
        return ctx.store.filing_events(reference, caller.portal, after)

    try:
        found = await run_in_threadpool(read)
    except StoreError:
        return _unavailable(request)
    if found is None:
        return problem_response(404, "not-found", "Not Found", f"no filing {reference}",
                                instance=request.url.path)
    return json_response({"reference": reference, "events": [e.to_json() for e in found]})


# -- agencies' callbacks (AgID NONBLOCK_PUSH) ------------------------------------------------
async def callback(request: Request) -> Response:
    """`POST /v1/callbacks/{agency}`: an agency's late outcome (AgID NONBLOCK_PUSH)."""
    ctx = context_of(request)
    body = await read_bounded(request, ctx.max_body_bytes)
    # Authentication, the audit line and the store are blocking: one hand-off runs them all.
    return await run_in_threadpool(_callback, ctx, request, request.path_params["agency"], body)


def _audit_callback(ctx: ApiContext, agency: str, correlation_id: str, outcome: str, status: int, *,
                   authenticated: bool) -> None:
    """One line of the audit trail per callback, accepted or refused: never the body."""
    try:
        # The line's subject holds 64 characters (PostgreSQL refuses more; the id may have 128):
        # the whole id stays in the detail.
        ctx.store.audit(f"agency:{agency}" if authenticated else "anonymous", "agency_callback",
                        correlation_id[:64], outcome,
                        {"agency": agency, "correlationId": correlation_id, "status": status})
    except StoreError:
        log.warning("audit_unavailable", exc_info=True)


def _refuse(ctx: ApiContext, request: Request, agency: str, correlation_id: str, outcome: str, status: int,
            slug: str, title: str, detail: str, *, authenticated: bool = True,
            headers: dict[str, str] | None = None) -> Response:
    """A refused callback: its audit line (`outcome`), then its problem."""
    _audit_callback(ctx, agency, correlation_id, outcome, status, authenticated=authenticated)
    return problem_response(status, slug, title, detail, instance=request.url.path, headers=headers)


def _callback(ctx: ApiContext, request: Request, agency: str, body: bytes | None) -> Response:
    agency = agency[:_MAX_AGENCY]  # the path is the caller's claim: bounded before it is stored
    correlation_id = request.headers.get(_CORRELATION, "").strip()
    if body is None:
        _audit_callback(ctx, agency, correlation_id[:_MAX_CORRELATION], "document-too-large", 413,
                       authenticated=False)
        return _too_large(request)
    content_type = request.headers.get("content-type", "")
    if not correlation_id:
        # AgID NONBLOCK_PUSH_SOAP carries it in a SOAP header, as the callback WSDL says:
        # the agency's adapter knows where (adapters.nonblocking).
        find = getattr(ctx.outcome_readers.get(agency), "correlation_id", None)
        correlation_id = ((find(content_type, body) or "") if callable(find) else "").strip()
    shown = correlation_id[:_MAX_CORRELATION]
    try:
        if ctx.callbacks is None:
            raise CallbackRefused("no-callback-credential", "this hub registers no agency callback "
                                                            "credentials: callbacks are not accepted")
        ctx.callbacks.authenticate(agency, request.headers, body)
    except CallbackRefused as refused:
        log.info("callback_refused", agency=agency, correlation_id=shown, reason=refused.slug)
        return _refuse(ctx, request, agency, shown, refused.slug, 401, refused.slug, "Unauthorized", refused.detail,
                      authenticated=False, headers={"WWW-Authenticate": 'Bearer realm="crocevia-callbacks"'})
    except StoreError:
        log.warning("store_unavailable", exc_info=True)
        return _unavailable(request)
    if not correlation_id or len(correlation_id) > _MAX_CORRELATION:
        return _refuse(ctx, request, agency, shown, "missing-correlation-id", 400, "missing-correlation-id",
                      "Bad Request", "an X-Correlation-ID header names the exchange")
    try:
        result = record_callback(ctx.store, ctx.outcome_readers, agency, correlation_id, content_type, body)
    except CallbackUnreadable as exc:
        log.warning("callback_unreadable", agency=agency, correlation_id=correlation_id, error=str(exc))
        return _refuse(ctx, request, agency, correlation_id, "callback-unreadable", 400, "callback-unreadable",
                      "Bad Request", str(exc))
    except StoreError:
        return _unavailable(request)
    log.info("callback_received", agency=agency, correlation_id=correlation_id, result=result)
    if result == "unknown":
        return _refuse(ctx, request, agency, correlation_id, "unknown-correlation-id", 404, "unknown-correlation-id",
                      "Not Found", f"no delivery to {agency} has correlation id {correlation_id}")
    if result == "not_yet":
        return _refuse(ctx, request, agency, correlation_id, "not-yet-acknowledged", 503,
                      "delivery-not-acknowledged-yet", "Service Unavailable",
                      "the hub has not yet recorded the agency's acknowledgment of this message; "
                      "nothing was changed: send the callback again later", headers={"Retry-After": "2"})
    if result == "conflict":
        return _refuse(ctx, request, agency, correlation_id, "conflict", 409, "outcome-conflict", "Conflict",
                      "the delivery waits for no outcome from the agency; nothing was changed")
    if result == "contradiction":
        return _refuse(ctx, request, agency, correlation_id, "contradiction", 409, "outcome-contradicts-record",
                      "Conflict", "the delivery already has another protocol number or a final decision; "
                                  "nothing was changed and the contradiction is kept for operations")
    _audit_callback(ctx, agency, correlation_id, result, 200, authenticated=True)
    if result == "recorded":
        ctx.wake()
    return json_response({"status": result}, 200, {"X-Correlation-ID": correlation_id})


# -- agencies' circuits ------------------------------------------------------------------------
async def agencies(request: Request) -> Response:
    """`GET /v1/agencies`: each agency's circuit as the workers last reported it."""
    ctx = context_of(request)
    caller = await _caller_for(request, await request.body())
    if isinstance(caller, Response):
        return caller
    try:
        rows = {s.agency: s for s in await run_in_threadpool(ctx.store.agency_statuses)}
    except StoreError:
        return _unavailable(request)
    listing = []
    for name in sorted(ctx.routes.agencies | rows.keys()):
        status = rows.get(name)
        listing.append({
            "agency": name,
            "circuit": status.circuit if status else "closed",
            "failures": status.failures if status else 0,
            "openUntil": _instant(status.open_until) if status else None,
            "throttledUntil": _instant(status.throttled_until) if status else None,
            "reportedBy": status.reported_by if status else None,
            "updatedAt": rfc3339(status.updated_at) if status else None,
            # The worker that reported it stopped reporting: its breaker says nothing now.
            "stale": bool(status and ctx.agency_health and ctx.agency_health.is_stale(status)),
        })
    return json_response({"agencies": listing})



def delivery_routes() -> list[Route]:
    """Resend and correct one recipient, the event feed, agencies' callbacks and circuits."""
    return [
        Route("/v1/filings/{reference}/recipients/{agency}/resend", resend, methods=["POST"]),
        Route("/v1/filings/{reference}/events", events, methods=["GET"]),
        Route("/v1/callbacks/{agency}", callback, methods=["POST"]),
        Route("/v1/agencies", agencies, methods=["GET"]),
    ]
