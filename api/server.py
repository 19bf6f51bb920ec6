"""The HTTP server's own limits: uvicorn (h11) configured from `[api]`, plus a header read timeout.

uvicorn bounds the idle keep-alive wait (`timeout_keep_alive`), the connections it serves
(`limit_concurrency`, answered in text/plain) and, partly, the size of a request head
(`h11_max_incomplete_event_size` applies only to a head still incomplete), but not the time a
client may take to send its headers: a client sending one byte a second (slowloris) keeps a
connection and a socket forever. `HeaderTimeoutProtocol` arms a timer when a request begins
and its head is not complete in what was read (the connection opens, the first bytes of the
next request on a kept-alive connection arrive, or the next request cycle starts with that
request's bytes already buffered, pipelined behind the one before) and closes the connection
with 408 if the head is not complete when it fires;
and it measures every head before h11 parses it, answering 431 beyond `max_header_bytes`; a
connection beyond `max_connections` is served a 503 problem+json. Both refusals are written
only when no request is in progress, so after every answer already owed, in order. The head
is measured inside h11's `next_event` (`_MeasuredConnection`), so every path uvicorn takes to
parse one is covered: a fresh read, a pipelined head, and a head read whole with the end of a
body the app answered without reading it (uvicorn parses that one within its own loop).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import h11
import orjson
import structlog
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from api.problems import PROBLEM_TYPE_BASE

__all__ = ["HeaderTimeoutProtocol", "ServerLimits", "server_config"]

log = structlog.get_logger("crocevia.api")


def _problem_answer(status: int, reason: str, slug: str, detail: str) -> bytes:
    """A whole RFC 9457 answer that closes the connection, written outside h11 between requests."""
    body = orjson.dumps({"type": PROBLEM_TYPE_BASE + slug, "title": reason, "status": status, "detail": detail})
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (status, reason.encode(), len(body), body))


#: Sent before closing a connection whose request head did not arrive in time (RFC 9110 §15.5.9).
_REQUEST_TIMEOUT = _problem_answer(408, "Request Timeout", "request-head-timeout",
                                   "the request line and headers did not arrive in time")
#: The body of the answer to a request on a connection beyond `max_connections`.
_OVER_CAPACITY = orjson.dumps({"type": PROBLEM_TYPE_BASE + "server-busy", "title": "Service Unavailable",
                               "status": 503, "detail": "too many connections are open; try again shortly"})


async def _over_capacity(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI app a connection beyond the limit is served by: 503 problem+json, then close."""
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/problem+json"), (b"content-length", b"%d" % len(_OVER_CAPACITY)),
        (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": _OVER_CAPACITY})


#: Sent before closing a connection whose request head is too large (RFC 6585 §5).
_HEAD_TOO_LARGE = _problem_answer(431, "Request Header Fields Too Large", "request-head-too-large",
                                  "the request line and headers are too large")


class _MeasuredConnection(h11.Connection):
    """h11's server side that asks `refuse_head` before parsing a request head; when it refuses
    (and has answered and closed), h11 reports PAUSED, which ends uvicorn's parsing loop.

    h11 bounds only a head still incomplete (`max_incomplete_event_size`): one buffered whole
    would pass at any size, whichever uvicorn path parses it.
    """

    def __init__(self, refuse_head: Callable[[], bool], max_incomplete_event_size: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size)
        self._refuse_head = refuse_head

    def next_event(self) -> Any:
        if self.their_state is h11.IDLE and self.trailing_data[0] and self._refuse_head():
            return h11.PAUSED
        return super().next_event()


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol with a bound on the time from a request's first byte to its last header."""

    #: Seconds a client has to send a request's whole head (set by `server_config`).
    header_timeout: float = 10.0
    #: The largest request head accepted, request line and headers (set by `server_config`).
    max_header_bytes: int = 16_384
    #: Connections served at once; a request on one more is answered 503 (set by `server_config`).
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self.conn = _MeasuredConnection(self._refused_head, self.max_header_bytes)

    # uvicorn types its parameter as asyncio.Transport where BaseProtocol says BaseTransport.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            # Read its request, then answer 503 as problem+json (uvicorn's own limit answers
            # text/plain): the request is read so that the client sees the answer, not a reset.
            log.warning("connection_over_capacity", limit=self.max_connections)
            self.app = _over_capacity
        self._arm_header_timer()

    def handle_events(self) -> None:
        # uvicorn parses here both what was just read (`data_received`) and, when a response
        # completes, the next request h11 buffered behind it, pipelined (`on_response_complete`
        # starts the next cycle). Each head's size is checked by `_MeasuredConnection` as h11
        # is about to parse it, only while no request is in progress (IDLE), so every answer
        # owed was written before a refusal; a refusal closes the connection.
        super().handle_events()
        if self.transport.is_closing():
            return
        if self.conn.their_state is not h11.IDLE:  # h11 produced the Request: the head is complete
            self._disarm_header_timer()
        elif self.conn.trailing_data[0] and self._header_timer is None:
            # A head begun but not complete: its first byte came in this read, or its cycle
            # started with it buffered, or inside uvicorn's loop (a response sent before its
            # request's body ended). Its clock starts now, microseconds after the bytes came;
            # a head that arrives whole (the usual case) costs no timer at all.
            self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _refused_head(self) -> bool:
        """Whether the buffered request head is too large, in which case it is answered 431 and
        the connection closed (called by h11 before it parses a head)."""
        if not self._head_too_large():
            return False
        self._refuse(_HEAD_TOO_LARGE, "request_head_too_large", limit_bytes=self.max_header_bytes)
        return True

    def _head_too_large(self) -> bool:
        # h11 bounds only a head still incomplete (`max_incomplete_event_size`): one that
        # arrives whole in one read, or buffered whole behind a pipelined request, would pass
        # at any size. Measure the buffered head up to its blank line.
        pending = self.conn.trailing_data[0]
        if len(pending) <= self.max_header_bytes:  # whatever its end, the head fits
            return False
        ends = [i for i in (pending.find(b"\n\r\n"), pending.find(b"\n\n")) if i >= 0]
        size = min(ends) + 1 if ends else len(pending)
        return size > self.max_header_bytes

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        self._refuse(_REQUEST_TIMEOUT, "request_head_timed_out", timeout_s=self.header_timeout)

    def _refuse(self, answer: bytes, event: str, **fields: Any) -> None:
        """Answer while no request is in progress (so not through h11) and close the connection."""
        self._disarm_header_timer()
        log.info(event, **fields)
        self.transport.write(answer)
        self.transport.close()


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """The server's limits, as `[api]` configures them (README, "The HTTP server's limits")."""

    header_timeout: float  #: seconds from a request's first byte (or the connection) to its last header
    keep_alive_timeout: float  #: seconds an idle kept-alive connection stays open
    max_connections: int  #: connections served at once; a request beyond answers 503
    max_header_bytes: int  #: the largest request head (request line and headers); beyond: 431


def server_config(app: Any, *, host: str, port: int, limits: ServerLimits) -> uvicorn.Config:
    """uvicorn's configuration for the API: loopback-or-configured address, our logging, the limits."""
    protocol = type("ConfiguredHeaderTimeoutProtocol", (HeaderTimeoutProtocol,),
                    {"header_timeout": limits.header_timeout, "max_header_bytes": limits.max_header_bytes,
                     "max_connections": limits.max_connections})
    return uvicorn.Config(
        app, host=host, port=port, access_log=False, log_config=None, lifespan="off",
        http=protocol,
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type] # call_later takes a float
        # The connection limit is `HeaderTimeoutProtocol`'s (a problem+json 503); uvicorn's
        # own stays as a backstop on requests in progress, above it.
        limit_concurrency=2 * limits.max_connections + 1,
        h11_max_incomplete_event_size=limits.max_header_bytes,
    )
