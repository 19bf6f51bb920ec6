"""ModI request signing and verification, and WS-Security envelopes, without a server."""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from lxml import etree

from api.modi import ModiRefused, ModiVerifier, PortalKey
from domain.identity import AuthMethod, User
from security.keys import generate_private_key
from security.modi import DIGEST_HEADER, SIGNATURE_HEADER, TRACKING_HEADER, ModiSigner
from security.wssecurity import WsSecurityError, sign_envelope, verify_envelope

NOW = 1_900_000_000.0
USER = User("CMPNNA80E59D612B", AuthMethod.SPID, 2, idp="https://idp.example", location="10.0.0.7")
BODY = b"<filing/>"


@pytest.fixture(scope="module", params=["ES256", "RS256"])
def key(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return generate_private_key(request.param)


def _verifier(key) -> ModiVerifier:  # type: ignore[no-untyped-def]
    signer = _signer(key)
    return ModiVerifier({"portal": PortalKey("portal", key.public_key(), signer.algorithm)}, "crocevia")


def _signer(key, **kw) -> ModiSigner:  # type: ignore[no-untyped-def]
    return ModiSigner(issuer="portal", private_key=key, audience=kw.pop("audience", "crocevia"),
                      clock=kw.pop("clock", lambda: NOW), **kw)


def _headers(key, body: bytes = BODY, **kw) -> dict[str, str]:  # type: ignore[no-untyped-def]
    headers = _signer(key, **kw).headers(body=body, content_type="application/xml", user=USER)
    return {k.lower(): v for k, v in {**headers, "Content-Type": "application/xml"}.items()}


def _refusal(key, headers: dict[str, str], body: bytes = BODY) -> ModiRefused:  # type: ignore[no-untyped-def]
    with pytest.raises(ModiRefused) as caught:
        _verifier(key).verify(headers, body, NOW)
    return caught.value


def test_a_signed_request_names_the_portal_and_the_user(key) -> None:  # type: ignore[no-untyped-def]
    """All three tokens verify; the user comes back with method, level, idp and location."""
    verified = _verifier(key).verify(_headers(key), BODY, NOW)
    assert verified.portal == "portal" and verified.user == USER and len(verified.jti) >= 8


def test_a_token_signed_by_another_key_is_invalid(key) -> None:  # type: ignore[no-untyped-def]
    """Same issuer, another key: the signature does not verify."""
    forged = _headers(generate_private_key(_signer(key).algorithm))
    refusal = _refusal(key, forged)
    assert refusal.slug == "invalid-token" and refusal.portal == "portal"


def test_an_unsigned_token_is_refused(key) -> None:  # type: ignore[no-untyped-def]
    """`alg: none` is never accepted."""
    headers = _headers(key)
    claims = jwt.decode(headers["authorization"][7:], options={"verify_signature": False})
    headers["authorization"] = "Bearer " + jwt.encode(claims, None, algorithm="none")
    assert _refusal(key, headers).slug == "invalid-token"


@pytest.mark.parametrize(
    ("options", "slug"),
    [
        ({"clock": lambda: NOW - 600}, "token-expired"),
        ({"audience": "someone-else"}, "wrong-audience"),
        ({"lifetime": 3600}, "invalid-token"),
        ({"clock": lambda: NOW + 600}, "invalid-token"),
    ],
    ids=["expired", "wrong-audience", "too-long", "future"],
)
def test_time_and_audience_are_checked(key, options, slug) -> None:  # type: ignore[no-untyped-def]
    """exp short and in the future, iat not in the future, aud the hub's."""
    assert _refusal(key, _headers(key, **options)).slug == slug


def test_a_body_changed_after_signing_is_refused(key) -> None:  # type: ignore[no-untyped-def]
    """The Digest no longer matches the body."""
    assert _refusal(key, _headers(key), body=b"<filing>changed</filing>").slug == "digest-mismatch"


def test_a_digest_rewritten_to_match_a_new_body_breaks_the_signed_headers(key) -> None:  # type: ignore[no-untyped-def]
    """An attacker who recomputes the Digest cannot re-sign Agid-JWT-Signature."""
    from security.modi import body_digest

    headers = _headers(key)
    changed = b"<filing>changed</filing>"
    headers[DIGEST_HEADER.lower()] = body_digest(changed)
    assert _refusal(key, headers, body=changed).slug == "digest-mismatch"


def test_the_content_type_must_be_the_signed_one(key) -> None:  # type: ignore[no-untyped-def]
    """signed_headers covers the content type too."""
    headers = _headers(key)
    headers["content-type"] = "application/json"
    refusal = _refusal(key, headers)
    assert refusal.slug == "signature-claim-invalid" and refusal.claim == "signed_headers"


def test_the_integrity_token_is_required_with_a_body(key) -> None:  # type: ignore[no-untyped-def]
    """INTEGRITY_REST_01: Digest and Agid-JWT-Signature travel with every body."""
    headers = _headers(key)
    del headers[SIGNATURE_HEADER.lower()]
    assert _refusal(key, headers).slug == "signature-missing"


def test_tracking_evidence_is_required_and_bound_to_the_request(key) -> None:  # type: ignore[no-untyped-def]
    """Missing, or lifted from another request: both refused."""
    headers = _headers(key)
    other = _headers(key)
    missing = {k: v for k, v in headers.items() if k != TRACKING_HEADER.lower()}
    assert _refusal(key, missing).slug == "tracking-evidence-missing"
    swapped = {**headers, TRACKING_HEADER.lower(): other[TRACKING_HEADER.lower()]}
    assert _refusal(key, swapped).slug == "tracking-evidence-unbound"


def test_a_get_without_a_body_needs_no_integrity_token(key) -> None:  # type: ignore[no-untyped-def]
    """No payload, no Digest: only the ID_AUTH and tracking tokens."""
    headers = {k.lower(): v for k, v in _signer(key).headers(user=USER).items()}
    assert DIGEST_HEADER.lower() not in headers
    assert _verifier(key).verify(headers, b"", NOW).user == USER


# -- WS-Security ----------------------------------------------------------------------------------


def _certificate(key) -> x509.Certificate:  # type: ignore[no-untyped-def]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crocevia")])
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))


