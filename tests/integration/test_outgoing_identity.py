"""Outgoing identity: what the adapters send carries the signature the agency's profile asks for.

The real simulators answer (they do not check signatures); an httpx request hook keeps what
left the hub so the test verifies it with the hub's public key.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from adapters.factory import ContractSet
from api.modi import ModiVerifier, PortalKey
from bootstrap import build_adapter
from security.keys import ensure_self_signed_certificate, generate_private_key
from security.modi import ModiSigner
from security.wssecurity import WsSecurityPlugin, verify_envelope
from tests.integration.test_adapters import _endpoint, build_message
from tests.external import repository_catalog


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


async def _deliver(sims: Any, agency: str, signer: Any) -> httpx.Request:
    sent: list[httpx.Request] = []

    async def keep(request: httpx.Request) -> None:
        sent.append(request)

    async with httpx.AsyncClient(timeout=5.0, event_hooks={"request": [keep]}, trust_env=False) as http:
        adapter = build_adapter(ContractSet(repository_catalog()), agency, endpoint=_endpoint(sims, agency), http=http,
                                fault_overrides={}, signer=signer)
        receipt = await adapter.deliver(build_message(agency))
    assert receipt.protocol_number
    return sent[-1]


@pytest.mark.anyio
@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
async def test_a_soap_agency_receives_a_ws_security_signed_envelope(sims, tmp_path, algorithm: str) -> None:  # type: ignore[no-untyped-def]
    """INPS's profile: the envelope that left verifies with the hub's key, Body and Timestamp covered."""
    key = generate_private_key(algorithm)
    certificate = ensure_self_signed_certificate(tmp_path / "hub.crt", key, "crocevia")
    request = await _deliver(sims, "inps", WsSecurityPlugin(key, certificate, ttl=60))
    assert verify_envelope(request.content, key.public_key()).subject.rfc4514_string() == "CN=crocevia"


@pytest.mark.anyio
async def test_a_rest_agency_receives_modi_signed_requests(sims) -> None:  # type: ignore[no-untyped-def]
    """RUNTS's profile: ID_AUTH_REST_02 bearer, Digest and Agid-JWT-Signature over the body."""
    key = generate_private_key("ES256")
    signer = ModiSigner(issuer="crocevia", private_key=key, audience="runts")
    request = await _deliver(sims, "runts", signer)
    agency_side = ModiVerifier({"crocevia": PortalKey("crocevia", key.public_key(), "ES256")}, "runts")
    verified = agency_side.verify(request.headers, request.content, time.time(), require_user=False)
    assert verified.portal == "crocevia" and request.headers["digest"].startswith("SHA-256=")
