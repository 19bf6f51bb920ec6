"""Issue 13, memory: each process kind builds and imports only what it uses (the modules are
most of a process's resident memory), hub.py's services cap glibc's malloc arenas, and the API
runs its blocking work on `[api] threads` threads.

Each import case runs in a fresh interpreter: what a process imported is only visible there.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from cli.client import PortalClient
from config.settings import PROJECT_ROOT
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_process, hub_settings, wait_for
from wiring.memory import UNUSED_OPTIONAL_MODULES, limit_malloc_arenas, optimized_command

FILING = (PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples" / "durc_request.xml").read_bytes()

ROOT = Path(__file__).resolve().parents[2]

#: The agency adapters' libraries (the SOAP stack, XML Schema, the aiohttp pool).
ADAPTER_MODULES = ("adapters.wsdl", "adapters.factory", "zeep", "xmlschema", "aiohttp")
#: The API's own modules and what only it needs (callback signatures: signxml).
API_MODULES = ("api.app", "api.callbacks", "api.ops.auth", "signxml", "jinja2")
#: The HTTP server: only a process that listens (the API, a metrics listener) loads it.
HTTP_SERVER_MODULES = ("uvicorn", "starlette", "api.server")
#: `hub.py`'s command groups by area (portal, operator, drafts ...): no service runs them.
CLI_AREA_MODULES = ("cli.ops_actions", "cli.portal_actions", "cli.portal_commands", "cli.drafts_commands",
                    "cli.filings_commands", "cli.retention_commands", "cli.operator_commands", "cli.portal")

_BUILD = """
import asyncio, json, sys
import bootstrap, hub, runner  # what a service imports: the command line, then its process
from config.settings import load_settings

role = sys.argv[1]
hub = bootstrap.build_hub(load_settings(None), role=role)
readers = []
if role == "all":
    import api.app  # what `serve` imports to build the application
    # The API alone (scaled out): its callback readers, on a client that sends nothing.
    found, client = bootstrap.outcome_readers(hub, None)
    readers = sorted(found)
    try:
        asyncio.run(client.get("http://127.0.0.1:9/"))
    except RuntimeError as refused:
        readers.append(str(refused))
if role == "worker":
    async def build():
        workers = bootstrap.WorkerSet(hub, None)
        await workers.close()
    asyncio.run(build())
print(json.dumps({"modules": sorted(sys.modules), "guard": hub.guard is not None, "readers": readers,
                  "contracts": hub.contracts is not None}))
hub.dispose()
"""


def _built(role: str, tmp_path: Path) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE__", "TRANSPORT__"))}
    env["DATABASE__URL"] = f"sqlite:///{tmp_path / 'crocevia.db'}"
    done = subprocess.run([sys.executable, "-c", _BUILD, role], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_relay_loads_neither_the_adapters_nor_the_api(tmp_path: Path) -> None:
    built = _built("relay", tmp_path)
    modules = set(built["modules"])  # type: ignore[call-overload]  # a JSON list of names
    assert not modules & set(ADAPTER_MODULES + API_MODULES + HTTP_SERVER_MODULES)
    assert built["guard"] is False and built["contracts"] is False


def test_a_process_on_a_migrated_database_loads_no_alembic_and_the_relay_no_http_client(tmp_path: Path) -> None:
    assert "alembic" in _built("relay", tmp_path)["modules"]  # type: ignore[operator]  # the first migrates
    modules = set(_built("relay", tmp_path)["modules"])  # type: ignore[call-overload]  # then at head
    assert not modules & {"alembic", "mako", "httpx", "httpcore"}


def test_the_command_line_alone_loads_no_http_client_nor_signing() -> None:
    """What every service's `hub.py` imports before it runs: the portal and operator commands'
    clients (httpx, jwt) load only when such a command runs."""
    done = subprocess.run([sys.executable, "-c", "import json, sys, hub; print(json.dumps(sorted(sys.modules)))"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    assert not set(json.loads(done.stdout)) & {"httpx", "jwt", "cryptography", "alembic", "structlog",
                                               *CLI_AREA_MODULES}


def test_the_command_groups_by_area_still_answer_and_list() -> None:
    """They load when one of their commands is asked for, or when the commands are listed."""
    from click.testing import CliRunner

    from hub import cli

    listed = CliRunner().invoke(cli, ["--help"])
    assert listed.exit_code == 0, listed.output
    assert all(f"  {name} " in listed.output for name in ("drafts", "events", "operators", "retention", "serve"))
    for command in (["drafts", "--help"], ["events", "--help"], ["lockouts", "--help"]):
        answered = CliRunner().invoke(cli, command)
        assert answered.exit_code == 0 and answered.output.startswith(f"Usage: cli {command[0]} "), answered.output
    unknown = CliRunner().invoke(cli, ["no-such-command"])
    assert unknown.exit_code == 2 and "No such command 'no-such-command'" in unknown.output


_SERVICE = """
import json, logging, sys, warnings
warnings.simplefilter("error")  # zeep loads requests, which looks for an encoding guesser: none, silently
from wiring.memory import skip_unused_optional_modules
skipped = skip_unused_optional_modules()
import httpx, httpcore
import requests, zeep
warnings.resetwarnings()
reply = requests.models.Response()
reply._content, reply.encoding = "protocollo n° 42".encode(), None  # a reply declaring no charset
import structlog
from config.logging import configure_logging
configure_logging("info")
transport = httpx.AsyncHTTPTransport()  # httpcore's connection pool, as the notifier's client has
# The adapters' in-pass retries wait through tenacity's async sleep, which looks the event
# loop up by the modules' names: it must still work.
import asyncio, tenacity
calls = []
async def flaky() -> str:
    calls.append(1)
    if len(calls) < 2:
        raise ConnectionError("once")
    return "ok"
