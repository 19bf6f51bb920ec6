"""Start a real hub (API + embedded worker on loopback) inside the test process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import func, select

from config.logging import configure_logging
from config.settings import PROJECT_ROOT, PortalSettings, Settings, load_settings
from security.keys import generate_private_key, public_pem
from security.modi import ModiSigner

#: The test portals' keys, made once per test session: "test" signs ES256, "other" RS256.
_PORTAL_KEYS = {"test": generate_private_key("ES256"), "other": generate_private_key("RS256")}
#: The audience the test hubs expect (the default `identity.audience`).
AUDIENCE = "crocevia"


def portal_signer(portal: str = "test", clock: Callable[[], float] = time.time, **kwargs: Any) -> ModiSigner:
    """A signer for one of the test portals, on `clock`; kwargs override (audience, lifetime)."""
    options: dict[str, Any] = {"audience": AUDIENCE, "clock": clock, **kwargs}
    return ModiSigner(issuer=portal, private_key=_PORTAL_KEYS[portal], **options)


#: The test portals' credentials: `PortalClient(hub.base_url, TEST_PORTAL_KEY)` signs as "test".
TEST_PORTAL_KEY = portal_signer("test")
OTHER_PORTAL_KEY = portal_signer("other")


def portal_env(portal: str = "test") -> dict[str, str]:
    """Environment variables that register a test portal's public key in a hub subprocess."""
    key = _PORTAL_KEYS[portal]
    prefix = f"PORTALS__{portal.upper()}__"
    return {prefix + "ALGORITHM": "ES256" if portal == "test" else "RS256",
            prefix + "PUBLIC_KEY": public_pem(key).decode()}


class FakeClock:
    """A clock the test moves by hand (token expiry, lockout); starts at the real time."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def hub_settings(database_url: str, endpoints: dict[str, str], **worker: Any) -> Settings:
    """Settings for tests: the given store and endpoints, fast schedules, two test portals."""
    base = load_settings()
    agencies = {
        name: conf.model_copy(
            update={
                "endpoint": endpoints.get(name, conf.endpoint),
                "read_timeout": 2.0,
                "retry": conf.retry.model_copy(update={"initial_wait": 0.01, "max_wait": 0.05, "jitter": 0.01}),
                "schedule": conf.schedule.model_copy(
                    update={"initial_delay": 0.2, "max_delay": 0.5, "jitter": 0.1, "max_rounds": 3}
                ),
                # A circuit that opens in a test closes again (or probes) within a second.
                "circuit": conf.circuit.model_copy(update={"cool_down": 0.3, "probe_wait": 0.05}),
                "late": conf.late.model_copy(
                    update={"poll_initial": 0.05, "poll_max": 0.3, "callback_timeout": 5.0}
                ),
            }
        )
        for name, conf in base.agencies.items()
    }
    return base.model_copy(
        update={
            "database": base.database.model_copy(update={"url": database_url}),
            "agencies": agencies,
            "worker": base.worker.model_copy(update={"poll_interval": 0.02, "max_poll_interval": 0.1, **worker}),
            "notifications": base.notifications.model_copy(
                update={"initial_delay": 0.05, "max_delay": 0.5, "poll_interval": 0.02, "max_poll_interval": 0.1}
            ),
            "portals": {
                name: PortalSettings(algorithm="ES256" if name == "test" else "RS256",
                                     public_key=public_pem(key).decode())
                for name, key in _PORTAL_KEYS.items()
            },
        }
    )


class RunningHub:
    """The API and one embedded worker in a background event loop; `with` stops them."""

    def __init__(self, settings: Settings, *, with_workers: bool = True,
                 clock: Callable[[], float] = time.time,
                 delivery_clock: Callable[[], float] = time.time) -> None:
        from bootstrap import build_hub

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        if settings.api.public_url is None:  # agencies call back this hub, on its test port
            settings = settings.model_copy(
                update={"api": settings.api.model_copy(update={"public_url": self.base_url})})
        self.settings = settings
        self.hub = build_hub(settings, clock=clock, delivery_clock=delivery_clock)
        self._with_workers = with_workers
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RunningHub:
        from runner import run_api_and_workers

        ready = threading.Event()
        errors: list[BaseException] = []

        async def main() -> None:
            self._stop = asyncio.Event()
            started = asyncio.Event()
            task = asyncio.create_task(run_api_and_workers(
                self.hub, self._stop, host="127.0.0.1", port=self.port,
                with_workers=self._with_workers, started=started))
            waiter = asyncio.create_task(started.wait())
            await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
            ready.set()
            await task

        def run() -> None:
            try:
                self._loop.run_until_complete(main())
            except BaseException as exc:  # noqa: BLE001 - reported to the test thread
                errors.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        if not ready.wait(30) or errors:
            raise RuntimeError(f"hub did not start: {errors}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
        self.hub.dispose()

    def count(self, table: Any) -> int:
        with self.hub.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(table)).scalar_one()


#: Settings a test's `hub.py` process takes from the test, never from the environment it runs in
#: (nor Python's optimization level, which `[memory] optimized_bytecode` decides).
_HUB_PROCESS_OWN = ("AGENCIES__", "DATABASE__", "WORKER__", "API__", "SUPERVISION__", "TRANSPORT__", "MEMORY__",
                    "PYTHONOPTIMIZE")


def hub_process(tmp_path: Path, command: list[str], **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`python hub.py COMMAND` on SQLite in `tmp_path`, logging at info into `tmp_path/hub.log`
    (returned with the process); `env` adds to or overrides its settings."""
    log = tmp_path / "hub.log"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_HUB_PROCESS_OWN)}
    clean.update({"DATABASE__URL": f"sqlite:///{tmp_path / 'crocevia.db'}", "LOG_LEVEL": "info", **env})
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(PROJECT_ROOT / "hub.py"), *command], env=clean,
                                cwd=PROJECT_ROOT, stdout=out, stderr=subprocess.STDOUT)
    return proc, log


def wait_for(condition: Callable[[], Any], *, timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    """Wait on a condition with a bound; returns its first truthy value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


#: The pika loggers `configure_logging` sets (levels, one-line filters), put back by `process_logging`.
_PIKA_LOGGERS = ("pika", "pika.adapters.utils.connection_workflow", "pika.adapters.utils.io_services_utils",
                 "pika.adapters.base_connection", "pika.adapters.blocking_connection")


@contextlib.contextmanager
def process_logging(stream: TextIO) -> Iterator[TextIO]:
    """A hub process's logging (`configure_logging` at info) written to `stream`; the test
    runner's own logging is put back afterwards."""
    import structlog

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    pika = {name: (logging.getLogger(name).level, logging.getLogger(name).filters[:]) for name in _PIKA_LOGGERS}
    configure_logging("info", stream)
    # A process caches each module's logger on first use; here that would keep this test's
    # processors (and stream) in the modules' loggers for every later test's capture_logs().
    structlog.configure(cache_logger_on_first_use=False)
    try:
        yield stream
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, (level, filters) in pika.items():
            logging.getLogger(name).setLevel(level)
            logging.getLogger(name).filters[:] = filters
        structlog.reset_defaults()
