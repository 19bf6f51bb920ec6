"""The agency's side of a signed callback: how a simulated agency or the sandbox signs it.

An agency declares in its file (`[callback]`, adapters.contracts.CallbackSpec) the credential
its callbacks carry; the hub verifies it (`api.callbacks`). The embedded default's simulators
and sandbox hold a generated key pair (`load_callback_keys`), so that the demo and the tests
exercise the same checks as production:

- `modi` (REST): ID_AUTH_REST_02 bearer token, `Digest` and an `Agid-JWT-Signature`
  (INTEGRITY_REST_01) whose `signed_headers` also cover the callback's `X-Correlation-ID`.
- `wss` (SOAP): a WS-Security Timestamp and an XML signature over Body and Timestamp, with the
  agency's certificate as BinarySecurityToken (`security.wssecurity.sign_envelope`).

Each try of a callback is signed anew (a new `jti`, a new Timestamp): the hub refuses a repeat.
"""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from lxml import etree

from security.keys import (
    PrivateKey,
    PublicKey,
    ensure_private_key,
    ensure_self_signed_certificate,
    load_certificate,
    load_public_key,
    public_key_of,
)
from security.modi import ModiSigner
from security.wssecurity import sign_envelope

__all__ = ["CORRELATION_HEADER", "DEFAULT_HUB_AUDIENCE", "CallbackSigner", "load_callback_credential",
           "load_callback_keys"]

#: The HTTP header of the AgID non-blocking patterns that names the exchange.
CORRELATION_HEADER = "X-Correlation-ID"
#: The `aud` of the hub when nothing else is said (the default `identity.audience`).
DEFAULT_HUB_AUDIENCE = "crocevia"
#: The algorithm of a key generated on first run (ES256: small keys, fast signatures).
_GENERATED_ALGORITHM = "ES256"


def load_callback_keys(private_key: Path, certificate: Path,
                       common_name: str) -> tuple[PrivateKey, x509.Certificate]:
    """The agency's callback key and its certificate, generated on first run (mode 0600).

    Whoever starts first (the hub, the simulators, the sandbox) creates them; the files are
    linked into place whole, so a concurrent starter reads the same pair.
    """
    key = ensure_private_key(private_key, _GENERATED_ALGORITHM)
    return key, ensure_self_signed_certificate(certificate, key, common_name)


def load_callback_credential(certificate: Path, private_key: Path | None,
                             common_name: str) -> tuple[x509.Certificate | None, PublicKey]:
    """What the hub verifies an agency's callbacks with: its certificate (None when the file
    holds a bare PEM public key) and public key. With `private_key` (the embedded default's
    simulated agencies) the pair is generated on first run, as `load_callback_keys` does.

    Raises:
        OSError: the file cannot be read; ValueError: it holds no supported key.
    """
    if private_key is not None:
        generated = load_callback_keys(private_key, certificate, common_name)[1]
        return generated, public_key_of(generated.public_key())
    pem = certificate.read_bytes()
    cert = load_certificate(pem) if b"-----BEGIN CERTIFICATE-----" in pem else None
    return cert, load_public_key(pem)


class CallbackSigner:
    """Signs one agency's callbacks with the profile its file declares.

    Args:
        profile: "modi" or "wss".
        key: the agency's private key.
        certificate: its certificate (the WS-Security BinarySecurityToken).
        issuer: the ModI `iss` the hub expects of this agency.
        audience: the hub's `aud`.
        ttl: seconds until the tokens or the Timestamp expire.
    """

    def __init__(self, profile: str, key: PrivateKey, certificate: x509.Certificate, *, issuer: str,
                 audience: str = DEFAULT_HUB_AUDIENCE, ttl: int = 60) -> None:
        if profile not in ("modi", "wss"):
            raise ValueError(f"unknown callback profile {profile!r} (modi or wss)")
        self.profile = profile
        self._key = key
        self._certificate = certificate
        self._ttl = ttl
        self._modi = ModiSigner(issuer=issuer, private_key=key, audience=audience, lifetime=ttl)

    def __repr__(self) -> str:
        return f"CallbackSigner(profile={self.profile!r}, issuer={self._modi.issuer!r})"

    def sign(self, body: bytes, content_type: str, correlation_id: str) -> tuple[bytes, dict[str, str]]:
        """The body to send (a SOAP envelope gains its Security header) and the headers to add.

        Raises:
            WsSecurityError: `wss` and the body is not a SOAP envelope with a Body.
            lxml.etree.XMLSyntaxError: `wss` and the body is not XML.
        """
        if self.profile == "wss":
            parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
            envelope = etree.fromstring(body, parser)
            sign_envelope(envelope, self._key, self._certificate, ttl=self._ttl)
            return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8"), {}
        headers = self._modi.headers(body=body, content_type=content_type,
                                     signed={CORRELATION_HEADER: correlation_id})
        return body, headers
