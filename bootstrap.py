"""The only place that builds engines, HTTP clients, adapters and workers from settings.

Everything below receives objects, never the settings themselves.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog
from sqlalchemy import Engine

from adapters.base import RetryPolicy, deliver_with_retries, poll_once
from adapters.contracts import load_agency_catalog
from adapters.deadline import DeadlineTransport
from adapters.factory import ContractSet, build_agency_adapter
from adapters.message_check import MessageChecker
from adapters.http_pool import KeepAliveTransport
from adapters.webhook import WebhookSender, WebhookTarget
from api.app import create_app
from api.context import ApiContext
from api.auth import RequestGuard
from api.ops.auth import CookiePolicy, OperatorGuard, TokenOrSessionGuard
from api.callbacks import CallbackGuard, CallbackVerifier, ModiCallbackVerifier, WssCallbackVerifier
from api.modi import ModiVerifier, PortalKey
from config.lease_budget import check_lease_budget
from api.readiness import ReadinessCheck
from api.server import ServerLimits, server_config
from config.settings import AgencySettings, HttpSettings, Settings
from domain.lockout import LockoutPolicy
from routing.routes import RouteTable, load_route_table
from schemas.filing import FilingValidator
from service.agency_health import AgencyHealthFeed
from service.circuit import CircuitBreaker
from service.maintenance import MaintenanceCalendar, MaintenanceWindow
from service.metrics import HubMetrics, StoreGaugeCollector
from service.notifier import EventNotifier
from service.operators import OperatorAccounts, OperatorPolicy
from service.operations import PauseBoard
from service.schedule import LateOutcomePolicy, SchedulePolicy
from service.supervisor import Supervisor
from service.worker import DeliveryWorker
from security.callbacks import load_callback_credential
from security.keys import algorithm_of, ensure_private_key, ensure_self_signed_certificate, load_public_key
from security.modi import ModiSigner
from security.wssecurity import WsSecurityPlugin
from storage.engine import build_engine
from storage.identity import SqlIdentityStore
from storage.migrate import upgrade_to_head
from storage.operators import SqlOperatorStore
from storage.ops_queries import OpsQueries
from storage.store import SqlStore
from transport.embedded import EmbeddedQueue

__all__ = [
    "Hub",
    "build_hub",
    "build_hub_when_ready",
    "check_dependencies",
    "portal_callback_secret",
    "portal_signer",
    "run_api_and_workers",
    "run_relay",
    "run_relay_process",
    "run_workers",
]

log = structlog.get_logger("crocevia.bootstrap")


@dataclass
class Hub:
    settings: Settings
    engine: Engine
    store: SqlStore
    routes: RouteTable
    validator: FilingValidator
    guard: RequestGuard
    identity: SqlIdentityStore
    _closers: list[Any] = field(default_factory=list)
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


def portal_signer(settings: Settings, portal: str, *, clock: Callable[[], float] = time.time) -> ModiSigner:
    """How the embedded portal `portal` signs its requests (the demo, `hub.py submit`): with
    its private key file, generated on first run beside the database."""
    conf = settings.portals[portal]
    if conf.private_key_file is None:
        raise KeyError(f"portal {portal!r} has no private key file here (production portals sign "
                       "their own requests; the hub holds only their public key)")
    key = ensure_private_key(settings.path(conf.private_key_file), conf.algorithm)
    return ModiSigner(issuer=portal, private_key=key, audience=settings.identity.audience, clock=clock)


def _portal_keys(settings: Settings) -> dict[str, PortalKey]:
    keys: dict[str, PortalKey] = {}
    for portal, conf in settings.portals.items():
        if conf.public_key:
            public = load_public_key(conf.public_key.encode())
        elif conf.public_key_file:
            public = load_public_key(settings.path(conf.public_key_file).read_bytes())
        elif conf.private_key_file:
            public = ensure_private_key(settings.path(conf.private_key_file), conf.algorithm).public_key()
        else:
            raise ValueError(f"portal {portal!r} registers no public key")
        algorithm = algorithm_of(public)
        if algorithm != conf.algorithm and not conf.private_key_file:
            raise ValueError(f"portal {portal!r}: its key signs {algorithm}, the configuration says {conf.algorithm}")
        keys[portal] = PortalKey(portal=portal, public_key=public, algorithm=algorithm)
    return keys


def _agency_signer(settings: Settings, name: str, conf: AgencySettings) -> Any:
    """The outgoing identity an agency's profile asks for (config `[agencies.NAME.identity]`)."""
    profile = conf.identity.profile
    if profile == "none":
        return None
    ident = settings.identity
    key = ensure_private_key(settings.path(ident.signing_key_file), ident.signing_algorithm)
    if profile == "wss":
        certificate = ensure_self_signed_certificate(settings.path(ident.signing_certificate_file), key,
                                                     ident.issuer)
        return WsSecurityPlugin(key, certificate, ttl=conf.identity.ttl_seconds)
    if profile == "modi":
        return ModiSigner(issuer=ident.issuer, private_key=key,
                          audience=conf.identity.audience or conf.endpoint, lifetime=conf.identity.ttl_seconds)
    raise ValueError(f"agency {name!r}: unknown identity profile {profile!r} (none, modi or wss)")


