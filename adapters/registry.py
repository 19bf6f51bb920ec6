"""Which builder makes each agency's adapter, keyed by the agency's config name.

The builders come from the agency declarations (`config/agencies/*.toml`, see
docs/agencies-as-configuration.md): no agency has a module of its own any more, because none
differs from the others beyond what its declaration says. `bootstrap` builds adapters from
the catalog it loads with the configured paths; `ADAPTER_BUILDERS` and `build_adapter` read
the default catalog, for tools and tests.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx

from service.delivery_port import AgencyAdapter
from adapters.contracts import default_catalog
from adapters.factory import build_agency_adapter

__all__ = ["ADAPTER_BUILDERS", "AdapterBuilder", "build_adapter", "default_catalog"]

#: Every builder takes `endpoint=`, `http=`, `fault_overrides=`, `signer=` (the agency's
#: outgoing identity, or None) and `reply_to=` (the hub's callback address for the agency's
#: late outcomes, or None) as keywords.
AdapterBuilder = Callable[..., AgencyAdapter]


class _Builders(Mapping[str, AdapterBuilder]):
    """Agency name → builder, read from the default catalog when first looked at."""

    def _names(self) -> list[str]:
        return sorted(default_catalog().agencies)

    def __getitem__(self, agency: str) -> AdapterBuilder:
        spec = default_catalog().agencies[agency]

        def build(*, endpoint: str, http: httpx.AsyncClient,
                  fault_overrides: Mapping[str, str] | None = None, **options: Any) -> AgencyAdapter:
            return build_agency_adapter(spec, endpoint=endpoint, http=http,
                                        fault_overrides=fault_overrides, **options)

        return build

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())


#: Agency name (the key under `[agencies.*]` in config) → adapter builder.
ADAPTER_BUILDERS: Mapping[str, AdapterBuilder] = _Builders()


def build_adapter(
    agency: str,
    *,
    endpoint: str,
    http: httpx.AsyncClient,
    fault_overrides: Mapping[str, str] | None = None,
    signer: Any = None,
    reply_to: str | None = None,
) -> AgencyAdapter:
    """Build the adapter of `agency` from the default catalog.

    Raises:
        KeyError: no agency file declares `agency`.
    """
    try:
        builder = ADAPTER_BUILDERS[agency]
    except KeyError:
        raise KeyError(f"no adapter for agency {agency!r}; known: {sorted(ADAPTER_BUILDERS)}") from None
    return builder(endpoint=endpoint, http=http, fault_overrides=fault_overrides or {}, signer=signer,
                   reply_to=reply_to)
