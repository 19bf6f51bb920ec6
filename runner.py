"""The processes' loops: the API with its in-process workers, a worker process, the relay, and
the small metrics/health listener of a process without an API.

Everything run here is built by `bootstrap`; this module only starts it under a supervisor,
waits for `stop`, and drains and closes it in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import structlog

from bootstrap import (
    Hub,
    WorkerSet,
    api_metrics_for,
    build_api,
    close_api,
    outcome_readers,
    public_url,
    readiness,
    relay_for,
    supervisor_for,
    uses_rabbitmq,
)
from service.metrics import HubMetrics
from service.supervisor import Supervisor

if TYPE_CHECKING:
    import uvicorn

__all__ = ["run_api_and_workers", "run_relay", "run_relay_process", "run_workers"]

log = structlog.get_logger("crocevia.bootstrap")


def _uvicorn_server(hub: Hub, app: Any, *, host: str, port: int, max_connections: int) -> uvicorn.Server:
    """A uvicorn server for `app` on `host:port`, with the `[api]` limits but its own connection cap.

    uvicorn, httptools and starlette load here, not with this module: a worker or relay without a
    metrics listener never serves HTTP (~2 MiB of modules, issue 13)."""
    import uvicorn

    from api.server import ServerLimits, server_config

    api = hub.settings.api
    return uvicorn.Server(server_config(app, host=host, port=port, limits=ServerLimits(
        header_timeout=api.header_timeout, keep_alive_timeout=api.keep_alive_timeout,
        max_connections=max_connections, max_header_bytes=api.max_header_bytes)))


async def _until_listening(server: uvicorn.Server, task: asyncio.Task[Any], stop: asyncio.Event | None = None) -> bool:
    """Wait until `server` listens, its serving `task` ends or (if given) `stop` is set: whether it listens."""
    while not server.started and not task.done() and not (stop is not None and stop.is_set()):
        await asyncio.sleep(0.01)  # uvicorn offers no event for "listening"; poll its flag
    return bool(server.started)


async def run_workers(
    hub: Hub, stop: asyncio.Event, agencies: list[str] | None = None, concurrency: int | None = None,
    *, wake_fd: int | None = None,
) -> None:
    """Run one delivery worker until `stop` is set, then drain in-flight deliveries.

    `wake_fd`: a child of `hub.py serve` (`[embedded] worker_processes`): the API wakes it
    through this socket when filings arrive, and its end closing means the API is gone.

    Raises:
        BackgroundTaskDied: the worker, notifier or consumer died (the others were drained).
    """
    supervisor = supervisor_for(hub, stop)
    metrics = HubMetrics()
    workers = WorkerSet(hub, agencies, concurrency, metrics=metrics, supervisor=supervisor)
    stop_listening = None
    try:
        if wake_fd is not None:
            from wiring.worker_processes import listen_for_wakes

            def wake() -> None:
                workers.worker.notify()
                workers.notifier.notify()

            stop_listening = listen_for_wakes(wake_fd, wake, stop.set)
        await workers.start(supervisor)
        supervisor.watch("worker", workers.worker.run(stop))
        supervisor.watch("notifier", workers.notifier.run(stop), may_return=True)
        _watch_retention(hub, supervisor, stop)
        await _start_listener(hub, supervisor, stop, metrics, "worker", hub.settings.metrics.worker_port)
        await stop.wait()
    finally:
        stop.set()
        await supervisor.join()
        await workers.close()
        if stop_listening is not None:
            stop_listening()
    supervisor.raise_if_failed()


def _limit_api_threads(threads: int) -> None:
    """The API's blocking work (starlette's sync endpoints and `run_in_threadpool`) on at most
    `threads` threads of this event loop, instead of anyio's 40: each thread keeps C memory of
    its own, and a filing mostly holds the GIL (issue 13: ~4 MiB less at peak, same CPU)."""
    from anyio.to_thread import current_default_thread_limiter

    current_default_thread_limiter().total_tokens = threads


def _watch_retention(hub: Hub, supervisor: Supervisor, stop: asyncio.Event) -> None:
    """The workers' periodic maintenance: purge settled filings' payloads past `[retention]`."""
    conf = hub.settings.retention
    if conf.settled_payload_days <= 0 or conf.interval_seconds <= 0:
        return
    from service.retention import retention_loop
    from storage.retention import RetentionStore

    purger = RetentionStore(hub.engine, hub.store.writer)
    supervisor.watch("retention", retention_loop(purger, conf.settled_payload_days, conf.interval_seconds, stop,
                                                 batch=conf.batch))


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

    app = Starlette(routes=[*metrics_routes(metrics), *health_routes(readiness(hub, supervisor))],
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


async def run_relay(hub: Hub, stop: asyncio.Event, metrics: HubMetrics | None = None) -> None:
    """Publish committed outbox rows to RabbitMQ when due, until `stop` is set."""
    relay = relay_for(hub)
    if metrics is not None:
        metrics.count_published(lambda: relay.published)
    await relay.run(stop)


async def run_relay_process(hub: Hub, stop: asyncio.Event) -> None:
    """`hub.py relay`: the relay, supervised.

    Raises:
        BackgroundTaskDied: the relay died (logged with its traceback).
    """
    supervisor = supervisor_for(hub, stop)
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
    started: asyncio.Event | None = None, worker_command: Sequence[str] | None = None,
) -> None:
    """The API and (optionally) a worker in the same event loop; returns when `stop` is set.

    With RabbitMQ, the workers are a relay and a worker in this process (the API never talks
    to the broker: accepted filings wait in the outbox). Embedded with `[embedded]
    worker_processes` > 0, the workers are that many child processes (`worker_command`,
    default `hub.py worker` with the default settings file) instead.

    Raises:
        BackgroundTaskDied: a background task (the API server, worker, notifier, relay,
            consumer or a worker process) died; everything else was stopped and drained first.
    """
    _limit_api_threads(hub.settings.api.threads)
    supervisor = supervisor_for(hub, stop)
    metrics = api_metrics_for(hub)
    callbacks_url = public_url(hub.settings, host, port)
    children = None
    if with_workers and not uses_rabbitmq(hub.settings) and hub.settings.embedded.worker_processes:
        from wiring.worker_processes import WorkerProcesses, child_environment
        from wiring.worker_processes import worker_command as default_command

        children = WorkerProcesses(worker_command or default_command(None), hub.settings.embedded.worker_processes,
                                   env=child_environment(callbacks_url))
    workers = (WorkerSet(hub, None, callbacks_url=callbacks_url, metrics=metrics, supervisor=supervisor)
               if with_workers and children is None else None)
    if workers is not None:
        await workers.start(supervisor)
        if uses_rabbitmq(hub.settings):
            supervisor.watch("relay", run_relay(hub, stop, metrics))
    if children is not None:
        try:
            await children.start(supervisor, stop)
        except BaseException:  # those started are stopped, then the failure is the caller's
            stop.set()
            await supervisor.join()
            children.close()
            raise
    loop = asyncio.get_running_loop()

    def wake() -> None:
        if workers is not None:
            loop.call_soon_threadsafe(workers.worker.notify)
            loop.call_soon_threadsafe(workers.notifier.notify)
        if children is not None:
            children.wake()

    readers, readers_client = outcome_readers(hub, workers)
    app = build_api(hub, readers=readers, on_accepted=wake, ready=readiness(hub, supervisor), metrics=metrics)
    server = _uvicorn_server(hub, app, host=host, port=port, max_connections=hub.settings.api.max_connections)
    # uvicorn ends on its own when it catches SIGTERM/SIGINT: that stops the process, not a death.
    server_task = supervisor.watch("api", server.serve(), may_return=True)
    server_task.add_done_callback(lambda _: stop.set())
    if workers is not None:
        supervisor.watch("worker", workers.worker.run(stop))
        # The notifier returns at once when no portal has a callback address.
        supervisor.watch("notifier", workers.notifier.run(stop), may_return=True)
        _watch_retention(hub, supervisor, stop)
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
        close_api(app)
        if readers_client is not None:
            await readers_client.aclose()
        if workers is not None:
            await workers.close()
        if children is not None:
            children.close()
    supervisor.raise_if_failed()
    if not server.started and server_task.done():
        raise RuntimeError(f"the API could not listen on {host}:{port}")
