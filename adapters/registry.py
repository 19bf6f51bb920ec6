"""Which builder makes each agency's adapter, keyed by the agency's config name."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx

from adapters.base import AgencyAdapter
from adapters.cciaa import build_cciaa_adapter
from adapters.inail import build_inail_adapter
from adapters.inps import build_inps_adapter
from adapters.runts import build_runts_adapter

__all__ = ["ADAPTER_BUILDERS", "AdapterBuilder", "build_adapter"]

#: Every builder takes `endpoint=`, `http=` and `fault_overrides=` as keywords.
AdapterBuilder = Callable[..., AgencyAdapter]

#: Agency name (the key under `[agencies.*]` in config) → adapter builder.
ADAPTER_BUILDERS: dict[str, AdapterBuilder] = {
    "inps": build_inps_adapter,
    "inail": build_inail_adapter,
    "cciaa": build_cciaa_adapter,
    "runts": build_runts_adapter,
}


def build_adapter(
    agency: str,
    *,
    endpoint: str,
    http: httpx.AsyncClient,
    fault_overrides: Mapping[str, str] | None = None,
) -> AgencyAdapter:
    """Build the adapter of `agency`.

    Raises:
        KeyError: no adapter is known for `agency`.
    """
    try:
        builder = ADAPTER_BUILDERS[agency]
    except KeyError:
        raise KeyError(f"no adapter for agency {agency!r}; known: {sorted(ADAPTER_BUILDERS)}") from None
    return builder(endpoint=endpoint, http=http, fault_overrides=fault_overrides or {})
