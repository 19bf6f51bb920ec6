#!/usr/bin/env python3
"""Crocevia's command line: parse arguments, load settings, hand over to bootstrap. No logic."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from cli.drafts import DraftCommands
    from cli.ops_client import OpsClient
    from cli.portal import PortalSession

from cli.portal import portal_options, session_of
from config.logging import configure_logging
from config.settings import Settings, load_settings


def _settings(ctx: click.Context) -> Settings:
    return ctx.obj["settings"]


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


#: Long-running commands: a SIGTERM stops them cleanly (exit 0) at any moment.
_SERVICES = {"serve", "worker", "relay", "simulators", "sandbox"}


def _echo(text: str, err: bool) -> None:
    click.echo(text, err=err)


def _exit_before_running(_signum: int, _frame: object) -> None:
    raise SystemExit(0)


@click.group()
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
        from wiring.memory import limit_malloc_arenas

        # Before any thread starts: each would otherwise take (and keep) an arena of its own.
        limit_malloc_arenas(settings.memory.malloc_arena_max)
    ctx.obj = {"settings": settings}


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
    from probes import when_store_ready
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
    hub = when_store_ready(lambda: build_hub(settings))
    try:
        _run_until_signal(lambda stop: run_api_and_workers(
            hub, stop, host=host or settings.api.host, port=port or settings.api.port, with_workers=not no_workers))
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
@click.pass_context
def worker(ctx: click.Context, agencies: tuple[str, ...], concurrency: int | None, metrics_port: int | None) -> None:
    """Run a delivery worker process until SIGTERM."""
    from bootstrap import build_hub
    from probes import when_store_ready
    from runner import run_workers

    settings = _with_metrics_port(_settings(ctx), "worker_port", metrics_port)
    configure_logging(settings.log_level)
    hub = when_store_ready(lambda: build_hub(settings, role="worker"))
    try:
        _run_until_signal(lambda stop: run_workers(hub, stop, list(agencies) or None, concurrency))
    finally:
        hub.dispose()


@cli.command()
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None,
              help="Serve /metrics, /healthz and /readyz on this port (default [metrics] relay_port; 0: off).")
@click.pass_context
def relay(ctx: click.Context, metrics_port: int | None) -> None:
    """Publish committed outbox rows to RabbitMQ when due (also the retry scheduler), until SIGTERM."""
    from bootstrap import build_hub
    from probes import when_store_ready
    from runner import run_relay_process

    settings = _with_metrics_port(_settings(ctx), "relay_port", metrics_port)
    configure_logging(settings.log_level)
    hub = when_store_ready(lambda: build_hub(settings, role="relay"))
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
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--url", default=None, help="Hub base URL (default from config).")
@click.option("--portal", envvar="CROCEVIA_PORTAL", default="demo", show_default=True,
              help="The portal whose key signs (env CROCEVIA_PORTAL).")
@click.option("--idempotency-key", default=None)
@click.option("--user", default=None, metavar="TAX_CODE",
              help="The user the portal vouches for (default: each filing's declarant, as the demo portal).")
@click.option("--auth", default="SPID2", show_default=True, help="How the user logged in: SPID1..3, CIE or CNS.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer (only it, on stdout).")
@click.pass_context
def submit(ctx: click.Context, files: tuple[str, ...], url: str | None, portal: str, idempotency_key: str | None,
           user: str | None, auth: str, as_json: bool) -> None:
    """Submit filings (XML or JSON files) to a running hub, ModI-signed; print each filing's
    reference and recipients. A refused file is one line on stderr; the others still go."""
    from cli.client import declarant_of
    from cli.portal import EXIT_USAGE, PortalError, checked, make_user, portal_client, print_json
    from cli.table import render_table

    session = session_of(ctx, url, portal, user, auth, as_json)
    answers: list[dict[str, Any]] = []
    code = 0
    with portal_client(_settings(ctx), session) as client:
        for name in files:
            data = Path(name).read_bytes()
            ctype = "application/json" if name.endswith(".json") else "application/xml"
            try:
                tax_code = user or declarant_of(data, ctype)
                if not tax_code:
                    raise PortalError("no declarant tax code found; name the user with --user", EXIT_USAGE)
                body = checked(client.submit(data, content_type=ctype, idempotency_key=idempotency_key,
                                             user=make_user(tax_code, auth)))
            except PortalError as exc:
                click.echo(f"error: {name}: {exc}", err=True)
                code = code or exc.exit_code
                continue
            answers.append({"file": name, **body})
    if as_json:
        print_json(answers[0] if len(files) == 1 and answers else answers)
    elif answers:
        click.echo(render_table(["file", "filing", "state", "recipients"], [
            [a["file"], a.get("reference"), a.get("state"),
             ", ".join(f"{r.get('agency')} {r.get('operation')}" for r in a.get("recipients") or [])]
            for a in answers]))
    sys.exit(code)


@cli.command()
@click.argument("references", nargs=-1, required=True)
@click.option("--wait", is_flag=True, help="Poll until each filing settles (a progress line on stderr).")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="How long --wait waits.")
@portal_options
@click.pass_context
def status(ctx: click.Context, references: tuple[str, ...], url: str | None, portal: str, user: str, auth: str,
           wait: bool, timeout: float, as_json: bool) -> None:
    """Show filings and every recipient's state."""
    from cli.portal_actions import run_status

    run_status(ctx, session_of(ctx, url, portal, user, auth, as_json), references, wait=wait, timeout=timeout)


