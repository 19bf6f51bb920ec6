"""One agency from its settings and declaration: its HTTP client, adapter and run-time policies.

Production workers and tests build agencies through the same two functions, `build_adapter`
and `build_agency_runtime`, so a test exercises the adapter production would send with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from adapters.deadline import DeadlineTransport
from adapters.factory import ContractSet, VersionedAdapter, build_agency_adapter
from adapters.http_transport import OutgoingClient, AiohttpTransport
from config.settings import AgencySettings, HttpSettings, Settings
from service.agency_runtime import AgencyRuntime
from service.attachments import BlobStore
from service.delivery_port import RetryPolicy
from service.circuit import CircuitBreaker
from service.maintenance import MaintenanceCalendar, MaintenanceWindow
from service.schedule import LateOutcomePolicy, SchedulePolicy
from wiring.identity import agency_signer

__all__ = ["agency_http_client", "build_adapter", "build_agency_runtime", "calendar", "configured_adapter",
           "outgoing_client", "outgoing_transport"]


def build_adapter(contracts: ContractSet, name: str, *, endpoint: str, http: httpx.AsyncClient,
                  endpoints: Mapping[str, str] | None = None, fault_overrides: Mapping[str, str] | None = None,
                  signer: Any = None, reply_to: str | None = None,
                  blobs: BlobStore | None = None) -> VersionedAdapter:
    """The adapter of agency `name`, speaking every contract version its file declares.

    Args:
        contracts: the loaded agency declarations (`bootstrap.load_contracts`).
        endpoint: the agency's address; `endpoints` maps a contract version to its own.
        http: the agency's client (timeouts, pool, deadline).
        fault_overrides: fault code → "transient" or "permanent", winning over the contract's.
        signer: the agency's outgoing identity (`wiring.identity.agency_signer`), or None.
        reply_to: the hub's callback address for the agency's late outcomes, or None.
        blobs: the blob store the attachments a message lists are streamed from, or None.

    Raises:
        KeyError: no agency file declares `name`.
    """
    return build_agency_adapter(contracts.catalog.agency(name), endpoint=endpoint, endpoints=endpoints, http=http,
                                fault_overrides=fault_overrides or {}, signer=signer, reply_to=reply_to,
                                blobs=blobs)


def configured_adapter(settings: Settings, contracts: ContractSet, name: str, http: httpx.AsyncClient, *,
                       signer: Any = None, reply_to: str | None = None,
                       blobs: BlobStore | None = None) -> VersionedAdapter:
    """`build_adapter` at the endpoints and fault overrides `[agencies.NAME]` configures."""
    conf = settings.agencies[name]
    return build_adapter(contracts, name, endpoint=conf.endpoint, endpoints=conf.endpoints, http=http,
                         fault_overrides=conf.fault_overrides, signer=signer, reply_to=reply_to, blobs=blobs)


def build_agency_runtime(settings: Settings, contracts: ContractSet, name: str, http: httpx.AsyncClient, *,
                         concurrency: int, public_url: str, blobs: BlobStore | None = None) -> AgencyRuntime:
    """Agency `name` as a worker runs it: its adapter (on `http`, signing as its profile asks,
    late outcomes called back under `public_url`, attachments read from `blobs`) and its
    policies from `[agencies.NAME]`."""
    conf = settings.agencies[name]
    adapter = configured_adapter(settings, contracts, name, http, signer=agency_signer(settings, name, conf),
                                 reply_to=f"{public_url}/v1/callbacks/{name}", blobs=blobs)
    r, s, late, c = conf.retry, conf.schedule, conf.late, conf.circuit
    return AgencyRuntime(
        name=name,
        adapter=adapter,
        retry=RetryPolicy(attempts=r.attempts, initial_wait=r.initial_wait, max_wait=r.max_wait, jitter=r.jitter),
        schedule=SchedulePolicy(initial_delay=s.initial_delay, max_delay=s.max_delay, jitter=s.jitter,
                                max_rounds=s.max_rounds, max_age_seconds=s.max_age_seconds),
        concurrency=concurrency,
        late=LateOutcomePolicy(poll_initial=late.poll_initial, poll_max=late.poll_max,
                               callback_timeout=late.callback_timeout, max_wait_seconds=late.max_wait_seconds),
        breaker=CircuitBreaker(failure_threshold=c.failure_threshold, cool_down=c.cool_down,
                               probe_wait=c.probe_wait),
        maintenance=calendar(conf),
    )


def calendar(conf: AgencySettings) -> MaintenanceCalendar:
    """The agency's maintenance windows (`[[agencies.NAME.maintenance]]`)."""
    return MaintenanceCalendar(MaintenanceWindow.parse(w.days, w.start, w.end, w.tz) for w in conf.maintenance)


def outgoing_transport(http: HttpSettings, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """The transport of a client the hub calls out with (an agency's, the portals' callbacks'),
    as `[http] pool` says, bounded by the client's `limits`."""
    if http.pool == "aiohttp":
        return AiohttpTransport(limits=limits, max_body=http.max_body_bytes)
    # An AsyncClient given a transport passes its own `limits` nowhere: they go here, or httpcore
    # keeps its defaults (100 connections, 20 kept alive) whatever the agency's concurrency.
    return httpx.AsyncHTTPTransport(limits=limits, retries=0, http2=False)


def outgoing_client(http: HttpSettings, size: int, timeout: httpx.Timeout, deadline: float) -> OutgoingClient:
    """A client the hub calls out with: `size` connections on the transport of `[http] pool`,
    each call ended at `deadline` whichever transport speaks HTTP, and on aiohttp the direct
    path that skips httpx's client for plain calls."""
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    inner = outgoing_transport(http, limits)
    return OutgoingClient(
        direct=inner if isinstance(inner, AiohttpTransport) else None,
        deadline=deadline,
        timeout=timeout,
        limits=limits,
        transport=DeadlineTransport(inner, deadline),
        trust_env=False,
    )


def agency_http_client(conf: AgencySettings, concurrency: int | None = None,
                       http: HttpSettings | None = None) -> httpx.AsyncClient:
    """The agency's own client: its timeouts, a pool as large as its concurrency, its deadline."""
    return outgoing_client(http or HttpSettings(), concurrency or conf.concurrency,
                           httpx.Timeout(conf.read_timeout, connect=conf.connect_timeout), conf.call_deadline)