def build_hub(
    settings: Settings, *, migrate: bool = True, clock: Callable[[], float] = time.time,
    delivery_clock: Callable[[], float] = time.time,
) -> Hub:
    # A lease shorter than the longest pass would hand a running job out again: refuse to start.
    check_lease_budget(settings, settings.agencies)
    engine = build_engine(
        settings.database.url,
        base_dir=settings.path("."),
        pool_size=settings.database.pool_size,
        echo=settings.database.echo,
    )
    if migrate:
        upgrade_to_head(engine)
    routes = load_route_table(settings.path(settings.routes_file), settings.path(settings.mappings_dir))
    unknown = routes.agencies - settings.agencies.keys()
    if unknown:
        raise ValueError(f"routes name agencies with no configuration: {', '.join(sorted(unknown))}")
    validator = FilingValidator(max_bytes=settings.api.max_body_bytes, max_depth=settings.api.max_depth)
    contracts = load_contracts(settings)
    # Every route's mapping, on the sample filings, must give a message its contract accepts:
    # a broken mapping stops the start, naming route, mapping file and violation.
    routes = checked_routes(settings, routes, contracts, validator)
    store = SqlStore(engine, clock=delivery_clock)
    identity = SqlIdentityStore(engine, store.writer)
    ident = settings.identity
    guard = RequestGuard(
        ModiVerifier(_portal_keys(settings), ident.audience, max_lifetime=ident.max_token_seconds,
                     leeway=ident.leeway_seconds),
        identity,
        clock=clock,
        policy=LockoutPolicy(threshold=ident.lockout_threshold, lock_seconds=ident.lockout_seconds,
                             window_seconds=ident.failure_window_seconds),
        leeway=ident.leeway_seconds,
    )
    callbacks = CallbackGuard(callback_verifiers(settings, contracts), identity, clock=clock)
    operators = operator_accounts(settings, engine, store.writer, clock=clock)
    ops = settings.operators
    ops_guard = TokenOrSessionGuard(operators, CookiePolicy(
        name=ops.cookie_name, secure=ops.cookie_secure, max_age=int(ops.session_absolute_seconds)))
    return Hub(
        settings=settings,
        engine=engine,
        store=store,
        routes=routes,
        validator=validator,
        guard=guard,
        identity=identity,
        contracts=contracts,
        clock=clock,
        delivery_clock=delivery_clock,
        callbacks=callbacks,
        operators=operators,
        ops_guard=ops_guard,
    )


def operator_accounts(settings: Settings, engine: Engine, writer: Callable[[], Any] | None = None, *,
                      clock: Callable[[], float] = time.time) -> OperatorAccounts:
    """Operator accounts on the store, with the `[operators]` policy (the API and `hub.py operators`)."""
    ops = settings.operators
    policy = OperatorPolicy(
        session_idle_seconds=ops.session_idle_seconds, session_absolute_seconds=ops.session_absolute_seconds,
        lockout_threshold=ops.lockout_threshold, failure_window_seconds=ops.failure_window_seconds,
        lockout_seconds=ops.lockout_seconds, token_days=ops.token_days, max_token_days=ops.max_token_days,
        min_password_length=ops.min_password_length, totp_issuer=ops.totp_issuer,
    )
    return OperatorAccounts(SqlOperatorStore(engine, writer or SqlStore(engine).writer), policy, clock=clock)