_ENVELOPE = (b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>'
             b'<ns0:RichiestaDurc xmlns:ns0="urn:crocevia:agency:inps:v1"><ns0:x>1</ns0:x>'
             b'</ns0:RichiestaDurc></s:Body></s:Envelope>')


def _signed(key) -> bytes:  # type: ignore[no-untyped-def]
    envelope = sign_envelope(etree.fromstring(_ENVELOPE), key, _certificate(key), ttl=300)
    return etree.tostring(envelope, encoding="utf-8", xml_declaration=True)


def test_a_signed_envelope_verifies_with_the_public_key(key) -> None:  # type: ignore[no-untyped-def]
    """Timestamp, token and signature over Body and Timestamp, checked after a round trip."""
    data = _signed(key)
    assert verify_envelope(data, key.public_key()).subject.rfc4514_string() == "CN=crocevia"
    root = etree.fromstring(data)
    assert root.find(".//{*}Security/{*}Timestamp/{*}Expires") is not None


@pytest.mark.parametrize(
    "tamper",
    [lambda d: d.replace(b">1<", b">2<"), lambda d: d.replace(b"<wsu:Expires>2", b"<wsu:Expires>3")],
    ids=["body", "timestamp"],
)
def test_a_changed_envelope_fails_verification(key, tamper) -> None:  # type: ignore[no-untyped-def]
    """Any change to the Body or the Timestamp after signing is found."""
    with pytest.raises(WsSecurityError):
        verify_envelope(tamper(_signed(key)), key.public_key())


def test_an_envelope_signed_by_another_key_is_refused(key) -> None:  # type: ignore[no-untyped-def]
    """The expected public key must be the signer's."""
    with pytest.raises(WsSecurityError, match="another key"):
        verify_envelope(_signed(key), generate_private_key("ES256").public_key())


def test_an_expired_timestamp_is_refused(key) -> None:  # type: ignore[no-untyped-def]
    """Past wsu:Expires the envelope is stale."""
    with pytest.raises(WsSecurityError, match="expired"):
        verify_envelope(_signed(key), key.public_key(), now=dt.datetime.now().timestamp() + 3600)


