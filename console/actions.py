"""The console's actions: resend, retry now, cancel (with a reason), pause and resume an agency.

Each is two steps, as in the operator API: a GET shows what would happen and a form; the
POST (with the session's CSRF token, checked by the guard) does it through the same store
use cases as `/v1/ops`, audited as `operator:NAME`. Both steps need the `operator` role.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from api.deliveries import recipient_json
from console.web import BASE, Console
from service.operations import MAX_REASON, AgencyThrottledNow, can_cancel, can_retry, operator_actor, resend_preview
from service.ports import NeedsCorrection, NotResendable, RecipientNotFound

if TYPE_CHECKING:
    from api.app import ApiContext

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


def action_routes(ctx: ApiContext, console: Console) -> list[Route]:
    """The confirmation pages and the forms they post (operator role)."""
    store = ctx.store

    def woken() -> None:
        if ctx.on_accepted is not None:
            ctx.on_accepted()

    def recipient_preview(reference: str, agency: str, action: str) -> dict[str, Any]:
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

    def do_recipient(reference: str, agency: str, action: str, actor: str, form: dict[str, str]) -> None:
        if action == "resend":
            store.resend_recipient(reference, None, agency, actor=actor,
                                   detail={"reason": _reason(form, required=False), "via": "console"})
            woken()
        elif action == "retry":
            force = form.get("force") == "on"
            store.retry_recipient_now(reference, agency, actor=actor, force=force,
                                      reason=_reason(form, required=force))
            woken()
        else:
            store.cancel_recipient(reference, agency, actor=actor, reason=_reason(form, required=True) or "")

    async def recipient_action(request: Request) -> Response:
        operator = await console.operator(request, "operator")
        if isinstance(operator, Response):
            return operator
        reference, agency = request.path_params["reference"][:32], request.path_params["agency"][:32]
        action = request.path_params["action"]
        if action not in _RECIPIENT_ACTIONS:
            return console.refused(request, 404, "not-found", action[:20])
        back = f"{BASE}/filings/{reference}"
        form: dict[str, str] = {}
        if request.method == "POST":
            got = await console.form(request)
            if isinstance(got, Response):
                return got
            form = got

        def work() -> Response:
            if request.method == "POST":
                try:
                    do_recipient(reference, agency, action, operator_actor(operator.name), form)
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
                preview = recipient_preview(reference, agency, action)
            except RecipientNotFound:
                return console.refused(request, 404, "not-found", f"{reference} {agency}")
            return console.render(request, "confirm.html", status, action=action, reference=reference,
                                  agency=agency, preview=preview, error=error, back=back, form=form,
                                  target=request.url.path, **extra)

        return await console.read(request, work)

    async def agency_action(request: Request) -> Response:
        operator = await console.operator(request, "operator")
        if isinstance(operator, Response):
            return operator
        agency, action = request.path_params["agency"][:32], request.path_params["action"]
        if action not in _AGENCY_ACTIONS or agency not in ctx.routes.agencies:
            return console.refused(request, 404, "not-found", f"{agency} {action[:20]}")
        form: dict[str, str] = {}
        if request.method == "POST":
            got = await console.form(request)
            if isinstance(got, Response):
                return got
            form = got

        def work() -> Response:
            paused = agency in store.paused_agencies()
            if request.method == "POST":
                try:
                    reason = _reason(form, required=False)
                except _Invalid as exc:
                    return page(paused, str(exc), 422)
                actor = operator_actor(operator.name)
                if action == "pause":
                    store.pause_agency(agency, actor=actor, reason=reason)
                else:
                    store.resume_agency(agency, actor=actor, reason=reason)
                    woken()
                log.info("console_action_done", action=action, agency=agency)
                return RedirectResponse(f"{BASE}/?done={action}-{agency}", status_code=303)
            return page(paused, None, 200)

        def page(paused: bool, error: str | None, status: int) -> Response:
            allowed = (not paused) if action == "pause" else paused
            return console.render(request, "confirm.html", status, action=action, agency=agency, reference=None,
                                  preview={"allowed": allowed, "paused": paused}, error=error, back=f"{BASE}/",
                                  form=form, target=request.url.path)

        return await console.read(request, work)

    return [
        Route("/filings/{reference}/recipients/{agency}/{action}", recipient_action, methods=["GET", "POST"]),
        Route("/agencies/{agency}/{action}", agency_action, methods=["GET", "POST"]),
    ]
