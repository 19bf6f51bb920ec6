"""Operator authentication for `/v1/ops/...`: the guard every operator route asks, and login.

Operators prove who they are with a personal access token (`Authorization: Bearer crv_pat_...`,
for the API, the CLI and scripts) or a console session cookie (HttpOnly, SameSite=Strict,
Secure when configured). A session ends after `session_idle_seconds` unused or
`session_absolute_seconds` after login. A request with a session cookie and an unsafe method
must carry the session's CSRF token (`X-CSRF-Token` header or `csrf_token` form field): the
cookie alone proves only that a browser sent it. Portal credentials (ModI) get nothing here.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson
import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.context import OperatorGuard, ops_guard_of
from api.problems import json_response, problem_response, store_unavailable
from domain.operators import TOKEN_PREFIX, Operator, role_allows
from domain.timestamps import rfc3339
from service.identity import AuditEntry
from service.operators import LoginRefused, OperatorAccounts, SessionRecord
from service.ports import StoreError

__all__ = ["CookiePolicy", "Operator", "OperatorGuard", "TokenOrSessionGuard", "read_fields", "session_routes"]

log = structlog.get_logger("crocevia.api.ops")

#: Methods that change something: with a session cookie they need the CSRF token.
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The largest login or form body read here (a form of a few fields).
_FORM_LIMIT = 65_536
_FORM_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True, slots=True)
class CookiePolicy:
    name: str = "crocevia_session"
    secure: bool = True
    max_age: int = 28_800


class _Refused(Exception):
    def __init__(self, status: int, slug: str, title: str, detail: str, headers: dict[str, str] | None = None,
                 clear_cookie: bool = False) -> None:
        super().__init__(detail)
        self.status, self.slug, self.title, self.detail = status, slug, title, detail
        self.headers = headers or {}
        self.clear_cookie = clear_cookie


def _unauthorized(slug: str, detail: str, *, clear_cookie: bool = False) -> _Refused:
    return _Refused(401, slug, "Unauthorized", detail, {"WWW-Authenticate": 'Bearer realm="crocevia-ops"'},
                    clear_cookie)


class TokenOrSessionGuard:
    """The operator guard: a personal access token or a console session, then the role.

    Args:
        accounts: checks tokens and sessions (blocking: called in the thread pool).
        cookie: the session cookie's name and attributes.
    """

    def __init__(self, accounts: OperatorAccounts, cookie: CookiePolicy) -> None:
        self.accounts = accounts
        self.cookie = cookie

    async def require(self, request: Request, role: str) -> Operator | Response:
        form_token = None
        if (request.method in _UNSAFE and self.cookie.name in request.cookies
                and "authorization" not in request.headers and "x-csrf-token" not in request.headers):
            fields = await read_fields(request)
            form_token = fields.get("csrf_token") if isinstance(fields, dict) else None
        try:
            return await run_in_threadpool(self._require, request, role, form_token)
        except _Refused as refused:
            response = problem_response(refused.status, refused.slug, refused.title, refused.detail,
                                        instance=request.url.path, headers=refused.headers)
            if refused.clear_cookie:
                self.clear_cookie(response)
            return response
        except StoreError:
            log.warning("store_unavailable", exc_info=True)
            return store_unavailable(request, "the store is not reachable; retry later")

    def _require(self, request: Request, role: str, form_token: str | None) -> Operator:
        authorization = request.headers.get("authorization")
        if authorization is not None:
            operator = self._by_token(request, authorization)
        elif self.cookie.name in request.cookies:
            operator = self._by_session(request, form_token)
        else:
            raise _unauthorized("operator-authentication-required",
                                "log in to the console or send an operator token (Authorization: Bearer crv_pat_...)")
        request.state.operator = operator
        if not role_allows(operator.role, role):
            self.accounts.audit(AuditEntry(operator.actor, "operator_request_refused", request.url.path,
                                           "insufficient-role", {"method": request.method, "required": role,
                                                                 "role": operator.role}))
            raise _Refused(403, "insufficient-role", "Forbidden",
                           f"this needs the {role} role; {operator.name} is {operator.role}")
        return operator

    def _by_token(self, request: Request, authorization: str) -> Operator:
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX):
            # A portal's ModI token or another scheme: operators' routes know only operators.
            self.accounts.audit(AuditEntry("anonymous", "operator_authentication_failed", request.url.path,
                                           "not-an-operator-credential", {"scheme": scheme.lower()[:20]}))
            raise _unauthorized("operator-authentication-required",
                                "only operator tokens (crv_pat_...) and console sessions are accepted here")
        found = self.accounts.by_token(token)
        if isinstance(found, str):
            self.accounts.audit(AuditEntry("anonymous", "operator_authentication_failed", request.url.path,
                                           found, {"method": request.method}))
            log.info("operator_token_refused", reason=found)
            raise _unauthorized("invalid-operator-token", "the operator token is unknown, revoked or expired")
        request.state.operator_session = None
        return found

    def _by_session(self, request: Request, form_token: str | None) -> Operator:
        found = self.accounts.by_session(request.cookies[self.cookie.name])
        if isinstance(found, str):
            log.info("operator_session_refused", reason=found)
            raise _unauthorized(found if found != "session-unknown" else "session-invalid",
                                "the console session has ended: log in again", clear_cookie=True)
        operator = found.account.as_operator()
        if request.method in _UNSAFE:
            given = request.headers.get("x-csrf-token") or form_token or ""
            if not hmac.compare_digest(given.encode(), found.csrf_token.encode()):
                self.accounts.audit(AuditEntry(operator.actor, "operator_request_refused", request.url.path,
                                               "csrf-token-invalid", {"method": request.method}))
                raise _Refused(403, "csrf-token-invalid", "Forbidden",
                               "send the session's CSRF token (X-CSRF-Token header or csrf_token field)")
        self.accounts.touch_session(found)
        request.state.operator_session = found
        request.state.csrf_token = found.csrf_token
        return operator

    def set_cookie(self, response: Response, value: str) -> None:
        response.set_cookie(self.cookie.name, value, max_age=self.cookie.max_age, path="/",
                            secure=self.cookie.secure, httponly=True, samesite="strict")

    def clear_cookie(self, response: Response) -> None:
        response.delete_cookie(self.cookie.name, path="/", secure=self.cookie.secure, httponly=True,
                               samesite="strict")


async def read_fields(request: Request, limit: int = _FORM_LIMIT) -> dict[str, Any] | Response:
    """A small JSON object or urlencoded form body, bounded; the body stays readable after.

    Returns:
        The fields, or a problem response (400, 413, 415) to return as is.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return problem_response(413, "document-too-large", "Content Too Large",
                                f"the body exceeds {limit} bytes", instance=request.url.path)
    chunks: list[bytes] = []
    size = 0
    if hasattr(request, "_body"):
        chunks.append(await request.body())
    else:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return problem_response(413, "document-too-large", "Content Too Large",
                                        f"the body exceeds {limit} bytes", instance=request.url.path)
            chunks.append(chunk)
        # Kept where Starlette looks, so the handler can read the body again after the guard.
        request._body = b"".join(chunks)  # noqa: SLF001
    body = b"".join(chunks)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == _FORM_TYPE:
        try:
            return dict(parse_qsl(body.decode(), keep_blank_values=True, max_num_fields=50))
        except (UnicodeDecodeError, ValueError):
            return problem_response(400, "invalid-form", "Bad Request", "the form is not valid UTF-8 urlencoded",
                                    instance=request.url.path)
    if media_type == "application/json" or (not media_type and not body):
        try:
            parsed = orjson.loads(body) if body else {}
        except orjson.JSONDecodeError:
            return problem_response(400, "invalid-json", "Bad Request", "the body is not valid JSON",
                                    instance=request.url.path)
        if not isinstance(parsed, dict):
            return problem_response(400, "invalid-json", "Bad Request", "send a JSON object",
                                    instance=request.url.path)
        return parsed
    return problem_response(415, "unsupported-media-type", "Unsupported Media Type",
                            f"send application/json or {_FORM_TYPE}", instance=request.url.path)


