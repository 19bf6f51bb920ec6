"""The ModI recipe claim by claim, over real HTTP: each required claim of each token, left out,
is answered 401 naming the token and the claim (docs/modi-recipe.md); never "not from a
registered portal" for a portal that is registered. Runs on SQLite and PostgreSQL.

The tokens are built here with PyJWT from the recipe, not with the project's signer, so that
the test proves the recipe as written.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from config.settings import PROJECT_ROOT
from storage.tables import audit_log, filings
from tests.conftest import _postgres_schema_url
from tests.support import _PORTAL_KEYS, AUDIENCE, RunningHub, hub_settings

DOCUMENT = (PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples" / "durc_request.xml").read_bytes()
ANNA = "CMPNNA80E59D612B"  # the declarant and legal representative of durc_request.xml
AUTH, SIGNATURE, TRACKING = "Authorization", "Agid-JWT-Signature", "Agid-JWT-TrackingEvidence"
PREFIX = {AUTH: "authorization", SIGNATURE: "signature", TRACKING: "tracking-evidence"}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hub(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        simulators: Any) -> Iterator[RunningHub]:
    """One hub for every case; the lockout threshold raised so that the many refusals of one
    portal and user in a row are each judged on their own claims."""
    if request.param == "sqlite":
        urls: Iterator[str] = iter([f"sqlite:///{tmp_path_factory.mktemp('db') / 'crocevia.db'}"])
    else:
        urls = _postgres_schema_url()
    url = next(urls)
    try:
        settings = hub_settings(url, {agency: simulators.soap_endpoint(agency) for agency in simulators.urls})
        settings = settings.model_copy(update={"identity": settings.identity.model_copy(
            update={"lockout_threshold": 1000})})
        with RunningHub(settings) as running:
            yield running
    finally:
        next(urls, None)  # runs the PostgreSQL schema's clean-up


def _token(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, _PORTAL_KEYS["test"], algorithm="ES256", headers={"typ": "JWT"})


def _headers(drop: tuple[str, str] | None = None, change: tuple[str, str, Any] | None = None) -> dict[str, str]:
    """The recipe's headers for DOCUMENT, without the claim `drop` = (token, claim), or with
    `change` = (token, claim, value)."""
    now = int(time.time())
    base = {"iss": "test", "sub": "test", "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 60}
    digest = "SHA-256=" + base64.b64encode(hashlib.sha256(DOCUMENT).digest()).decode()
    claims = {
        TRACKING: {**base, "jti": uuid.uuid4().hex, "userID": f"TINIT-{ANNA}", "userLocation": "10.0.0.7",
                   "LoA": "SpidL2", "authMethod": "SPID", "idp": "https://demo.spid.example/idp"},
        SIGNATURE: {**base, "jti": uuid.uuid4().hex,
                    "signed_headers": [{"digest": digest}, {"content-type": "application/xml"}]},
        AUTH: {**base, "jti": uuid.uuid4().hex},
    }
    for token, claim_set in claims.items():
        if drop and drop[0] == token:
            claim_set.pop(drop[1], None)
        if change and change[0] == token:
            claim_set[change[1]] = change[2]
    tracking = _token(claims[TRACKING])
    if drop != (AUTH, "digest") and "digest" not in claims[AUTH]:
        claims[AUTH]["digest"] = {"alg": "SHA256", "value": hashlib.sha256(tracking.encode()).hexdigest()}
    return {"Content-Type": "application/xml", "Digest": digest, SIGNATURE: _token(claims[SIGNATURE]),
            TRACKING: tracking, AUTH: "Bearer " + _token(claims[AUTH])}


def _post(hub: RunningHub, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{hub.base_url}/v1/filings", content=DOCUMENT, headers=headers, trust_env=False,
                      timeout=10.0)


REQUIRED = [(AUTH, c) for c in ("iss", "aud", "iat", "exp", "jti", "digest")] + \
    [(SIGNATURE, c) for c in ("iss", "aud", "iat", "exp", "signed_headers")] + \
    [(TRACKING, c) for c in ("iss", "aud", "iat", "exp", "userID", "userLocation", "LoA")]


def test_the_recipe_as_documented_is_accepted(hub: RunningHub) -> None:
    """The control: every documented claim present, the filing is accepted (202)."""
    response = _post(hub, _headers())
    assert response.status_code == 202, response.text
    assert response.json()["reference"].startswith("CRV-")


@pytest.mark.parametrize(("token", "claim"), REQUIRED, ids=[f"{PREFIX[t]}-{c}" for t, c in REQUIRED])
def test_each_missing_claim_is_named(hub: RunningHub, token: str, claim: str) -> None:
    """A request whose token lacks one required claim: 401 `<token>-claim-missing` naming the
    token and the claim, nothing stored, one audit line."""
    stored, audited = hub.count(filings), hub.count(audit_log)
    response = _post(hub, _headers(drop=(token, claim)))
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == f"urn:crocevia:problem:{PREFIX[token]}-claim-missing"
    assert (problem["token"], problem["claim"]) == (token, claim)
    assert f"{token} lacks claim '{claim}'" in problem["detail"]
    assert "registered portal" not in problem["detail"]
    assert hub.count(filings) == stored and hub.count(audit_log) == audited + 1


WRONG = [
    (TRACKING, "iss", "other", "tracking-evidence-claim-invalid"),
    (SIGNATURE, "iss", "other", "signature-claim-invalid"),
    (TRACKING, "userID", "TINIT-NOTATAXCODE", "tracking-evidence-claim-invalid"),
    (TRACKING, "LoA", "gold", "tracking-evidence-claim-invalid"),
    (TRACKING, "userLocation", " ", "tracking-evidence-claim-invalid"),
    (AUTH, "jti", "short", "authorization-claim-invalid"),
    (TRACKING, "sub", 42, "tracking-evidence-claim-invalid"),
    (AUTH, "iat", "now", "authorization-claim-invalid"),
    (AUTH, "aud", "another-hub", "wrong-audience"),
    (SIGNATURE, "signed_headers", [{"content-type": "application/xml"}], "signature-claim-invalid"),
    (AUTH, "exp", "tomorrow", "authorization-claim-invalid"),
    (AUTH, "digest", {"alg": "SHA256", "value": "0" * 64}, "tracking-evidence-unbound"),
]


@pytest.mark.parametrize(("token", "claim", "value", "slug"), WRONG,
                         ids=[f"{PREFIX[t]}-{c}-{s}" for t, c, _, s in WRONG])
def test_each_wrong_claim_is_named(hub: RunningHub, token: str, claim: str, value: Any, slug: str) -> None:
    """A claim present but wrong: 401 with the token and the claim named (another registered
    portal's name in `iss` is a wrong claim, not an unknown portal)."""
    response = _post(hub, _headers(change=(token, claim, value)))
    assert response.status_code == 401, response.text
    problem = response.json()
    assert problem["type"] == f"urn:crocevia:problem:{slug}"
    assert (problem["token"], problem["claim"]) == (token, claim)
    assert claim in problem["detail"] and "registered portal" not in problem["detail"]


def test_an_unknown_issuer_is_still_told_so(hub: RunningHub) -> None:
    """Only an issuer the hub does not know is "not from a registered portal"."""
    response = _post(hub, _headers(change=(AUTH, "iss", "nobody")))
    problem = response.json()
    assert response.status_code == 401 and problem["type"] == "urn:crocevia:problem:invalid-token"
    assert "not from a registered portal" in problem["detail"] and problem["claim"] == "iss"