@pytest.mark.skipif(shutil.which("xmlsec1") is None, reason="xmlsec1 (Debian package xmlsec1) is not installed")
def test_an_independent_implementation_verifies_our_envelopes(key, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """xmlsec1 accepts the signature over Body and Timestamp (ids declared for it in a DTD)."""
    from security.keys import public_pem

    ids = ("<!DOCTYPE s:Envelope [<!ATTLIST s:Body wsu:Id ID #IMPLIED>"
           "<!ATTLIST wsu:Timestamp wsu:Id ID #IMPLIED>]>\n")
    document = _signed(key).decode().replace("?>\n", "?>\n" + ids, 1)
    (tmp_path / "envelope.xml").write_text(document)
    (tmp_path / "key.pem").write_bytes(public_pem(key))
    run = subprocess.run(["xmlsec1", "--verify", "--pubkey-pem", str(tmp_path / "key.pem"),
                          str(tmp_path / "envelope.xml")], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and "SignedInfo References (ok/all): 2/2" in run.stderr, run.stderr


def test_tokens_are_standard_jws_and_new_on_every_call(key) -> None:  # type: ignore[no-untyped-def]
    """Header and claims encode as any JWT library writes them (RS256 is deterministic, so the
    whole token matches); every call makes new tokens: a fresh jti, iat from the clock."""
    times = iter([NOW, NOW + 5])
    signer = _signer(key, clock=lambda: next(times), kid="hub-1")
    calls = [signer.headers(body=BODY, content_type="application/xml") for _ in range(2)]
    seen = []
    for number, headers in enumerate(calls):
        for name in ("Authorization", SIGNATURE_HEADER):
            token = headers[name].removeprefix("Bearer ")
            claims = jwt.decode(token, key.public_key(), algorithms=[signer.algorithm],
                                audience="crocevia", options={"verify_exp": False,
                                                              "verify_nbf": False, "verify_iat": False})
            assert jwt.get_unverified_header(token) == {"alg": signer.algorithm, "kid": "hub-1", "typ": "JWT"}
            again = jwt.encode(claims, key, algorithm=signer.algorithm, headers={"kid": "hub-1"})
            assert token.split(".")[:2] == again.split(".")[:2]
            assert token == again or signer.algorithm == "ES256"  # ECDSA signatures are randomised
            assert claims["iat"] == claims["nbf"] == int(NOW) + 5 * number
            seen.append(claims["jti"])
    assert len(set(seen)) == 4


def test_a_kept_template_signs_each_envelope_anew(key, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The plugin copies its Security template, never changes it: each envelope gets its own
    ids, times and signature, and each verifies (with xmlsec1 too, when installed)."""
    from security.keys import public_pem
    from security.wssecurity import WSU, WsSecurityPlugin

    plugin = WsSecurityPlugin(key, _certificate(key), ttl=300)
    signed = [plugin.egress(etree.fromstring(_ENVELOPE), {}, "RichiestaDurc", {})[0] for _ in range(3)]
    ids = {envelope.find(f".//{{{WSU}}}Timestamp").get(f"{{{WSU}}}Id") for envelope in signed}
    assert len(ids) == 3
    assert plugin._template.find(f"{{{WSU}}}Timestamp").get(f"{{{WSU}}}Id") == ""
    for envelope in signed:
        verify_envelope(etree.tostring(envelope), key.public_key())
    if shutil.which("xmlsec1") is None:
        return
    ids_dtd = ("<!DOCTYPE s:Envelope [<!ATTLIST s:Body wsu:Id ID #IMPLIED>"
               "<!ATTLIST wsu:Timestamp wsu:Id ID #IMPLIED>]>\n")
    document = etree.tostring(signed[-1], encoding="utf-8", xml_declaration=True).decode()
    (tmp_path / "envelope.xml").write_text(document.replace("?>\n", "?>\n" + ids_dtd, 1))
    (tmp_path / "key.pem").write_bytes(public_pem(key))
    run = subprocess.run(["xmlsec1", "--verify", "--pubkey-pem", str(tmp_path / "key.pem"),
                          str(tmp_path / "envelope.xml")], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and "SignedInfo References (ok/all): 2/2" in run.stderr, run.stderr
