"""A lean HTTP/1.1 keep-alive pool behind httpx's transport seam, for the agency clients.

httpcore's pool scans every connection on each request and asks each one for its peer name,
which costs milliseconds of CPU per call at 128 calls in flight. Here the idle connections of
an origin sit on a LIFO stack (O(1) to take and return) and their health is read from flags the
event loop already keeps plus one `poll()` of the connection being reused
(`adapters/http_connection.py`). Failures are translated once, into httpx's exception tree, so
`classify_httpx_error` reads them as it reads httpx's own.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from datetime import timedelta
from typing import TYPE_CHECKING

import httpx

from adapters.http_connection import Connection, Origin, StaleConnectionError
from adapters.http_wire import DEFAULT_MAX_BODY, InvalidRequestError, encode_request

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["DEFAULT_MAX_BODY", "KeepAliveTransport"]

#: How many stale hand-offs one request may skip (each is discarded unused).
_STALE_SKIPS = 3
_DEFAULT_PORTS = {"http": 80, "https": 443}


def _expire_waiter(fut: asyncio.Future[Connection | None], timeout: float) -> None:
    if not fut.done():
        fut.set_exception(httpx.PoolTimeout(f"no connection became free within {timeout} s"))


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive connections per (scheme, host, port), as an httpx transport.

    Keeps the httpx client API and exception tree: ConnectError/ConnectTimeout before
    anything was sent; WriteError/WriteTimeout while sending; ReadTimeout, ReadError and
    RemoteProtocolError once the request may have reached the server; PoolTimeout when no
    connection frees up in time. A request is sent again on another connection only when the
    reused one was found closed before any byte was written, so a POST is never repeated by
    the transport. Responses are read whole (bodies up to `max_body` bytes).

    Args:
        limits: `max_connections` (in use, opening or idle), `max_keepalive_connections`
            (idle ones kept), `keepalive_expiry` (seconds an idle connection is kept).
        verify: an `ssl.SSLContext`, or True/False as for httpx, for https origins.
        trust_env: as for httpx: SSL_CERT_FILE/SSL_CERT_DIR when `verify` is True.
        max_body: the largest response body accepted (RemoteProtocolError beyond).
    """

    def __init__(self, *, limits: httpx.Limits | None = None, verify: ssl.SSLContext | bool = True,
                 trust_env: bool = True, max_body: int = DEFAULT_MAX_BODY) -> None:
        limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._max = limits.max_connections if limits.max_connections is not None else 1 << 30
        self._max_idle = (limits.max_keepalive_connections
                          if limits.max_keepalive_connections is not None else self._max)
        self._expiry = limits.keepalive_expiry
        self._verify = verify
        self._trust_env = trust_env
        self._ssl: ssl.SSLContext | None = None
        self._max_body = max_body
        #: Idle connections per origin; a dict keeps insertion order, so popitem() is LIFO and
        #: next(iter()) is the oldest, and a connection lost while idle leaves in O(1).
        self._idle: dict[Origin, dict[Connection, None]] = {}
        self._idle_count = 0
        self._slots = 0  #: connections counted against max_connections
        self._conns: set[Connection] = set()
        self._waiters: deque[tuple[Origin, asyncio.Future[Connection | None]]] = deque()
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and return the response with its body read.

        Raises:
            httpx.TransportError: the subclass saying where the exchange failed.
        """
        if self._closed:
            raise RuntimeError("the transport is closed")
        started = time.perf_counter()
        origin = _origin(request.url)
        data, head_request, close = await _serialize(request)
        timeouts: Mapping[str, float | None] = request.extensions.get("timeout") or {}
        skips = 0
        while True:
            conn = await self._acquire(origin, timeouts.get("pool"))
            fresh = conn is None
            if conn is None:
                conn = await self._connect(origin, timeouts.get("connect"), request)
            try:
                parser = await conn.exchange(data, head_request=head_request, max_body=self._max_body,
                                             write_timeout=timeouts.get("write"),
                                             read_timeout=timeouts.get("read"))
            except StaleConnectionError as exc:
                # Nothing was written on it: sending on another connection cannot repeat the request.
                self._discard(conn)
                skips += 1
                if fresh or skips > _STALE_SKIPS:
                    raise httpx.ConnectError("the server closed the connection before the request "
                                             "was sent") from exc
                continue
            except BaseException:
                self._discard(conn)
                raise
            break
        self._release(conn, parser.keep_alive and not close and not parser.trailing and not conn.early)
        # stream=, not content=, so no Content-Length is added; then read here, in one
        # synchronous pass (Content-Encoding decoded), as MockTransport's responses are: the
        # client's own read is then a no-op instead of three async generators.
        response = httpx.Response(
            parser.status,
            headers=parser.headers,
            stream=httpx.ByteStream(parser.body),
            extensions={"http_version": parser.http_version, "reason_phrase": parser.reason},
            request=request,
        )
        response.read()
        response.elapsed = timedelta(seconds=time.perf_counter() - started)
        return response

    async def aclose(self) -> None:
        """Close every connection; requests in flight fail (ReadError), waiting ones too."""
        self._closed = True
        while self._waiters:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_exception(httpx.ConnectError("the connection pool was closed"))
        for stack in self._idle.values():
            for conn in stack:
                conn.idle = False
                conn.close()
        self._idle.clear()
        self._idle_count = 0
        for conn in list(self._conns):
            conn.fail(httpx.ReadError("the connection pool was closed during the exchange"))
        self._conns.clear()

    # -- slots and stacks -------------------------------------------------------------------

    async def _acquire(self, origin: Origin, timeout: float | None) -> Connection | None:
        """An idle connection of `origin`, or None: the caller then holds a slot to connect."""
        stack = self._idle.get(origin)
        if stack:
            now = asyncio.get_running_loop().time()
            while stack:
                conn, _ = stack.popitem()
                self._idle_count -= 1
                conn.idle = False
                if conn.usable(now, self._expiry):
                    return conn
                self._discard(conn)
        if self._slots < self._max:
            self._slots += 1
            return None
        if self._idle_count:
            # The slots are held by idle connections of other origins: the oldest one yields.
            self._retire(self._oldest_idle())
            return None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Connection | None] = loop.create_future()
        self._waiters.append((origin, fut))
        timer = loop.call_later(timeout, _expire_waiter, fut, timeout) if timeout is not None else None
        try:
            handed_over = await fut
        except BaseException:
            # Cancelled as a hand-off landed: give back what was handed over.
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                handed = fut.result()
                if handed is None:
                    self._free_slot()
                else:
                    self._release(handed, True)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        if handed_over is not None and not handed_over.usable(loop.time(), self._expiry):
            self._retire(handed_over)  # its slot stays with this request
            return None
        return handed_over

    async def _connect(self, origin: Origin, timeout: float | None, request: httpx.Request) -> Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        conn = Connection(origin, loop, self._forget)
        context = self._ssl_context() if scheme == "https" else None
        server_hostname = (request.extensions.get("sni_hostname") or host) if context else None
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(lambda: conn, host, port, ssl=context,
                                             server_hostname=server_hostname)
        except BaseException as exc:
            self._free_slot()
            if isinstance(exc, TimeoutError):  # ours, or the kernel's ETIMEDOUT
                raise httpx.ConnectTimeout(f"no connection to {host}:{port} within {timeout} s") from exc
            if isinstance(exc, OSError):  # refused, unreachable, DNS, TLS (ssl.SSLError)
                raise httpx.ConnectError(str(exc) or type(exc).__name__) from exc
            raise
        if self._closed:
            conn.close()
            self._free_slot()
            raise httpx.ConnectError("the connection pool was closed")
        self._conns.add(conn)
        return conn

    def _release(self, conn: Connection, reusable: bool) -> None:
        if not reusable or conn.closed or self._closed:
            self._discard(conn)
            return
        waiters = self._waiters
        while waiters:
            origin, fut = waiters.popleft()
            if fut.done():  # timed out or cancelled
                continue
            if origin == conn.origin:
                conn.idle_since = conn.loop.time()
                fut.set_result(conn)
            else:
                self._retire(conn)
                fut.set_result(None)  # the slot passes to a request for another origin
            return
        if self._idle_count >= self._max_idle:
            self._discard(conn)
            return
        now = conn.loop.time()
        stack = self._idle.get(conn.origin)
        if stack is None:
            stack = self._idle[conn.origin] = {}
        # The oldest idle connections of this origin expire here, a few at a time.
        expiry = self._expiry
        while stack and expiry is not None:
            oldest = next(iter(stack))
            if now - oldest.idle_since <= expiry:
                break
            del stack[oldest]
            self._idle_count -= 1
            oldest.idle = False
            self._discard(oldest)
        conn.idle = True
        conn.idle_since = now
        stack[conn] = None
        self._idle_count += 1

    def _forget(self, conn: Connection) -> None:
        """An idle connection was closed by the server: out of its stack, its slot freed."""
        stack = self._idle.get(conn.origin)
        if stack is not None and conn in stack:
            del stack[conn]
            self._idle_count -= 1
        conn.idle = False
        self._discard(conn)

    def _oldest_idle(self) -> Connection:
        stack = min((s for s in self._idle.values() if s), key=lambda s: next(iter(s)).idle_since)
        conn = next(iter(stack))
        del stack[conn]
        self._idle_count -= 1
        conn.idle = False
        return conn

    def _retire(self, conn: Connection) -> None:
        """Close `conn`; its slot stays with the caller."""
        conn.counted = False
        self._conns.discard(conn)
        conn.close()

    def _discard(self, conn: Connection) -> None:
        """Close `conn` and free its slot."""
        counted = conn.counted
        self._retire(conn)
        if counted:
            self._free_slot()

    def _free_slot(self) -> None:
        while self._waiters:
            _, fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the waiter connects on this slot
                return
        self._slots -= 1

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            verify = self._verify
            self._ssl = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(
                verify=verify, trust_env=self._trust_env)
        return self._ssl


def _origin(url: httpx.URL) -> Origin:
    scheme = url.scheme
    if scheme not in _DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(f"the URL scheme {scheme!r} is not supported (http, https)")
    host = url.raw_host.decode("ascii")  # IDNA-encoded, as DNS and SNI want it
    if not host:
        raise httpx.UnsupportedProtocol(f"the URL {url} has no host")
    return scheme, host, url.port or _DEFAULT_PORTS[scheme]


async def _serialize(request: httpx.Request) -> tuple[bytes, bool, bool]:
    """The request's bytes, whether it is a HEAD, and whether it asks to close the connection."""
    try:
        body = request.content
    except httpx.RequestNotRead:  # a streaming body: small here, so read it whole
        # An AsyncClient's request stream is async; httpx types it as sync-or-async.
        body = b"".join([part async for part in request.stream])  # type: ignore[union-attr]
    headers = request.headers.raw
    chunked = close = False
    for name, value in headers:
        lname = name.lower()
        if lname == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif lname == b"connection":
            close = b"close" in value.lower()
    method = request.method.encode("ascii")
    try:
        data = encode_request(method, request.url.raw_path, headers, body, chunked=chunked)
    except InvalidRequestError as exc:
        raise httpx.LocalProtocolError(str(exc)) from exc
    return data, method == b"HEAD", close
