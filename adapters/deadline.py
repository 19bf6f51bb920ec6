"""A whole-call deadline for the agency clients, as a transport that wraps the real one.

httpx's timeouts bound each step (connect, one write, the gap between two reads), so a reply
that trickles one byte just inside the read timeout keeps a call open indefinitely. This
transport bounds the whole exchange — waiting for a pooled connection, connecting, sending and
reading the complete reply — with one deadline. It wraps either transport of `[http] pool`,
so the bound is the same whichever is configured.

At the deadline the inner exchange is cancelled: both transports then close that connection
rather than return it to their pool (aiohttp closes a connection whose request was cancelled,
and `AiohttpTransport` one whose body was not read to its end; httpcore closes one whose
response was not read to the end).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

__all__ = ["CallDeadlineExceeded", "DeadlineTransport"]


class CallDeadlineExceeded(httpx.TimeoutException):
    """The whole exchange outlasted the agency's call deadline; the request may have arrived."""


class _DeadlineStream(httpx.AsyncByteStream):
    """A reply body whose every read ends at the call's deadline (loop time `when`)."""

    def __init__(self, inner: Any, when: float, exceeded: Callable[[], CallDeadlineExceeded]) -> None:
        self._inner = inner
        self._when = when
        self._exceeded = exceeded

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunks = self._inner.__aiter__()
        while True:
            scope = asyncio.timeout_at(self._when)
            try:
                async with scope:
                    chunk = await chunks.__anext__()
            except StopAsyncIteration:
                return
            except TimeoutError as exc:
                if not scope.expired():
                    raise
                raise self._exceeded() from exc
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class DeadlineTransport(httpx.AsyncBaseTransport):
    """Runs each request through `inner` and ends it at `deadline` seconds, body included.

    Args:
        inner: the transport that speaks HTTP (`AiohttpTransport` or httpx's own).
        deadline: seconds for the whole exchange, body included (read as the caller streams it).

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
        loop = asyncio.get_running_loop()
        when = loop.time() + self.deadline
        # asyncio.timeout, not wait_for: the exchange runs in this task, so cancelling it runs
        # the inner transport's own clean-up (the connection is closed, its slot freed).
        scope = asyncio.timeout_at(when)
        try:
            async with scope:
                response = await self.inner.handle_async_request(request)
        except TimeoutError as exc:
            if not scope.expired():
                raise
            raise self._exceeded(request) from exc
        if isinstance(response.stream, httpx.ByteStream):
            return response  # read whole within the deadline already: nothing left to bound
        # The body is left to the caller to stream (so that its own size cap stops a huge reply
        # early), but every chunk is read under the same deadline: a reply that trickles in
        # ends with the call, not with the gap between two bytes.
        return httpx.Response(
            response.status_code, headers=response.headers.raw, extensions=response.extensions,
            stream=_DeadlineStream(response.stream, when, lambda: self._exceeded(request)),
        )

    def _exceeded(self, request: httpx.Request) -> CallDeadlineExceeded:
        return CallDeadlineExceeded(
            f"no complete reply within the call deadline of {self.deadline} s", request=request
        )

    async def aclose(self) -> None:
        await self.inner.aclose()

