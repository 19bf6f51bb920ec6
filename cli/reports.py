"""`hub.py check`, `queues` and `anomalies`: what operators read about the hub's dependencies,
its queues and the anomalies it kept, as plain text.

Each `run_*` writes its report through `echo` and returns the process's exit code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from bootstrap import migrated_engine, uses_rabbitmq
from cli.table import render_table
from config.settings import Settings
from probes import DependencyCheck, check_dependencies
from storage.store import SqlStore

__all__ = ["anomaly_report", "check_report", "queue_report", "run_anomalies", "run_check", "run_queues"]

#: `echo(text, err)`: one line of output, to stderr when `err`.
Echo = Callable[[str, bool], None]


def check_report(settings: Settings) -> list[DependencyCheck]:
    """What this process depends on, each checked now. For health checks and `hub.py check`;
    a password in a URL is never shown."""
    broker = settings.transport.url.get_secret_value() if uses_rabbitmq(settings) else None
    return check_dependencies(settings.database.url, settings.path("."), broker)


def run_check(settings: Settings, echo: Echo) -> int:
    """One line per dependency, what and where; 0 if all answer, 1 otherwise."""
    checks = check_report(settings)
    for what, where, problem in checks:
        if problem is None:
            echo(f"{what:9} ok    {where}", False)
        else:
            echo(f"{what:9} FAIL  {where}: {problem}", True)
    return 1 if any(problem is not None for _, _, problem in checks) else 0


def queue_report(settings: Settings) -> tuple[list[dict[str, Any]], str | None]:
    """One row per agency: its open jobs in the store and, with RabbitMQ, its queues; plus
    the broker's problem if it could not be read (the store's part is shown anyway)."""
    with migrated_engine(settings, pool_size=1) as engine:  # an empty database has no jobs
        jobs = SqlStore(engine).queue_summary()
    agencies = sorted(set(settings.agencies) | set(jobs))
    broker: dict[str, dict[str, int]] = {}
    problem = None
    if uses_rabbitmq(settings):
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


def run_queues(settings: Settings, echo: Echo) -> int:
    """The queue report as a table; 1 if the broker could not be read."""
    rows, problem = queue_report(settings)
    columns = ["agency", "due", "scheduled", "leased"]
    if settings.transport.kind == "rabbitmq":
        columns += ["ready", "consumers", "dead"]
    echo(render_table(columns, [[row.get(c, "?") for c in columns] for row in rows]), False)
    if problem:
        echo(problem, True)
        return 1
    return 0


def anomaly_report(settings: Settings, agency: str | None, limit: int) -> list[dict[str, Any]]:
    """The latest anomalies kept for operators (contradicting callbacks, duplicate protocol
    numbers), newest first."""
    with migrated_engine(settings, pool_size=1) as engine:
        return SqlStore(engine).anomalies(agency, limit)


def run_anomalies(settings: Settings, agency: str | None, limit: int, echo: Echo) -> int:
    """The anomalies as a table (their detail as JSON)."""
    rows = anomaly_report(settings, agency, limit)
    columns = ["createdAt", "agency", "kind", "filingReference", "messageId", "detail"]
    echo(render_table(columns, [[r["createdAt"], r["agency"], r["kind"], r["filingReference"], r["messageId"],
                                 orjson.dumps(r["detail"]).decode()] for r in rows]), False)
    return 0
