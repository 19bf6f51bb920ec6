"""WS-Security for SOAP agencies: a timestamp and an XML signature over Body and Timestamp.

OASIS WSS 1.0 with the X.509 token profile, XML-DSig with exclusive canonicalization
(http://www.w3.org/2001/10/xml-exc-c14n#), SHA-256 digests and RSA-SHA256 or ECDSA-SHA256
signatures. The hub's certificate travels as a BinarySecurityToken that the signature's
KeyInfo references. Built with lxml and cryptography; `WsSecurityPlugin` applies it as a zeep
egress plugin, `verify_envelope` checks a signed envelope (tests, a simulator hook).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import os
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from lxml import etree
from zeep import Plugin

from schemas.xml_names import namespace_of
from security.keys import PrivateKey, PublicKey, sign_sha256

__all__ = ["WsSecurityError", "WsSecurityPlugin", "sign_envelope", "verify_envelope"]

DS = "http://www.w3.org/2000/09/xmldsig#"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
X509V3 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-x509-token-profile-1.0#X509v3"
BASE64 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP12 = "http://www.w3.org/2003/05/soap-envelope"

_ID = f"{{{WSU}}}Id"
_NS = {"ds": DS, "wsse": WSSE, "wsu": WSU}


class WsSecurityError(Exception):
    """A signed envelope that does not verify, or one that cannot be signed."""


def _c14n(element: etree._Element) -> bytes:
    return etree.tostring(element, method="c14n", exclusive=True, with_comments=False)


def _sha256_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def _utc(epoch: float) -> str:
    """`epoch` as xs:dateTime in UTC to the millisecond (truncated), e.g. `2026-01-02T03:04:05.678Z`."""
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


def _uuid4_hex() -> str:
    """`uuid.uuid4().hex` without building a `UUID` (three per envelope): 16 random bytes with
    the version (4) and RFC 4122 variant bits set."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def _method(key: PrivateKey) -> str:
    return RSA_SHA256 if isinstance(key, rsa.RSAPrivateKey) else ECDSA_SHA256


def _verify(key: PublicKey, method: str, signature: bytes, data: bytes) -> None:
    if method == RSA_SHA256 and isinstance(key, rsa.RSAPublicKey):
        key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        return
    if method == ECDSA_SHA256 and isinstance(key, ec.EllipticCurvePublicKey):
        size = (key.curve.key_size + 7) // 8
        if len(signature) != 2 * size:
            raise InvalidSignature()
        der = encode_dss_signature(int.from_bytes(signature[:size], "big"), int.from_bytes(signature[size:], "big"))
        key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        return
    raise WsSecurityError(f"signature method {method} does not fit the key")


def _envelope_ns(envelope: etree._Element) -> str:
    namespace = namespace_of(envelope.tag) if isinstance(envelope.tag, str) else None
    if namespace not in (SOAP11, SOAP12):
        raise WsSecurityError("not a SOAP envelope")
    return namespace


def _element(parent: etree._Element, ns: str, name: str, text: str | None = None,
             **attrs: str) -> etree._Element:
    child = etree.SubElement(parent, f"{{{ns}}}{name}", nsmap=None)
    for key, value in attrs.items():
        child.set(key, value)
    if text is not None:
        child.text = text
    return child


def _security_template(key: PrivateKey, certificate: x509.Certificate) -> etree._Element:
    """The wsse:Security header with what is the same in every envelope signed with `key`:
    the structure, the algorithms and the certificate. Ids, times, digests and the signature
    value are filled in per envelope (building the 21 elements anew costs more than signing)."""
    security = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE, "wsu": WSU})
    timestamp = _element(security, WSU, "Timestamp", **{_ID: ""})
    _element(timestamp, WSU, "Created")
    _element(timestamp, WSU, "Expires")
    der = certificate.public_bytes(serialization.Encoding.DER)
    _element(security, WSSE, "BinarySecurityToken", base64.b64encode(der).decode(),
             EncodingType=BASE64, ValueType=X509V3, **{_ID: ""})
    signature = etree.SubElement(security, f"{{{DS}}}Signature", nsmap={"ds": DS})
    signed_info = _element(signature, DS, "SignedInfo")
    _element(signed_info, DS, "CanonicalizationMethod", Algorithm=EXC_C14N)
    _element(signed_info, DS, "SignatureMethod", Algorithm=_method(key))
    for _ in ("Body", "Timestamp"):
        reference = _element(signed_info, DS, "Reference", URI="")
        transforms = _element(reference, DS, "Transforms")
        _element(transforms, DS, "Transform", Algorithm=EXC_C14N)
        _element(reference, DS, "DigestMethod", Algorithm=SHA256)
        _element(reference, DS, "DigestValue")
    _element(signature, DS, "SignatureValue")
    key_info = _element(signature, DS, "KeyInfo")
    str_ = _element(key_info, WSSE, "SecurityTokenReference")
    _element(str_, WSSE, "Reference", URI="", ValueType=X509V3)
    return security