def _session_guard(request: Request) -> TokenOrSessionGuard:
    """The guard that owns console sessions (the session routes are mounted only with it)."""
    guard = ops_guard_of(request)
    assert isinstance(guard, TokenOrSessionGuard)
    return guard


async def login(request: Request) -> Response:
    """`POST /session`: name, password (and TOTP) for a session cookie and its CSRF token."""
    guard = _session_guard(request)
    accounts = guard.accounts
    fields = await read_fields(request)
    if isinstance(fields, Response):
        return fields
    name, password, totp = fields.get("name"), fields.get("password"), fields.get("totp") or None
    if not isinstance(name, str) or not isinstance(password, str) or not name or not password \
            or not (totp is None or isinstance(totp, str)) or len(password) > 1024:
        return problem_response(400, "invalid-login-request", "Bad Request",
                                "send name and password (and totp when enrolled) as JSON or a form",
                                instance=request.url.path)
    client = request.client.host if request.client else "unknown"
    try:
        session = await run_in_threadpool(accounts.login, name.strip().lower(), password, totp, client)
    except LoginRefused as refused:
        log.info("operator_login_failed", reason=refused.reason)
        if refused.retry_after is not None:
            return problem_response(
                429, "locked-out", "Too Many Requests",
                "too many failed logins for this account: it is locked for a while",
                instance=request.url.path, headers={"Retry-After": str(max(1, int(refused.retry_after + 0.999)))})
        return problem_response(401, "invalid-credentials", "Unauthorized",
                                "name, password or one-time code not accepted", instance=request.url.path)
    except StoreError:
        log.warning("store_unavailable", exc_info=True)
        return store_unavailable(request, "the store is not reachable; retry later")
    log.info("operator_logged_in", operator=session.operator.name)
    response = json_response({
        "operator": {"name": session.operator.name, "role": session.operator.role},
        "csrfToken": session.csrf_token,
        "expiresAt": rfc3339(session.expires_at),
        "idleTimeoutSeconds": accounts.policy.session_idle_seconds,
    }, 201)
    guard.set_cookie(response, session.cookie)
    return response


