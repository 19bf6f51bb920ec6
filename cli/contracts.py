"""`hub.py contracts check` and `hub.py sandbox`: the agency contracts as the CLI sees them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from bootstrap import load_contracts
from config.settings import Settings
from routing.routes import MappingError, load_route_table
from schemas.filing import FilingValidator
from schemas.samples import load_sample_filings
from service.contracts_check import Problem, check_routes, resolve_routes

__all__ = ["run_contracts_check", "sandbox_ports"]


def run_contracts_check(settings: Settings, routes_file: Path | None = None,
                        echo: Callable[[str], None] = print) -> int:
    """Load every declared WSDL and OpenAPI document, resolve every route's operation and
    build (without sending) a sample message per route and sample filing.

    Returns:
        0 when everything holds, 1 otherwise; each failure is printed naming the agency file,
        the document and the operation (or the route and mapping file).
    """
    failed = False
    contracts = load_contracts(settings)
    for spec, error in contracts.documents():
        if error is None:
            echo(f"ok    {spec.ref:<24} {spec.kind:<4} {spec.document_text}")
        else:
            failed = True
            echo(f"FAIL  {spec.ref:<24} {error}")
    routes_path = routes_file or settings.path(settings.routes_file)
    try:
        table = load_route_table(routes_path, settings.path(settings.mappings_dir))
    except (MappingError, OSError) as exc:
        echo(f"FAIL  {routes_path.name}: {exc}")
        return 1
    problems: list[Problem] = []
    resolved = resolve_routes(table, contracts, collect=problems)
    validator = FilingValidator(max_bytes=settings.api.max_body_bytes, max_depth=settings.api.max_depth,
                                validators=settings.api.schema_validators)
    try:
        samples = load_sample_filings(settings.path(settings.samples_dir), validator)
    except ValueError as exc:
        echo(f"FAIL  {exc}")
        return 1
    report = check_routes(resolved, contracts, samples)
    for line in report.checked:
        echo(f"ok    {line}")
    for problem in [*problems, *report.problems]:
        failed = True
        echo(f"FAIL  {problem}")
    echo("contracts check: " + ("FAILED" if failed else "passed"))
    return 1 if failed else 0


def sandbox_ports(settings: Settings, agencies: tuple[str, ...]) -> dict[str, int]:
    """Contract ref → port for the agencies to sandbox (default: those with `sandbox = true`),
    on the ports of their configured endpoints (`endpoints.<version>` for other versions).

    Raises:
        ValueError: an unknown agency or an endpoint without a port.
    """
    names = list(agencies) or [n for n, conf in settings.agencies.items() if conf.sandbox]
    catalog = load_contracts(settings).catalog
    ports: dict[str, int] = {}
    for name in names:
        if name not in settings.agencies:
            raise ValueError(f"agency {name!r} has no [agencies.{name}] settings")
        conf = settings.agencies[name]
        agency = catalog.agency(name)
        for version, spec in agency.contracts.items():
            endpoint = conf.endpoints.get(version) or (conf.endpoint if version == agency.current else None)
            if endpoint is None:
                continue
            port = urlsplit(endpoint).port
            if port is None:
                raise ValueError(f"{name}: endpoint {endpoint} names no port")
            ports[spec.ref] = port
    return ports
