"""The only place that builds engines, HTTP clients, adapters and workers from settings.

Everything below receives objects, never the settings themselves.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import structlog
from sqlalchemy import Engine

from adapters.base import RetryPolicy, deliver_with_retries
from adapters.registry import ADAPTER_BUILDERS
from api.app import ApiContext, create_app
from api.auth import PortalAuthenticator
from config.settings import AgencySettings, Settings
from routing.routes import RouteTable, load_route_table
from schemas.filing import FilingValidator
from service.schedule import SchedulePolicy
from service.worker import DeliveryWorker
from storage.engine import build_engine
from storage.migrate import upgrade_to_head
from storage.store import SqlStore
from transport.embedded import EmbeddedQueue

__all__ = ["Hub", "build_hub", "portal_key", "run_api_and_workers", "run_workers"]

log = structlog.get_logger("crocevia.bootstrap")


@dataclass
class Hub:
    settings: Settings
    engine: Engine
    store: SqlStore
    routes: RouteTable
    validator: FilingValidator
    authenticator: PortalAuthenticator
    _closers: list[Any] = field(default_factory=list)

    def dispose(self) -> None:
        self.engine.dispose()


def portal_key(settings: Settings, portal: str) -> str:
    """The portal's API key from its key file, created with a random key on first use."""
    conf = settings.portals[portal]
    if conf.api_key_file is None:
        raise KeyError(f"portal {portal!r} has no key file (production portals register a digest)")
    path = settings.path(conf.api_key_file)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def _portal_digests(settings: Settings) -> dict[str, str]:
    digests: dict[str, str] = {}
    for portal, conf in settings.portals.items():
        if conf.api_key_sha256:
            digests[portal] = conf.api_key_sha256
        elif conf.api_key_file:
            digests[portal] = hashlib.sha256(portal_key(settings, portal).encode()).hexdigest()
    return digests


def build_hub(settings: Settings, *, migrate: bool = True) -> Hub:
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
    return Hub(
        settings=settings,
        engine=engine,
        store=SqlStore(engine),
        routes=routes,
        validator=FilingValidator(max_bytes=settings.api.max_body_bytes, max_depth=settings.api.max_depth),
        authenticator=PortalAuthenticator(_portal_digests(settings)),
    )


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


def _http_client(conf: AgencySettings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=httpx.Timeout(conf.read_timeout, connect=conf.connect_timeout),
        limits=httpx.Limits(max_connections=conf.concurrency, max_keepalive_connections=conf.concurrency),
        transport=httpx.AsyncHTTPTransport(retries=0),
        trust_env=False,
    )


class _WorkerSet:
    """The adapters and HTTP clients one worker process owns."""

    def __init__(self, hub: Hub, agencies: list[str] | None) -> None:
        names = agencies or sorted(hub.routes.agencies)
        self.clients: list[httpx.AsyncClient] = []
        self.adapters: dict[str, Any] = {}
        for name in names:
            conf = hub.settings.agencies[name]
            client = _http_client(conf)
            self.clients.append(client)
            self.adapters[name] = ADAPTER_BUILDERS[name](
                endpoint=conf.endpoint, http=client, fault_overrides=conf.fault_overrides
            )
        s = hub.settings
        self.worker = DeliveryWorker(
            source=EmbeddedQueue(hub.store, lease_seconds=s.worker.lease_seconds),
            adapters=self.adapters,
            retry_policies={n: _retry_policy(s.agencies[n]) for n in names},
            schedules={n: _schedule(s.agencies[n]) for n in names},
            concurrency={n: s.agencies[n].concurrency for n in names},
            deliver=deliver_with_retries,
            batch_size=s.worker.batch_size,
            commit_batch=s.worker.commit_batch,
            poll_interval=s.worker.poll_interval,
            max_poll_interval=s.worker.max_poll_interval,
        )

    async def close(self) -> None:
        for adapter in self.adapters.values():
            await adapter.aclose()
        for client in self.clients:
            await client.aclose()


async def run_workers(hub: Hub, stop: asyncio.Event, agencies: list[str] | None = None) -> None:
    """Run one delivery worker until `stop` is set, then drain in-flight deliveries."""
    workers = _WorkerSet(hub, agencies)
    try:
        await workers.worker.run(stop)
    finally:
        await workers.close()


async def run_api_and_workers(
    hub: Hub, stop: asyncio.Event, *, host: str, port: int, with_workers: bool = True,
    started: asyncio.Event | None = None,
) -> None:
    """The API and (embedded mode) a worker in the same event loop; returns when `stop` is set."""
    import uvicorn

    workers = _WorkerSet(hub, None) if with_workers else None
    loop = asyncio.get_running_loop()

    def wake() -> None:
        if workers is not None:
            loop.call_soon_threadsafe(workers.worker.notify)

    app = create_app(
        ApiContext(
            store=hub.store,
            validator=hub.validator,
            routes=hub.routes,
            authenticator=hub.authenticator,
            max_body_bytes=hub.settings.api.max_body_bytes,
            on_accepted=wake,
        )
    )
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, access_log=False, log_config=None, lifespan="off")
    )
    server_task = asyncio.create_task(server.serve())
    worker_task = asyncio.create_task(workers.worker.run(stop)) if workers else None
    try:
        while not server.started:
            if server_task.done():
                await server_task
                raise RuntimeError(f"the API could not listen on {host}:{port}")
            await asyncio.sleep(0.01)
        if started is not None:
            started.set()
        log.info("api_listening", host=host, port=port)
        await stop.wait()
    finally:
        server.should_exit = True
        await asyncio.gather(server_task, return_exceptions=True)
        if worker_task is not None:
            await asyncio.gather(worker_task, return_exceptions=True)
        if workers is not None:
            await workers.close()