retried = asyncio.run(tenacity.AsyncRetrying(stop=tenacity.stop_after_attempt(2), wait=tenacity.wait_fixed(0.01))(flaky))
try:
    raise ValueError("boom")
except ValueError:
    structlog.get_logger("t").exception("failed")
print(json.dumps({"skipped": skipped, "retried": retried, "text": reply.text,
                  "loaded": sorted(m for m, module in sys.modules.items()
                                   if module is not None and m.split(".")[0] in ("rich", "pygments",
                                                                                 "charset_normalizer"))}))
"""


def test_a_service_goes_without_the_test_tools_optional_packages_and_still_logs_tracebacks() -> None:
    done = subprocess.run([sys.executable, "-c", _SERVICE], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert "charset_normalizer" in UNUSED_OPTIONAL_MODULES  # ~2.7 MiB in the API and every worker
    assert result == {"skipped": list(UNUSED_OPTIONAL_MODULES), "retried": "ok", "text": "protocollo n° 42",
                      "loaded": []}
    logged = json.loads(done.stderr.strip().splitlines()[-1])
    assert logged["event"] == "failed" and logged["exception"].startswith("Traceback")
    assert logged["exception"].endswith("ValueError: boom")


def test_a_worker_loads_the_adapters_but_not_the_api(tmp_path: Path) -> None:
    built = _built("worker", tmp_path)
    modules = set(built["modules"])  # type: ignore[call-overload]  # a JSON list of names
    assert {"adapters.wsdl", "zeep"} <= modules
    assert not modules & set(API_MODULES + HTTP_SERVER_MODULES)
    assert built["guard"] is False and built["contracts"] is True
    # No portal has a callback address here: the notifier, idle, has no connection pool
    # (httpcore); the agencies' clients are aiohttp's.
    assert "httpcore" not in modules
    # The configured agencies each declare their XSD (libxml2 validates): xmlschema, ~11 MiB,
    # loads only for a WSDL that embeds its schemas instead.
    assert "xmlschema" not in modules


#: What only an occasional request needs: the PDF receipt's library and what it pulls in (~20 MiB).
ON_DEMAND_MODULES = ("fpdf", "PIL", "fontTools")


def test_the_api_process_builds_everything(tmp_path: Path) -> None:
    built = _built("all", tmp_path)
    assert built["guard"] is True and built["contracts"] is True
    assert "xmlschema" not in set(built["modules"])  # type: ignore[call-overload]  # JSON intake loads it
    # ... but not what only a receipt needs: it loads with the first receipt.
    assert not set(built["modules"]) & set(ON_DEMAND_MODULES)  # type: ignore[call-overload]
    # Its callback readers only parse: their HTTP client is no connection pool (httpcore, ~4 MiB),
    # and the agencies' aiohttp pool (~7 MiB) is never loaded (only named, loaded on first use).
    assert not set(built["modules"]) & {"httpcore", "aiohttp.client", "aiohttp.connector"}  # type: ignore[call-overload]
    assert built["readers"] == ["cciaa", "inail", "inps", "runts",
                                "the API's outcome readers send nothing: GET http://127.0.0.1:9/"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_the_malloc_arena_cap_is_set_and_zero_leaves_the_default() -> None:
    assert limit_malloc_arenas(2) is True
    assert limit_malloc_arenas(0) is False


def test_the_api_runs_its_blocking_work_on_the_configured_threads(tmp_path: Path, sims: Any) -> None:
    """`[api] threads` bounds starlette's thread pool (anyio's limiter of the API's event loop)
    and the intake's own; the intake's threads, its commit thread included, end with the hub."""
    settings = hub_settings(f"sqlite:///{tmp_path / 'crocevia.db'}",
                            {agency: sims.soap_endpoint(agency) for agency in sims.urls})
    settings = settings.model_copy(update={"api": settings.api.model_copy(update={"threads": 3})})

    async def tokens() -> float:
        from anyio.to_thread import current_default_thread_limiter

        return current_default_thread_limiter().total_tokens

    with RunningHub(settings) as running:
        # The limiter is the event loop's own: ask it in the loop the API serves from.
        assert asyncio.run_coroutine_threadsafe(tokens(), running._loop).result(10) == 3
        # The intake's own pool is held to the same number, however many filings arrive at once
        # (threads of hubs that ran before in this test process are not counted).
        before = {t for t in threading.enumerate() if t.name.startswith("intake")}
        with ThreadPoolExecutor(max_workers=8) as portals:
            def submit(_: int) -> int:
                with PortalClient(running.base_url, TEST_PORTAL_KEY) as client:
                    return client.submit(FILING).status_code

            assert list(portals.map(submit, range(16))) == [202] * 16
        intake = {t for t in threading.enumerate() if t.name.startswith("intake")} - before
        # The checks' threads, and the one thread that commits the checked filings in batches.
        assert 1 <= len({t for t in intake if t.name.startswith("intake_")}) <= 3
        assert len({t for t in intake if t.name.startswith("intake-commit")}) == 1
    # A stopped hub leaves none of its threads behind in a process that goes on.
    assert not [t for t in intake if t.is_alive()]


_FREED_BELOW_A_LIVE_BLOCK = """
import ctypes, ctypes.util, json, sys, time
from wiring.memory import trim_malloc_every

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]