def callback_verifiers(settings: Settings, contracts: ContractSet) -> dict[str, CallbackVerifier]:
    """Per agency, the verifier of the callback credential its file declares (`[callback]`);
    agencies that declare none are left out, and their callbacks refused.

    The embedded default's simulated agencies name their `private_key` too: the pair is
    generated here on first run if the simulators have not made it yet.
    """
    ident = settings.identity
    verifiers: dict[str, CallbackVerifier] = {}
    for name, agency in contracts.catalog.agencies.items():
        spec = agency.callback
        if spec is None:
            continue
        certificate, public = load_callback_credential(spec.certificate, spec.private_key, f"{name} callbacks")
        if spec.profile == "wss":
            if certificate is None:
                raise ValueError(f"agency {name!r}: a wss callback credential needs an X.509 certificate, "
                                 f"{spec.certificate} holds a bare public key")
            verifiers[name] = WssCallbackVerifier(certificate, max_lifetime=ident.max_token_seconds,
                                                  leeway=ident.leeway_seconds)
        else:
            verifiers[name] = ModiCallbackVerifier(spec.issuer, public, ident.audience,
                                                   max_lifetime=ident.max_token_seconds,
                                                   leeway=ident.leeway_seconds)
    return verifiers


def load_contracts(settings: Settings) -> ContractSet:
    """The agency declarations of `settings.agencies_dir` (documents load when first used)."""
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


def _agency_adapter(hub: Hub, name: str, http: httpx.AsyncClient, **options: Any) -> Any:
    """The adapter of agency `name`, speaking every contract version its file declares."""
    conf = hub.settings.agencies[name]
    contracts = hub.contracts or load_contracts(hub.settings)
    return build_agency_adapter(contracts.catalog.agency(name), endpoint=conf.endpoint, endpoints=conf.endpoints,
                                http=http, fault_overrides=conf.fault_overrides, **options)


def _retry_policy(conf: AgencySettings) -> RetryPolicy:
    r = conf.retry
    return RetryPolicy(attempts=r.attempts, initial_wait=r.initial_wait, max_wait=r.max_wait, jitter=r.jitter)


def _schedule(conf: AgencySettings) -> SchedulePolicy:
    s = conf.schedule
    return SchedulePolicy(
        initial_delay=s.initial_delay,
        max_delay=s.max_delay,
        jitter=s.jitter,
        max_rounds=s.max_rounds,
        max_age_seconds=s.max_age_seconds,
    )


def _late_policy(conf: AgencySettings) -> LateOutcomePolicy:
    late = conf.late
    return LateOutcomePolicy(poll_initial=late.poll_initial, poll_max=late.poll_max,
                             callback_timeout=late.callback_timeout, max_wait_seconds=late.max_wait_seconds)


def _breaker(conf: AgencySettings) -> CircuitBreaker:
    c = conf.circuit
    return CircuitBreaker(failure_threshold=c.failure_threshold, cool_down=c.cool_down, probe_wait=c.probe_wait)


def _calendar(conf: AgencySettings) -> MaintenanceCalendar:
    return MaintenanceCalendar(MaintenanceWindow.parse(w.days, w.start, w.end, w.tz) for w in conf.maintenance)


def _public_url(settings: Settings, host: str | None = None, port: int | None = None) -> str:
    """Where agencies reach the hub (their callbacks): configured, or the API's own address."""
    if settings.api.public_url:
        return settings.api.public_url.rstrip("/")
    return f"http://{host or settings.api.host}:{port or settings.api.port}"


def _secret(path: Path) -> bytes:
    """A callback secret from its file, created with a random secret (mode 0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it meanwhile
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip().encode()


def portal_callback_secret(settings: Settings, portal: str) -> bytes | None:
    """The secret the hub signs `portal`'s callbacks with (what the portal verifies with)."""
    conf = settings.portals[portal]
    if conf.callback_secret is not None:
        return conf.callback_secret.get_secret_value().encode()
    if conf.callback_secret_file:
        return _secret(settings.path(conf.callback_secret_file))
    return None


def _notifier(hub: Hub) -> tuple[EventNotifier, httpx.AsyncClient]:
    s = hub.settings
    n = s.notifications
    targets = {}
    for portal, conf in s.portals.items():
        if not conf.callback_url:
            continue
        secret = portal_callback_secret(s, portal)
        if secret is None:
            raise ValueError(f"portal {portal!r} has a callback_url but no callback_secret(_file)")
        targets[portal] = WebhookTarget(conf.callback_url, secret)
    client = httpx.AsyncClient(timeout=httpx.Timeout(n.timeout), trust_env=False,
                               transport=httpx.AsyncHTTPTransport(retries=0))
    notifier = EventNotifier(
        store=hub.store,
        sender=WebhookSender(client, targets),
        backoff=SchedulePolicy(initial_delay=n.initial_delay, max_delay=n.max_delay, jitter=n.jitter),
        max_age_seconds=n.max_age_seconds,
        concurrency=n.concurrency,
        lease_seconds=n.lease_seconds,
        poll_interval=n.poll_interval,
        max_poll_interval=n.max_poll_interval,
        clock=hub.delivery_clock,
    )
    return notifier, client


