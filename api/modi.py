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
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import jwt
from jwt.exceptions import InvalidJTIError, InvalidSubjectError

from domain.identity import IdentityError, User, level_from_loa, normalise_user_id
from security.jwt_reader import JWT_READER, decode_segment
from security.keys import PublicKey
from security.modi import AUTHORIZATION_HEADER, DIGEST_HEADER, SIGNATURE_HEADER, TRACKING_HEADER, tracking_digest

__all__ = ["REQUIRED_CLAIMS", "ModiRefused", "ModiVerifier", "PortalKey", "VerifiedRequest", "declared_sha256"]


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
    `token` and `claim` name the token (its header's name) and the claim at fault, when one is:
    the problem answer carries them so that a portal's developer sees which claim to fix.
    """

    def __init__(self, slug: str, detail: str, portal: str | None = None, *,
                 verified: bool = False, user: str | None = None,
                 token: str | None = None, claim: str | None = None) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail
        self.portal = portal
        self.verified = verified
        self.user = user
        self.token = token
        self.claim = claim

    def fields(self) -> dict[str, str]:
        """The machine-readable members of the problem answer (`token`, `claim`) that are known."""
        out: dict[str, str] = {}
        if self.token:
            out["token"] = self.token
        if self.claim:
            out["claim"] = self.claim
        return out


def _signed(slug: str, detail: str, portal: str, *, token: str | None = None,
            claim: str | None = None) -> ModiRefused:
    """A refusal of a request whose signatures verified with `portal`'s key."""
    return ModiRefused(slug, detail, portal, verified=True, token=token, claim=claim)


#: Each token's problem types for a claim it lacks, and for a claim present but wrong.
_MISSING = {AUTHORIZATION_HEADER: "authorization-claim-missing", SIGNATURE_HEADER: "signature-claim-missing",
            TRACKING_HEADER: "tracking-evidence-claim-missing"}
_INVALID = {AUTHORIZATION_HEADER: "authorization-claim-invalid", SIGNATURE_HEADER: "signature-claim-invalid",
            TRACKING_HEADER: "tracking-evidence-claim-invalid"}


def _missing(token: str, claim: str, portal: str | None, *, verified: bool = True,
             why: str = "") -> ModiRefused:
    """`<token>-claim-missing`, naming the token and the claim."""
    return ModiRefused(_MISSING[token], f"{token} lacks claim {claim!r}{why}", portal,
                       verified=verified, token=token, claim=claim)


def _invalid(token: str, claim: str, why: str, portal: str) -> ModiRefused:
    """`<token>-claim-invalid`: the claim is there (the signature verified) but wrong."""
    return _signed(_INVALID[token], f"{token} claim {claim!r} {why}", portal, token=token, claim=claim)


def _sha256_digest(header: str) -> str | None:
    """The `SHA-256=` value of a Digest header that may list several algorithms."""
    for part in header.split(","):
        name, sep, value = part.strip().partition("=")
        if sep and name.strip().upper() == "SHA-256":
            return value.strip()
    return None


#: The claims each token must carry (docs/modi-recipe.md); the Authorization token's `digest`
#: is required only with tracking evidence, and checked apart.
REQUIRED_CLAIMS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    AUTHORIZATION_HEADER: ("iss", "aud", "iat", "exp", "jti"),
    SIGNATURE_HEADER: ("iss", "aud", "iat", "exp", "signed_headers"),
    TRACKING_HEADER: ("iss", "aud", "iat", "exp", "userID", "userLocation"),
})


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
        """The registered portal an unverified token claims to come from (its payload's `iss`),
        if any: read from the payload segment alone, to pick the key that must then verify it."""
        parts = (token or "").split(".")
        if len(parts) != 3:
            return None
        try:
            # PyJWT's own segment check and JSON parser: the same reading as its decode's.
            payload = json.loads(decode_segment(parts[1].encode(), "payload"))
        except (jwt.DecodeError, ValueError, UnicodeError):
            return None
        iss = payload.get("iss") if isinstance(payload, dict) else None
        return iss if isinstance(iss, str) and iss in self._keys else None

    @staticmethod
    def _unverified(token: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
        """The unverified payload and header of a token (empty when it does not parse): one parse."""
        if not token:
            return {}, {}
        try:
            decoded = JWT_READER.decode_complete(token, options={"verify_signature": False})
        except jwt.PyJWTError:
            return {}, {}
        payload, header = decoded["payload"], decoded["header"]
        return (payload if isinstance(payload, dict) else {}), header

    def _decode(self, token: str, portal: str | None, what: str, now: float) -> dict[str, Any]:
        """Verify one token's signature, then its claims.

        `portal` is None for the Authorization token (its `iss` names the key); the other
        tokens are verified with the key of the portal the Authorization token named, so a
        claim they lack is named as such, never taken for an unknown portal.
        """
        # The Authorization token names its portal itself: its key is tried first, as the other
        # tokens try the key of the portal it named, and every failure is named by `_checked`.
        signer = portal if portal is not None else self.claimed_portal(token)
        claims = self._verified(token, signer, what) if signer is not None else None
        if claims is None or (portal is None and claims["iss"] != signer):
            claims = self._checked(token, portal, what)
        if portal is not None and claims["iss"] != portal:
            raise _invalid(what, "iss", f"must be {portal!r}, the issuer of the Authorization token", portal)
        self._check_times(claims, what, now, portal or claims["iss"])
        return claims

    def _verified(self, token: str, portal: str, what: str) -> dict[str, Any] | None:
        """The claims of a token that verifies with `portal`'s key, parsed once (None: it does not).

        The same `jwt.decode` as `_checked` makes after its reading of the unverified token: a
        token it accepts has a header with the portal's algorithm, so that reading would have
        passed. Any failure goes through `_checked`, which names it.
        """
        key = self._keys[portal]
        try:
            return self._jwt_decode(token, key, what)
        except jwt.PyJWTError:
            return None

    def _jwt_decode(self, token: str, key: PortalKey, what: str) -> dict[str, Any]:
        """PyJWT's verification of the signature (with `key`'s one algorithm), the audience and
        the required claims; the times are `_check_times`'s."""
        claims: dict[str, Any] = JWT_READER.decode(
            token, key.public_key, algorithms=[key.algorithm], audience=self.audience,
            options={"require": list(REQUIRED_CLAIMS[what]), "verify_exp": False, "verify_iat": False,
                     "verify_nbf": False, "verify_iss": False},
        )
        return claims

    def _checked(self, token: str, portal: str | None, what: str) -> dict[str, Any]:
        """Read the unverified token to name the key (and each refusal), then verify it."""
        payload, header = self._unverified(token)
        if not header:
            raise ModiRefused("invalid-token", f"{what} is not a compact JWS (header.payload.signature)",
                              portal, token=what)
        iss = payload.get("iss")
        if portal is None:
            if "iss" not in payload:
                # Without an issuer no key can verify it: the failure counts against the address.
                raise _missing(what, "iss", None, verified=False, why=" (the portal's registered id)")
            if not isinstance(iss, str) or iss not in self._keys:
                raise ModiRefused("invalid-token", f"{what} is not from a registered portal "
                                                   f"(iss {iss!r} is unknown here)", None, token=what, claim="iss")
            signer = iss
        else:
            signer = portal
        key = self._keys[signer]
        if header.get("alg") != key.algorithm:
            raise ModiRefused("invalid-token", f"{what} must be signed with {key.algorithm} "
                                               f"(header alg is {header.get('alg')!r})", signer, token=what)
        try:
            return self._jwt_decode(token, key, what)
        except jwt.InvalidSignatureError:
            detail = f"the signature of {what} does not verify"
            if portal is not None and isinstance(iss, str) and iss != portal:
                detail += f" with the key of {portal!r}, who signed the Authorization token (its iss is {iss!r})"
            raise ModiRefused("invalid-token", detail, signer, token=what) from None
        except jwt.MissingRequiredClaimError as exc:
            # PyJWT verifies the signature before any claim: these tokens are the portal's.
            raise _missing(what, exc.claim, signer) from None
        except jwt.InvalidAudienceError:
            raise _signed("wrong-audience", f"{what} is not addressed to this hub "
                                            f"(aud must be {self.audience!r})", signer,
                          token=what, claim="aud") from None
        except InvalidSubjectError:
            raise _invalid(what, "sub", "must be a string", signer) from None
        except InvalidJTIError:
            raise _invalid(what, "jti", "must be a string", signer) from None
        except jwt.PyJWTError as exc:
            raise ModiRefused("invalid-token", f"{what} is invalid: {exc}", signer, token=what) from None

    def _check_times(self, claims: Mapping[str, Any], what: str, now: float, portal: str) -> None:
        for name in ("iat", "exp", "nbf"):
            value = claims.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise _invalid(what, name, "must be a number (seconds since the epoch)", portal)
        iat, exp, nbf = claims["iat"], claims["exp"], claims.get("nbf", claims["iat"])
        if exp <= now - self._leeway:
            raise _signed("token-expired", f"{what} has expired (claim 'exp')", portal, token=what, claim="exp")
        for name, value in (("iat", iat), ("nbf", nbf)):
            if value > now + self._leeway:
                raise _signed("invalid-token", f"{what} is not valid yet (claim {name!r} is in the future)",
                              portal, token=what, claim=name)
        if exp - iat > self._max_lifetime:
            raise _signed("invalid-token", f"{what} lives longer than {self._max_lifetime:.0f} s "
                                           "(claims 'iat' to 'exp')", portal, token=what, claim="exp")

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
                                               "is required", token=AUTHORIZATION_HEADER)
        token = token.strip()
        auth = self._decode(token, None, AUTHORIZATION_HEADER, now)
        portal: str = auth["iss"]
        if not isinstance(auth["jti"], str) or not 8 <= len(auth["jti"]) <= 200:
            raise _invalid(AUTHORIZATION_HEADER, "jti", "must be a string of 8 to 200 characters", portal)
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
                                                   "token (INTEGRITY_REST_01)", portal, token=SIGNATURE_HEADER)
        claims = self._decode(signature, portal, SIGNATURE_HEADER, now)
        entries = claims["signed_headers"]
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise _invalid(SIGNATURE_HEADER, "signed_headers", 'must be a list of objects such as '
                                                               '[{"digest": …}, {"content-type": …}]', portal)
        signed: dict[str, str] = {}
        for entry in entries:
            signed.update({str(k).lower(): str(v) for k, v in entry.items()})
        if "digest" not in signed:
            raise _invalid(SIGNATURE_HEADER, "signed_headers", "must hold the Digest header "
                                                               '({"digest": "SHA-256=…"})', portal)
        if signed["digest"] != digest_header:
            raise ModiRefused("digest-mismatch", "the Digest header is not the one the portal signed "
                                                 f"({SIGNATURE_HEADER} claim 'signed_headers')", portal,
                              token=SIGNATURE_HEADER, claim="signed_headers")
        content_type = headers.get("content-type")
        if content_type is not None and signed.get("content-type") != content_type:
            raise _invalid(SIGNATURE_HEADER, "signed_headers", "does not cover the request's Content-Type "
                                                               '({"content-type": …}, exactly as sent)', portal)
        return signed

    def _verify_tracking(self, headers: Mapping[str, str], auth: Mapping[str, Any], portal: str,
                         now: float) -> User:
        evidence = headers.get(TRACKING_HEADER.lower())
        if not evidence:
            raise _signed("tracking-evidence-missing", f"the user must be named in an {TRACKING_HEADER} "
                                                       "token (AUDIT_REST_02)", portal, token=TRACKING_HEADER)
        claims = self._decode(evidence, portal, TRACKING_HEADER, now)
        if "digest" not in auth:
            raise _missing(AUTHORIZATION_HEADER, "digest", portal,
                           why=f' ({{"alg": "SHA256", "value": <hex SHA-256 of the {TRACKING_HEADER} token>}})')
        if auth["digest"] != tracking_digest(evidence):
            raise _signed("tracking-evidence-unbound", "the Authorization token's digest claim "
                                                       "does not name this tracking evidence", portal,
                          token=AUTHORIZATION_HEADER, claim="digest")
        return self._user_of(claims, portal)

    @staticmethod
    def _user_of(claims: Mapping[str, Any], portal: str) -> User:
        """The user the tracking evidence names; each unusable claim is named."""
        loa = claims.get("LoA")
        method = claims.get("authMethod")
        if not method and not loa:
            raise _missing(TRACKING_HEADER, "LoA", portal, why=" (or 'authMethod' CIE/CNS)")
        if not method and isinstance(loa, str):
            method = "CIE" if loa.lower().startswith("cie") else "SPID"
        try:
            tax_code = normalise_user_id(str(claims["userID"]))
        except IdentityError as exc:
            raise _invalid(TRACKING_HEADER, "userID", f"is not a tax code: {exc}", portal) from None
        try:
            auth_method, level = level_from_loa(str(method or ""), str(loa) if loa else None)
        except IdentityError as exc:
            if not loa:
                raise _missing(TRACKING_HEADER, "LoA", portal, why=f": {exc}") from None
            name = "LoA" if str(method).strip().upper() in ("SPID", "CIE", "CNS") else "authMethod"
            raise _invalid(TRACKING_HEADER, name, f"is not usable: {exc}", portal) from None
        location = str(claims["userLocation"]).strip()
        if not location:
            raise _invalid(TRACKING_HEADER, "userLocation", "is empty", portal)
        return User(tax_code=tax_code, auth_method=auth_method, level=level,
                    idp=str(claims.get("idp") or ""), location=location[:200])