@cli.group()
@click.option("--url", default=None, help="Hub base URL (default from config).")
@click.option("--portal", envvar="CROCEVIA_PORTAL", default="demo", show_default=True,
              help="The portal whose key signs (env CROCEVIA_PORTAL).")
@click.option("--user", envvar="CROCEVIA_USER", default=None, metavar="TAX_CODE",
              help="The user the portal vouches for (env CROCEVIA_USER).")
@click.option("--auth", default="SPID2", show_default=True, help="How the user logged in: SPID1..3, CIE or CNS.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer (only it, on stdout).")
@click.pass_context
def drafts(ctx: click.Context, url: str | None, portal: str, user: str | None, auth: str, as_json: bool) -> None:
    """A portal user's drafts: create, update, show, list, delete, check, submit. The portal's
    options go before the command or after it, as on every other portal command."""
    ctx.obj["drafts"] = {"url": url, "portal": portal, "user": user, "auth": auth, "as_json": as_json}


def _drafts(ctx: click.Context, run: Callable[[DraftCommands], int]) -> None:
    """Run one draft command with the portal's credentials; exit with its status."""
    from cli.drafts import DraftCommands
    from cli.portal import portal_client

    opts = ctx.obj["drafts"]
    if not opts["user"]:
        raise click.UsageError("Missing option '--user' (or CROCEVIA_USER).")
    session = session_of(ctx, opts["url"], opts["portal"], opts["user"], opts["auth"], opts["as_json"])
    with portal_client(_settings(ctx), session) as client:
        code = run(DraftCommands(client, click.echo, lambda line: click.echo(line, err=True),
                                 as_json=session.as_json))
    sys.exit(code)


_FILE = click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))


def _draft_option(name: str) -> Callable[[click.Context, click.Parameter, object], None]:
    """A portal option given after the draft command: it overrides the group's."""

    def given(ctx: click.Context, _param: click.Parameter, value: object) -> None:
        if value is not None and value is not False:
            ctx.obj["drafts"][name] = value

    return given


def _draft_options(fn: Callable[..., object]) -> Callable[..., object]:
    """`--url/--portal/--user/--auth/--json` after a draft command too (`drafts list --json`)."""
    for flag, name, more in (
            ("--json", "as_json", {"is_flag": True, "default": False, "help": "Print the API's JSON answer."}),
            ("--auth", "auth", {"help": "How the user logged in: SPID1..3, CIE or CNS."}),
            ("--user", "user", {"metavar": "TAX_CODE", "help": "The user the portal vouches for."}),
            ("--portal", "portal", {"help": "The portal whose key signs (default demo)."}),
            ("--url", "url", {"help": "Hub base URL (default from config)."})):
        fn = click.option(flag, name, expose_value=False, callback=_draft_option(name), **more)(fn)
    return fn