def _agency_transport(http: HttpSettings, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    """The agency clients' transport, as `[http] pool` says."""
    if http.pool == "fast":
        return KeepAliveTransport(limits=limits, max_body=http.max_body_bytes)
    # httpx's own, exactly as before the pool existed (the switch back). Note that it ignores
    # the client's `limits`: an AsyncClient given a transport passes them nowhere, so httpcore
    # keeps its defaults (100 connections, 20 kept alive).
    return httpx.AsyncHTTPTransport(retries=0)


def _http_client(conf: AgencySettings, concurrency: int | None = None,
                 http: HttpSettings | None = None) -> httpx.AsyncClient:
    size = concurrency or conf.concurrency
    limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(conf.read_timeout, connect=conf.connect_timeout),
        limits=limits,
        # The whole call ends at the agency's deadline, whichever transport speaks HTTP.
        transport=DeadlineTransport(_agency_transport(http or HttpSettings(), limits), conf.call_deadline),
        trust_env=False,
    )


def _max_handouts(settings: Settings) -> int:
    limit = settings.worker.max_handouts
    if _uses_rabbitmq(settings):
        # The broker dead-letters after `delivery_limit` returns; decide before it does.
        limit = min(limit, settings.transport.delivery_limit - 1)
    return max(1, limit)


def _uses_rabbitmq(settings: Settings) -> bool:
    kind = settings.transport.kind
    if kind not in ("embedded", "rabbitmq"):
        raise ValueError(f"transport.kind must be 'embedded' or 'rabbitmq', not {kind!r}")
    return kind == "rabbitmq"


def _topology(hub: Hub) -> Any:
    from transport.rabbitmq import Topology

    t = hub.settings.transport
    return Topology(prefix=t.prefix, agencies=tuple(sorted(hub.routes.agencies)), delivery_limit=t.delivery_limit)


def _dead_letters(hub: Hub) -> Any:
    """The dead-letter queues operators inspect and replay, with RabbitMQ; None otherwise."""
    if not _uses_rabbitmq(hub.settings):
        return None
    from transport.dead_letters import RabbitDeadLetters

    return RabbitDeadLetters(hub.settings.transport.url.get_secret_value(), _topology(hub))


def _amqp(hub: Hub, role: str) -> Any:
    from transport.rabbitmq import amqp_parameters

    t = hub.settings.transport
    return amqp_parameters(t.url.get_secret_value(), name=f"crocevia-{role}-{os.getpid()}", heartbeat=t.heartbeat)


