"""Adapters built from the agency declarations, and the set of loaded contracts.

Every agency gets one adapter that holds one per-version adapter for each declared contract
version and sends each message with the version it was planned with (`contract_version`,
stored with the delivery), so filings planned before a new version went live finish on the
old one. The built-in agencies and any agency added as configuration go through the same
code: SOAP contracts through `SoapAgencyAdapter` over `adapters.wsdl`, REST ones through
`RestAgencyAdapter` over `adapters.openapi`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from adapters.base import ErrorContext
from adapters.contracts import AgencyCatalog, AgencySpec, ContractError, ContractSpec
from adapters.openapi import OpenApiContract, load_openapi_contract
from adapters.rest import RestAgencyAdapter
from adapters.soap import SoapAgencyAdapter
from adapters.wsdl import WsdlContract, load_wsdl_contract
from domain.errors import AdapterMisconfigured
from domain.messages import OutgoingMessage, Receipt
from service.delivery_port import AgencyAdapter

__all__ = [
    "ContractSet",
    "VersionedAdapter",
    "build_agency_adapter",
    "build_contract_adapter",
    "load_contract",
]


def load_contract(spec: ContractSpec) -> WsdlContract | OpenApiContract:
    """The loaded contract (cached per process).

    Raises:
        ContractError: naming the agency file, the document and what is wrong.
    """
    if spec.kind == "soap":
        return load_wsdl_contract(spec)
    return load_openapi_contract(spec)


def _timeout(spec: ContractSpec, http: httpx.AsyncClient) -> httpx.Timeout | None:
    if spec.connect_timeout is None and spec.read_timeout is None:
        return None
    base = http.timeout
    return httpx.Timeout(
        connect=spec.connect_timeout or base.connect,
        read=spec.read_timeout or base.read,
        write=base.write,
        pool=base.pool,
    )


def build_contract_adapter(
    spec: ContractSpec,
    *,
    endpoint: str,
    http: httpx.AsyncClient,
    fault_overrides: Mapping[str, str] | None = None,
    **options: Any,
) -> AgencyAdapter:
    """The adapter of one contract version.

    Args:
        spec: the declaration.
        endpoint: where this version is served.
        http: the agency's client (timeouts, pool); the contract's own timeouts win.
        fault_overrides: the agency settings' overrides (they win over the contract's).
        options: passed to the adapter (`signer`, `reply_to`, ...).

    Raises:
        ContractError: the contract does not load.
    """
    contract = load_contract(spec)
    cls: Any = SoapAgencyAdapter if isinstance(contract, WsdlContract) else RestAgencyAdapter
    if spec.kind == "soap" and spec.pattern != "blocking":
        from adapters.nonblocking import SoapNonBlockingAdapter

        cls = SoapNonBlockingAdapter
    return cls(contract, endpoint=endpoint, http=http, fault_overrides=fault_overrides,
               timeout=_timeout(spec, http), **options)


class VersionedAdapter:
    """One agency's adapter: each message goes out with its planned contract version.

    Args:
        agency: the agency's declaration.
        adapters: version → adapter, one per declared version.
    """

    def __init__(self, agency: AgencySpec, adapters: Mapping[str, AgencyAdapter]) -> None:
        self.agency = agency.name
        self.current = agency.current
        self.adapters = dict(adapters)

    def __repr__(self) -> str:
        return f"VersionedAdapter({self.agency!r}, versions={sorted(self.adapters)})"

    def for_version(self, version: str | None, operation: str = "",
                    delivery_id: str = "") -> Any:
        """The adapter of `version` (None: the current one).

        Raises:
            AdapterMisconfigured: the version is no longer (or not yet) declared.
        """
        chosen = version or self.current
        try:
            return self.adapters[chosen]
        except KeyError:
            raise ErrorContext(self.agency, operation, delivery_id).build(
                AdapterMisconfigured,
                f"contract version {chosen!r} is not declared for {self.agency} (declared: "
                f"{sorted(self.adapters)}); keep a version declared while filings use it",
                code="UNKNOWN_CONTRACT_VERSION",
            )

    def _of(self, message: OutgoingMessage) -> Any:
        return self.for_version(getattr(message, "contract_version", None), message.operation,
                                message.delivery_id)

    async def deliver(self, message: OutgoingMessage) -> Receipt:
        """Deliver with the message's contract version (see `AgencyAdapter.deliver`)."""
        return await self._of(message).deliver(message)

    async def poll(self, message: OutgoingMessage, poll_url: str) -> Receipt:
        """Poll a late outcome with the message's contract version (NONBLOCK_PULL)."""
        return await self._of(message).poll(message, poll_url)

    def read_result(self, operation: str, content_type: str, body: bytes, message_id: str,
                    contract_version: str | None = None) -> Receipt:
        """Read a callback's result (NONBLOCK_PUSH) with the delivery's contract version."""
        return self.for_version(contract_version, operation).read_result(
            operation, content_type, body, message_id)

    def __getattr__(self, name: str) -> Any:
        # Anything else an adapter offers is the current version's.
        if name.startswith("_") or name in ("adapters", "current", "agency"):
            raise AttributeError(name)
        return getattr(self.adapters[self.current], name)

    async def aclose(self) -> None:
        for adapter in self.adapters.values():
            await adapter.aclose()


