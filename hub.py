#!/usr/bin/env python3
"""Crocevia's command line: parse arguments, load settings, hand over to bootstrap. No logic."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cli.context import settings_of as _settings
from config.logging import configure_logging
from config.settings import Settings, load_settings

if TYPE_CHECKING:
    from bootstrap import Hub


#: Exit status of a service whose background task died (EX_SOFTWARE): the orchestrator restarts it.
EXIT_TASK_DIED = 70


def _run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    from service.supervisor import BackgroundTaskDied

    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        asyncio.run(runner())
    except BackgroundTaskDied as died:  # logged with its traceback where it died
        click.echo(str(died), err=True)
        sys.exit(EXIT_TASK_DIED)


def _service_hub(build: Callable[[], Hub]) -> Hub:
    """A service's hub, built once the store answers; its start-up garbage is collected
    before it takes any work, so no request waits for that collection, and what it holds is
    frozen `[memory] gc_freeze_after` seconds later (after the collection, however long the
    store took to answer)."""
    from probes import when_store_ready
    from wiring.memory import collect_start_up_garbage, freeze_heap_after

    hub = when_store_ready(build)
    collect_start_up_garbage()
    freeze_heap_after(hub.settings.memory.gc_freeze_after)
    return hub


#: Long-running commands: a SIGTERM stops them cleanly (exit 0) at any moment.
_SERVICES = {"serve", "worker", "relay", "simulators", "sandbox"}
#: The services built on a hub: their heap is frozen once the hub is built (`_service_hub`).
_HUB_SERVICES = {"serve", "worker", "relay"}


def _echo(text: str, err: bool) -> None:
    click.echo(text, err=err)


def _exit_before_running(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


#: The command groups by area, each adding its commands to `cli`: operators' actions over the
#: operator API: resend, retry, cancel, agencies …, dlq … (cli/ops_actions.py); portals' events
#: and delegations … (cli/portal_actions.py); portals' submit, status, receipt
#: (cli/portal_commands.py); drafts … (cli/drafts_commands.py); filings search|show|archive|unarchive
#: (cli/filings_commands.py); retention run (cli/retention_commands.py); operator accounts and
#: lockouts (cli/operator_commands.py).
_AREAS = ("ops_actions", "portal_actions", "portal_commands", "drafts_commands", "filings_commands",
          "retention_commands", "operator_commands")


class _HubGroup(click.Group):
    """The root group: the areas' commands load only when a command outside this file is asked
    for or the commands are listed, so a service never imports them (~1.5 MiB, issue 13)."""

    _areas_loaded = False

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and not self._areas_loaded:
            self._load_areas()
            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._load_areas()
        return super().list_commands(ctx)

    def _load_areas(self) -> None:
        if self._areas_loaded:
            return
        self._areas_loaded = True
        for area in _AREAS:
            import_module(f"cli.{area}").register(self)


@click.group(cls=_HubGroup)
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Settings file (default config/crocevia.toml).")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None) -> None:
    """Crocevia, the interoperability hub."""
    if ctx.invoked_subcommand in _SERVICES:
        # Until the service installs its own handlers (then SIGTERM drains), a stop request
        # finds nothing in flight: exit cleanly rather than die by the signal.
        signal.signal(signal.SIGTERM, _exit_before_running)
    settings = load_settings(config_file)
    if ctx.invoked_subcommand in _SERVICES:
        from wiring.memory import (
            freeze_heap_after,
            limit_malloc_arenas,
            run_optimized,
            skip_unused_optional_modules,
            space_young_collections,
            trim_malloc_every,
        )

        if ctx.invoked_subcommand in settings.memory.optimized_bytecode and _started_as_program() \
                and "--help" not in sys.argv[1:]:
            run_optimized()  # returns only under -OO (a command's help is its docstring: kept)

        # Before anything imports httpx or structlog: their optional extras are never used here.
        skip_unused_optional_modules()
        # Before any thread starts: each would otherwise take (and keep) an arena of its own.
        limit_malloc_arenas(settings.memory.malloc_arena_max)
        trim_malloc_every(settings.memory.malloc_trim_seconds)
        space_young_collections(settings.memory.gc_young_threshold)
        if ctx.invoked_subcommand not in _HUB_SERVICES:
            freeze_heap_after(settings.memory.gc_freeze_after)
    ctx.obj = {"settings": settings}


def _started_as_program() -> bool:
    """Whether this file is the program Python runs (`python hub.py ...`), not a module
    imported by another (a test invoking the commands in its own process)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    return main_file is not None and Path(main_file).resolve() == Path(__file__).resolve()