@drafts.command("create")
@_draft_options
@_FILE
@click.pass_context
def drafts_create(ctx: click.Context, file: Path) -> None:
    """Save FILE (XML or .json) as a new draft; print its warnings."""
    _drafts(ctx, lambda c: c.create(file))


@drafts.command("update")
@_draft_options
@click.argument("draft_id")
@_FILE
@click.option("--if-match", default=None, help='The ETag read ("N"); a stale one is refused.')
@click.pass_context
def drafts_update(ctx: click.Context, draft_id: str, file: Path, if_match: str | None) -> None:
    """Replace DRAFT_ID's document with FILE."""
    _drafts(ctx, lambda c: c.update(draft_id, file, if_match))


@drafts.command("show")
@_draft_options
@click.argument("draft_id")
@click.pass_context
def drafts_show(ctx: click.Context, draft_id: str) -> None:
    """One draft and its warnings."""
    _drafts(ctx, lambda c: c.show(draft_id))


@drafts.command("list")
@_draft_options
@click.option("--cursor", default=None)
@click.option("--limit", type=click.IntRange(1, 200), default=None)
@click.pass_context
def drafts_list(ctx: click.Context, cursor: str | None, limit: int | None) -> None:
    """The drafts the user may read, newest first."""
    _drafts(ctx, lambda c: c.list(cursor, limit))


@drafts.command("delete")
@_draft_options
@click.argument("draft_id")
@click.pass_context
def drafts_delete(ctx: click.Context, draft_id: str) -> None:
    """Delete DRAFT_ID."""
    _drafts(ctx, lambda c: c.delete(draft_id))


@drafts.command("check")
@_draft_options
@click.argument("draft_id")
@click.option("--preview", is_flag=True, help="Also print each agency's message as it would be sent.")
@click.pass_context
def drafts_check(ctx: click.Context, draft_id: str, preview: bool) -> None:
    """Run the whole intake on DRAFT_ID without filing it."""
    _drafts(ctx, lambda c: c.check(draft_id, preview))


@drafts.command("submit")
@_draft_options
@click.argument("draft_id")
@click.option("--idempotency-key", default=None)
@click.pass_context
def drafts_submit(ctx: click.Context, draft_id: str, idempotency_key: str | None) -> None:
    """File DRAFT_ID (once: a repeat answers the same filing)."""
    _drafts(ctx, lambda c: c.submit(draft_id, idempotency_key))


@cli.command()
@click.argument("reference")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, writable=True),
              help="Where to write the PDF.")
@portal_options
@click.pass_context
def receipt(ctx: click.Context, reference: str, output: str, url: str | None, portal: str, user: str,
            auth: str, as_json: bool) -> None:
    """Save a settled filing's PDF receipt (each agency's protocol number, date and outcome)."""
    from cli.portal import EXIT_CANNOT_WRITE, PortalError, checked, portal_client, print_json

    with portal_client(_settings(ctx), session_of(ctx, url, portal, user, auth, as_json)) as client:
        response = client.receipt(reference)
        if response.status_code != 200:
            checked(response)  # the refusal, in one line
        try:
            Path(output).write_bytes(response.content)
        except OSError as exc:
            raise PortalError(f"cannot write {output}: {exc.strerror}", EXIT_CANNOT_WRITE) from None
    if as_json:
        print_json({"reference": reference, "file": output, "bytes": len(response.content)})
    else:
        click.echo(f"{reference}: receipt saved to {output} ({len(response.content)} bytes)")


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


@cli.group()
def lockouts() -> None:
    """Callers locked out after repeated authentication failures."""


