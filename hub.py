#!/usr/bin/env python3
"""Crocevia's command line: parse arguments, load settings, hand over to bootstrap. No logic."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import click

from config.logging import configure_logging
from config.settings import Settings, load_settings


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


def _run_until_signal(main) -> None:  # type: ignore[no-untyped-def]
    async def runner() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    asyncio.run(runner())


@click.group()
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Settings file (default config/crocevia.toml).")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None) -> None:
    """Crocevia, the interoperability hub."""
    settings = load_settings(config_file)
    ctx.obj = {"settings": settings}


@cli.command()
@click.option("--host", default=None, help="Address to bind (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (default from config).")
@click.option("--with-simulators", is_flag=True, help="Also start the four agency simulators.")
@click.option("--no-workers", is_flag=True, help="Serve the API only (workers run elsewhere).")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, with_simulators: bool, no_workers: bool) -> None:
    """Serve the intake and status API with embedded workers."""
    from bootstrap import build_hub, run_api_and_workers

    settings = _settings(ctx)
    configure_logging(settings.log_level)
    sims = None
    if with_simulators:
        from simulators.launcher import start_simulators

        sims = start_simulators({name: _port_of(conf.endpoint) for name, conf in settings.agencies.items()})
    hub = build_hub(settings)
    try:
        _run_until_signal(lambda stop: run_api_and_workers(
            hub, stop, host=host or settings.api.host, port=port or settings.api.port, with_workers=not no_workers))
    finally:
        hub.dispose()
        if sims is not None:
            sims.stop()


@cli.command()
@click.option("--agency", "agencies", multiple=True, help="Deliver only to these agencies (repeatable).")
@click.pass_context
def worker(ctx: click.Context, agencies: tuple[str, ...]) -> None:
    """Run a delivery worker process until SIGTERM."""
    from bootstrap import build_hub, run_workers

    settings = _settings(ctx)
    configure_logging(settings.log_level)
    hub = build_hub(settings)
    try:
        _run_until_signal(lambda stop: run_workers(hub, stop, list(agencies) or None))
    finally:
        hub.dispose()


@cli.command()
@click.option("--host", default="127.0.0.1")
@click.pass_context
def simulators(ctx: click.Context, host: str) -> None:
    """Run the four agency simulators on the ports of the configured endpoints."""
    from simulators.launcher import serve_simulators

    settings = _settings(ctx)
    serve_simulators({name: _port_of(conf.endpoint) for name, conf in settings.agencies.items()}, host)


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
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--url", default=None, help="Hub base URL (default from config).")
@click.option("--portal", default="demo", show_default=True)
@click.option("--idempotency-key", default=None)
@click.pass_context
def submit(ctx: click.Context, files: tuple[str, ...], url: str | None, portal: str, idempotency_key: str | None) -> None:
    """Submit filings (XML or JSON files) to a running hub and print its answers."""
    from bootstrap import portal_key
    from cli.client import PortalClient

    settings = _settings(ctx)
    base = url or f"http://{settings.api.host}:{settings.api.port}"
    failed = False
    with PortalClient(base, portal_key(settings, portal)) as client:
        for name in files:
            data = Path(name).read_bytes()
            ctype = "application/json" if name.endswith(".json") else "application/xml"
            response = client.submit(data, content_type=ctype, idempotency_key=idempotency_key)
            failed |= response.status_code >= 400
            click.echo(f"{name}: {response.status_code} {response.text}")
    sys.exit(1 if failed else 0)


@cli.command()
@click.argument("references", nargs=-1, required=True)
@click.option("--url", default=None, help="Hub base URL (default from config).")
@click.option("--portal", default="demo", show_default=True)
@click.pass_context
def status(ctx: click.Context, references: tuple[str, ...], url: str | None, portal: str) -> None:
    """Show filings and every recipient's state."""
    from bootstrap import portal_key
    from cli.client import PortalClient
    from cli.table import filings_table

    settings = _settings(ctx)
    base = url or f"http://{settings.api.host}:{settings.api.port}"
    with PortalClient(base, portal_key(settings, portal)) as client:
        views = []
        for reference in references:
            response = client.status(reference)
            if response.status_code != 200:
                click.echo(f"{reference}: {response.status_code} {response.json().get('detail')}", err=True)
                sys.exit(1)
            views.append(response.json())
    click.echo(filings_table(views))


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


def _port_of(endpoint: str) -> int:
    from urllib.parse import urlsplit

    port = urlsplit(endpoint).port
    if port is None:
        raise click.UsageError(f"endpoint {endpoint} names no port")
    return port


if __name__ == "__main__":
    cli()
