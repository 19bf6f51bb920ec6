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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
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
from domain.timestamps import epoch_rfc3339
from service.identity import Admission, AuditEntry, IdentityStore
from service.ports import StoreError, TokenClaim, TokenNotAdmitted

__all__ = ["AuthRefused", "Caller", "RequestGuard", "admit_deferred", "authenticate", "authenticate_sync",
           "refuse_token"]

log = structlog.get_logger("crocevia.api")


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated request: the portal that signed it and the user it vouches for."""

    portal: str
    user: User | None
    jti: str
    #: Set when admission was deferred (`defer_admission`): the token still to admit, in the
    #: transaction that acts on the request or through `RequestGuard.admit`.
    claim: TokenClaim | None = None

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

    def __init__(self, status: int, slug: str, title: str, detail: str, headers: Mapping[str, str],
                 fields: Mapping[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.headers = dict(headers)
        #: Machine-readable members of the problem (`token`, `claim`): which part to fix.
        self.fields = dict(fields or {})


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
                     require_user: bool = True, defer_admission: bool = False,
                     streamed: bool = False) -> Caller:
        """Verify one request and admit it.

        With `defer_admission` the token is only verified: the caller carries its `claim`, and
        must admit it before acting, in the same transaction (the intake's accept) or with
        `admit`. The check is the same either way; deferring saves a transaction.

        Raises:
            AuthRefused: 401 with the failed check, or 429 with Retry-After when locked out.
        """
        now = self._clock()
        try:
            verified = self._verifier.verify(headers, body, now, require_user=require_user, streamed=streamed)
        except ModiRefused as refused:
            self._fail(refused, client, path, now)
        tax_code = verified.user.tax_code if verified.user else None
        claim = TokenClaim(caller=user_key(verified.portal, tax_code), issuer=verified.portal,
                           jti=verified.jti, keep_until=verified.expires_at + self._leeway, now=now)
        caller = Caller(portal=verified.portal, user=verified.user, jti=verified.jti, claim=claim)
        if defer_admission:
            return caller
        self.admit(caller, client=client, path=path)
        return Caller(portal=verified.portal, user=verified.user, jti=verified.jti)

    def admit(self, caller: Caller, *, client: str, path: str) -> None:
        """Admit a caller's deferred token on its own transaction (no-op when already admitted).

        Raises:
            AuthRefused: 401 for a replayed token, 429 while the caller is locked out.
        """
        if caller.claim is None:
            return
        claim = caller.claim
        admission = self._identity.admit(claim.caller, claim.issuer, claim.jti, claim.keep_until, claim.now)
        if admission.outcome != "ok":
            self.refuse(caller, admission, client=client, path=path)

    def refuse(self, caller: Caller, admission: Admission, *, client: str, path: str) -> NoReturn:
        """Answer a token that was not admitted (`locked` or `replayed`): audited, counted.

        Raises:
            AuthRefused: always.
        """
        assert caller.claim is not None
        now = caller.claim.now
        tax_code = caller.user.tax_code if caller.user else None
        if admission.outcome == "locked":
            self._identity.audit(AuditEntry(
                actor=tax_code or f"portal:{caller.portal}", action="request_refused",
                subject="", outcome="locked_out",
                detail={"portal": caller.portal, "caller": caller.claim.caller, "path": path},
            ))
            log.info("caller_locked_out", portal=caller.portal, caller_kind="user")
            raise self._locked(admission.locked_until or now, now)
        self._fail(ModiRefused("token-replayed", "this token's jti was already used: sign every "
                                                 "request anew", caller.portal,
                               verified=True, user=tax_code), client, path, now)

    def _locked(self, until: float, now: float) -> AuthRefused:
        when = epoch_rfc3339(round(until))
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
                          {"WWW-Authenticate": 'Bearer realm="crocevia", error="invalid_token"'},
                          refused.fields())


def _client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@contextmanager
def _answered(request: Request) -> Iterator[list[Response]]:
    """Turn `AuthRefused` and `StoreError` into the problem response put in the yielded list."""
    answer: list[Response] = []
    try:
        yield answer
    except AuthRefused as refused:
        answer.append(problem_response(refused.status, refused.slug, refused.title, refused.detail,
                                       instance=request.url.path, headers=refused.headers,
                                       extra=refused.fields or None))
    except StoreError:
        log.warning("store_unavailable", exc_info=True)
        answer.append(store_unavailable(request, "the store is not reachable; nothing was recorded, retry later"))


def authenticate_sync(guard: RequestGuard, request: Request, body: bytes, *,
                      defer_admission: bool = False, streamed: bool = False) -> Caller | Response:
    """`authenticate` for code already running in the thread pool (blocking); with `streamed`
    the body is still unread and only its declared Digest is verified (`ModiVerifier.verify`)."""
    with _answered(request) as answer:
        return guard.authenticate(request.headers, body, client=_client_of(request), path=request.url.path,
                                  defer_admission=defer_admission, streamed=streamed)
    return answer[0]


def admit_deferred(guard: RequestGuard, request: Request, caller: Caller) -> Response | None:
    """Admit a deferred token on its own (blocking); the problem response when refused."""
    with _answered(request) as answer:
        guard.admit(caller, client=_client_of(request), path=request.url.path)
        return None
    return answer[0]


def refuse_token(guard: RequestGuard, request: Request, caller: Caller, refused: TokenNotAdmitted) -> Response:
    """The problem response for a token refused inside the accept transaction (blocking)."""
    with _answered(request) as answer:
        guard.refuse(caller, Admission(refused.outcome, refused.locked_until),
                     client=_client_of(request), path=request.url.path)
    return answer[0]


async def authenticate(guard: RequestGuard, request: Request, body: bytes) -> Caller | Response:
    """The caller of a ModI-signed request, or the problem response that refuses it."""
    return await run_in_threadpool(authenticate_sync, guard, request, body)
