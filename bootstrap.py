"""The composition root: builds engines, HTTP clients, adapters, workers and the API from settings.

It only wires. Each component receives its slice of the settings as objects, never the
settings themselves. Secret files live in `security.secrets`, dependency probes in `probes`,
the CLI's reports in `cli.reports` and the loops that run what is built here in `runner`.
Tests build agencies through `build_adapter` and `build_agency_runtime`, as production does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from config.lease_budget import check_lease_budget
from config.settings import Settings
from domain.lockout import LockoutPolicy
from probes import readiness_check
from routing.routes import RouteTable, load_route_table
from schemas.filing import FilingValidator
from service.metrics import HubMetrics
from service.supervisor import Supervisor
from storage.connect import Engine, ping_store
from storage.engine import build_engine
from storage.migrate import upgrade_to_head
from storage.store import SqlStore
from wiring.rabbitmq import build_relay, dead_letters, job_source, uses_rabbitmq

# What only some processes need is imported where it is built: the relay never loads the
# adapters (zeep, xmlschema, aiohttp, httpx) nor the API (Starlette, Jinja, signxml), and a worker not
# the API (issue 13: <= 120 MiB per process). The names are for annotations here.
if TYPE_CHECKING:
    import httpx
    from starlette.applications import Starlette

    from adapters.factory import ContractSet
    from api.auth import RequestGuard
    from api.callbacks import CallbackGuard
    from api.ops.auth import OperatorGuard
    from api.readiness import ReadinessCheck
    from service.agency_runtime import AgencyRuntime, WorkerOptions
    from service.attachments import AttachmentService, BlobStore
    from service.delivery_port import AgencyAdapter
    from service.operators import OperatorAccounts
    from service.recipients import OutcomeReader
    from service.relay import OutboxRelay
    from service.worker import JobSource
    from storage.identity import SqlIdentityStore
    from adapters.factory import VersionedAdapter
    from security.modi import ModiSigner
    from transport.rabbitmq import RabbitJobSource


def build_adapter(contracts: ContractSet, name: str, **options: Any) -> VersionedAdapter:
    """`wiring.agencies.build_adapter` (its arguments), imported when a process builds adapters."""
    from wiring.agencies import build_adapter as build

    return build(contracts, name, **options)


def build_agency_runtime(settings: Settings, contracts: ContractSet, name: str, http: httpx.AsyncClient, *,
                         concurrency: int, public_url: str, blobs: BlobStore | None = None) -> AgencyRuntime:
    """`wiring.agencies.build_agency_runtime`, imported when a process builds agencies."""
    from wiring.agencies import build_agency_runtime as build

    return build(settings, contracts, name, http, concurrency=concurrency, public_url=public_url, blobs=blobs)


def portal_signer(settings: Settings, portal: str, *, clock: Callable[[], float] = time.time) -> ModiSigner:
    """`wiring.identity.portal_signer`: how the embedded portal `portal` signs its requests."""
    from wiring.identity import portal_signer as signer

    return signer(settings, portal, clock=clock)


__all__ = [
    "Hub",
    "WorkerSet",
    "api_metrics_for",
    "build_adapter",
    "build_agency_runtime",
    "build_api",
    "close_api",
    "build_hub",
    "checked_routes",
    "load_contracts",
    "migrated_engine",
    "operator_accounts",
    "outcome_readers",
    "portal_signer",
    "public_url",
    "readiness",
    "relay_for",
    "attachment_service",
    "blob_dir",
    "supervisor_for",
    "uses_rabbitmq",
    "worker_options",
]


@dataclass
class Hub:
    settings: Settings
    engine: Engine
    store: SqlStore
    routes: RouteTable
    validator: FilingValidator
    #: The portals' request guard; None in a process that serves no API (`build_hub(role=...)`).
    guard: RequestGuard | None
    identity: SqlIdentityStore
    #: The agency declarations, loaded on demand (config/agencies, docs/agencies-as-configuration.md).
    contracts: ContractSet | None = None
    clock: Callable[[], float] = time.time  # identity's clock: token expiry, lockout, delegations
    #: The delivery schedule's clock: outbox due times, backoff, circuits, maintenance windows.
    delivery_clock: Callable[[], float] = time.time
    #: Verifies agencies' callbacks with the credential each agency file declares.
    callbacks: CallbackGuard | None = None
    #: Operator accounts, tokens and console sessions, and the guard of `/v1/ops/...`
    #: (None: the operator API is off).
    operators: OperatorAccounts | None = None
    ops_guard: OperatorGuard | None = None

    def dispose(self) -> None:
        self.engine.dispose()


#: What a process builds (`build_hub(role=...)`): "all" (the API, possibly with workers, and
#: tests), "worker" (no API guards), "relay" (neither API guards nor agency contracts).
Role = Literal["all", "worker", "relay"]


def build_hub(
    settings: Settings, *, migrate: bool = True, clock: Callable[[], float] = time.time,
    delivery_clock: Callable[[], float] = time.time, role: Role = "all",
) -> Hub:
    """The store, routes and (as `role` needs them) contracts and API guards of one process.

    A worker builds no API guards; the relay neither those nor the agency contracts, so it
    never imports the adapters or the API (their modules are most of a process's memory).
    """
    # A lease shorter than the longest pass would hand a running job out again: refuse to start.
    check_lease_budget(settings, settings.agencies)
    engine = build_engine(
        settings.database.url,
        base_dir=settings.path("."),
        pool_size=settings.database.pool_size,
        echo=settings.database.echo,
        generic_plans=role == "worker" and settings.database.worker_generic_plans,
    )
    if migrate:
        upgrade_to_head(engine)
    routes = load_route_table(settings.path(settings.routes_file), settings.path(settings.mappings_dir))
    unknown = routes.agencies - settings.agencies.keys()
    if unknown:
        raise ValueError(f"routes name agencies with no configuration: {', '.join(sorted(unknown))}")
    validator = FilingValidator(max_bytes=settings.api.max_body_bytes, max_depth=settings.api.max_depth,
                                validators=settings.api.schema_validators)
    contracts = None
    if role != "relay":
        contracts = load_contracts(settings)
        # Every route's mapping, on the sample filings, must give a message its contract accepts:
        # a broken mapping stops the start, naming route, mapping file and violation.
        routes = checked_routes(settings, routes, contracts, validator)
    store = SqlStore(engine, clock=delivery_clock)
    from storage.identity import SqlIdentityStore

    identity = SqlIdentityStore(engine, store.writer)
    hub = Hub(settings=settings, engine=engine, store=store, routes=routes, validator=validator, guard=None,
              identity=identity, contracts=contracts, clock=clock, delivery_clock=delivery_clock)
    if role == "all":
        _guard_api(hub)
    return hub


def _guard_api(hub: Hub) -> None:
    """Give `hub` the API's guards: portals' requests, agencies' callbacks, operators."""
    from api.auth import RequestGuard
    from api.callbacks import CallbackGuard
    from api.modi import ModiVerifier
    from api.ops.auth import CookiePolicy, TokenOrSessionGuard
    from wiring.identity import callback_verifiers, portal_keys

    settings, clock = hub.settings, hub.clock
    ident = settings.identity
    hub.guard = RequestGuard(
        ModiVerifier(portal_keys(settings), ident.audience, max_lifetime=ident.max_token_seconds,
                     leeway=ident.leeway_seconds),
        hub.identity,
        clock=clock,
        policy=LockoutPolicy(threshold=ident.lockout_threshold, lock_seconds=ident.lockout_seconds,
                             window_seconds=ident.failure_window_seconds),
        leeway=ident.leeway_seconds,
    )
    hub.callbacks = CallbackGuard(callback_verifiers(settings, _contracts(hub)), hub.identity, clock=clock)
    hub.operators = operator_accounts(settings, hub.engine, hub.store.writer, clock=clock)
    ops = settings.operators
    hub.ops_guard = TokenOrSessionGuard(hub.operators, CookiePolicy(
        name=ops.cookie_name, secure=ops.cookie_secure, max_age=int(ops.session_absolute_seconds)))


def operator_accounts(settings: Settings, engine: Engine, writer: Callable[[], Any] | None = None, *,
                      clock: Callable[[], float] = time.time) -> OperatorAccounts:
    """Operator accounts on the store, with the `[operators]` policy (the API and `hub.py operators`)."""
    from service.operators import OperatorAccounts, OperatorPolicy
    from storage.operators import SqlOperatorStore

    ops = settings.operators
    policy = OperatorPolicy(
        session_idle_seconds=ops.session_idle_seconds, session_absolute_seconds=ops.session_absolute_seconds,
        lockout_threshold=ops.lockout_threshold, failure_window_seconds=ops.failure_window_seconds,
        lockout_seconds=ops.lockout_seconds, token_days=ops.token_days, max_token_days=ops.max_token_days,
        min_password_length=ops.min_password_length, totp_issuer=ops.totp_issuer,
    )
    return OperatorAccounts(SqlOperatorStore(engine, writer or SqlStore(engine).writer), policy, clock=clock)


def load_contracts(settings: Settings) -> ContractSet:
    """The agency declarations of `settings.agencies_dir` (documents load when first used)."""
    from adapters.contracts import load_agency_catalog
    from adapters.factory import ContractSet

    catalog = load_agency_catalog(settings.path(settings.agencies_dir), project_root=settings.path("."),
                                  external_dir=settings.path(settings.external_dir))
    return ContractSet(catalog)


def checked_routes(settings: Settings, routes: RouteTable, contracts: ContractSet,
                   validator: FilingValidator) -> RouteTable:
    """The routes with their contract versions resolved, once every route has mapped the
    sample filings into a message its contract accepts.

    Raises:
        ContractCheckFailed: naming each failing route, mapping file and violation.
    """
    from schemas.samples import load_sample_filings
    from service.contracts_check import ContractCheckFailed, check_routes, resolve_routes

    resolved = resolve_routes(routes, contracts)
    report = check_routes(resolved, contracts, load_sample_filings(settings.path(settings.samples_dir), validator))
    if not report.ok:
        raise ContractCheckFailed(report.problems)
    return resolved


def _contracts(hub: Hub) -> ContractSet:
    return hub.contracts or load_contracts(hub.settings)


@contextmanager
def migrated_engine(settings: Settings, *, pool_size: int = 10) -> Iterator[Engine]:
    """An engine on the configured store, migrated to head first (as every process does at start:
    a command may be the first to open a fresh database), disposed of afterwards."""
    engine = build_engine(settings.database.url, base_dir=settings.path("."), pool_size=pool_size)
    try:
        upgrade_to_head(engine)
        yield engine
    finally:
        engine.dispose()


def public_url(settings: Settings, host: str | None = None, port: int | None = None) -> str:
    """Where agencies reach the hub (their callbacks): configured, or the API's own address."""
    if settings.api.public_url:
        return settings.api.public_url.rstrip("/")
    return f"http://{host or settings.api.host}:{port or settings.api.port}"


def worker_options(settings: Settings) -> WorkerOptions:
    """How a worker process claims, commits and reports, from `[worker]` (and the transport)."""
    from service.agency_runtime import WorkerOptions

    w = settings.worker
    max_handouts = w.max_handouts
    if uses_rabbitmq(settings):
        # The broker dead-letters after `delivery_limit` returns; decide before it does.
        max_handouts = min(max_handouts, settings.transport.delivery_limit - 1)
    return WorkerOptions(batch_size=w.batch_size, commit_batch=w.commit_batch, commit_attempts=w.commit_attempts,
                         commit_gather=w.commit_gather_interval,
                         poll_interval=w.poll_interval, max_poll_interval=w.max_poll_interval,
                         max_handouts=max(1, max_handouts), pause_hold=w.pause_hold_seconds,
                         report_interval=settings.metrics.circuit_report_interval)


class WorkerSet:
    """The agencies, HTTP clients, job source, worker and notifier one worker process owns."""

    def __init__(self, hub: Hub, agencies: list[str] | None, concurrency: int | None = None,
                 callbacks_url: str | None = None, *, metrics: HubMetrics | None = None,
                 supervisor: Supervisor | None = None) -> None:
        from adapters.base import deliver_with_retries, poll_once
        from service.operations import PauseBoard
        from service.worker import DeliveryWorker
        from transport.embedded import EmbeddedQueue
        from wiring.agencies import agency_http_client
        from wiring.notifications import build_notifier

        names = agencies or sorted(hub.routes.agencies)
        s = hub.settings
        callbacks = callbacks_url or public_url(s)
        limits = {n: concurrency or s.agencies[n].concurrency for n in names}
        self.clients: list[httpx.AsyncClient] = []
        self.agencies: dict[str, AgencyRuntime] = {}
        from storage.blobs import FileBlobStore

        blobs = FileBlobStore(blob_dir(s))  # the attachments the messages list
        for name in names:
            client = agency_http_client(s.agencies[name], limits[name], s.http)
            self.clients.append(client)
            self.agencies[name] = build_agency_runtime(s, _contracts(hub), name, client, concurrency=limits[name],
                                                       public_url=callbacks, blobs=blobs)
        self.rabbit: RabbitJobSource | None = None
        source: JobSource
        if uses_rabbitmq(s):
            self.rabbit = source = job_source(s, hub.store, hub.routes.agencies,
                                              {n: s.agencies[n].prefetch or limits[n] for n in names})
        else:
            source = EmbeddedQueue(hub.store, lease_seconds=s.worker.lease_seconds)
        self.worker = DeliveryWorker(
            source=source,
            agencies=self.agencies,
            deliver=deliver_with_retries,
            options=worker_options(s),
            clock=hub.delivery_clock,
            poll=poll_once,
            report_circuit=lambda agency, snapshot, owner: asyncio.to_thread(
                hub.store.report_agency_status, agency, snapshot, owner),
            refresh_circuit=lambda agency, snapshot, owner: asyncio.to_thread(
                hub.store.report_agency_status, agency, snapshot, owner,
                refresh_after=s.metrics.circuit_stale_after),
            # Agencies paused by an operator (`/v1/ops/agencies/{agency}/pause`), from the store.
            pauses=PauseBoard(hub.store.paused_agencies, ttl=s.worker.pause_check_interval),
            metrics=metrics,
            heartbeat=(lambda: supervisor.beat("worker")) if supervisor is not None else None,
        )
        self.notifier, notifier_client = build_notifier(s, hub.store, hub.delivery_clock)
        self.clients.append(notifier_client)
        if self.rabbit is not None:
            self.rabbit.listen(self.worker.notify)

    @property
    def adapters(self) -> dict[str, AgencyAdapter]:
        """Each agency's adapter (the API reads late-outcome callbacks through them)."""
        return {name: runtime.adapter for name, runtime in self.agencies.items()}

    async def start(self, supervisor: Supervisor) -> None:
        if self.rabbit is not None:
            # It ends when `close` closes the source, after the worker drained.
            supervisor.watch("consumer", await self.rabbit.start(), ends_on_stop=False)

    async def close(self) -> None:
        # The worker has drained and committed by now: closing acknowledges what remains.
        if self.rabbit is not None:
            await self.rabbit.close()
        for runtime in self.agencies.values():
            await runtime.adapter.aclose()
        for client in self.clients:
            await client.aclose()


def supervisor_for(hub: Hub, stop: asyncio.Event) -> Supervisor:
    """The supervisor of one process's background tasks."""
    return Supervisor(stop, fail_for_tests=hub.settings.supervision.fail_task_for_tests)


def relay_for(hub: Hub) -> OutboxRelay:
    """The hub's outbox relay to RabbitMQ (`wiring.rabbitmq.build_relay`)."""
    return build_relay(hub.settings, hub.store, hub.routes.agencies)


def api_metrics_for(hub: Hub) -> HubMetrics:
    """The API process's metrics, with the hub-wide gauges read from the store."""
    from wiring.observability import api_metrics

    return api_metrics(hub.settings, hub.engine, sorted(hub.routes.agencies), hub.delivery_clock)


def readiness(hub: Hub, supervisor: Supervisor) -> ReadinessCheck:
    """What `/readyz` asks of this process: its supervisor, the store and (with RabbitMQ) the broker."""
    checks: dict[str, Callable[[], None]] = {"store": lambda: ping_store(hub.engine)}
    if uses_rabbitmq(hub.settings):
        from transport.rabbitmq import probe as probe_broker

        url = hub.settings.transport.url.get_secret_value()
        checks["broker"] = lambda: probe_broker(url)
    return readiness_check(supervisor, checks, timeout=hub.settings.api.readiness_timeout,
                           stall_after=hub.settings.supervision.stall_after)


def outcome_readers(hub: Hub, workers: WorkerSet | None) -> tuple[dict[str, OutcomeReader], httpx.AsyncClient | None]:
    """What reads agencies' callbacks in the API: the workers' adapters, or (API only) adapters
    built for reading, whose HTTP client (returned, for the caller to close) never sends anything."""
    from service.delivery_port import LateOutcomeAdapter
    from wiring.agencies import configured_adapter

    if workers is not None:
        return {name: adapter for name, adapter in workers.adapters.items()
                if isinstance(adapter, LateOutcomeAdapter)}, None
    from wiring.memory import client_sending_nothing

    client = client_sending_nothing("the API's outcome readers")
    readers: dict[str, OutcomeReader] = {name: configured_adapter(hub.settings, _contracts(hub), name, client)
                                         for name in sorted(hub.routes.agencies)}
    return readers, client


def build_api(hub: Hub, *, readers: Mapping[str, OutcomeReader], on_accepted: Callable[[], None],
              ready: ReadinessCheck, metrics: HubMetrics) -> Starlette:
    """The intake, status, callback and operator API over the hub's store.

    Raises:
        ValueError: `hub` was built without the API's guards (`build_hub(role=...)`).
    """
    from adapters.message_check import MessageChecker
    from api.admission import AdmissionLimits
    from service.drafts import DraftDesk, DraftPolicy
    from storage.drafts import SqlDrafts
    from api.app import create_app
    from api.context import ApiContext
    from storage.ops_queries import OpsQueries
    from storage.portal_desk import PortalDesk
    from wiring.observability import agency_health

    if hub.guard is None:
        raise ValueError("this hub was built without the API's guards: build it with role='all'")
    # The contracts checked at start-up, validators compiled: reused for every filing.
    checker = MessageChecker(_contracts(hub))
    drafts = DraftDesk(SqlDrafts(hub.engine, hub.store.writer), hub.store, hub.validator, hub.routes, hub.identity, checker,
                       DraftPolicy(ttl=timedelta(days=hub.settings.drafts.ttl_days),
                                   max_per_user=hub.settings.drafts.max_per_user))
    return create_app(
        ApiContext(
            store=hub.store,
            validator=hub.validator,
            routes=hub.routes,
            guard=hub.guard,
            identity=hub.identity,
            max_body_bytes=hub.settings.api.max_body_bytes,
            admission=AdmissionLimits(hub.settings.api.max_inflight_submissions, hub.settings.api.max_queue_wait_ms),
            intake_threads=hub.settings.api.threads,
            on_accepted=on_accepted,
            outcome_readers=readers,
            callbacks=hub.callbacks,
            message_check=checker,
            readiness=ready,
            operators=hub.operators,
            ops=OpsQueries(hub.engine, tuple(hub.settings.agencies)),
            desk=PortalDesk(hub.engine, hub.store.writer),
            ops_guard=hub.ops_guard,
            dead_letters=dead_letters(hub.settings, hub.routes.agencies),
            metrics=metrics,
            agency_health=agency_health(hub.settings, hub.engine, hub.store.agency_statuses,
                                        sorted(hub.routes.agencies), hub.delivery_clock),
            drafts=drafts,
            attachments=attachment_service(hub),
        )
    )


def close_api(app: Starlette) -> None:
    """End what `build_api`'s application started for itself, once its server has stopped."""
    from api.app import close_app

    close_app(app)


def blob_dir(settings: Settings) -> Path:
    """`[attachments] blob_dir`; by default `blobs/` beside the SQLite file, else under `data_dir`."""
    if settings.attachments.blob_dir:
        return settings.path(settings.attachments.blob_dir)
    url = settings.database.url
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        database = Path(url.removeprefix("sqlite:///").split("?", 1)[0])
        return (database if database.is_absolute() else settings.path(str(database))).parent / "blobs"
    return settings.path(settings.data_dir) / "blobs"


def attachment_service(hub: Hub) -> AttachmentService:
    """Uploads' metadata on the hub's store and the filesystem blob store."""
    from service.attachments import AttachmentLimits, AttachmentService
    from storage.attachments import SqlAttachmentStore
    from storage.blobs import FileBlobStore

    conf = hub.settings.attachments
    return AttachmentService(
        store=SqlAttachmentStore(hub.engine, hub.store.writer),
        blobs=FileBlobStore(blob_dir(hub.settings)),
        limits=AttachmentLimits(max_bytes=conf.max_bytes, media_types=frozenset(conf.media_types)),
        unreferenced_ttl=conf.unreferenced_ttl,
    )
