"""The console's actions: resend, retry now, cancel (with a reason), pause and resume an agency.

Each is two steps, as in the operator API: a GET shows what would happen and a form; the
POST (with the session's CSRF token, checked by the guard) does it through the same store
use cases as `/v1/ops`, audited as `operator:NAME`. Both steps need the `operator` role.
"""

from __future__ import annotations

from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from api.context import ApiContext, context_of
from api.deliveries import recipient_json
from console.web import BASE, console_of
from service.operations import MAX_REASON, AgencyThrottledNow, can_cancel, can_retry, operator_actor, resend_preview
from service.ports import NeedsCorrection, NotResendable, RecipientNotFound
from service.store_ports import RecipientOperations

__all__ = ["action_routes"]

log = structlog.get_logger("crocevia.console")

_RECIPIENT_ACTIONS = ("resend", "retry", "cancel")
_AGENCY_ACTIONS = ("pause", "resume")


class _Invalid(Exception):
    """A form field that is missing or wrong: the confirmation page again, with the reason."""


def _reason(form: dict[str, str], *, required: bool) -> str | None:
    value = form.get("reason", "").strip()
    if not value:
        if required:
            raise _Invalid("reason-required")
        return None
    if len(value) > MAX_REASON:
        raise _Invalid("reason-too-long")
    return value


def _recipient_preview(store: RecipientOperations, reference: str, agency: str, action: str) -> dict[str, Any]:
    view = store.ops_recipient(reference, agency)
    if view is None:
        raise RecipientNotFound(f"{reference} {agency}")
    preview: dict[str, Any] = {"state": view.state, "recipient": recipient_json(view)}
    if action == "resend":
        preview["allowed"] = resend_preview(view)["wouldResend"]
    elif action == "retry":
        preview["throttledUntil"] = store.throttled_until(agency)
        preview["allowed"] = can_retry(view.state)
    else:
        preview["allowed"] = can_cancel(view.state)
    return preview


def _do_recipient(ctx: ApiContext, reference: str, agency: str, action: str, actor: str, form: dict[str, str]) -> None:
    if action == "resend":
        ctx.store.resend_recipient(reference, None, agency, actor=actor,
                               detail={"reason": _reason(form, required=False), "via": "console"})
        ctx.wake()
    elif action == "retry":
        force = form.get("force") == "on"
        ctx.store.retry_recipient_now(reference, agency, actor=actor, force=force,
                                  reason=_reason(form, required=force))
        ctx.wake()
    else:
        ctx.store.cancel_recipient(reference, agency, actor=actor, reason=_reason(form, required=True) or "")


async def recipient_action(request: Request) -> Response:
    ctx, console = context_of(request), console_of(request)
    operator = await console.operator(request, "operator")
    if isinstance(operator, Response):
        return operator
    reference, agency = request.path_params["reference"][:32], request.path_params["agency"][:32]
    action = request.path_params["action"]
    if action not in _RECIPIENT_ACTIONS:
        return console.refused(request, 404, "not-found", action[:20])
    back = f"{BASE}/filings/{reference}"
    form = await console.posted_form(request)
    if isinstance(form, Response):
        return form

    def work() -> Response:
        if request.method == "POST":
            try:
                _do_recipient(ctx, reference, agency, action, operator_actor(operator.name), form)
            except _Invalid as exc:
                return page(str(exc), 422)
            except RecipientNotFound:
                return console.refused(request, 404, "not-found", f"{reference} {agency}")
            except (NotResendable, NeedsCorrection) as exc:
                return page("wrong-state", 409, state=exc.state)
            except AgencyThrottledNow:
                return page("agency-throttled", 409)
            log.info("console_action_done", action=action, filing_ref=reference, agency=agency)
            return RedirectResponse(f"{back}?done={action}-{agency}", status_code=303)
        return page(None, 200)

    def page(error: str | None, status: int, **extra: Any) -> Response:
        try:
            preview = _recipient_preview(ctx.store, reference, agency, action)
        except RecipientNotFound:
            return console.refused(request, 404, "not-found", f"{reference} {agency}")
        return console.render(request, "confirm.html", status, action=action, reference=reference,
                              agency=agency, preview=preview, error=error, back=back, form=form,
                              target=request.url.path, **extra)

    return await console.read(request, work)


async def agency_action(request: Request) -> Response:
    ctx, console = context_of(request), console_of(request)
    operator = await console.operator(request, "operator")
    if isinstance(operator, Response):
        return operator
    agency, action = request.path_params["agency"][:32], request.path_params["action"]
    if action not in _AGENCY_ACTIONS or agency not in ctx.routes.agencies:
        return console.refused(request, 404, "not-found", f"{agency} {action[:20]}")
    form = await console.posted_form(request)
    if isinstance(form, Response):
        return form

    def work() -> Response:
        paused = agency in ctx.store.paused_agencies()
        if request.method == "POST":
            try:
                reason = _reason(form, required=False)
            except _Invalid as exc:
                return page(paused, str(exc), 422)
            actor = operator_actor(operator.name)
            if action == "pause":
                ctx.store.pause_agency(agency, actor=actor, reason=reason)
            else:
                ctx.store.resume_agency(agency, actor=actor, reason=reason)
                ctx.wake()
            log.info("console_action_done", action=action, agency=agency)
            return RedirectResponse(f"{BASE}/?done={action}-{agency}", status_code=303)
        return page(paused, None, 200)

    def page(paused: bool, error: str | None, status: int) -> Response:
        allowed = (not paused) if action == "pause" else paused
        return console.render(request, "confirm.html", status, action=action, agency=agency, reference=None,
                              preview={"allowed": allowed, "paused": paused}, error=error, back=f"{BASE}/",
                              form=form, target=request.url.path)

    return await console.read(request, work)


def action_routes() -> list[Route]:
    """The confirmation pages and the forms they post (operator role)."""
    return [
        Route("/filings/{reference}/recipients/{agency}/{action}", recipient_action, methods=["GET", "POST"]),
        Route("/agencies/{agency}/{action}", agency_action, methods=["GET", "POST"]),
    ]