def sign_envelope(
    envelope: etree._Element,
    key: PrivateKey,
    certificate: x509.Certificate,
    *,
    now: float | None = None,
    ttl: int = 300,
    template: etree._Element | None = None,
) -> etree._Element:
    """Add a wsse:Security header (Timestamp, BinarySecurityToken, Signature) in place.

    The signature covers the Body and the Timestamp; both get a wsu:Id.

    Args:
        template: `_security_template(key, certificate)`, kept by callers that sign many
            envelopes; built here when None.

    Returns:
        The same envelope.

    Raises:
        WsSecurityError: not a SOAP 1.1/1.2 envelope, or one without a Body.
    """
    env_ns = _envelope_ns(envelope)
    body = envelope.find(f"{{{env_ns}}}Body")
    if body is None:
        raise WsSecurityError("the envelope has no Body")
    header = envelope.find(f"{{{env_ns}}}Header")
    if header is None:
        header = etree.Element(f"{{{env_ns}}}Header")
        envelope.insert(0, header)
    now = time.time() if now is None else now
    security = copy.deepcopy(template if template is not None
                             else _security_template(key, certificate))
    header.append(security)
    # The agency must process the header or refuse the message (SOAP 1.1 "1", SOAP 1.2 "true");
    # set once in the envelope, so that the attribute takes the envelope's prefix.
    security.set(f"{{{env_ns}}}mustUnderstand", "1" if env_ns == SOAP11 else "true")
    timestamp, token, signature = security
    timestamp.set(_ID, f"TS-{_uuid4_hex()}")
    created, expires = timestamp
    created.text = _utc(now)
    expires.text = _utc(now + ttl)
    token_id = f"X509-{_uuid4_hex()}"
    token.set(_ID, token_id)

    if body.get(_ID) is None:
        body.set(_ID, f"Body-{_uuid4_hex()}")
    # Declare wsse and wsu once on the Envelope, so the Body's id reads `wsu:Id` as agencies'
    # stacks expect (lxml would otherwise invent an `ns0` prefix on the Body); before digesting.
    etree.cleanup_namespaces(envelope, top_nsmap={"wsse": WSSE, "wsu": WSU})

    signed_info, signature_value, key_info = signature
    for reference, target in zip(signed_info[2:], (body, timestamp)):
        reference.set("URI", f"#{target.get(_ID)}")
        reference[2].text = _sha256_b64(_c14n(target))  # DigestValue
    signature_value.text = base64.b64encode(sign_sha256(key, _c14n(signed_info))).decode()
    key_info[0][0].set("URI", f"#{token_id}")  # SecurityTokenReference/Reference
    return envelope


def _algorithm(parent: etree._Element, tag: str) -> str | None:
    """The `Algorithm` of `parent`'s child `tag`; None when either is missing (then refused)."""
    child = parent.find(tag)
    return None if child is None else child.get("Algorithm")


def _by_id(root: etree._Element, identifier: str) -> etree._Element:
    found = [el for el in root.iter() if isinstance(el.tag, str) and el.get(_ID) == identifier]
    if len(found) != 1:
        raise WsSecurityError(f"reference #{identifier} names {len(found)} elements")
    return found[0]


