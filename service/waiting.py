"""Waiting in the long-running loops (worker, notifier, relay) so that a stop is never delayed."""

from __future__ import annotations

import asyncio

__all__ = ["sleep_unless", "wait_any"]


async def wait_any(event: asyncio.Event, stop: asyncio.Event, *, timeout: float) -> None:
    """Return when `event` or `stop` is set, or after `timeout` seconds, whichever comes first."""
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def sleep_unless(stop: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or less if `stop` is set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass
