"""The HTTP server's own limits: uvicorn's httptools protocol configured from `[api]`, bounded.

uvicorn bounds the idle keep-alive wait (`timeout_keep_alive`) and the connections it serves
(`limit_concurrency`, answered in text/plain), but neither the time a client may take to send
its headers (a client sending one byte a second, slowloris, keeps a connection and a socket
forever) nor, on httptools, the size of a request head. `BoundedHttpProtocol` adds both, and
answers a connection beyond `max_connections` and a request the parser cannot read with
problem+json.

httptools (llhttp) parses eagerly: everything read is parsed at once, requests pipelined behind
one in progress included, which uvicorn queues. A refusal (408, 431, 400) is therefore never
written when it is found but when every answer already owed has been written, in order; the
parser stops at the refused head, so nothing behind it is served. The head's clock starts at
the connection's opening, or when the first bytes of a head are read while no answer is owed
(or when the last answer owed is written, for a head begun meanwhile); a head that arrives
whole, the usual case, costs no timer at all.

h11 served the API until the seventh round of issue 13: its parsing took ~8 % of the API's CPU.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httptools
import orjson
import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.problems import PROBLEM_TYPE_BASE

__all__ = ["BoundedHttpProtocol", "ServerLimits", "server_config"]

log = structlog.get_logger("crocevia.api")


def _problem_answer(status: int, reason: str, slug: str, detail: str) -> bytes:
    """A whole RFC 9457 answer that closes the connection, written outside any request's cycle."""
    body = orjson.dumps({"type": PROBLEM_TYPE_BASE + slug, "title": reason, "status": status, "detail": detail})
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/problem+json\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (status, reason.encode(), len(body), body))


#: Sent before closing a connection whose request head did not arrive in time (RFC 9110 §15.5.9).
_REQUEST_TIMEOUT = _problem_answer(408, "Request Timeout", "request-head-timeout",
                                   "the request line and headers did not arrive in time")
#: Sent before closing a connection whose request head is too large (RFC 6585 §5).
_HEAD_TOO_LARGE = _problem_answer(431, "Request Header Fields Too Large", "request-head-too-large",
                                  "the request line and headers are too large")
#: Sent before closing a connection whose bytes are not an HTTP/1.1 request (RFC 9112).
_MALFORMED = _problem_answer(400, "Bad Request", "malformed-request",
                             "the request is not well-formed HTTP/1.1")
#: The body of the answer to a request on a connection beyond `max_connections`.
_OVER_CAPACITY = orjson.dumps({"type": PROBLEM_TYPE_BASE + "server-busy", "title": "Service Unavailable",
                               "status": 503, "detail": "too many connections are open; try again shortly"})
#: A head's bytes beside its fields: the request line's spaces and version, each header's
#: colon, space and line end, the blank line.
_REQUEST_LINE_EXTRA = len(b"  HTTP/1.1\r\n\r\n")
_HEADER_EXTRA = len(b": \r\n")