async def logout(request: Request) -> Response:
    """`DELETE /session`: end the console session of this request."""
    guard = _session_guard(request)
    operator = await guard.require(request, "viewer")
    if isinstance(operator, Response):
        return operator
    record: SessionRecord | None = getattr(request.state, "operator_session", None)
    if record is None:
        return problem_response(400, "not-a-session", "Bad Request",
                                "this request used a token, not a console session: revoke a token with "
                                "`hub.py operators revoke-token ID`", instance=request.url.path)
    await run_in_threadpool(guard.accounts.logout, record)
    response = Response(status_code=204)
    guard.clear_cookie(response)
    return response


async def whoami(request: Request) -> Response:
    """`GET /whoami`: the operator, and how it authenticated."""
    operator = await ops_guard_of(request).require(request, "viewer")
    if isinstance(operator, Response):
        return operator
    record: SessionRecord | None = getattr(request.state, "operator_session", None)
    body: dict[str, Any] = {"name": operator.name, "role": operator.role,
                            "via": "session" if record is not None else "token"}
    if record is not None:
        body["csrfToken"] = record.csrf_token
        body["sessionStartedAt"] = rfc3339(record.created_at)
    return json_response(body)


def session_routes(guard: OperatorGuard) -> list[Route]:
    """`POST /session` (login), `DELETE /session` (logout), `GET /whoami`, under `/v1/ops`.

    With another guard than `TokenOrSessionGuard` (a test's), only `GET /whoami` is served:
    console sessions are that guard's.
    """
    routes = [Route("/whoami", whoami, methods=["GET"])]
    if isinstance(guard, TokenOrSessionGuard):
        routes += [Route("/session", login, methods=["POST"]), Route("/session", logout, methods=["DELETE"])]
    return routes