class _WorkerSet:
    """The adapters, HTTP clients and job source one worker process owns."""

    def __init__(self, hub: Hub, agencies: list[str] | None, concurrency: int | None = None,
                 public_url: str | None = None, *, metrics: HubMetrics | None = None,
                 supervisor: Supervisor | None = None) -> None:
        names = agencies or sorted(hub.routes.agencies)
        s = hub.settings
        callbacks = public_url or _public_url(s)
        limits = {n: concurrency or s.agencies[n].concurrency for n in names}
        self.clients: list[httpx.AsyncClient] = []
        self.adapters: dict[str, Any] = {}
        for name in names:
            conf = s.agencies[name]
            client = _http_client(conf, limits[name], s.http)
            self.clients.append(client)
            self.adapters[name] = _agency_adapter(
                hub, name, client,
                signer=_agency_signer(s, name, conf),
                reply_to=f"{callbacks}/v1/callbacks/{name}",
            )
        self.rabbit: Any = None
        source: Any
        if _uses_rabbitmq(s):
            from transport.rabbitmq import RabbitJobSource

            t = s.transport
            self.rabbit = source = RabbitJobSource(
                parameters=_amqp(hub, "worker"),
                topology=_topology(hub),
                prefetch={n: s.agencies[n].prefetch or limits[n] for n in names},
                store=hub.store,
                lease_seconds=s.worker.lease_seconds,
                reconnect_initial=t.reconnect_initial,
                reconnect_max=t.reconnect_max,
            )
        else:
            source = EmbeddedQueue(hub.store, lease_seconds=s.worker.lease_seconds)
        self.worker = DeliveryWorker(
            source=source,
            adapters=self.adapters,
            retry_policies={n: _retry_policy(s.agencies[n]) for n in names},
            schedules={n: _schedule(s.agencies[n]) for n in names},
            concurrency=limits,
            deliver=deliver_with_retries,
            batch_size=s.worker.batch_size,
            commit_batch=s.worker.commit_batch,
            commit_attempts=s.worker.commit_attempts,
            poll_interval=s.worker.poll_interval,
            max_poll_interval=s.worker.max_poll_interval,
            clock=hub.delivery_clock,
            poll=poll_once,
            late={n: _late_policy(s.agencies[n]) for n in names},
            breakers={n: _breaker(s.agencies[n]) for n in names},
            maintenance={n: _calendar(s.agencies[n]) for n in names},
            report_circuit=lambda agency, snapshot, owner: asyncio.to_thread(
                hub.store.report_agency_status, agency, snapshot, owner),
            max_handouts=_max_handouts(s),
            # Agencies paused by an operator (`/v1/ops/agencies/{agency}/pause`), from the store.
            pauses=PauseBoard(hub.store.paused_agencies, ttl=s.worker.pause_check_interval),
            pause_hold=s.worker.pause_hold_seconds,
            refresh_circuit=lambda agency, snapshot, owner: asyncio.to_thread(
                hub.store.report_agency_status, agency, snapshot, owner,
                refresh_after=s.metrics.circuit_stale_after),
            metrics=metrics,
            report_interval=s.metrics.circuit_report_interval,
            heartbeat=(lambda: supervisor.beat("worker")) if supervisor is not None else None,
        )
        self.notifier, notifier_client = _notifier(hub)
        self.clients.append(notifier_client)

        if self.rabbit is not None:
            self.rabbit.listen(self.worker.notify)

    async def start(self, supervisor: Supervisor) -> None:
        if self.rabbit is not None:
            # It ends when `close` closes the source, after the worker drained.
            supervisor.watch("consumer", await self.rabbit.start(), ends_on_stop=False)

    async def close(self) -> None:
        # The worker has drained and committed by now: closing acknowledges what remains.
        if self.rabbit is not None:
            await self.rabbit.close()
        for adapter in self.adapters.values():
            await adapter.aclose()
        for client in self.clients:
            await client.aclose()


def _supervisor(hub: Hub, stop: asyncio.Event) -> Supervisor:
    return Supervisor(stop, fail_for_tests=hub.settings.supervision.fail_task_for_tests)


def _uvicorn_server(hub: Hub, app: Any, *, host: str, port: int, max_connections: int) -> Any:
    """A uvicorn server for `app` on `host:port`, with the `[api]` limits but its own connection cap."""
    import uvicorn

    api = hub.settings.api
    return uvicorn.Server(server_config(app, host=host, port=port, limits=ServerLimits(
        header_timeout=api.header_timeout, keep_alive_timeout=api.keep_alive_timeout,
        max_connections=max_connections, max_header_bytes=api.max_header_bytes)))


async def _until_listening(server: Any, task: asyncio.Task[Any], stop: asyncio.Event | None = None) -> bool:
    """Wait until `server` listens, its serving `task` ends or (if given) `stop` is set: whether it listens."""
    while not server.started and not task.done() and not (stop is not None and stop.is_set()):
        await asyncio.sleep(0.01)
    return bool(server.started)


async def run_workers(
    hub: Hub, stop: asyncio.Event, agencies: list[str] | None = None, concurrency: int | None = None
) -> None:
    """Run one delivery worker until `stop` is set, then drain in-flight deliveries.

    Raises:
        BackgroundTaskDied: the worker, notifier or consumer died (the others were drained).
    """
    supervisor = _supervisor(hub, stop)
    metrics = HubMetrics()
    workers = _WorkerSet(hub, agencies, concurrency, metrics=metrics, supervisor=supervisor)
    try:
        await workers.start(supervisor)
        supervisor.watch("worker", workers.worker.run(stop))
        supervisor.watch("notifier", workers.notifier.run(stop), may_return=True)
        await _start_listener(hub, supervisor, stop, metrics, "worker", hub.settings.metrics.worker_port)
        await stop.wait()
    finally:
        stop.set()
        await supervisor.join()
        await workers.close()
    supervisor.raise_if_failed()


