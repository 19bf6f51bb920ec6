"""Process-wide memory tuning applied by `hub.py`'s services before they build anything.

glibc gives threads their own malloc arenas (up to 8 per core); the thread pools of a hub
process (anyio's, SQLAlchemy's callers, pika's) each touch one, and every arena keeps freed
pages resident. Capping the arenas at start bounds that growth (issue 13: <= 120 MiB per process).
"""

from __future__ import annotations

import ctypes
import ctypes.util

import structlog

__all__ = ["M_ARENA_MAX", "limit_malloc_arenas"]

#: mallopt's parameter number for the arena cap (glibc malloc.h).
M_ARENA_MAX = -8

log = structlog.get_logger("crocevia.memory")


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas at `arenas` (0: leave the default); whether the cap was set.

    Arenas already created stay; called before the process starts threads, it is the same as
    MALLOC_ARENA_MAX in the environment. Not glibc (musl, macOS): nothing to do, False.
    """
    if arenas <= 0:
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    libc = ctypes.CDLL(name)
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    if not mallopt(M_ARENA_MAX, arenas):
        log.warning("malloc_arena_cap_refused", arenas=arenas)
        return False
    return True
