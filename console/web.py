"""What every console page shares: the template engine, the language, the operator guard's
answer turned into a page (login, 403, 503), and reading a small form."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import orjson
import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.templating import Jinja2Templates

from api.context import OperatorGuard, ops_guard_of
from api.ops.auth import read_fields
from console.i18n import LANG_COOKIE, LANGUAGES, choose_language, format_instant, translations
from domain.operators import Operator, role_allows
from service.ports import StoreError

__all__ = ["BASE", "Console", "StoreError", "console_of"]

log = structlog.get_logger("crocevia.console")

#: Where the console is mounted (links in the pages are absolute under it).
BASE = "/console"


@functools.cache
def _templates() -> Jinja2Templates:
    """One template environment per process (it caches the compiled templates)."""
    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True)
    return Jinja2Templates(env=env)


class Console:
    """Renders pages and asks the operator guard; one per app.

    Args:
        guard: the operator API's guard (sessions with their CSRF token, roles).
    """

    def __init__(self, guard: OperatorGuard) -> None:
        self.guard = guard
        self.templates = _templates()

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> Response:
        """A page in the request's language; a `?lang=` choice is remembered in a cookie."""
        language, chosen = choose_language(request)
        catalogue = translations(language)
        operator: Operator | None = getattr(request.state, "operator", None)
        response = self.templates.TemplateResponse(request, name, {
            "_": catalogue.gettext, "lang": language, "languages": LANGUAGES, "base": BASE,
            "operator": operator, "can_act": operator is not None and role_allows(operator.role, "operator"),
            "csrf_token": getattr(request.state, "csrf_token", None),
            "when": lambda text: format_instant(text, language),
            "lang_links": {code: f"{request.url.path}?{urlencode({**request.query_params, 'lang': code})}"
                           for code in LANGUAGES},
            **context,
        }, status_code=status, headers={"Cache-Control": "no-store", "Content-Language": language})
        if chosen:
            response.set_cookie(LANG_COOKIE, language, max_age=31_536_000, path=BASE, samesite="lax")
        return response

    def refused(self, request: Request, status: int, slug: str, detail: str) -> Response:
        """The error page (403, 404, 409, 503, ...) with the problem's slug and a sentence."""
        return self.render(request, "refused.html", status, slug=slug, detail=detail)

    async def operator(self, request: Request, role: str) -> Operator | Response:
        """The operator with at least `role`, or the page to answer instead: the login page when
        the session is missing or ended, a 403 page for a role too low or a missing CSRF token."""
        got = await self.guard.require(request, role)
        if not isinstance(got, Response):
            structlog.contextvars.bind_contextvars(operator=got.name)
            return got
        try:
            problem = orjson.loads(bytes(got.body))
        except orjson.JSONDecodeError:
            problem = {}
        slug = str(problem.get("type", "")).rsplit(":", 1)[-1]
        if got.status_code == 401:
            ended = "1" if slug.startswith("session") else "0"
            target = f"{BASE}/login?ended={ended}&next={quote(request.url.path)}"
            redirect = RedirectResponse(target, status_code=303)
            for key, value in got.raw_headers:  # the guard's clearing of a dead cookie
                if key == b"set-cookie":
                    redirect.raw_headers.append((key, value))
            return redirect
        return self.refused(request, got.status_code, slug, str(problem.get("detail", "")))

    async def form(self, request: Request) -> dict[str, str] | Response:
        """A submitted form's fields (bounded, urlencoded only), or the 4xx page."""
        fields = await read_fields(request)
        if isinstance(fields, Response):
            return self.refused(request, fields.status_code, "invalid-form", "")
        return {k: v for k, v in fields.items() if isinstance(v, str)}

    async def posted_form(self, request: Request) -> dict[str, str] | Response:
        """`form` for a POST; a GET (the confirmation page) has no fields."""
        return await self.form(request) if request.method == "POST" else {}

    async def read(self, request: Request, work: Callable[[], Response]) -> Response:
        """Run blocking store work in the thread pool; a store away answers a 503 page."""
        try:
            return await run_in_threadpool(work)
        except StoreError:
            log.warning("store_unavailable", exc_info=True)
            return self.refused(request, 503, "store-unavailable", "")



def console_of(request: Request) -> Console:
    """The console over the app's operator guard (cheap: the templates are shared)."""
    return Console(ops_guard_of(request))