async def _start_listener(hub: Hub, supervisor: Supervisor, stop: asyncio.Event, metrics: HubMetrics,
                          role: str, port: int) -> None:
    """`/metrics`, `/healthz` and `/readyz` of a process without an API, on `[metrics] host`
    and `port` (0: none). A port already taken stops the process, named, like the API's."""
    if not port:
        return
    from starlette.applications import Starlette

    from starlette.middleware import Middleware

    from api.observability import RequestObservation, metrics_routes
    from api.readiness import health_routes

    app = Starlette(routes=[*metrics_routes(metrics), *health_routes(_readiness(hub, supervisor))],
                    middleware=[Middleware(RequestObservation)])
    host = hub.settings.metrics.host
    server = _uvicorn_server(hub, app, host=host, port=port, max_connections=64)
    task = supervisor.watch(f"{role}-metrics", server.serve(), may_return=True)

    async def shutdown() -> None:
        await stop.wait()
        server.should_exit = True

    supervisor.watch(f"{role}-metrics-stop", shutdown())
    if not await _until_listening(server, task):
        raise RuntimeError(f"the {role}'s metrics listener could not listen on {host}:{port}")
    log.info("metrics_listening", role=role, host=host, port=port)


def build_hub_when_ready(settings: Settings, *, timeout: float = 120.0) -> Hub:
    """`build_hub`, waiting with backoff while the database is unreachable.

    A process started while PostgreSQL restarts (or before it is up) waits for it instead of
    exiting; past `timeout` the last error is raised.
    """
    from sqlalchemy.exc import OperationalError

    delay, deadline = 0.5, time.monotonic() + timeout
    while True:
        try:
            return build_hub(settings)
        except OperationalError as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database_unavailable", error=str(exc).splitlines()[0], retry_in=delay)
            time.sleep(delay)
            delay = min(5.0, delay * 2)


