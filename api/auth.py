"""Who is calling: a ModI-signed request in, the portal and the user it vouches for out.

The guard verifies the signatures (`api.modi`), refuses a token id seen before, counts
authentication failures per caller and locks a caller out after too many (domain.lockout),
and audits each failure. Whom a failure counts against depends on what was proved:

- a signature that does not verify proves nothing about the portal it names: the failure
  counts against the client address (`address:<ip>`), and while that address is locked its
  unverified requests are answered 429;
- a request the portal did sign but that is refused (expired, replayed, another audience,
  bad tracking evidence) counts against that portal and user (`portal:<id>/user:<tax code>`),
  and while that pair is locked its requests are answered 429 whatever their address.

So a request correctly signed is judged only by its own portal-and-user record: forgeries
naming a portal, from anywhere, cannot lock that portal or its users out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import NoReturn

import structlog
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from api.modi import ModiRefused, ModiVerifier
from api.problems import problem_response, store_unavailable
from domain.identity import User
from domain.lockout import LockoutPolicy, address_key, user_key
from service.identity import AuditEntry, IdentityStore
from service.ports import StoreError

__all__ = ["AuthRefused", "Caller", "RequestGuard", "authenticate", "authenticate_sync"]

log = structlog.get_logger("crocevia.api")


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request: the portal that signed it and the user it vouches for."""

    portal: str
    user: User | None
    jti: str

    @property
    def actor(self) -> str:
        """Whom the audit trail names: the person, or the portal when no user is named."""
        return self.user.tax_code if self.user is not None else f"portal:{self.portal}"

    def audit_context(self) -> dict[str, str]:
        """The authentication facts an auditor needs beside the actor."""
        context = {"portal": self.portal, "jti": self.jti}
        if self.user is not None:
            context.update(assurance=self.user.assurance, location=self.user.location, idp=self.user.idp)
        return context


class AuthRefused(Exception):
    """The request is refused before anything else happens: 401, or 429 when locked out."""

    def __init__(self, status: int, slug: str, title: str, detail: str, headers: Mapping[str, str]) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = dict(headers)


class RequestGuard:
    """Authenticates requests; blocking (database) calls: run it in the thread pool.

    Args:
        verifier: checks the ModI tokens against the registered portals.
        identity: token ids, failure counts, the audit trail.
        clock: epoch seconds (tests inject one to move time).
        policy: the lockout rule.
        leeway: how long after `exp` a token id must still be remembered (the verifier's skew).
    """

    def __init__(self, verifier: ModiVerifier, identity: IdentityStore, *,
                 clock: Callable[[], float], policy: LockoutPolicy, leeway: float = 30.0) -> None:
        self._verifier = verifier
        self._identity = identity
        self._clock = clock
        self._policy = policy
        self._leeway = leeway

    def now(self) -> datetime:
        """The guard's clock as a datetime (delegation validity is judged on it)."""
        return datetime.fromtimestamp(self._clock(), timezone.utc)

    def authenticate(self, headers: Mapping[str, str], body: bytes, *, client: str, path: str,
                     require_user: bool = True) -> Caller:
        """Verify one request and admit it.

        Raises:
            AuthRefused: 401 with the failed check, or 429 with Retry-After when locked out.
        """
        now = self._clock()
        try:
            verified = self._verifier.verify(headers, body, now, require_user=require_user)
        except ModiRefused as refused:
            self._fail(refused, client, path, now)
        tax_code = verified.user.tax_code if verified.user else None
        caller = user_key(verified.portal, tax_code)
        admission = self._identity.admit(caller, verified.portal, verified.jti,
                                         verified.expires_at + self._leeway, now)
        if admission.outcome == "locked":
            self._identity.audit(AuditEntry(
                actor=tax_code or f"portal:{verified.portal}", action="request_refused",
                subject="", outcome="locked_out",
                detail={"portal": verified.portal, "caller": caller, "path": path},
            ))
            log.info("caller_locked_out", portal=verified.portal, caller_kind="user")
            raise self._locked(admission.locked_until or now, now)
        if admission.outcome == "replayed":
            self._fail(ModiRefused("token-replayed", "this token's jti was already used: sign every "
                                                     "request anew", verified.portal,
                                   verified=True, user=tax_code), client, path, now)
        return Caller(portal=verified.portal, user=verified.user, jti=verified.jti)

    def _locked(self, until: float, now: float) -> AuthRefused:
        when = datetime.fromtimestamp(until, timezone.utc).isoformat(timespec="seconds")
        return AuthRefused(
            429, "locked-out", "Too Many Requests",
            f"too many consecutive authentication failures: locked out until {when}",
            {"Retry-After": str(max(1, math.ceil(until - now)))},
        )

    def _fail(self, refused: ModiRefused, client: str, path: str, now: float) -> NoReturn:
        if refused.verified and refused.portal:
            caller = user_key(refused.portal, refused.user)
            actor = refused.user or f"portal:{refused.portal}"
        else:
            # Unverified: the portal named is only a claim, kept for the auditor.
            caller, actor = address_key(client), "anonymous"
        detail = {"caller": caller, "path": path, "reason": refused.slug}
        if refused.portal and not refused.verified:
            detail["claimedPortal"] = refused.portal
        entry = AuditEntry(actor=actor, action="authentication_failed", subject="",
                           outcome=refused.slug, detail=detail)
        was_locked, until = self._identity.record_failure(caller, now, self._policy, entry)
        log.info("authentication_failed", reason=refused.slug, portal=refused.portal,
                 caller_kind="user" if refused.verified else "address", locked=until is not None)
        # The failure that reaches the threshold is still answered 401; from the next one on,
        # the caller is told it is locked out.
        if was_locked and until is not None:
            raise self._locked(until, now)
        raise AuthRefused(401, refused.slug, "Unauthorized", refused.detail,
                          {"WWW-Authenticate": 'Bearer realm="crocevia", error="invalid_token"'})


def authenticate_sync(guard: RequestGuard, request: Request, body: bytes) -> Caller | Response:
    """`authenticate` for code already running in the thread pool (blocking)."""
    try:
        return guard.authenticate(
            request.headers, body,
            client=request.client.host if request.client else "unknown", path=request.url.path,
        )
    except AuthRefused as refused:
        return problem_response(refused.status, refused.slug, refused.title, refused.detail,
                                instance=request.url.path, headers=refused.headers)
    except StoreError:
        log.warning("store_unavailable", exc_info=True)
        return store_unavailable(request, "the store is not reachable; nothing was recorded, retry later")


async def authenticate(guard: RequestGuard, request: Request, body: bytes) -> Caller | Response:
    """The caller of a ModI-signed request, or the problem response that refuses it."""
    return await run_in_threadpool(authenticate_sync, guard, request, body)