@lockouts.command("list")
@click.option("--all", "counting", is_flag=True, help="Also callers with failures on record but not locked.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_context
def lockouts_list(ctx: click.Context, counting: bool, as_json: bool) -> None:
    """List locked callers: `address:<ip>` (signatures that did not verify),
    `portal:<id>/user:<tax code>` (signed requests refused) or `operator:<name>` (failed logins)."""
    from cli.lockouts import run_lockouts_list

    sys.exit(run_lockouts_list(_settings(ctx), click.echo, counting=counting, as_json=as_json))


@lockouts.command("lift")
@click.argument("key")
@click.option("--operator", default=None, metavar="NAME",
              help="Who lifts it, for the audit trail (default: the OS user).")
@click.pass_context
def lockouts_lift(ctx: click.Context, key: str, operator: str | None) -> None:
    """Lift KEY's lock (as `lockouts list` shows it) and clear its failures; audited."""
    from cli.lockouts import run_lockouts_lift

    sys.exit(run_lockouts_lift(_settings(ctx), key, _operator_name(operator), click.echo))


def _operator_name(operator: str | None) -> str:
    """Who acts, for the audit trail: `--operator`, or the OS user."""
    import getpass

    name = (operator or getpass.getuser()).strip()
    if not name:
        raise click.BadParameter("the operator's name is empty", param_hint="--operator")
    return name


def _actor(operator: str | None) -> str:
    """`operator:<name>` for the audit trail: `--operator`, or the OS user."""
    return f"operator:{_operator_name(operator)}"


_ACTOR_OPTION = click.option("--operator", "acting", default=None, metavar="NAME",
                             help="Who does it, for the audit trail (default: the OS user).")
_ROLE = click.Choice(["viewer", "operator", "admin"])


@cli.group()
def operators() -> None:
    """Operator accounts (console and operator API) and their personal access tokens."""


@operators.command("add")
@click.argument("name")
@click.option("--role", type=_ROLE, required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@click.option("--totp", is_flag=True, help="Enrol a TOTP second factor; prints its provisioning URI once.")
@_ACTOR_OPTION
@click.pass_context
def operators_add(ctx: click.Context, name: str, role: str, password_stdin: bool, totp: bool,
                  acting: str | None) -> None:
    """Add operator NAME (without --password-stdin: tokens only, no console login)."""
    from cli.operators import run_operators_add

    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("--password-stdin: stdin gave no password")
    sys.exit(run_operators_add(_settings(ctx), name, role, _actor(acting), click.echo, password=password,
                               totp=totp))


@operators.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_context
def operators_list(ctx: click.Context, as_json: bool) -> None:
    """List operator accounts with role and state."""
    from cli.operators import run_operators_list

    sys.exit(run_operators_list(_settings(ctx), click.echo, as_json=as_json))


@operators.command("role")
@click.argument("name")
@click.argument("role", type=_ROLE)
@_ACTOR_OPTION
@click.pass_context
def operators_role(ctx: click.Context, name: str, role: str, acting: str | None) -> None:
    """Give operator NAME the role ROLE."""
    from cli.operators import run_operators_role

    sys.exit(run_operators_role(_settings(ctx), name, role, _actor(acting), click.echo))


@operators.command("disable")
@click.argument("name")
@_ACTOR_OPTION
@click.pass_context
def operators_disable(ctx: click.Context, name: str, acting: str | None) -> None:
    """Disable operator NAME: sessions end, tokens stop working (the account is kept)."""
    from cli.operators import run_operators_disable

    sys.exit(run_operators_disable(_settings(ctx), name, _actor(acting), click.echo))


@operators.command("token")
@click.argument("name")
@click.option("--label", default="", help="What the token is for (shown in `operators tokens`).")
@click.option("--days", type=click.IntRange(min=1), default=None, help="Lifetime (default from config).")
@_ACTOR_OPTION
@click.pass_context
def operators_token(ctx: click.Context, name: str, label: str, days: int | None, acting: str | None) -> None:
    """Issue a personal access token for NAME; it is printed once."""
    from cli.operators import run_operators_token

    sys.exit(run_operators_token(_settings(ctx), name, _actor(acting), click.echo, label=label, days=days))


@operators.command("tokens")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@click.pass_context
def operators_tokens(ctx: click.Context, name: str, as_json: bool) -> None:
    """List NAME's tokens (ids, labels, expiry, last use, revocation; never the tokens)."""
    from cli.operators import run_operators_tokens

    sys.exit(run_operators_tokens(_settings(ctx), name, click.echo, as_json=as_json))


@operators.command("revoke-token")
@click.argument("token_id")
@_ACTOR_OPTION
@click.pass_context
def operators_revoke_token(ctx: click.Context, token_id: str, acting: str | None) -> None:
    """Revoke the token TOKEN_ID (as `operators token` printed it)."""
    from cli.operators import run_operators_revoke_token

    sys.exit(run_operators_revoke_token(_settings(ctx), token_id, _actor(acting), click.echo))


@cli.group()
def filings() -> None:
    """Search filings (operators: every one, with a token; portals: the user's, with --user),
    show one's full history (operators), archive and unarchive (portals)."""


def _ops_client(ctx: click.Context, url: str | None, token: str | None) -> OpsClient:
    from cli.ops_client import OpsClient, hub_url

    if not token:
        raise click.UsageError("a personal access token is needed: --token or CROCEVIA_OPERATOR_TOKEN")
    return OpsClient(hub_url(_settings(ctx), url), token)


_OPS_URL = click.option("--url", default=None, help="Hub base URL (default from config).")
_OPS_TOKEN = click.option("--token", envvar="CROCEVIA_OPERATOR_TOKEN", default=None, show_envvar=True,
                          help="The operator's personal access token.")


@filings.command("search")
@click.option("--reference", default=None)
@click.option("--state", default=None, help="Operators: the recipient's state (pending, retrying, undeliverable, ...).")
@click.option("--filing-state", default=None, help="The filing's state (in_progress, protocolled, ...).")
@click.option("--agency", default=None)
@click.option("--kind", default=None)
@click.option("--subject", "subject_tax_code", default=None, metavar="TAX_CODE")
@click.option("--portal", default=None,
              help="Operators: only this portal's filings. With --user: the portal that signs (default demo).")
@click.option("--protocol-number", default=None)
@click.option("--message-id", default=None, help="Operators only.")
@click.option("--from", "from_", default=None, metavar="RFC3339", help="Filed at or after (with offset).")
@click.option("--to", default=None, metavar="RFC3339", help="Filed before (with offset).")
@click.option("--archived", type=click.Choice(["false", "true", "any"]), default=None,
              help="Portals: archived filings too (any) or only them (true); default false.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--cursor", default=None, help="Start after this cursor (printed under a page).")
@click.option("--all", "follow", is_flag=True, help="Follow the cursor through every page.")
@click.option("--json", "as_json", is_flag=True)
@click.option("--user", default=None, metavar="TAX_CODE",
              help="Search as a portal for this user (their own and delegated filings), ModI-signed.")
@click.option("--auth", default="SPID2", show_default=True, help="With --user: SPID1..3, CIE or CNS.")
@_OPS_URL
@_OPS_TOKEN
@click.pass_context
def filings_search(ctx: click.Context, url: str | None, token: str | None, limit: int, follow: bool,
                   as_json: bool, user: str | None, auth: str, archived: str | None, **filters: str | None) -> None:
    """Search filings, newest first: as an operator (--token: every filing and its recipients)
    or as a portal (--user: the user's own and delegated filings)."""
    if user is not None:
        sys.exit(_portal_search(ctx, url, user, auth, limit, follow, as_json, archived, filters))
    if archived is not None:
        raise click.UsageError("--archived is a portal's filter: name the user with --user")
    from cli.ops_client import run_filings_search

    names = {"reference": "reference", "state": "state", "filing_state": "filingState", "agency": "agency",
             "kind": "kind", "subject_tax_code": "subjectTaxCode", "portal": "portal",
             "protocol_number": "protocolNumber", "message_id": "messageId", "from_": "from", "to": "to",
             "cursor": "cursor"}
    params = {names[k]: v for k, v in filters.items() if v is not None}
    client = _ops_client(ctx, url, token)
    try:
        code = run_filings_search(client, params, click.echo, as_json=as_json, limit=limit, follow=follow)
    finally:
        client.close()
    sys.exit(code)


def _portal_search(ctx: click.Context, url: str | None, user: str, auth: str, limit: int, follow: bool,
                   as_json: bool, archived: str | None, filters: dict[str, str | None]) -> int:
    from cli.portal import portal_client
    from cli.portal_search import run_portal_search

    for operator_only in ("state", "message_id"):
        if filters.get(operator_only) is not None:
            flag = "--" + operator_only.replace("_", "-")
            raise click.UsageError(f"{flag} is an operator's filter; portals search by --filing-state")
    if limit > 200:
        raise click.UsageError("--limit: a portal's page is 1 to 200 filings")
    names = {"reference": "reference", "filing_state": "state", "agency": "agency", "kind": "kind",
             "subject_tax_code": "subjectTaxCode", "protocol_number": "protocolNumber", "from_": "from",
             "to": "to", "cursor": "cursor"}
    params = {names[k]: v for k, v in filters.items() if k in names and v is not None}
    if archived is not None:
        params["archived"] = archived
    session = session_of(ctx, url, filters.get("portal") or "demo", user, auth, as_json)
    with portal_client(_settings(ctx), session) as client:
        return run_portal_search(client, params, click.echo, as_json=as_json, limit=limit, follow=follow)


@filings.command("archive")
@click.argument("reference")
@portal_options
@click.pass_context
def filings_archive(ctx: click.Context, reference: str, url: str | None, portal: str, user: str, auth: str,
                    as_json: bool) -> None:
    """Archive a settled filing (it leaves the desk's default search list, stays findable)."""
    _archive(ctx, session_of(ctx, url, portal, user, auth, as_json), reference, True)


@filings.command("unarchive")
@click.argument("reference")
@portal_options
@click.pass_context
def filings_unarchive(ctx: click.Context, reference: str, url: str | None, portal: str, user: str, auth: str,
                      as_json: bool) -> None:
    """Put an archived filing back on the desk's default search list."""
    _archive(ctx, session_of(ctx, url, portal, user, auth, as_json), reference, False)


def _archive(ctx: click.Context, session: PortalSession, reference: str, archived: bool) -> None:
    from cli.portal import portal_client
    from cli.portal_search import run_portal_archive

    with portal_client(_settings(ctx), session) as client:
        code = run_portal_archive(client, reference, archived, click.echo, as_json=session.as_json)
    sys.exit(code)


@cli.group()
def retention() -> None:
    """Purge the payloads of filings settled longer ago than `[retention] settled_payload_days`."""


@retention.command("run")
@click.option("--dry-run", is_flag=True, help="List what would be purged; change nothing.")
@click.option("--days", type=click.IntRange(min=1), default=None, help="Override the configured period.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def retention_run(ctx: click.Context, dry_run: bool, days: int | None, as_json: bool) -> None:
    """Purge now (a worker also does it every `[retention] interval_seconds`); each purge is audited."""
    from bootstrap import migrated_engine
    from cli.portal_search import run_retention
    from service.ports import StoreError
    from service.retention import run_retention as purge
    from storage.retention import RetentionStore
    from storage.store import SqlStore

    settings = _settings(ctx)
    conf = settings.retention
    try:
        with migrated_engine(settings, pool_size=2) as engine:
            report = purge(RetentionStore(engine, SqlStore(engine).writer), days or conf.settled_payload_days,
                           batch=conf.batch, dry_run=dry_run)
    except StoreError as exc:
        click.echo(f"the store failed: {exc}", err=True)
        sys.exit(69)
    sys.exit(run_retention(report, click.echo, as_json=as_json))


@filings.command("show")
@click.argument("reference")
@click.option("--json", "as_json", is_flag=True)
@_OPS_URL
@_OPS_TOKEN
@click.pass_context
def filings_show(ctx: click.Context, reference: str, url: str | None, token: str | None, as_json: bool) -> None:
    """One filing: every recipient, its attempts, anomalies and events."""
    from cli.ops_client import run_filings_show

    client = _ops_client(ctx, url, token)
    try:
        code = run_filings_show(client, reference, click.echo, as_json=as_json)
    finally:
        client.close()
    sys.exit(code)


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


# Operators' actions over the operator API: resend, retry, cancel, agencies …, dlq … (cli/ops_actions.py).
from cli.ops_actions import register as _register_ops_actions  # noqa: E402 - commands added to `cli`

_register_ops_actions(cli)

# Portals' commands over the portal API: events, delegations … (cli/portal_actions.py).
from cli.portal_actions import register as _register_portal_actions  # noqa: E402 - commands added to `cli`

_register_portal_actions(cli)


if __name__ == "__main__":
    cli()