def verify_envelope(
    envelope: bytes | etree._Element,
    public_key: PublicKey | None = None,
    *,
    now: float | None = None,
) -> x509.Certificate:
    """Check a signed envelope: Body and Timestamp referenced and intact, the signature valid
    for the BinarySecurityToken's certificate (and for `public_key` when given), the timestamp
    not expired.

    Returns:
        The signer's certificate.

    Raises:
        WsSecurityError: the first check that failed.
    """
    if isinstance(envelope, bytes):
        parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
        envelope = etree.fromstring(envelope, parser)
    env_ns = _envelope_ns(envelope)
    security = envelope.find(f"{{{env_ns}}}Header/{{{WSSE}}}Security")
    if security is None:
        raise WsSecurityError("no wsse:Security header")
    signature = security.find(f"{{{DS}}}Signature")
    timestamp = security.find(f"{{{WSU}}}Timestamp")
    body = envelope.find(f"{{{env_ns}}}Body")
    if signature is None or timestamp is None or body is None:
        raise WsSecurityError("the Security header needs a Signature and a Timestamp")
    signed_info = signature.find(f"{{{DS}}}SignedInfo")
    if signed_info is None:
        raise WsSecurityError("no SignedInfo")
    if _algorithm(signed_info, f"{{{DS}}}CanonicalizationMethod") != EXC_C14N:
        raise WsSecurityError("SignedInfo must use exclusive canonicalization")
    covered: set[int] = set()
    for reference in signed_info.findall(f"{{{DS}}}Reference"):
        uri = reference.get("URI", "")
        if not uri.startswith("#"):
            raise WsSecurityError(f"unsupported reference {uri!r}")
        target = _by_id(envelope, uri[1:])
        transforms = [t.get("Algorithm") for t in reference.findall(f"{{{DS}}}Transforms/{{{DS}}}Transform")]
        if transforms != [EXC_C14N]:
            raise WsSecurityError("each reference must use exactly the exclusive c14n transform")
        if _algorithm(reference, f"{{{DS}}}DigestMethod") != SHA256:
            raise WsSecurityError("digests must be SHA-256")
        if reference.findtext(f"{{{DS}}}DigestValue", "").strip() != _sha256_b64(_c14n(target)):
            raise WsSecurityError(f"the digest of {etree.QName(target).localname} does not match: "
                                  "it changed after signing")
        covered.add(id(target))
    if id(body) not in covered or id(timestamp) not in covered:
        raise WsSecurityError("the signature must cover the Body and the Timestamp")
    token_ref = signature.find(f"{{{DS}}}KeyInfo/{{{WSSE}}}SecurityTokenReference/{{{WSSE}}}Reference")
    if token_ref is None or not token_ref.get("URI", "").startswith("#"):
        raise WsSecurityError("KeyInfo must reference a BinarySecurityToken")
    token = _by_id(envelope, token_ref.get("URI", "")[1:])
    certificate = x509.load_der_x509_certificate(base64.b64decode(token.text or ""))
    key: Any = certificate.public_key()
    if public_key is not None and key.public_numbers() != public_key.public_numbers():
        raise WsSecurityError("the envelope is signed with another key")
    method = _algorithm(signed_info, f"{{{DS}}}SignatureMethod") or ""
    value = base64.b64decode(signature.findtext(f"{{{DS}}}SignatureValue", "") or "")
    try:
        _verify(key, method, value, _c14n(signed_info))
    except InvalidSignature:
        raise WsSecurityError("the signature does not verify") from None
    expires = timestamp.findtext(f"{{{WSU}}}Expires", "")
    try:
        deadline = datetime.fromisoformat(expires.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise WsSecurityError("unreadable Timestamp/Expires") from None
    if (time.time() if now is None else now) > deadline:
        raise WsSecurityError("the timestamp has expired")
    return certificate


class WsSecurityPlugin(Plugin):
    """A zeep egress plugin that signs each outgoing envelope (see `sign_envelope`).

    Args:
        key: the hub's private key.
        certificate: its certificate, sent as the BinarySecurityToken.
        ttl: seconds until the timestamp expires.
        clock: epoch seconds.
    """

    def __init__(self, key: PrivateKey, certificate: x509.Certificate, *, ttl: int = 300,
                 clock: Callable[[], float] = time.time) -> None:
        self._key = key
        self._certificate = certificate
        self._ttl = ttl
        self._clock = clock
        self._template = _security_template(key, certificate)

    def egress(self, envelope: Any, http_headers: Any, operation: Any, binding_options: Any) -> tuple[Any, Any]:
        sign_envelope(envelope, self._key, self._certificate, now=self._clock(), ttl=self._ttl,
                      template=self._template)
        return envelope, http_headers
