"""A whole-call deadline for the agency clients, as a transport that wraps the real one.

httpx's timeouts bound each step (connect, one write, the gap between two reads), so a reply
that trickles one byte just inside the read timeout keeps a call open indefinitely. This
transport bounds the whole exchange — waiting for a pooled connection, connecting, sending and
reading the complete reply — with one deadline. It wraps either transport of `[http] pool`,
so the bound is the same whichever is configured.

At the deadline the inner exchange is cancelled: both transports then close that connection
rather than return it to their pool (`KeepAliveTransport` discards a connection on any
exception of `exchange`; httpcore closes one whose response was not read to the end).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import httpx

__all__ = ["CallDeadlineExceeded", "DeadlineTransport"]


class CallDeadlineExceeded(httpx.TimeoutException):
    """The whole exchange outlasted the agency's call deadline; the request may have arrived."""


class DeadlineTransport(httpx.AsyncBaseTransport):
    """Runs each request through `inner` and ends it at `deadline` seconds, body included.

    Args:
        inner: the transport that speaks HTTP (the keep-alive pool or httpx's own).
        deadline: seconds for the whole exchange; the response is returned read whole.

    Raises (from `handle_async_request`):
        CallDeadlineExceeded: the deadline passed; the connection was not kept.
        httpx.TransportError: whatever `inner` raised before the deadline.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport, deadline: float) -> None:
        if not deadline > 0:
            raise ValueError(f"the call deadline must be positive, not {deadline!r}")
        self.inner = inner
        self.deadline = deadline

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.perf_counter()
        # asyncio.timeout, not wait_for: the exchange runs in this task, so cancelling it runs
        # the inner transport's own clean-up (the connection is closed, its slot freed).
        scope = asyncio.timeout(self.deadline)
        try:
            async with scope:
                response = await self.inner.handle_async_request(request)
                try:
                    # httpx's own transport streams the body after the head: read it here, so
                    # the deadline covers the whole reply and not only its first bytes.
                    await response.aread()
                except BaseException:
                    await response.aclose()
                    raise
        except TimeoutError as exc:
            if not scope.expired():
                raise
            raise CallDeadlineExceeded(
                f"no complete reply within the call deadline of {self.deadline} s", request=request
            ) from exc
        response.elapsed = timedelta(seconds=time.perf_counter() - started)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()