def check_dependencies(settings: Settings) -> list[tuple[str, str, str | None]]:
    """What this process depends on, each checked now: (what, where, problem or None). For
    health checks and `hub.py check`; a password in a URL is never shown."""
    from service.relay import TransportError

    database = _without_password(settings.database.url)
    checks: list[tuple[str, str, str | None]] = []
    engine = build_engine(settings.database.url, base_dir=settings.path("."), pool_size=1)
    try:
        _ping_store(engine)
        checks.append(("database", database, None))
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        checks.append(("database", database, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"))
    finally:
        engine.dispose()
    if _uses_rabbitmq(settings):
        from transport.rabbitmq import probe

        where = _without_password(settings.transport.url.get_secret_value())
        try:
            probe(settings.transport.url.get_secret_value())
            checks.append(("broker", where, None))
        except TransportError as exc:
            checks.append(("broker", where, str(exc)))
    return checks


def _without_password(url: str) -> str:
    """`url` with its password (if any) shown as `***`."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # as written: an IPv6 address keeps its brackets
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


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


def queue_report(settings: Settings) -> tuple[list[dict[str, Any]], str | None]:
    """One row per agency: its open jobs in the store and, with RabbitMQ, its queues; plus
    the broker's problem if it could not be read (the store's part is shown anyway)."""
    with migrated_engine(settings, pool_size=1) as engine:  # an empty database has no jobs
        jobs = SqlStore(engine).queue_summary()
    agencies = sorted(set(settings.agencies) | set(jobs))
    broker: dict[str, dict[str, int]] = {}
    problem = None
    if _uses_rabbitmq(settings):
        from service.relay import TransportError
        from transport.rabbitmq import Topology, queue_depths

        t = settings.transport
        try:
            broker = queue_depths(t.url.get_secret_value(), Topology(prefix=t.prefix, agencies=tuple(agencies),
                                                                     delivery_limit=t.delivery_limit))
        except TransportError as exc:
            problem = f"broker: {exc}"
    empty = {"due": 0, "scheduled": 0, "leased": 0}
    rows = [{"agency": a, **jobs.get(a, empty), **broker.get(a, {})} for a in agencies]
    return rows, problem


def anomaly_report(settings: Settings, agency: str | None, limit: int) -> list[dict[str, Any]]:
    """The latest anomalies kept for operators (contradicting callbacks, duplicate protocol
    numbers), newest first."""
    with migrated_engine(settings, pool_size=1) as engine:
        return SqlStore(engine).anomalies(agency, limit)


async def run_relay(hub: Hub, stop: asyncio.Event, metrics: HubMetrics | None = None) -> None:
    """Publish committed outbox rows to RabbitMQ when due, until `stop` is set."""
    from service.relay import OutboxRelay
    from transport.rabbitmq import RabbitPublisher

    s = hub.settings
    if not _uses_rabbitmq(s):
        raise ValueError("the relay runs with transport.kind = 'rabbitmq' (the embedded queue needs none)")
    relay = OutboxRelay(
        store=hub.store,
        publisher=RabbitPublisher(_amqp(hub, "relay"), _topology(hub), confirm_timeout=s.transport.confirm_timeout),
        batch_size=s.relay.batch_size,
        lease_seconds=s.relay.lease_seconds,
        poll_interval=s.relay.poll_interval,
        max_poll_interval=s.relay.max_poll_interval,
        backoff_initial=s.transport.reconnect_initial,
        backoff_max=s.transport.reconnect_max,
        hold_before_mark=s.relay.hold_before_mark,
    )
    if metrics is not None:
        metrics.count_published(lambda: relay.published)
    await relay.run(stop)


async def run_relay_process(hub: Hub, stop: asyncio.Event) -> None:
    """`hub.py relay`: the relay, supervised.

    Raises:
        BackgroundTaskDied: the relay died (logged with its traceback).
    """
    supervisor = _supervisor(hub, stop)
    metrics = HubMetrics()
    supervisor.watch("relay", run_relay(hub, stop, metrics))
    try:
        await _start_listener(hub, supervisor, stop, metrics, "relay", hub.settings.metrics.relay_port)
    except BaseException:
        stop.set()
        raise
    finally:
        await supervisor.join()
    supervisor.raise_if_failed()


async def run_api_and_workers(
    hub: Hub, stop: asyncio.Event, *, host: str, port: int, with_workers: bool = True,
    started: asyncio.Event | None = None,
) -> None:
    """The API and (optionally) a worker in the same event loop; returns when `stop` is set.

    With RabbitMQ, the workers are a relay and a worker in this process (the API never talks
    to the broker: accepted filings wait in the outbox).

    Raises:
        BackgroundTaskDied: a background task (the API server, worker, notifier, relay or
            consumer) died; everything else was stopped and drained first.
    """
    public_url = _public_url(hub.settings, host, port)
    supervisor = _supervisor(hub, stop)
    metrics = _api_metrics(hub)
    workers = (_WorkerSet(hub, None, public_url=public_url, metrics=metrics, supervisor=supervisor)
               if with_workers else None)
    if workers is not None:
        await workers.start(supervisor)
        if _uses_rabbitmq(hub.settings):
            supervisor.watch("relay", run_relay(hub, stop, metrics))
    loop = asyncio.get_running_loop()

    def wake() -> None:
        if workers is not None:
            loop.call_soon_threadsafe(workers.worker.notify)
            loop.call_soon_threadsafe(workers.notifier.notify)

    readers, readers_client = _outcome_readers(hub, workers)

    app = create_app(
        ApiContext(
            store=hub.store,
            validator=hub.validator,
            routes=hub.routes,
            guard=hub.guard,
            identity=hub.identity,
            max_body_bytes=hub.settings.api.max_body_bytes,
            on_accepted=wake,
            outcome_readers=readers,
            callbacks=hub.callbacks,
            # The contracts checked at start-up, validators compiled: reused for every filing.
            message_check=MessageChecker(hub.contracts or load_contracts(hub.settings)),
            readiness=_readiness(hub, supervisor),
            operators=hub.operators,
            ops=OpsQueries(hub.engine, tuple(hub.settings.agencies)),
            ops_guard=hub.ops_guard,
            dead_letters=_dead_letters(hub),
            metrics=metrics,
            agency_health=_agency_health(hub),
        )
    )
    server = _uvicorn_server(hub, app, host=host, port=port, max_connections=hub.settings.api.max_connections)
    # uvicorn ends on its own when it catches SIGTERM/SIGINT: that stops the process, not a death.
    server_task = supervisor.watch("api", server.serve(), may_return=True)
    server_task.add_done_callback(lambda _: stop.set())
    if workers is not None:
        supervisor.watch("worker", workers.worker.run(stop))
        # The notifier returns at once when no portal has a callback address.
        supervisor.watch("notifier", workers.notifier.run(stop), may_return=True)
    try:
        if await _until_listening(server, server_task, stop):
            if started is not None:
                started.set()
            log.info("api_listening", host=host, port=port)
            await stop.wait()
    finally:
        stop.set()
        server.should_exit = True
        await supervisor.join()
        if readers_client is not None:
            await readers_client.aclose()
        if workers is not None:
            await workers.close()
    supervisor.raise_if_failed()
    if not server.started and server_task.done():
        raise RuntimeError(f"the API could not listen on {host}:{port}")


def _api_metrics(hub: Hub) -> HubMetrics:
    """The API process's metrics: its own counters plus the hub-wide gauges read from the store."""
    from storage.ops_metrics import read_store_gauges

    metrics = HubMetrics()
    m = hub.settings.metrics
    pushed = sorted(name for name, conf in hub.settings.portals.items() if conf.callback_url)
    metrics.registry.register(StoreGaugeCollector(
        lambda: read_store_gauges(hub.engine, hub.delivery_clock(), time.time(), pushed),
        sorted(hub.routes.agencies),
        ttl=m.store_ttl, stale_after=m.circuit_stale_after))
    return metrics


def _agency_health(hub: Hub) -> AgencyHealthFeed:
    """The portals' agency health feed: circuits, the last hour's answers, maintenance windows."""
    from storage.ops_metrics import read_agency_answers

    def answers(since: float, agencies: Any) -> Any:
        from datetime import datetime, timezone

        return read_agency_answers(hub.engine, datetime.fromtimestamp(since, timezone.utc), agencies)

    m, agencies = hub.settings.metrics, sorted(hub.routes.agencies)
    return AgencyHealthFeed(
        agencies=agencies, statuses=hub.store.agency_statuses, answers=answers,
        calendars={n: _calendar(hub.settings.agencies[n]) for n in agencies},
        stale_after=m.circuit_stale_after, ttl=m.store_ttl, clock=hub.delivery_clock)


def _readiness(hub: Hub, supervisor: Supervisor) -> ReadinessCheck:
    """What `/readyz` asks: the supervisor's dead and stalled loops, whether the store answers in
    time and, with RabbitMQ, whether the broker does.

    One probe of each runs at a time: a hung database does not pile up threads, one per probe.
    """
    timeout = hub.settings.api.readiness_timeout
    probes: dict[str, asyncio.Future[None] | None] = {"store": None, "broker": None}
    checks: dict[str, Callable[[], None]] = {"store": lambda: _ping_store(hub.engine)}
    if _uses_rabbitmq(hub.settings):
        from transport.rabbitmq import probe as probe_broker

        url = hub.settings.transport.url.get_secret_value()
        checks["broker"] = lambda: probe_broker(url)

    async def ask(name: str) -> str | None:
        probe = probes[name]
        if probe is None or probe.done():
            if probe is not None and not probe.cancelled():
                probe.exception()  # seen (it was answered, or timed out, before)
            probe = probes[name] = asyncio.ensure_future(asyncio.to_thread(checks[name]))
        try:
            await asyncio.wait_for(asyncio.shield(probe), timeout)
        except TimeoutError:
            return f"no answer within {timeout:g}s"
        except Exception as exc:  # noqa: BLE001 - whatever the driver raised, it is away
            return f"unreachable: {type(exc).__name__}"
        return None

    async def check() -> dict[str, str]:
        failing = {name: f"task died: {why}" for name, why in supervisor.dead.items()}
        failing.update(supervisor.stalled(hub.settings.supervision.stall_after))
        answers = await asyncio.gather(*(ask(name) for name in checks))
        failing.update({name: why for name, why in zip(checks, answers) if why is not None})
        return failing

    return check


def _ping_store(engine: Engine) -> None:
    from sqlalchemy import text

    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


def _outcome_readers(hub: Hub, workers: _WorkerSet | None) -> tuple[dict[str, Any], httpx.AsyncClient | None]:
    """What reads agencies' callbacks in the API: the workers' adapters, or (API only) adapters
    built for reading, whose HTTP client never sends anything."""
    if workers is not None:
        return dict(workers.adapters), None
    client = httpx.AsyncClient(trust_env=False)
    readers = {name: _agency_adapter(hub, name, client) for name in sorted(hub.routes.agencies)}
    return readers, client
