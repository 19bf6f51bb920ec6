"""Verify a portal's ModI-signed request: who sent it, that the body is intact, who the user is.

Checks, in order (AgID ModI patterns):
1. ID_AUTH_REST_02: `Authorization: Bearer` JWS by a registered portal's key, with the
   portal's algorithm (RS256 or ES256, never `none` or HMAC), `aud` = the hub, `iat`, `exp`
   no further than the configured lifetime, and a `jti` (the replay check is the store's).
2. INTEGRITY_REST_01, when there is a body: `Digest: SHA-256=…` equals the body's, and an
   `Agid-JWT-Signature` by the same portal whose `signed_headers` hold that digest and the
   request's content type.
3. AUDIT_REST_02: an `Agid-JWT-TrackingEvidence` by the same portal naming the user, bound to
   the ID_AUTH token by its `digest` claim.

Time is the injected clock's, not PyJWT's, so tests can move it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt

from domain.identity import IdentityError, User, level_from_loa, normalise_user_id
from security.keys import PublicKey
from security.modi import DIGEST_HEADER, SIGNATURE_HEADER, TRACKING_HEADER, tracking_digest

__all__ = ["ModiRefused", "ModiVerifier", "PortalKey", "VerifiedRequest", "declared_sha256"]


@dataclass(frozen=True, slots=True)
class PortalKey:
    """A registered portal's public key and the one algorithm it signs with."""

    portal: str
    public_key: PublicKey
    algorithm: str


@dataclass(frozen=True, slots=True)
class VerifiedRequest:
    portal: str
    jti: str
    expires_at: float
    user: User | None
    #: The headers the verified `Agid-JWT-Signature` covers, names lower-cased (empty without a body).
    signed_headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


class ModiRefused(Exception):
    """The request's ModI security failed; `slug` names the problem, `portal` the claimed sender.

    `verified` is True when every signature checked so far did verify with `portal`'s key and
    the request was refused for its claims (expired, another audience, replayed, no or bad
    tracking evidence): only then is `portal` more than a claim, and only then may the
    failure count against that portal (api.auth). `user` is the verified user, when known.
    """

    def __init__(self, slug: str, detail: str, portal: str | None = None, *,
                 verified: bool = False, user: str | None = None) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail
        self.portal = portal
        self.verified = verified
        self.user = user


def _signed(slug: str, detail: str, portal: str) -> ModiRefused:
    """A refusal of a request whose signatures verified with `portal`'s key."""
    return ModiRefused(slug, detail, portal, verified=True)


def _sha256_digest(header: str) -> str | None:
    """The `SHA-256=` value of a Digest header that may list several algorithms."""
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if sep and name.strip().upper() == "SHA-256":
            return value.strip()
    return None


def declared_sha256(headers: Mapping[str, str]) -> str | None:
    """The body's SHA-256 the `Digest` header declares, in lower-case hex; None when absent or
    not 32 bytes of base64."""
    value = _sha256_digest(headers.get(DIGEST_HEADER.lower()) or "")
    if value is None:
        return None
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == 32 else None


