"""Verify an agency's callback with the credential its file declares, before anything else.

Trust at the edges: agencies sign their callbacks (AgID NONBLOCK_PUSH) with the credential
their agency file declares (`[callback]`, adapters.contracts.CallbackSpec):

- `modi` (REST): the portal checks of `api.modi` (ID_AUTH_REST_02 with iss/aud/iat/exp/jti;
  INTEGRITY_REST_01 `Digest` + `Agid-JWT-Signature`) against the agency's registered key,
  plus: a body is required, and its `X-Correlation-ID` must be among the signed headers, so a
  signed outcome cannot be pointed at another delivery.
- `wss` (SOAP): an XML signature over Body and Timestamp verified by signxml with the
  agency's registered certificate, and a fresh Timestamp.

A token id (ModI `jti`, or the WS-Security SignatureValue) is accepted once: a replay is
refused. An agency whose file declares no credential cannot call back at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from cryptography import x509
from lxml import etree
from signxml import SignatureConfiguration, XMLVerifier
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidDigest, SignXMLException

from api.modi import ModiRefused, ModiVerifier, PortalKey
from security.keys import PublicKey, algorithm_of
from security.modi import SIGNATURE_HEADER
from security.wssecurity import DS, SOAP11, SOAP12, WSSE, WSU

__all__ = [
    "CallbackGuard",
    "CallbackRefused",
    "CallbackVerifier",
    "ModiCallbackVerifier",
    "TokenMemory",
    "VerifiedCallback",
    "WssCallbackVerifier",
]

#: The header naming the exchange (AgID non-blocking patterns), lower-case as Starlette keeps it.
_CORRELATION = "x-correlation-id"
_WSU_ID = f"{{{WSU}}}Id"
#: References a callback's signature may hold: Body, Timestamp and a few more (headers).
_MAX_REFERENCES = 8
#: What agencies sign with (ModI allows RS256 and ES256; the XML-DSig counterparts).
_SIGNATURE_METHODS = frozenset({SignatureMethod.RSA_SHA256, SignatureMethod.ECDSA_SHA256})


class CallbackRefused(Exception):
    """The callback carries no valid credential: 401; `slug` names the failed check."""

    def __init__(self, slug: str, detail: str) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail


@dataclass(frozen=True, slots=True)
class VerifiedCallback:
    """A callback whose credential verified: the token id to remember, and until when."""

    token_id: str
    keep_until: float


class CallbackVerifier(Protocol):
    profile: str

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> VerifiedCallback: ...


class TokenMemory(Protocol):
    """Where token ids are remembered (`storage.identity.SqlIdentityStore`)."""

    def remember_token(self, issuer: str, jti: str, keep_until: float, now: float) -> bool: ...


class ModiCallbackVerifier:
    """ModI REST callbacks of one agency, verified against its registered public key.

    Args:
        issuer: the `iss` the agency's tokens carry.
        public_key: the agency's key (from its certificate or PEM public key).
        audience: the hub's `aud`.
        max_lifetime: the longest `exp - iat` accepted, in seconds.
        leeway: clock skew tolerated, in seconds.
    """

    profile = "modi"

    def __init__(self, issuer: str, public_key: PublicKey, audience: str, *, max_lifetime: float,
                 leeway: float) -> None:
        key = PortalKey(portal=issuer, public_key=public_key, algorithm=algorithm_of(public_key))
        self._verifier = ModiVerifier({issuer: key}, audience, max_lifetime=max_lifetime, leeway=leeway)
        self._leeway = leeway

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> VerifiedCallback:
        """Raises: CallbackRefused, naming the first check that failed."""
        if not body:
            raise CallbackRefused("digest-missing", "a callback carries its outcome in a signed body "
                                                    "(INTEGRITY_REST_01)")
        try:
            verified = self._verifier.verify(headers, body, now, require_user=False)
        except ModiRefused as refused:
            raise CallbackRefused(refused.slug, refused.detail) from None
        correlation = headers.get(_CORRELATION)
        # The headers the verified Agid-JWT-Signature covers (a body is required above).
        if correlation is not None and verified.signed_headers.get(_CORRELATION) != correlation:
            raise CallbackRefused("correlation-id-unsigned", f"{SIGNATURE_HEADER} does not cover the "
                                                             "callback's X-Correlation-ID header")
        return VerifiedCallback(token_id=verified.jti, keep_until=verified.expires_at + self._leeway)


def _instant(text: str | None) -> float:
    if not text:
        raise CallbackRefused("signature-invalid", "the WS-Security Timestamp needs Created and Expires")
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise CallbackRefused("signature-invalid", "unreadable WS-Security Timestamp") from None


def _wss_parts(envelope: etree._Element) -> tuple[etree._Element, etree._Element, list[str]]:
    """The Security header's Timestamp, the signature's SignedInfo and its reference URIs,
    once the references are known to name the envelope's own Body and that Timestamp, each by
    an id no other element carries (no signature wrapping)."""
    namespace = etree.QName(envelope).namespace
    if namespace not in (SOAP11, SOAP12):
        raise CallbackRefused("signature-invalid", "a SOAP callback must be a SOAP envelope")
    security = envelope.find(f"{{{namespace}}}Header/{{{WSSE}}}Security")
    if security is None:
        raise CallbackRefused("signature-invalid", "WS-Security: no wsse:Security header")
    timestamp = security.find(f"{{{WSU}}}Timestamp")
    signed_info = security.find(f"{{{DS}}}Signature/{{{DS}}}SignedInfo")
    body = envelope.find(f"{{{namespace}}}Body")
    if timestamp is None or signed_info is None or body is None:
        raise CallbackRefused("signature-invalid", "WS-Security: the Security header needs a Timestamp "
                                                   "and a Signature")
    uris = [reference.get("URI", "") for reference in signed_info.findall(f"{{{DS}}}Reference")]
    if not 2 <= len(uris) <= _MAX_REFERENCES:
        raise CallbackRefused("signature-invalid", "WS-Security: the signature must reference the Body "
                                                   "and the Timestamp")
    ids = [el.get(_WSU_ID) for el in envelope.iter() if isinstance(el.tag, str) and el.get(_WSU_ID)]
    for element in (body, timestamp):
        identifier = element.get(_WSU_ID)
        if not identifier or f"#{identifier}" not in uris or ids.count(identifier) != 1:
            raise CallbackRefused("signature-invalid", "WS-Security: the signature must cover the Body "
                                                       "and the Timestamp")
    return timestamp, signed_info, uris


class WssCallbackVerifier:
    """WS-Security SOAP callbacks of one agency, verified against its registered certificate.

    The XML signature is checked by signxml with the registered certificate (never with the
    one the envelope carries): SHA-256 digests, RSA- or ECDSA-SHA256, each reference intact.

    Args:
        certificate: the agency's certificate.
        max_lifetime: the longest Expires - Created accepted, and the oldest Created, in seconds.
        leeway: clock skew tolerated, in seconds.
    """

    profile = "wss"

    def __init__(self, certificate: x509.Certificate, *, max_lifetime: float, leeway: float) -> None:
        self._certificate = certificate
        self._max_lifetime = max_lifetime
        self._leeway = leeway

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> VerifiedCallback:
        """Raises: CallbackRefused, naming the first check that failed."""
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
        try:
            envelope = etree.fromstring(body, parser)
        except etree.XMLSyntaxError:
            raise CallbackRefused("signature-missing", "a SOAP callback must be a WS-Security signed "
                                                       "envelope; this body is not XML") from None
        timestamp, signed_info, uris = _wss_parts(envelope)
        config = SignatureConfiguration(
            require_x509=False, expect_references=len(uris), signature_methods=_SIGNATURE_METHODS,
            digest_algorithms=frozenset({DigestAlgorithm.SHA256}))
        try:
            XMLVerifier().verify(body, x509_cert=self._certificate, expect_config=config)
        except InvalidDigest:
            raise CallbackRefused("signature-invalid", "WS-Security: a signed part (Body or Timestamp) "
                                                       "changed after signing") from None
        except (SignXMLException, ValueError) as exc:
            # InvalidSignature: not the registered certificate's key; InvalidInput: the
            # signature's own shape or algorithms.
            raise CallbackRefused("signature-invalid", "WS-Security: the signature does not verify with "
                                                       f"the agency's certificate ({type(exc).__name__})") from None
        created = _instant(timestamp.findtext(f"{{{WSU}}}Created"))
        expires = _instant(timestamp.findtext(f"{{{WSU}}}Expires"))
        if created > now + self._leeway:
            raise CallbackRefused("signature-invalid", "the WS-Security Timestamp was created in the future")
        if now > expires + self._leeway:
            raise CallbackRefused("signature-invalid", "the WS-Security Timestamp has expired")
        if expires - created > self._max_lifetime or now - created > self._max_lifetime + self._leeway:
            raise CallbackRefused("signature-invalid", "the WS-Security Timestamp is not fresh (older "
                                                       f"than {self._max_lifetime:.0f} s)")
        signature = signed_info.getparent()
        value = (signature.findtext(f"{{{DS}}}SignatureValue") or "") if signature is not None else ""
        token_id = hashlib.sha256("".join(value.split()).encode()).hexdigest()
        return VerifiedCallback(token_id=token_id, keep_until=expires + self._leeway)


class CallbackGuard:
    """Authenticates agencies' callbacks; blocking (database): run it in the thread pool.

    Args:
        verifiers: agency → the verifier of the credential its file declares.
        tokens: remembers the token ids seen.
        clock: epoch seconds (tests inject one).
    """

    def __init__(self, verifiers: Mapping[str, CallbackVerifier], tokens: TokenMemory, *,
                 clock: Callable[[], float]) -> None:
        self._verifiers = dict(verifiers)
        self._tokens = tokens
        self._clock = clock

    def authenticate(self, agency: str, headers: Mapping[str, str], body: bytes) -> VerifiedCallback:
        """Verify one callback and remember its token id.

        Raises:
            CallbackRefused: no credential declared for `agency`, a credential that does not
                verify, or a token already used.
        """
        verifier = self._verifiers.get(agency)
        if verifier is None:
            raise CallbackRefused("no-callback-credential", f"agency {agency!r} declares no callback "
                                                            "credential: its callbacks are not accepted")
        now = self._clock()
        verified = verifier.verify(headers, body, now)
        if not self._tokens.remember_token(f"agency:{agency}", verified.token_id, verified.keep_until, now):
            raise CallbackRefused("token-replayed", "this callback's token was already used: sign every "
                                                    "callback anew")
        return verified