def anon_kib() -> int:
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("RssAnon:"))

blocks = [libc.malloc(4096) for _ in range(8192)]  # 32 MiB in heap-sized blocks (C's, like lxml's)
for block in blocks:
    ctypes.memset(block, 1, 4096)
live = libc.malloc(4096)  # above them: glibc cannot give the freed pages back on its own
for block in blocks:
    libc.free(block)
freed = anon_kib()
if sys.argv[1] == "trim":
    trim_malloc_every(0.05)
deadline = time.monotonic() + 5
while anon_kib() > freed - 24 * 1024 and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({"returned_mib": (freed - anon_kib()) / 1024}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_the_trimmer_hands_freed_heap_pages_back_to_the_system() -> None:
    """C memory freed below a live block stays resident until trimmed (issue 13's soak)."""
    def returned(mode: str) -> float:
        done = subprocess.run([sys.executable, "-c", _FREED_BELOW_A_LIVE_BLOCK, mode], cwd=ROOT,
                              capture_output=True, text=True, timeout=60, check=True)
        return float(json.loads(done.stdout)["returned_mib"])

    assert returned("trim") >= 24
    assert returned("none") < 8  # what the test builds: without the trimmer, it stays


_TRIMMER_THREADS = """
import json, sys, threading
from hub import cli
try:
    cli([*sys.argv[1:], "--help"], prog_name="hub.py")  # the group's start-up, then the command's help
except SystemExit:
    pass
print(json.dumps(sorted(t.name for t in threading.enumerate() if t.name == "malloc-trim")))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_the_services_trim_as_memory_malloc_trim_seconds_says(tmp_path: Path) -> None:
    config = tmp_path / "crocevia.toml"
    shipped = (ROOT / "config" / "crocevia.toml").read_text()
    assert "malloc_trim_seconds = 10\n" in shipped
    config.write_text(shipped.replace("malloc_trim_seconds = 10\n", "malloc_trim_seconds = 0\n"))

    def trimmers(*argv: str, **env: str) -> list[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("MEMORY__")}
        done = subprocess.run([sys.executable, "-c", _TRIMMER_THREADS, *argv], cwd=ROOT, env={**base, **env},
                              capture_output=True, text=True, timeout=60, check=True)
        return list(json.loads(done.stdout.strip().splitlines()[-1]))

    assert trimmers("worker") == ["malloc-trim"]  # the default: every 10 s
    assert trimmers("relay", MEMORY__MALLOC_TRIM_SECONDS="0") == []
    assert trimmers("--config", str(config), "serve") == []
    assert trimmers("--config", str(config), "worker", MEMORY__MALLOC_TRIM_SECONDS="5") == ["malloc-trim"]
    assert trimmers("check") == []  # not a long-running service


def _command_line(pid: int) -> list[str]:
    return (Path(f"/proc/{pid}") / "cmdline").read_bytes().decode().split("\0")[:-1]


def _stopped(proc: subprocess.Popen[bytes]) -> int:
    proc.terminate()
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/PID/cmdline")
def test_a_worker_runs_on_optimized_bytecode_as_the_same_process_and_stops_cleanly(tmp_path: Path) -> None:
    """`[memory] optimized_bytecode` names the worker by default: started as `python hub.py
    worker`, it is soon the same process under `python -OO` (no docstrings: ~5 MiB), and works
    and stops as before."""
    proc, log = hub_process(tmp_path, ["worker", "--metrics-port", "0"])
    try:
        wait_for(lambda: "-OO" in _command_line(proc.pid), timeout=30, what="the worker to run under -OO")
        assert _command_line(proc.pid)[2:] == [str(ROOT / "hub.py"), "worker", "--metrics-port", "0"]
        wait_for(lambda: '"worker_started"' in log.read_text(errors="replace"), timeout=60,
                 what="the worker to start")
        assert proc.poll() is None
    finally:
        code = _stopped(proc)
    assert code == 0, log.read_text()[-3000:]
    assert '"worker_stopped"' in log.read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/PID/cmdline")
def test_a_service_left_out_of_optimized_bytecode_keeps_its_docstrings(tmp_path: Path) -> None:
    proc, log = hub_process(tmp_path, ["worker", "--metrics-port", "0"], MEMORY__OPTIMIZED_BYTECODE="[]")
    try:
        wait_for(lambda: '"worker_started"' in log.read_text(errors="replace"), timeout=60,
                 what="the worker to start")
        assert "-OO" not in _command_line(proc.pid)
    finally:
        assert _stopped(proc) == 0, log.read_text()[-3000:]


def test_a_services_help_is_its_docstring_under_optimized_bytecode_too() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "hub.py"), "worker", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, check=True)
    assert "Run a delivery worker process until SIGTERM." in done.stdout


def test_the_optimized_command_is_the_same_command_under_dash_oo() -> None:
    argv = ["python3", "-X", "importtime", "hub.py", "--config", "c.toml", "worker"]
    assert optimized_command(argv, 0) == [sys.executable, "-OO", "-X", "importtime", "hub.py", "--config", "c.toml",
                                          "worker"]
    assert optimized_command(argv, 1) is not None  # -O keeps the docstrings
    assert optimized_command(argv, 2) is None  # already without them: run on


_SLOW_TRIM = """
import time
from config.logging import configure_logging
from wiring import memory

configure_logging("info")
memory.SLOW_TRIM_SECONDS = 0.0  # every trim counts as slow: each is logged
memory.trim_malloc_every(0.02)
time.sleep(0.3)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_a_slow_trim_is_logged_with_how_long_it_held_malloc() -> None:
    done = subprocess.run([sys.executable, "-c", _SLOW_TRIM], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          check=True)
    logged = [json.loads(line) for line in (done.stdout + done.stderr).splitlines() if line.startswith("{")]
    slow = [e for e in logged if e.get("event") == "malloc_trim_slow"]
    assert slow and all(isinstance(e["ms"], float) and e["ms"] >= 0 for e in slow)