class ModiVerifier:
    """Verifies requests against the registered portals' keys.

    Args:
        keys: portal id (the tokens' `iss`) → its key.
        audience: the hub's `aud`.
        max_lifetime: the longest `exp - iat` accepted, in seconds.
        leeway: clock skew tolerated on `iat`, `nbf` and `exp`, in seconds.
    """

    def __init__(self, keys: Mapping[str, PortalKey], audience: str, *,
                 max_lifetime: float = 300.0, leeway: float = 30.0) -> None:
        self._keys = dict(keys)
        self.audience = audience
        self._max_lifetime = max_lifetime
        self._leeway = leeway

    def claimed_portal(self, token: str | None) -> str | None:
        """The registered portal an unverified token claims to come from, if any."""
        return self._unverified(token)[0]

    def _unverified(self, token: str | None) -> tuple[str | None, dict[str, Any]]:
        """The registered portal an unverified token claims, and its header: one parse."""
        if not token:
            return None, {}
        try:
            decoded = jwt.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return None, {}
        iss = decoded["payload"].get("iss")
        return (iss if isinstance(iss, str) and iss in self._keys else None), decoded["header"]

    def _decode(self, token: str, portal: str | None, what: str, now: float,
                required: tuple[str, ...]) -> dict[str, Any]:
        # The header comes from the same unverified parse as the claimed issuer: a token whose
        # header does not parse has no claimed portal either, and is refused below.
        claimed, header = self._unverified(token)
        if claimed is None or (portal is not None and claimed != portal):
            raise ModiRefused("invalid-token", f"{what} is not from a registered portal", portal)
        key = self._keys[claimed]
        if header.get("alg") != key.algorithm:
            raise ModiRefused("invalid-token", f"{what} must be signed with {key.algorithm}", claimed)
        try:
            claims = jwt.decode(
                token, key.public_key, algorithms=[key.algorithm], audience=self.audience,
                options={"require": list(required), "verify_exp": False, "verify_iat": False,
                         "verify_nbf": False},
            )
        except jwt.InvalidAudienceError:
            # PyJWT verifies the signature before any claim: these tokens are the portal's.
            raise _signed("wrong-audience", f"{what} is not addressed to this hub "
                                            f"(aud must be {self.audience!r})", claimed) from None
        except jwt.MissingRequiredClaimError as exc:
            raise _signed("invalid-token", f"{what} lacks the {exc.claim!r} claim", claimed) from None
        except jwt.InvalidSignatureError:
            raise ModiRefused("invalid-token", f"the signature of {what} does not verify", claimed) from None
        except jwt.PyJWTError as exc:
            raise ModiRefused("invalid-token", f"{what} is invalid: {exc}", claimed) from None
        self._check_times(claims, what, now, claimed)
        return claims

    def _check_times(self, claims: Mapping[str, Any], what: str, now: float, portal: str) -> None:
        iat, exp, nbf = claims.get("iat"), claims.get("exp"), claims.get("nbf", claims.get("iat"))
        if not (isinstance(iat, (int, float)) and isinstance(exp, (int, float)) and isinstance(nbf, (int, float))):
            raise _signed("invalid-token", f"{what}: iat, nbf and exp must be numbers", portal)
        if exp <= now - self._leeway:
            raise _signed("token-expired", f"{what} has expired", portal)
        if iat > now + self._leeway or nbf > now + self._leeway:
            raise _signed("invalid-token", f"{what} is not valid yet (issued in the future)", portal)
        if exp - iat > self._max_lifetime:
            raise _signed("invalid-token", f"{what} lives longer than {self._max_lifetime:.0f} s", portal)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float, *,
               require_user: bool = True, streamed: bool = False) -> VerifiedRequest:
        """Verify one request; `headers` is case-insensitive (Starlette's Headers).

        With `streamed` the body is still to come (an attachment streamed to disk): the Digest
        header and its signature are verified now, and the caller compares the body's hash
        with `declared_sha256(headers)` once it has read it.

        Raises:
            ModiRefused: the first check that failed.
        """
        authorization = headers.get("authorization") or ""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ModiRefused("missing-token", "an Authorization: Bearer token (ID_AUTH_REST_02) "
                                               "is required")
        token = token.strip()
        auth = self._decode(token, None, "the Authorization token", now,
                            ("iss", "aud", "iat", "exp", "jti"))
        portal: str = auth["iss"]
        if not isinstance(auth["jti"], str) or not 8 <= len(auth["jti"]) <= 200:
            raise _signed("invalid-token", "jti must be a string of 8 to 200 characters", portal)
        signed = (self._verify_integrity(headers, None if streamed else body, portal, now)
                  if body or streamed else {})
        user = self._verify_tracking(headers, auth, portal, now) if require_user else None
        return VerifiedRequest(portal=portal, jti=auth["jti"], expires_at=float(auth["exp"]), user=user,
                               signed_headers=MappingProxyType(signed))

    def _verify_integrity(self, headers: Mapping[str, str], body: bytes | None, portal: str,
                          now: float) -> dict[str, str]:
        """Check the Digest and its signature (the Digest against `body` unless it is None: a
        body still streaming); returns the signed headers, names lower-cased."""
        digest_header = headers.get(DIGEST_HEADER.lower())
        if not digest_header:
            raise ModiRefused("digest-missing", "a request with a body needs a Digest: SHA-256=… "
                                                "header (INTEGRITY_REST_01)", portal)
        sent = _sha256_digest(digest_header)
        if body is None:
            if sent is None or declared_sha256(headers) is None:
                raise ModiRefused("digest-missing", "a streamed body needs a Digest: SHA-256=<base64 "
                                                    "of 32 bytes> header (INTEGRITY_REST_01)", portal)
        elif sent is None or not hmac.compare_digest(
                sent, base64.b64encode(hashlib.sha256(body).digest()).decode()):
            raise ModiRefused("digest-mismatch", "the body does not match its Digest header: it "
                                                 "changed after signing", portal)
        signature = headers.get(SIGNATURE_HEADER.lower())
        if not signature:
            raise ModiRefused("signature-missing", f"a request with a body needs an {SIGNATURE_HEADER} "
                                                   "token (INTEGRITY_REST_01)", portal)
        claims = self._decode(signature, portal, f"the {SIGNATURE_HEADER} token", now,
                              ("iss", "aud", "iat", "exp", "signed_headers"))
        signed: dict[str, str] = {}
        entries = claims["signed_headers"]
        if isinstance(entries, list):
            for entry in entries:
                if isinstance(entry, dict):
                    signed.update({str(k).lower(): str(v) for k, v in entry.items()})
        if signed.get("digest") != digest_header:
            raise ModiRefused("digest-mismatch", "the Digest header is not the one the portal signed", portal)
        content_type = headers.get("content-type")
        if content_type is not None and signed.get("content-type") != content_type:
            raise ModiRefused("invalid-token", f"{SIGNATURE_HEADER} does not cover the request's "
                                               "Content-Type", portal)
        return signed

    def _verify_tracking(self, headers: Mapping[str, str], auth: Mapping[str, Any], portal: str,
                         now: float) -> User:
        evidence = headers.get(TRACKING_HEADER.lower())
        if not evidence:
            raise _signed("tracking-evidence-missing", f"the user must be named in an {TRACKING_HEADER} "
                                                       "token (AUDIT_REST_02)", portal)
        claims = self._decode(evidence, portal, f"the {TRACKING_HEADER} token", now,
                              ("iss", "aud", "iat", "exp", "userID", "userLocation"))
        if auth.get("digest") != tracking_digest(evidence):
            raise _signed("tracking-evidence-unbound", "the Authorization token's digest claim "
                                                       "does not name this tracking evidence", portal)
        loa = claims.get("LoA")
        method = claims.get("authMethod")
        if not method and isinstance(loa, str):
            method = "CIE" if loa.lower().startswith("cie") else "SPID"
        try:
            tax_code = normalise_user_id(str(claims["userID"]))
            auth_method, level = level_from_loa(str(method or ""), str(loa) if loa else None)
        except IdentityError as exc:
            raise _signed("tracking-evidence-invalid", str(exc), portal) from None
        location = str(claims["userLocation"]).strip()
        if not location:
            raise _signed("tracking-evidence-invalid", "userLocation is empty", portal)
        return User(tax_code=tax_code, auth_method=auth_method, level=level,
                    idp=str(claims.get("idp") or ""), location=location[:200])