def build_agency_adapter(
    agency: AgencySpec,
    *,
    endpoint: str,
    http: httpx.AsyncClient,
    fault_overrides: Mapping[str, str] | None = None,
    endpoints: Mapping[str, str] | None = None,
    **options: Any,
) -> VersionedAdapter:
    """The adapter of `agency`, speaking every declared version.

    Each version's endpoint is, in order: `endpoints[version]` (settings), the contract's own
    `endpoint`, then `endpoint` (the agency's).

    Raises:
        ContractError: a declared contract does not load.
    """
    adapters = {}
    for version, spec in agency.contracts.items():
        where = (endpoints or {}).get(version) or spec.endpoint or endpoint
        adapters[version] = build_contract_adapter(
            spec, endpoint=where, http=http, fault_overrides=fault_overrides, **options
        )
    return VersionedAdapter(agency, adapters)


class ContractSet:
    """The declared contracts, loaded on demand, with what the checks need.

    Args:
        catalog: the agency declarations.
    """

    def __init__(self, catalog: AgencyCatalog) -> None:
        self.catalog = catalog

    def spec(self, agency: str, version: str | None = None) -> ContractSpec:
        """Raises: ContractError (unknown agency or version)."""
        return self.catalog.contract(agency, version)

    def load(self, spec: ContractSpec) -> WsdlContract | OpenApiContract:
        """Raises: ContractError."""
        return load_contract(spec)

    def resolve_operation(self, spec: ContractSpec, operation: str) -> None:
        """Raises: ContractError naming the file and the operation when it is not there."""
        contract = self.load(spec)
        contract.operation(operation)

    def build_message(self, spec: ContractSpec, message: OutgoingMessage) -> bytes:
        """Serialize and schema-validate `message` exactly as the adapter would, without
        sending it.

        Raises:
            ContractError: the contract or operation cannot be used.
            DeliveryError: the message fails the contract (MessageRejectedAsInvalid).
        """
        contract = self.load(spec)
        ctx = ErrorContext(spec.agency, message.operation, message.delivery_id)
        if isinstance(contract, WsdlContract):
            contract.operation(message.operation)
            return contract.serialize(message.operation, message.content, ctx)
        return contract.serialize(message.operation, message.content, ctx)

    def documents(self) -> list[tuple[ContractSpec, ContractError | None]]:
        """Every declared contract with the error loading it raised, if any."""
        found: list[tuple[ContractSpec, ContractError | None]] = []
        for spec in self.catalog.all_contracts():
            try:
                self.load(spec)
                found.append((spec, None))
            except ContractError as exc:
                found.append((spec, exc))
        return found