@cli.command()
@click.option("--host", default=None, help="Address to bind (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default from config).")
@click.option("--with-simulators", is_flag=True, help="Also start the four agency simulators.")
@click.option("--no-workers", is_flag=True, help="Serve the API only (workers run elsewhere).")
@click.option("--with-workers", is_flag=True,
              help="RabbitMQ: also run a relay and a worker in this process (default: the API only).")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, with_simulators: bool, no_workers: bool,
          with_workers: bool) -> None:
    """Serve the intake and status API (embedded: with a worker; RabbitMQ: the API only)."""
    from bootstrap import build_hub
    from runner import run_api_and_workers

    settings = _settings(ctx)
    if settings.transport.kind == "rabbitmq" and not with_workers:
        no_workers = True
    configure_logging(settings.log_level)
    sims = sandbox = None
    if with_simulators:
        from cli.contracts import sandbox_ports
        from simulators.launcher import start_simulators
        from simulators.sandbox_server import start_sandbox

        sims = start_simulators(_simulated_ports(settings))
        sandboxed = sandbox_ports(settings, ())
        if sandboxed:  # agencies configured with sandbox = true, on their endpoints' ports
            sandbox = start_sandbox(list(sandboxed), ports=sandboxed,
                                    agencies_dir=settings.path(settings.agencies_dir),
                                    external_dir=settings.path(settings.external_dir))
    hub = _service_hub(lambda: build_hub(settings))
    children = None
    if settings.embedded.worker_processes:
        # The workers are children reading the same settings file.
        from wiring.worker_processes import worker_command

        children = worker_command(ctx.parent.params.get("config_file") if ctx.parent else None)
    try:
        _run_until_signal(lambda stop: run_api_and_workers(
            hub, stop, host=host or settings.api.host, port=port or settings.api.port, with_workers=not no_workers,
            worker_command=children))
    finally:
        hub.dispose()
        for handle in (sims, sandbox):
            if handle is not None:
                handle.stop()


@cli.command()
@click.option("--agency", "agencies", multiple=True, help="Deliver only to these agencies (repeatable).")
@click.option("--concurrency", type=click.IntRange(min=1), default=None,
              help="Calls in flight per agency (default from config; RabbitMQ prefetch follows it).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve /metrics, /healthz and /readyz on this port (default [metrics] worker_port; 0: off).")
@click.option("--wake-fd", type=int, default=None, hidden=True,
              help="A child of `hub.py serve` ([embedded] worker_processes): its API's wake socket.")
@click.pass_context
def worker(ctx: click.Context, agencies: tuple[str, ...], concurrency: int | None, metrics_port: int | None,
           wake_fd: int | None) -> None:
    """Run a delivery worker process until SIGTERM."""
    from bootstrap import build_hub
    from runner import run_workers

    settings = _with_metrics_port(_settings(ctx), "worker_port", metrics_port)
    configure_logging(settings.log_level)
    hub = _service_hub(lambda: build_hub(settings, role="worker"))
    try:
        _run_until_signal(lambda stop: run_workers(hub, stop, list(agencies) or None, concurrency, wake_fd=wake_fd))
    finally:
        hub.dispose()


@cli.command()
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve /metrics, /healthz and /readyz on this port (default [metrics] relay_port; 0: off).")
@click.pass_context
def relay(ctx: click.Context, metrics_port: int | None) -> None:
    """Publish committed outbox rows to RabbitMQ when due (also the retry scheduler), until SIGTERM."""
    from bootstrap import build_hub
    from runner import run_relay_process

    settings = _with_metrics_port(_settings(ctx), "relay_port", metrics_port)
    configure_logging(settings.log_level)
    hub = _service_hub(lambda: build_hub(settings, role="relay"))
    try:
        _run_until_signal(lambda stop: run_relay_process(hub, stop))
    finally:
        hub.dispose()


