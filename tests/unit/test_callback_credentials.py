"""The checks of an agency's callback credential that need no server (api.callbacks): WS-Security
envelopes shaped to slip past them, and ModI tokens that cover too little."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import pytest
from lxml import etree

from api.callbacks import CallbackGuard, CallbackRefused, ModiCallbackVerifier, WssCallbackVerifier
from security.callbacks import CallbackSigner, load_callback_keys
from security.wssecurity import WSU, sign_envelope

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
ENVELOPE = (f'<env:Envelope xmlns:env="{SOAP12}"><env:Body><r:esito xmlns:r="urn:x">ACCOLTA</r:esito>'
            '</env:Body></env:Envelope>').encode()


@pytest.fixture
def keys(tmp_path: Path):  # type: ignore[no-untyped-def]
    return load_callback_keys(tmp_path / "a.pem", tmp_path / "a.crt", "acme callbacks")


def _wss(keys) -> WssCallbackVerifier:  # type: ignore[no-untyped-def]
    return WssCallbackVerifier(keys[1], max_lifetime=300, leeway=30)


def _signed(keys, now: float | None = None) -> etree._Element:  # type: ignore[no-untyped-def]
    root = etree.fromstring(ENVELOPE)
    return sign_envelope(root, keys[0], keys[1], now=now)


def test_a_signed_envelope_verifies_once_per_signature(keys) -> None:  # type: ignore[no-untyped-def]
    """The agency's signature verifies; the token id is its SignatureValue, so a re-signed
    envelope is a new token and the same one is a replay."""
    first = _wss(keys).verify({}, etree.tostring(_signed(keys)), time.time())
    second = _wss(keys).verify({}, etree.tostring(_signed(keys)), time.time())
    assert first.token_id != second.token_id

    class Memory:
        seen: set[str] = set()

        def remember_token(self, issuer: str, jti: str, keep_until: float, now: float) -> bool:
            if jti in self.seen:
                return False
            self.seen.add(jti)
            return True

    guard = CallbackGuard({"acme": _wss(keys)}, Memory(), clock=time.time)
    body = etree.tostring(_signed(keys))
    guard.authenticate("acme", {}, body)
    with pytest.raises(CallbackRefused, match="already used"):
        guard.authenticate("acme", {}, body)
    with pytest.raises(CallbackRefused, match="declares no callback credential"):
        guard.authenticate("other", {}, body)


def test_a_wrapped_body_is_refused(keys) -> None:  # type: ignore[no-untyped-def]
    """Signature wrapping: the signed Body moved into the header under its id, a new Body in
    its place. The reference still resolves, so the id must name the envelope's own Body once."""
    root = _signed(keys)
    body = root.find(f"{{{SOAP12}}}Body")
    assert body is not None
    root.find(f"{{{SOAP12}}}Header").append(copy.deepcopy(body))  # type: ignore[union-attr]
    body[0].text = "RESPINTA"
    with pytest.raises(CallbackRefused, match="cover the Body"):
        _wss(keys).verify({}, etree.tostring(root), time.time())


def test_a_signature_that_leaves_out_the_timestamp_is_refused(keys) -> None:  # type: ignore[no-untyped-def]
    """A Timestamp the signature does not cover could be refreshed by anyone."""
    root = _signed(keys)
    timestamp = next(root.iter(f"{{{WSU}}}Timestamp"))
    timestamp.set(f"{{{WSU}}}Id", "TS-elsewhere")
    with pytest.raises(CallbackRefused, match="cover the Body and the Timestamp"):
        _wss(keys).verify({}, etree.tostring(root), time.time())


@pytest.mark.parametrize(("offset", "message"), [(-3600, "expired"), (600, "in the future")])
def test_a_stale_or_future_timestamp_is_refused(keys, offset: float, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CallbackRefused, match=message):
        _wss(keys).verify({}, etree.tostring(_signed(keys, now=time.time() + offset)), time.time())


def test_what_is_no_signed_envelope_is_refused(keys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CallbackRefused, match="not XML"):
        _wss(keys).verify({}, b'{"esito": "ACCOLTA"}', time.time())
    with pytest.raises(CallbackRefused, match="no wsse:Security header"):
        _wss(keys).verify({}, ENVELOPE, time.time())


def test_a_modi_callback_must_sign_a_body_and_its_correlation_id(keys) -> None:  # type: ignore[no-untyped-def]
    """No body: nothing to sign. A correlation id outside signed_headers: refused."""
    verifier = ModiCallbackVerifier("acme", keys[0].public_key(), "crocevia", max_lifetime=300, leeway=30)
    signer = CallbackSigner("modi", keys[0], keys[1], issuer="acme", audience="crocevia")
    body = b'{"esito":"ACCOLTA"}'
    _, headers = signer.sign(body, "application/json", "c-1")
    sent = {k.lower(): v for k, v in headers.items()} | {"content-type": "application/json",
                                                          "x-correlation-id": "c-1"}
    assert verifier.verify(sent, body, time.time()).token_id
    with pytest.raises(CallbackRefused, match="signed body"):
        verifier.verify(sent, b"", time.time())
    with pytest.raises(CallbackRefused) as refused:
        verifier.verify(sent | {"x-correlation-id": "c-2"}, body, time.time())
    assert refused.value.slug == "correlation-id-unsigned"


def test_production_registers_a_certificate_or_a_public_key(keys, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Without `private_key` nothing is generated: the configured file is read as it is."""
    from security.callbacks import load_callback_credential
    from security.keys import public_pem

    (tmp_path / "agency.pub").write_bytes(public_pem(keys[0]))
    certificate, public = load_callback_credential(tmp_path / "agency.pub", None, "acme")
    assert certificate is None and public_pem(public) == public_pem(keys[0])
    certificate, public = load_callback_credential(tmp_path / "a.crt", None, "acme")
    assert certificate == keys[1]
    with pytest.raises(FileNotFoundError):
        load_callback_credential(tmp_path / "missing.crt", None, "acme")
    assert not (tmp_path / "missing.crt").exists()
