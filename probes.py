"""Is what this process depends on there? Probes of the store and the broker, for `/readyz`,
`hub.py check` and a start that waits for the database.

A top-level edge module rather than part of `service/`: probes open real connections (through
`storage.connect` and `transport.rabbitmq`), and one check covers both the store and the broker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import NamedTuple, TypeVar
from urllib.parse import urlsplit, urlunsplit

import structlog

from service.ports import StoreUnavailable
from service.supervisor import Supervisor
from storage.connect import ping_store, unreachable_at_start
from storage.engine import build_engine

__all__ = ["DependencyCheck", "check_dependencies", "readiness_check", "when_store_ready", "without_password"]

log = structlog.get_logger("crocevia.bootstrap")

T = TypeVar("T")


class DependencyCheck(NamedTuple):
    """One dependency checked now: what, where (never with a password), and its problem or None."""

    what: str
    where: str
    problem: str | None


def when_store_ready(build: Callable[[], T], *, timeout: float = 120.0) -> T:
    """`build()`, tried again with backoff while the database is unreachable.

    A process started while PostgreSQL restarts (or before it is up) waits for it instead of
    exiting; past `timeout` the last error is raised.
    """
    delay, deadline = 0.5, time.monotonic() + timeout
    while True:
        try:
            with unreachable_at_start():
                return build()
        except StoreUnavailable as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("database_unavailable", error=str(exc).splitlines()[0], retry_in=delay)
            time.sleep(delay)  # a blocking start-up: nothing else runs yet
            delay = min(5.0, delay * 2)


def check_dependencies(database_url: str, base_dir: Path, broker_url: str | None) -> list[DependencyCheck]:
    """The store and (if `broker_url` is given) the broker, each checked now."""
    from service.relay import TransportError

    database = without_password(database_url)
    checks: list[DependencyCheck] = []
    engine = build_engine(database_url, base_dir=base_dir, pool_size=1)
    try:
        ping_store(engine)
        checks.append(DependencyCheck("database", database, None))
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        checks.append(DependencyCheck("database", database, f"{type(exc).__name__}: {str(exc).splitlines()[0]}"))
    finally:
        engine.dispose()
    if broker_url is not None:
        from transport.rabbitmq import probe

        where = without_password(broker_url)
        try:
            probe(broker_url)
            checks.append(DependencyCheck("broker", where, None))
        except TransportError as exc:
            checks.append(DependencyCheck("broker", where, str(exc)))
    return checks


def without_password(url: str) -> str:
    """`url` with its password (if any) shown as `***`."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]  # as written: an IPv6 address keeps its brackets
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def readiness_check(supervisor: Supervisor, checks: Mapping[str, Callable[[], None]], *, timeout: float,
                    stall_after: float) -> Callable[[], Awaitable[dict[str, str]]]:
    """What `/readyz` asks: the supervisor's dead and stalled loops, and whether each of
    `checks` (a blocking probe: the store, the broker) answers within `timeout`.

    One probe of each runs at a time: a hung database does not pile up threads, one per probe.
    """
    probes: dict[str, asyncio.Future[None] | None] = {name: None for name in checks}

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
        failing.update(supervisor.stalled(stall_after))
        answers = await asyncio.gather(*(ask(name) for name in checks))
        failing.update({name: why for name, why in zip(checks, answers) if why is not None})
        return failing

    return check