@cli.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Check the database (and, with RabbitMQ, the broker): one line each, what and where;
    exit 0 if all answer, 1 otherwise. For health checks."""
    from cli.reports import run_check

    sys.exit(run_check(_settings(ctx), _echo))


@cli.command()
@click.pass_context
def queues(ctx: click.Context) -> None:
    """Per agency: open jobs due, scheduled and leased in the store; with RabbitMQ, messages
    ready, consumers and dead letters. Exit 1 if the broker could not be read."""
    from cli.reports import run_queues

    code = run_queues(_settings(ctx), _echo)
    if code:
        sys.exit(code)


@cli.command()
@click.option("--agency", default=None, help="Only this agency's anomalies.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
@click.pass_context
def anomalies(ctx: click.Context, agency: str | None, limit: int) -> None:
    """The latest anomalies, newest first: callbacks that contradicted a recorded protocol
    number or decision (refused, 409) and protocol numbers given to two messages."""
    from cli.reports import run_anomalies

    run_anomalies(_settings(ctx), agency, limit, _echo)


@cli.command()
@click.option("--host", default="127.0.0.1")
@click.pass_context
def simulators(ctx: click.Context, host: str) -> None:
    """Run the four agency simulators on the ports of the configured endpoints."""
    from simulators.launcher import serve_simulators

    settings = _settings(ctx)
    serve_simulators(_simulated_ports(settings), host)


@cli.command()
@click.option("--host", default="127.0.0.1")
@click.option("--agency", "agencies", multiple=True,
              help="Sandbox this agency (repeatable; default: those configured with sandbox = true).")
@click.pass_context
def sandbox(ctx: click.Context, host: str, agencies: tuple[str, ...]) -> None:
    """Serve agencies from the schema-driven sandbox on the ports of their endpoints."""
    from bootstrap import load_contracts
    from cli.contracts import sandbox_ports
    from simulators.sandbox_server import serve_sandboxes

    settings = _settings(ctx)
    try:
        ports = sandbox_ports(settings, agencies)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if not ports:
        raise click.UsageError("no agency to sandbox: name one with --agency, or set sandbox = true")
    click.echo("sandbox: " + ", ".join(f"{ref} on port {port}" for ref, port in ports.items()))
    serve_sandboxes(load_contracts(settings).catalog, ports, host)


@cli.group()
def contracts() -> None:
    """The agency contracts (config/agencies): check them against the routes."""


@contracts.command("check")
@click.option("--routes", "routes_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Routes file to check (default: the configured one).")
@click.pass_context
def contracts_check(ctx: click.Context, routes_file: str | None) -> None:
    """Load every WSDL and OpenAPI document, resolve every route's operation, build a sample
    message per route; exit 1 naming file and operation on a failure."""
    from cli.contracts import run_contracts_check

    code = run_contracts_check(_settings(ctx), Path(routes_file) if routes_file else None, click.echo)
    sys.exit(code)


@cli.command()
@click.option("--fault", "faults", multiple=True, metavar="AGENCY=MODE",
              help="Inject a fault: MODE is flaky (503 twice), outage (503 four times), reject, down, slow.")
@click.option("--timeout", type=float, default=60.0, show_default=True)
@click.pass_context
def demo(ctx: click.Context, faults: tuple[str, ...], timeout: float) -> None:
    """Start everything, submit one filing of each kind, print every recipient's outcome."""
    from cli.demo import DEMO_FAULTS, run_demo

    settings = _settings(ctx)
    log_file = settings.path(settings.data_dir) / "demo.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    parsed: dict[str, str] = {}
    for item in faults:
        agency, _, mode = item.partition("=")
        if agency not in settings.agencies or mode not in DEMO_FAULTS:
            raise click.BadParameter(
                f"{item!r}: expected AGENCY=MODE with AGENCY in {sorted(settings.agencies)} "
                f"and MODE in {sorted(DEMO_FAULTS)}", param_hint="--fault")
        parsed[agency] = mode
    with log_file.open("a") as log_stream:
        configure_logging(settings.log_level, log_stream)
        code = run_demo(settings, faults=parsed, timeout=timeout)
    click.echo(f"logs: {log_file}")
    sys.exit(code)


@cli.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Bring the database to the latest schema (alembic upgrade head)."""
    from storage.engine import build_engine
    from storage.migrate import upgrade_to_head

    settings = _settings(ctx)
    engine = build_engine(settings.database.url, base_dir=settings.path("."))
    upgrade_to_head(engine)
    click.echo("database at head")


@cli.group()
def audit() -> None:
    """The hash-chained audit trail."""


@audit.command("verify")
@click.pass_context
def audit_verify(ctx: click.Context) -> None:
    """Recompute the audit chain: print OK, or the first line edited or whose predecessor is gone."""
    from storage.audit import verify_audit_chain
    from storage.engine import build_engine

    settings = _settings(ctx)
    engine = build_engine(settings.database.url, base_dir=settings.path("."))
    try:
        result = verify_audit_chain(engine)
    finally:
        engine.dispose()
    if result.ok:
        click.echo(f"OK: {result.checked} audit lines, chain intact")
        return
    click.echo(f"BROKEN at audit line {result.broken_id}: {result.reason} "
               f"({result.checked} lines before it verified)", err=True)
    sys.exit(1)


def _with_metrics_port(settings: Settings, key: str, port: int | None) -> Settings:
    """The settings with the command line's `--metrics-port`, when given."""
    if port is None:
        return settings
    return settings.model_copy(update={"metrics": settings.metrics.model_copy(update={key: port})})


def _simulated_ports(settings: Settings) -> dict[str, int]:
    """Ports of the four built-in simulators (agencies added as configuration use the sandbox)."""
    from simulators import AGENCIES

    return {name: _port_of(conf.endpoint) for name, conf in settings.agencies.items()
            if name in AGENCIES and not conf.sandbox}


def _port_of(endpoint: str) -> int:
    from urllib.parse import urlsplit

    port = urlsplit(endpoint).port
    if port is None:
        raise click.UsageError(f"endpoint {endpoint} names no port")
    return port


if __name__ == "__main__":
    cli()