async def _over_capacity(scope: Any, receive: Any, send: Any) -> None:
    """The ASGI app a connection beyond the limit is served by: 503 problem+json, then close."""
    await send({"type": "http.response.start", "status": 503, "headers": [
        (b"content-type", b"application/problem+json"), (b"content-length", b"%d" % len(_OVER_CAPACITY)),
        (b"retry-after", b"1"), (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": _OVER_CAPACITY})


class _Refused(Exception):
    """Raised from a parser callback to stop httptools at a refused head."""


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on a request head's time and size, refusals in order."""

    #: Seconds a client has to send a request's whole head (set by `server_config`).
    header_timeout: float = 10.0
    #: The largest request head accepted, request line and headers (set by `server_config`).
    max_header_bytes: int = 16_384
    #: Connections served at once; a request on one more is answered 503 (set by `server_config`).
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._head_open = False  # a request head has begun and is not complete
        self._head_size = 0  # the open head's request target and whole headers, as parsed
        self._head_read = 0  # bytes read for the open head (those of the read it began in, as parsed)
        self._refusal: bytes | None = None  # written, then the connection closed, once nothing is owed

    # uvicorn types its parameter as asyncio.Transport where BaseProtocol says BaseTransport.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            # Read its request, then answer 503 as problem+json (uvicorn's own limit answers
            # text/plain): the request is read so that the client sees the answer, not a reset.
            log.warning("connection_over_capacity", limit=self.max_connections)
            self.app = _over_capacity
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:  # the parser stopped at a refused head: nothing more is read
            return
        self._unset_keepalive_if_required()
        open_before = self._head_open
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # No protocol upgrade is offered (`ws="none"`): the request was served as plain HTTP.
            log.info("http_upgrade_ignored")
        except httptools.HttpParserError as exc:
            if self._refusal is None:  # not a refusal raised from a callback here
                # A callback's own failure (uvicorn's code, not the client's bytes) keeps its cause.
                cause = exc.__context__ if isinstance(exc, httptools.HttpParserCallbackError) else None
                self._refuse(_MALFORMED, "request_malformed", reason=str(exc), exc_info=cause)
            return
        if not self._head_open:
            return
        # A head still incomplete: its size is what was read of it, bounded before it is buffered
        # further. A read it began in may also hold the end of the request before; there its
        # share is known only as parsed (fields whole so far), every later read counts whole.
        self._head_read = self._head_read + len(data) if open_before else self._head_size
        if max(self._head_read, self._head_size) > self.max_header_bytes:
            self._refuse_head()
        elif self._header_timer is None and not self._owes_answers():
            self._arm_header_timer()

    # Parser callbacks: each head's size is counted as it is parsed.
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_open, self._head_size, self._head_read = True, 0, 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + _HEADER_EXTRA
        self._bound_head()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._disarm_header_timer()
        self._head_size += len(self.parser.get_method()) + _REQUEST_LINE_EXTRA
        self._bound_head()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # starts the next pipelined request, if any
        if self.transport.is_closing() or self._owes_answers():
            return
        if self._refusal is not None:
            self._write_refusal()
        elif self._head_open and self._header_timer is None:
            self._arm_header_timer()  # a head begun while an answer was owed: its clock starts now

    def _owes_answers(self) -> bool:
        # `cycle` is the request parsed last; those before it were answered first, in order.
        return bool(self.pipeline) or (self.cycle is not None and not self.cycle.response_complete)

    def _bound_head(self) -> None:
        """Refuse the head being parsed if it is beyond the bound, stopping the parser there."""
        if self._head_size > self.max_header_bytes:
            self._refuse_head()
            raise _Refused

    def _refuse_head(self) -> None:
        self._refuse(_HEAD_TOO_LARGE, "request_head_too_large", limit_bytes=self.max_header_bytes)

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_timed_out)

    def _disarm_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timed_out(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self._refuse(_REQUEST_TIMEOUT, "request_head_timed_out", timeout_s=self.header_timeout)

    def _refuse(self, answer: bytes, event: str, **fields: Any) -> None:
        """Refuse the connection's next request: answered once every answer owed is written."""
        self._disarm_header_timer()
        log.info(event, **fields)
        self._refusal = answer
        if self._owes_answers():
            self.flow.pause_reading()
        else:
            self._write_refusal()

    def _write_refusal(self) -> None:
        assert self._refusal is not None
        self.transport.write(self._refusal)
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
    protocol = type("ConfiguredBoundedHttpProtocol", (BoundedHttpProtocol,),
                    {"header_timeout": limits.header_timeout, "max_header_bytes": limits.max_header_bytes,
                     "max_connections": limits.max_connections})
    return uvicorn.Config(
        app, host=host, port=port, access_log=False, log_config=None, lifespan="off",
        http=protocol, ws="none",
        timeout_keep_alive=limits.keep_alive_timeout,  # type: ignore[arg-type] # call_later takes a float
        # The connection limit is `BoundedHttpProtocol`'s (a problem+json 503); uvicorn's
        # own stays as a backstop on requests in progress, above it.
        limit_concurrency=2 * limits.max_connections + 1,
    )
