"""CCIAA / Registro Imprese: SOAP 1.1 contract (business registration) and its adapter builder."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from adapters.base import AgencyAdapter
from adapters.soap import SCHEMAS_DIR, SoapAgencyAdapter, SoapContract

__all__ = ["CCIAA_CONTRACT", "build_cciaa_adapter"]

_DIR = SCHEMAS_DIR / "agencies" / "cciaa" / "v1"

#: Protocol numbers look like `RM/RI/2026/000123`; the receipt names the `numeroREA`.
CCIAA_CONTRACT = SoapContract(
    agency="cciaa",
    wsdl=_DIR / "cciaa.wsdl",
    xsd=_DIR / "cciaa.xsd",
    binding="{urn:crocevia:agency:cciaa:v1}RegistroImpreseBinding",
    soap_version="1.1",
    operations=frozenset({"IscrizioneImpresa"}),
)


def build_cciaa_adapter(
    *, endpoint: str, http: httpx.AsyncClient, fault_overrides: Mapping[str, str] | None = None
) -> AgencyAdapter:
    """Build the Registro Imprese adapter over the hub's HTTP client."""
    return SoapAgencyAdapter(
        CCIAA_CONTRACT, endpoint=endpoint, http=http, fault_overrides=fault_overrides
    )
