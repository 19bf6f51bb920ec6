"""INAIL: SOAP 1.1 contract (insurance position, PAT) and its adapter builder."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from adapters.base import AgencyAdapter
from adapters.soap import SCHEMAS_DIR, SoapAgencyAdapter, SoapContract

__all__ = ["INAIL_CONTRACT", "build_inail_adapter"]

_DIR = SCHEMAS_DIR / "agencies" / "inail" / "v1"

#: Protocol numbers look like `INAIL/2026/00001234`; the receipt names the `numeroPAT`.
INAIL_CONTRACT = SoapContract(
    agency="inail",
    wsdl=_DIR / "inail.wsdl",
    xsd=_DIR / "inail.xsd",
    binding="{urn:crocevia:agency:inail:v1}InailBinding",
    soap_version="1.1",
    operations=frozenset({"AperturaPAT"}),
)


def build_inail_adapter(
    *, endpoint: str, http: httpx.AsyncClient, fault_overrides: Mapping[str, str] | None = None
) -> AgencyAdapter:
    """Build the INAIL adapter over the hub's HTTP client (the contract is loaded once)."""
    return SoapAgencyAdapter(
        INAIL_CONTRACT, endpoint=endpoint, http=http, fault_overrides=fault_overrides
    )
