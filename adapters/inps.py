"""INPS: SOAP 1.2 contract (employer registration, DURC, DiResCo) and its adapter builder."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from adapters.base import AgencyAdapter
from adapters.soap import SCHEMAS_DIR, SoapAgencyAdapter, SoapContract

__all__ = ["INPS_CONTRACT", "build_inps_adapter"]

_DIR = SCHEMAS_DIR / "agencies" / "inps" / "v1"

#: Protocol numbers look like `INPS.0001.2026.0000123` (docs/agency-contracts.md).
INPS_CONTRACT = SoapContract(
    agency="inps",
    wsdl=_DIR / "inps.wsdl",
    xsd=_DIR / "inps.xsd",
    binding="{urn:crocevia:agency:inps:v1}InpsBinding",
    soap_version="1.2",
    operations=frozenset({"IscrizioneAzienda", "RichiestaDurc", "DichiarazioneResponsabilita"}),
)


def build_inps_adapter(
    *, endpoint: str, http: httpx.AsyncClient, fault_overrides: Mapping[str, str] | None = None
) -> AgencyAdapter:
    """Build the INPS adapter over the hub's HTTP client (the contract is loaded once)."""
    return SoapAgencyAdapter(
        INPS_CONTRACT, endpoint=endpoint, http=http, fault_overrides=fault_overrides
    )
