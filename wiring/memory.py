"""Process-wide memory tuning applied by `hub.py`'s services before they build anything.

glibc gives threads their own malloc arenas (up to 8 per core); the thread pools of a hub
process (anyio's, SQLAlchemy's callers, pika's) each touch one, and every arena keeps freed
pages resident. Capping the arenas at start bounds that growth (issue 13: <= 120 MiB per process),
and trimming the heaps now and then returns the pages freed below live blocks, which glibc
otherwise keeps for good.

Python's cyclic collector is tuned too. Its youngest generation is collected after every 700
new container objects by default, and each full collection walks every object the process
holds: the modules, settings, compiled schemas and contracts of a service, most of which live
as long as it does. A service collects its young objects less often, and a while after it
starts (when it has built what it builds lazily) sets aside what it holds then from every
later collection (`gc.freeze`). Under `bench/rabbitmq_e2e.py --workers 2` the collector took
6 % of the API's CPU and 9–14 % of each worker's, a full collection ~70–140 ms at a time.

A worker's and the relay's docstrings are never read: those services run on Python's
optimized bytecode (`-OO`), ~5 MiB less of each (`run_optimized`).

Some libraries also import optional packages merely because they are installed (in a development
environment they are: the test tools bring them), and keep them resident for nothing. And a part
built with an HTTP client it never sends through gets one that loads no connection pool.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import os
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

__all__ = ["M_ARENA_MAX", "SLOW_TRIM_SECONDS", "UNUSED_OPTIONAL_MODULES", "WITHOUT_DOCSTRINGS",
           "client_sending_nothing", "collect_start_up_garbage", "freeze_heap_after", "limit_malloc_arenas",
           "optimized_command", "run_optimized", "skip_unused_optional_modules", "space_young_collections",
           "trim_malloc_every"]

#: mallopt's parameter number for the arena cap (glibc malloc.h).
M_ARENA_MAX = -8

#: A trim that holds malloc's locks this long is logged (they take 0.1-0.2 ms in a worker).
SLOW_TRIM_SECONDS = 0.05

#: Python's optimization level that loads no docstrings (`-OO`; `sys.flags.optimize`).
WITHOUT_DOCSTRINGS = 2

#: Imported only if installed, never used by a service: httpx's own command line (`httpx._main`,
#: which loads rich and pygments, ~6 MiB) and rich (structlog's pretty console tracebacks,
#: ~5 MiB; the hub renders JSON). Each importer falls back when the import fails; neither is a
#: dependency of the project, only of its test tools, so an installed hub behaves the same.
#: And charset_normalizer (~2.7 MiB of compiled code): requests loads it to guess the encoding
#: of a reply's `.text` that declares none, and falls back to UTF-8 without it; requests is only
#: loaded with zeep here (the hub sends through httpx and aiohttp, and reads bytes).
#: Not trio: a None in `sys.modules` reads as "imported" to code that only tests the name
#: (tenacity's async sleep does, and then imports it: every in-pass retry failed).
UNUSED_OPTIONAL_MODULES = ("httpx._main", "rich", "charset_normalizer")


def _glibc() -> ctypes.CDLL | None:
    """The C library, or None where none is found (its malloc may still not be glibc's: the
    callers look for glibc's functions on it)."""
    name = ctypes.util.find_library("c")
    return None if name is None else ctypes.CDLL(name)


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at `arenas` (0: leave the default); whether the cap was set.

    Arenas already created stay; called before the process starts threads, it is the same as
    MALLOC_ARENA_MAX in the environment. Not glibc (musl, macOS): nothing to do, False.
    """
    if arenas <= 0:
        return False
    mallopt = getattr(_glibc(), "mallopt", None)
    if mallopt is None:
        return False
    if not mallopt(M_ARENA_MAX, arenas):
        import structlog  # only on this rare path

        structlog.get_logger("crocevia.memory").warning("malloc_arena_cap_refused", arenas=arenas)
        return False
    return True


def trim_malloc_every(seconds: float) -> threading.Thread | None:
    """Hand glibc's free heap pages back to the system every `seconds` (malloc_trim), on a
    daemon thread for the life of the process; the thread, or None (0 seconds, or not glibc).

    glibc returns only the top of a heap on its own: pages freed below a live block stay
    resident, and a long-running process's RSS creeps up with them (issue 13's soak).
    """
    libc = _glibc() if seconds > 0 else None
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None

    def run() -> None:
        while True:
            time.sleep(seconds)
            started = time.perf_counter()
            trim(0)  # ctypes releases the GIL for the call
            took = time.perf_counter() - started
            if took >= SLOW_TRIM_SECONDS:  # every other thread's malloc waited this long
                import structlog  # only on this rare path

                structlog.get_logger("crocevia.memory").warning("malloc_trim_slow", ms=round(took * 1000, 1))

    thread = threading.Thread(target=run, name="malloc-trim", daemon=True)
    thread.start()
    return thread


def optimized_command(argv: Sequence[str], optimize: int) -> list[str] | None:
    """The command line `argv` (`sys.orig_argv`: the interpreter's own options included) run
    under `python -OO`, or None when its level `optimize` already loads no docstrings."""
    if optimize >= WITHOUT_DOCSTRINGS:
        return None
    return [sys.executable, "-OO", *argv[1:]]


def run_optimized() -> None:
    """Replace this process by its own command line under `python -OO` (`optimized_command`):
    the same pid and open descriptors (an inherited wake socket among them), signal handlers
    back to their defaults. Returns only when the process already runs so. Call it before
    the service starts anything: what this process did so far is done again."""
    command = optimized_command(sys.orig_argv, sys.flags.optimize)
    if command is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


def space_young_collections(threshold: int) -> None:
    """Collect the youngest generation after `threshold` new container objects (0: Python's
    own 700), the older generations' thresholds unchanged."""
    if threshold > 0:
        gc.set_threshold(threshold, *gc.get_threshold()[1:])


def collect_start_up_garbage() -> None:
    """One full collection once a service is built, before it takes work: what its start-up
    left as cyclic garbage is freed now, and `freeze_heap_after` need not walk the old objects
    again. A full collection of a built hub takes 100-200 ms, all of it holding the GIL: done
    while serving, it stood every request in flight still that long (issue 13's half-load
    submit p99: 53-68 ms with it at 10 s, 26-29 ms without)."""
    gc.collect()


def freeze_heap_after(seconds: float) -> threading.Timer | None:
    """`seconds` from now, collect the young generations, then move every object still alive
    to the collector's permanent generation (`gc.freeze`), which no later collection walks;
    the timer, or None (0 seconds). An object frozen that later turns into cyclic garbage is
    never freed: it is done once, when what remains is what the service keeps. The old
    generation was collected before the service took work (`collect_start_up_garbage`), so
    the freeze walks only what is new since; a cycle that reached the old generation since
    then is kept (once, a few objects at most)."""
    if seconds <= 0:
        return None

    def freeze() -> None:
        gc.collect(1)
        gc.freeze()

    timer = threading.Timer(seconds, freeze)
    timer.name, timer.daemon = "gc-freeze", True
    timer.start()
    return timer


def skip_unused_optional_modules() -> list[str]:
    """Make `UNUSED_OPTIONAL_MODULES` unimportable in this process (None in `sys.modules`, which
    makes an import raise ImportError); the names so marked, leaving any already loaded alone.

    For the long-running services only: called before they import httpx; tests keep them.
    """
    skipped = [name for name in UNUSED_OPTIONAL_MODULES if name not in sys.modules]
    for name in skipped:
        sys.modules[name] = None  # type: ignore[assignment]  # the import system's "not found" marker
    # requests says, once at import, that it found no encoding guesser: known, and harmless here.
    warnings.filterwarnings("ignore", message="Unable to find acceptable character detection dependency",
                            module="requests")
    return skipped


def client_sending_nothing(owner: str) -> httpx.AsyncClient:
    """An HTTP client for a part built with one that never sends (the API's own callback readers
    only parse; a notifier with no portal to call back returns at once): its transport raises
    if asked to send, instead of being httpcore's connection pool, which would otherwise be
    imported (with h11, and trio where installed) for that part alone (~4 MiB)."""
    import httpx

    class SendsNothing(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            raise RuntimeError(f"{owner} send nothing: {request.method} {request.url}")

    return httpx.AsyncClient(trust_env=False, transport=SendsNothing())
