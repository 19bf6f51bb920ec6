"""The intake's reused objects refuse what they refused before.

The verifier parses each token's unverified part once; the identity store, the filing store
and the audit trail run statements built once and reused across requests, engines and
dialects. Each test drives one object through several calls in a row, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone

import jwt
import pytest
from sqlalchemy import select

from api.modi import ModiRefused, ModiVerifier, PortalKey
from domain.identity import AuthMethod, User
from domain.lockout import LockoutPolicy
from routing.plan import PlannedDelivery
from security.keys import generate_private_key
from security.modi import ModiSigner
from service.identity import AuditEntry
from service.ports import NewFiling
from storage.audit import append_audit, verify_audit_chain
from storage.engine import build_engine
from storage.identity import SqlIdentityStore
from storage.migrate import upgrade_to_head
from storage.store import SqlStore
from storage.tables import audit_log, filings

NOW = 1_900_000_000.0
USER = User("CMPNNA80E59D612B", AuthMethod.SPID, 2, idp="https://idp.example", location="10.0.0.7")
BODY = b"<filing/>"
KEY = generate_private_key("ES256")
OTHER = generate_private_key("ES256")


def _verifier() -> ModiVerifier:
    return ModiVerifier({"portal": PortalKey("portal", KEY.public_key(), "ES256"),
                         "other": PortalKey("other", OTHER.public_key(), "ES256")}, "crocevia")


def _headers(key=KEY, issuer: str = "portal") -> dict[str, str]:  # type: ignore[no-untyped-def]
    signer = ModiSigner(issuer=issuer, private_key=key, audience="crocevia", clock=lambda: NOW)
    headers = signer.headers(body=BODY, content_type="application/xml", user=USER)
    return {k.lower(): v for k, v in {**headers, "Content-Type": "application/xml"}.items()}


def _swap_header(token: str, header: bytes) -> str:
    _, payload, signature = token.split(".")
    return ".".join([base64.urlsafe_b64encode(header).rstrip(b"=").decode(), payload, signature])


def test_one_verifier_keeps_refusing_between_good_requests() -> None:
    """Refusals interleaved with good requests on one verifier: nothing carries over."""
    verifier = _verifier()
    assert verifier.verify(_headers(), BODY, NOW).portal == "portal"
    # Another registered portal's key under this portal's name.
    with pytest.raises(ModiRefused) as forged:
        verifier.verify(_headers(OTHER), BODY, NOW)
    assert forged.value.slug == "invalid-token" and forged.value.portal == "portal"
    assert verifier.verify(_headers(OTHER, "other"), BODY, NOW).portal == "other"
    # A header that is not JSON: no claimed portal, so "not from a registered portal".
    broken = _headers()
    broken["authorization"] = "Bearer " + _swap_header(broken["authorization"][7:], b"{not json")
    with pytest.raises(ModiRefused) as caught:
        verifier.verify(broken, BODY, NOW)
    assert caught.value.slug == "invalid-token" and caught.value.portal is None
    # A header naming another algorithm than the portal's.
    wrong_alg = _headers()
    wrong_alg["authorization"] = "Bearer " + _swap_header(
        wrong_alg["authorization"][7:], b'{"alg":"HS256","typ":"JWT"}')
    with pytest.raises(ModiRefused) as caught:
        verifier.verify(wrong_alg, BODY, NOW)
    assert "must be signed with ES256" in caught.value.detail
    # The integrity token of another registered portal does not cover this portal's request.
    mixed = _headers()
    mixed["agid-jwt-signature"] = _headers(OTHER, "other")["agid-jwt-signature"]
    with pytest.raises(ModiRefused) as caught:
        verifier.verify(mixed, BODY, NOW)
    # Verified with the key of the portal that signed the Authorization token: it does not
    # verify, and the answer says so (the other portal is registered, so not "unknown portal").
    assert caught.value.slug == "invalid-token" and "not from a registered portal" not in caught.value.detail
    assert "with the key of 'portal'" in caught.value.detail and caught.value.token == "Agid-JWT-Signature"
    assert verifier.verify(_headers(), BODY, NOW).user == USER
    assert verifier.claimed_portal(_headers()["authorization"][7:]) == "portal"
    assert verifier.claimed_portal(jwt.encode({"iss": "nobody"}, "k" * 32, algorithm="HS256")) is None


def test_the_portals_other_tokens_are_refused_as_the_authorization_token_is() -> None:
    """The integrity and tracking tokens, verified with the portal's key in one parse, give the
    refusals of the reading that names their faults."""
    verifier = _verifier()
    wrong_alg = _headers()
    wrong_alg["agid-jwt-signature"] = _swap_header(wrong_alg["agid-jwt-signature"], b'{"alg":"RS256","typ":"JWT"}')
    with pytest.raises(ModiRefused) as caught:
        verifier.verify(wrong_alg, BODY, NOW)
    assert "Agid-JWT-Signature must be signed with ES256 (header alg is 'RS256')" == caught.value.detail
    not_jws = _headers()
    not_jws["agid-jwt-trackingevidence"] = "not.a-token"
    with pytest.raises(ModiRefused) as caught:
        verifier.verify(not_jws, BODY, NOW)
    assert caught.value.slug == "invalid-token" and caught.value.token == "Agid-JWT-TrackingEvidence"
    assert "is not a compact JWS" in caught.value.detail
    # Signed with this portal's key but naming the other portal: verified, then refused for `iss`.
    signer = ModiSigner(issuer="other", private_key=KEY, audience="crocevia", clock=lambda: NOW)
    renamed = _headers()
    renamed["agid-jwt-signature"] = signer.headers(body=BODY, content_type="application/xml",
                                                   user=USER)["Agid-JWT-Signature"]
    with pytest.raises(ModiRefused) as caught:
        verifier.verify(renamed, BODY, NOW)
    assert (caught.value.slug, caught.value.claim, caught.value.verified) == ("signature-claim-invalid", "iss", True)
    expired = _headers()
    with pytest.raises(ModiRefused) as caught:
        verifier.verify(expired, BODY, NOW + 3600)
    assert caught.value.slug == "token-expired" and caught.value.token == "Authorization"
    assert verifier.verify(_headers(), BODY, NOW).user == USER


def test_admit_refuses_replays_and_lockouts_call_after_call(database_url: str) -> None:
    engine = build_engine(database_url)
    upgrade_to_head(engine)
    store = SqlStore(engine)
    identity = SqlIdentityStore(engine, store.writer)
    try:
        assert identity.admit("portal:p", "p", "jti-00000001", NOW + 60, NOW).outcome == "ok"
        assert identity.admit("portal:p", "p", "jti-00000001", NOW + 60, NOW + 1).outcome == "replayed"
        assert identity.admit("portal:q", "q", "jti-00000001", NOW + 60, NOW + 1).outcome == "ok"
        policy = LockoutPolicy(threshold=2, lock_seconds=300, window_seconds=600)
        entry = AuditEntry(actor="portal:p", action="authentication_failed", subject="",
                           outcome="invalid-token", detail={})
        identity.record_failure("portal:p", NOW + 2, policy, entry)
        # One failure, then a good request clears the count.
        assert identity.admit("portal:p", "p", "jti-00000002", NOW + 60, NOW + 3).outcome == "ok"
        for t in (4, 5):
            identity.record_failure("portal:p", NOW + t, policy, entry)
        locked = identity.admit("portal:p", "p", "jti-00000003", NOW + 60, NOW + 6)
        assert locked.outcome == "locked" and locked.locked_until is not None
        assert identity.admit("portal:p", "p", "jti-00000003", NOW + 900, NOW + 400).outcome == "ok"
        # Purged ids (expired long ago) may be seen again; recent ones may not.
        assert identity.admit("portal:p", "p", "jti-00000004", NOW + 500, NOW + 401).outcome == "ok"
        assert identity.admit("portal:p", "p", "jti-00000004", NOW + 500, NOW + 402).outcome == "replayed"
        assert verify_audit_chain(engine).ok
    finally:
        engine.dispose()


def _filing(n: int, viewers: tuple[str, ...] = ()) -> NewFiling:
    return NewFiling(
        kind="durc_request", portal="portal", subject_tax_code="01234567890", subject_name=f"Acme {n}",
        declarant_tax_code="CMPNNA80E59D612B", declarant_role="legal_representative",
        document=b"<filing/>", digest=f"{n:064x}", received_at=datetime(2026, 5, 1, tzinfo=timezone.utc),
        idempotency_key=None, request_digest=None, filed_by="CMPNNA80E59D612B",
        responsible_tax_code=None, authorization=None if n % 2 else {"basis": "self"},
        viewers=viewers, auth_context={"portal": "portal", "jti": f"jti-{n:08d}"},
    )


def _plan(reference: str) -> list[PlannedDelivery]:
    return [PlannedDelivery(delivery_id=f"d-{reference}", agency="inps", operation="durc",
                            message_id=f"m-{reference}", content={"reference": reference})]


def test_one_store_accepts_filing_after_filing_with_its_own_reference(database_url: str) -> None:
    """The reused INSERT/UPDATE statements give each filing its own id, reference and audit line."""
    engine = build_engine(database_url)
    upgrade_to_head(engine)
    store = SqlStore(engine)
    try:
        accepted = [store.accept_filing(_filing(n, ("CMPNNA80E59D612B",)), _plan) for n in range(4)]
        references = [a.reference for a in accepted]
        assert len(set(references)) == 4 and all(r.startswith("CRV-2026-") for r in references)
        with engine.connect() as conn:
            rows = conn.execute(select(filings.c.reference, filings.c.subject_name, filings.c.authorization)
                                .order_by(filings.c.id)).all()
            lines = conn.execute(select(audit_log.c.subject).order_by(audit_log.c.id)).scalars().all()
        assert [r.reference for r in rows] == references
        assert [r.subject_name for r in rows] == [f"Acme {n}" for n in range(4)]
        assert [r.authorization for r in rows] == [{"basis": "self"}, None, {"basis": "self"}, None]
        assert lines == references
        assert verify_audit_chain(engine).ok
    finally:
        engine.dispose()


def test_the_shared_audit_statements_chain_on_two_engines_at_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Module-level statements are compiled per engine: two databases keep two chains."""
    engines = [build_engine(f"sqlite:///{tmp_path / f'{name}.db'}") for name in ("a", "b")]
    try:
        for engine in engines:
            upgrade_to_head(engine)
        for n in range(3):
            for i, engine in enumerate(engines):
                with engine.begin() as conn:
                    append_audit(conn, actor=f"portal:{i}", action="test", subject=str(n), outcome="ok",
                                 detail=None if n == 1 else {"n": n, "tuple": (1, 2)})
        for engine in engines:
            result = verify_audit_chain(engine)
            assert result.ok and result.checked == 3
    finally:
        for engine in engines:
            engine.dispose()
