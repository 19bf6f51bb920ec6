"""RUNTS: REST/JSON contract (third-sector body registration) and its adapter builder."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from adapters.base import AgencyAdapter
from adapters.rest import RestAgencyAdapter, RestContract
from adapters.soap import SCHEMAS_DIR

__all__ = ["RUNTS_CONTRACT", "build_runts_adapter"]

#: Protocol numbers look like `RUNTS-2026-0000123`; the receipt names the `numeroRepertorio`.
#: Operation names are the OpenAPI operationIds.
RUNTS_CONTRACT = RestContract(
    agency="runts",
    openapi=SCHEMAS_DIR / "agencies" / "runts" / "v1" / "openapi.yaml",
    operations=frozenset({"IscrizioneEnte"}),
)


def build_runts_adapter(
    *, endpoint: str, http: httpx.AsyncClient, fault_overrides: Mapping[str, str] | None = None
) -> AgencyAdapter:
    """Build the RUNTS adapter; `endpoint` is the base URL (`http://host:port`)."""
    return RestAgencyAdapter(
        RUNTS_CONTRACT, endpoint=endpoint, http=http, fault_overrides=fault_overrides
    )
