"""One pooled HTTP/1.1 connection: an `asyncio.Protocol` whose callbacks feed the parser.

The event loop delivers bytes to `data_received`, which parses them as they come and wakes the
waiting request once, when its response is complete. Where a failure happens decides its httpx
class (httpcore's names for the same events), since the adapters read "maybe sent" from it:
closed before writing is safe to send elsewhere; anything later is not.
"""

from __future__ import annotations

import asyncio
import select
from collections.abc import Callable

import httpx

from adapters.http_wire import ProtocolViolationError, ResponseParser

__all__ = ["Connection", "Origin", "StaleConnectionError"]

#: (scheme, host, port): the connections of one origin are interchangeable.
Origin = tuple[str, str, int]


class StaleConnectionError(Exception):
    """The connection was found closed before a byte of the request was written."""


class Connection(asyncio.Protocol):
    """One HTTP/1.1 connection; the event loop's callbacks drive the response parser."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop,
                 on_idle_lost: Callable[[Connection], None]) -> None:
        self.origin = origin
        self.loop = loop
        self._on_idle_lost = on_idle_lost
        self.transport: asyncio.Transport | None = None
        self._probe: select.poll | None = None  #: this socket alone, registered once
        self.closed = False
        self.idle = False  #: on its origin's idle stack
        self.counted = True  #: holds one of the pool's `max_connections` slots
        self.idle_since = 0.0
        self.early = False  #: the last response came before the request was fully written
        self._parser: ResponseParser | None = None
        self._waiter: asyncio.Future[ResponseParser] | None = None
        self._drain: asyncio.Future[None] | None = None
        self._flushed = False
        #: The read deadline's timer, left armed between exchanges: it fires about once per
        #: read timeout and re-arms itself, instead of a timer made and cancelled per request.
        self._timer: asyncio.TimerHandle | None = None
        self._reading = False  #: a response is awaited: the read timeout applies
        self._read_timeout = 0.0
        self._last_read = 0.0

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        # High-water mark 0: pause_writing/resume_writing tell exactly when the kernel has taken
        # the whole request, which is where "not sent" ends (WriteError vs ReadError).
        transport.set_write_buffer_limits(high=0)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._probe = select.poll()
            self._probe.register(sock.fileno(), select.POLLIN)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if parser is None:
            # Bytes nobody asked for would be read as the next reply: drop the connection.
            self.close(abort=True)
            return
        if self._reading:
            self._last_read = self.loop.time()
        try:
            done = parser.feed(data)
        except ProtocolViolationError as exc:
            self._fail(_with_cause(httpx.RemoteProtocolError(str(exc)), exc))
            return
        if done:
            self._complete()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._end_of_stream(waiter, exc)
        if self.idle:
            self._on_idle_lost(self)

    # -- used by the pool ------------------------------------------------------------------

    def usable(self, now: float, expiry: float | None) -> bool:
        """Whether the idle connection about to be reused may carry a request.

        The loop's flags cover what it has read; one `poll()` on this connection alone (about
        1 µs, not one per pooled connection) also sees a FIN that arrived since the loop last
        looked, so the request is not written into a connection the server already closed.
        """
        if self.closed or self.transport is None or self.transport.is_closing():
            return False
        if expiry is not None and now - self.idle_since > expiry:
            return False
        # Readable while idle: EOF, a reset, or bytes nobody asked for.
        return self._probe is None or not self._probe.poll(0)

    async def exchange(self, data: bytes, *, head_request: bool, max_body: int,
                       write_timeout: float | None, read_timeout: float | None) -> ResponseParser:
        """Write one request and wait for its complete response.

        Raises:
            StaleConnectionError: closed before anything was written (safe to send elsewhere).
            httpx.TransportError: WriteError/WriteTimeout, ReadError/ReadTimeout,
                RemoteProtocolError, as the failure happened.
        """
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            raise StaleConnectionError()
        loop = self.loop
        self._parser = ResponseParser(head_request=head_request, max_body=max_body)
        self._flushed = False
        self.early = False
        waiter = self._waiter = loop.create_future()
        try:
            transport.write(data)
            # A failed send closes the transport at once; connection_lost then reports it.
            if not transport.is_closing():
                if transport.get_write_buffer_size():
                    await self._drained(write_timeout)
                if not self.closed:
                    self._flushed = True
                    if read_timeout is not None and not waiter.done():
                        self._arm_read_timer(read_timeout)
            return await waiter
        finally:
            self._waiter = None
            self._parser = None
            self._reading = False

    def close(self, *, abort: bool = False) -> None:
        """Close the socket (abort: at once, dropping anything unsent)."""
        self.closed = True
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if abort:
                transport.abort()
            else:
                transport.close()

    def fail(self, error: httpx.TransportError) -> None:
        """End the exchange in flight with `error` and abort the connection."""
        self._fail(error)

    # -- internals -------------------------------------------------------------------------

    async def _drained(self, write_timeout: float | None) -> None:
        drain = self._drain = self.loop.create_future()
        handle = None
        if write_timeout is not None:
            handle = self.loop.call_later(write_timeout, self._on_write_timer, write_timeout)
        try:
            await drain
        finally:
            self._drain = None
            if handle is not None:
                handle.cancel()

    def _end_of_stream(self, waiter: asyncio.Future[ResponseParser], exc: Exception | None) -> None:
        """The connection ended with an exchange in flight: a close-delimited body, or a failure
        named after where it happened (httpcore's names for the same events)."""
        try:
            if self._parser is None:
                raise ProtocolViolationError("the connection closed with no response pending")
            if self._parser.feed_eof():
                self._complete()
                return
        except ProtocolViolationError as violation:
            if not self._flushed:
                error: httpx.TransportError = httpx.WriteError(
                    f"the connection closed while the request was being sent ({exc or 'EOF'})")
            elif exc is not None:
                error = httpx.ReadError(str(exc) or type(exc).__name__)
            else:
                error = httpx.RemoteProtocolError(str(violation))
            waiter.set_exception(_with_cause(error, exc or violation))

    def _on_write_timer(self, timeout: float) -> None:
        self._fail(httpx.WriteTimeout(f"the request was not sent within {timeout} s"))

    def _arm_read_timer(self, timeout: float) -> None:
        self._reading = True
        self._read_timeout = timeout
        self._last_read = now = self.loop.time()
        due = now + timeout
        timer = self._timer
        if timer is None or timer.when() > due:  # none yet, or set for a longer timeout
            if timer is not None:
                timer.cancel()
            self._timer = self.loop.call_at(due, self._on_read_timer)

    def _on_read_timer(self) -> None:
        self._timer = None
        if not self._reading:
            return  # the exchange it was armed for has ended; the next one re-arms
        due = self._last_read + self._read_timeout
        if self.loop.time() < due:  # bytes came meanwhile: the timeout counts from the last one
            self._timer = self.loop.call_at(due, self._on_read_timer)
            return
        self._fail(httpx.ReadTimeout(f"no response byte for {self._read_timeout} s"))

    def _complete(self) -> None:
        self._reading = False
        parser, self._parser = self._parser, None
        self.early = not self._flushed
        waiter = self._waiter
        if waiter is not None and not waiter.done() and parser is not None:
            waiter.set_result(parser)

    def _fail(self, error: httpx.TransportError) -> None:
        self._cancel_timer()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)
        self.close(abort=True)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _with_cause(error: httpx.TransportError, cause: BaseException | None) -> httpx.TransportError:
    error.__cause__ = cause
    return error
