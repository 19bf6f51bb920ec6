"""Sign HTTP requests the way the AgID interoperability model (ModI) asks.

Three tokens, each a JWS signed with the sender's key:

- ID_AUTH_REST_02: `Authorization: Bearer <jwt>` with `iss`, `sub`, `aud`, `iat`, `nbf`, `exp`
  (short) and a `jti` the receiver refuses to see twice.
- INTEGRITY_REST_01: a `Digest: SHA-256=<base64>` header (RFC 3230) over the body, and an
  `Agid-JWT-Signature` token whose `signed_headers` claim holds the digest and content type.
- AUDIT_REST_02: an `Agid-JWT-TrackingEvidence` token naming the user (`userID`, with the SPID
  `TINIT-` form accepted), where they are (`userLocation`) and how they authenticated (`LoA`,
  plus Crocevia's `authMethod` and `idp`); the ID_AUTH token binds it with a `digest` claim,
  the SHA-256 of the tracking token, so that it cannot be swapped into another request.

Portals (the demo and CLI client, the tests) and the hub's REST adapters use `ModiSigner`;
the hub verifies with `api.modi`.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import jwt

from domain.identity import AuthMethod, User
from security.keys import PrivateKey, algorithm_of

__all__ = [
    "AUTHORIZATION_HEADER",
    "DIGEST_HEADER",
    "SIGNATURE_HEADER",
    "TRACKING_HEADER",
    "ModiSigner",
    "body_digest",
    "body_digest_of_hash",
    "tracking_digest",
]

AUTHORIZATION_HEADER = "Authorization"
DIGEST_HEADER = "Digest"
SIGNATURE_HEADER = "Agid-JWT-Signature"
TRACKING_HEADER = "Agid-JWT-TrackingEvidence"


def body_digest(body: bytes) -> str:
    """The `Digest` header value for `body` (RFC 3230, SHA-256, base64)."""
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode()


def body_digest_of_hash(sha256: bytes) -> str:
    """The `Digest` header value of a body whose SHA-256 was computed while streaming it."""
    return "SHA-256=" + base64.b64encode(sha256).decode()


def tracking_digest(token: str) -> dict[str, str]:
    """The ID_AUTH `digest` claim that binds a tracking evidence token to the request."""
    return {"alg": "SHA256", "value": hashlib.sha256(token.encode()).hexdigest()}


def _loa(user: User) -> str:
    # SPID names its levels SpidL1..3; CIE levels are stated the same way.
    prefix = "Cie" if user.auth_method is AuthMethod.CIE else "Spid" if user.auth_method is AuthMethod.SPID else ""
    return f"{prefix}L{user.level}"


class ModiSigner:
    """Builds the ModI headers of one sender (a portal, or the hub towards an agency).

    Args:
        issuer: the sender's id (`iss`); the receiver finds the sender's key by it.
        private_key: RSA (RS256) or EC P-256 (ES256).
        audience: the receiver's `aud`.
        clock: epoch seconds; tests inject one.
        lifetime: seconds until the tokens expire (ModI asks for short-lived tokens).
        kid: optional key id for the JOSE header.
    """

    def __init__(
        self,
        *,
        issuer: str,
        private_key: PrivateKey,
        audience: str,
        clock: Callable[[], float] = time.time,
        lifetime: int = 60,
        kid: str | None = None,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.algorithm = algorithm_of(private_key)
        self._key = private_key
        self._clock = clock
        self._lifetime = lifetime
        self._kid = kid

    def __repr__(self) -> str:
        return f"ModiSigner(issuer={self.issuer!r}, audience={self.audience!r}, alg={self.algorithm})"

    def _encode(self, claims: dict[str, Any], now: int) -> str:
        payload = {
            "iss": self.issuer,
            "sub": self.issuer,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + self._lifetime,
            "jti": uuid.uuid4().hex,
            **claims,
        }
        headers = {"kid": self._kid} if self._kid else None
        return jwt.encode(payload, self._key, algorithm=self.algorithm, headers=headers)

    def tracking_evidence(self, user: User, now: int | None = None) -> str:
        """The AUDIT_REST_02 token naming `user`."""
        claims = {
            "userID": f"TINIT-{user.tax_code}",
            "userLocation": user.location or self.issuer,
            "LoA": _loa(user),
            "authMethod": user.auth_method.value,
        }
        if user.idp:
            claims["idp"] = user.idp
        return self._encode(claims, int(self._clock()) if now is None else now)

    def headers(
        self,
        *,
        body: bytes | None = None,
        content_type: str | None = None,
        user: User | None = None,
        signed: Mapping[str, str] | None = None,
        digest: str | None = None,
    ) -> dict[str, str]:
        """The headers to add to one request: always Authorization; Digest and
        Agid-JWT-Signature when there is a body; Agid-JWT-TrackingEvidence when `user` is given.
        `signed` names further headers (lower-case name → value) that Agid-JWT-Signature covers,
        such as the X-Correlation-ID of an agency's callback. `digest` is the Digest of a body
        streamed rather than passed (`body_digest_of_hash`): it is signed instead of `body`'s.

        Each call makes new tokens with a new `jti`: sign every request, including retries.
        """
        now = int(self._clock())
        out: dict[str, str] = {}
        auth_claims: dict[str, Any] = {}
        if user is not None:
            evidence = self.tracking_evidence(user, now)
            out[TRACKING_HEADER] = evidence
            auth_claims["digest"] = tracking_digest(evidence)
        if body or digest:
            digest = digest or body_digest(body or b"")
            out[DIGEST_HEADER] = digest
            signed_headers: list[dict[str, str]] = [{"digest": digest}]
            if content_type:
                signed_headers.append({"content-type": content_type})
            signed_headers.extend({name.lower(): value} for name, value in (signed or {}).items())
            out[SIGNATURE_HEADER] = self._encode({"signed_headers": signed_headers}, now)
        out[AUTHORIZATION_HEADER] = "Bearer " + self._encode(auth_claims, now)
        return out
