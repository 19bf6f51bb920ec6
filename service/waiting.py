"""Waiting in the long-running loops (worker, notifier, relay) so that a stop is never delayed."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from service.ports import StoreUnavailable

__all__ = ["Backoff", "sleep_unless", "store_retry", "wait_any"]


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


class Backoff:
    """The wait after a failure: `initial`, doubling up to `ceiling` while failures go on;
    `reset` after a success. `jitter`: each sleep is a random 50-100% of the wait."""

    def __init__(self, initial: float, ceiling: float, *, jitter: bool = False) -> None:
        self._initial = initial
        self._ceiling = ceiling
        self._jitter = jitter
        self.wait = initial

    def reset(self) -> None:
        self.wait = self._initial

    async def sleep(self, stop: asyncio.Event | None) -> None:
        """Sleep the current wait (less if `stop` is set; the full wait if `stop` is None) and double it."""
        wait = self.wait
        self.wait = min(self._ceiling, wait * 2)
        if self._jitter:
            wait *= 0.5 + random.random() / 2
        if stop is None:
            await asyncio.sleep(wait)
        else:
            await sleep_unless(stop, wait)


async def store_retry(logger: Any, exc: Exception, backoff: Backoff, stop: asyncio.Event | None, *, action: str,
                      failed: str | None = None, failures: int | None = None, **fields: Any) -> None:
    """A store call failed: log it, then wait `backoff` out before the next try.

    An outage (`StoreUnavailable`) is expected: one `store_unavailable` warning naming the
    `action`. Anything else is a bug or bad data: the error `failed` with its traceback (and
    `failures`, the count of such failures in a row, when given); callers that handle those
    themselves pass only outages and no `failed`.
    """
    retry_in_s = round(backoff.wait, 2)
    if isinstance(exc, StoreUnavailable):
        logger.warning("store_unavailable", action=action, **fields, error=str(exc), retry_in_s=retry_in_s)
    elif failed is None:
        raise ValueError("store_retry: a failure other than an outage needs the `failed` event") from exc
    else:
        if failures is not None:
            fields["failures"] = failures
        logger.error(failed, **fields, retry_in_s=retry_in_s, exc_info=exc)
    await backoff.sleep(stop)
