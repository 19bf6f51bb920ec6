"""The hub's outgoing HTTP/1.1 transport: aiohttp's client behind httpx's transport seam.

The adapters speak to agencies, and the notifier to the portals' callback addresses, through an
`httpx.AsyncClient` (`adapters/replies.read_reply`, `adapters/webhook`); this transport hands
each request to an `aiohttp.ClientSession` instead of httpcore. On `bench/http_clients.py`
aiohttp costs a third to a half of the CPU per call of the hand-written pool it replaces
(issue 13) and httpcore several times more; httpx's client around it costs more than aiohttp
itself, so an `OutgoingClient` sends plain calls through `exchange` without it
(`OutgoingClient.exchange_direct`). aiohttp's failures are translated here, once, into httpx's exception tree
(in the manner of httpx's `map_httpcore_exceptions`), so `classify_httpx_error` reads them as it
reads httpx's own: nothing sent (ConnectError/ConnectTimeout), maybe received (ReadTimeout,
RemoteProtocolError, ReadError), our fault (LocalProtocolError).
"""

from __future__ import annotations

import asyncio
import importlib.util
import re
import ssl
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from itertools import chain
from types import ModuleType
from typing import TYPE_CHECKING, Any

import httpx
from multidict import CIMultiDict
from yarl import URL

from adapters.deadline import CallDeadlineExceeded

__all__ = ["DEFAULT_MAX_BODY", "AiohttpTransport", "BodyTooLarge", "OutgoingClient"]

#: Largest response body accepted by default: agency receipts are a few KiB.
DEFAULT_MAX_BODY = 16 * 1024 * 1024
#: Headers aiohttp would add on its own: httpx's client already set what it wants sent.
_SKIP_AUTO = ("Content-Type", "User-Agent", "Accept", "Accept-Encoding")
#: Replies declaring at most this many bytes are read whole before they are handed up.
_EAGER_BODY = 64 * 1024
_UNSAFE = re.compile(rb"[\r\n\0]")
#: aiohttp's HttpVersion is a (major, minor) named tuple.
_VERSIONS: dict[tuple[int, int] | None, bytes] = {(1, 1): b"HTTP/1.1", (1, 0): b"HTTP/1.0"}


def _loaded_on_first_use(name: str) -> ModuleType:
    """Module `name`, executed when one of its attributes is first read (importlib's LazyLoader).

    aiohttp is ~7 MiB resident, and only a worker's agency clients send through it: the API
    builds the same adapters (to read agencies' callbacks) without ever sending (issue 13).
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


if TYPE_CHECKING:
    import aiohttp
else:
    aiohttp = _loaded_on_first_use("aiohttp")


class BodyTooLarge(Exception):
    """A reply body passed the caller's bound while being read (`AiohttpTransport.exchange`).

    Args:
        status: the reply's status code, already read (a caller that wants only the status
            has it all the same).
    """

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@contextmanager
def _translated(request: httpx.Request | None) -> Iterator[None]:
    """aiohttp's exceptions as httpx's, by where the exchange failed; the cause is kept."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError as exc:  # pool wait or connect: nothing was sent
        raise httpx.ConnectTimeout(str(exc) or "no connection in time", request=request) from exc
    except aiohttp.SocketTimeoutError as exc:  # sock_read: the request went out
        raise httpx.ReadTimeout(str(exc) or "no response byte in time", request=request) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, unreachable, DNS, TLS (cause: ssl.SSLError)
        raise httpx.ConnectError(str(exc), request=request) from exc
    except aiohttp.ServerDisconnectedError as exc:
        # Closed before a complete response: the request may have been read (never resent).
        raise httpx.RemoteProtocolError(f"the server closed the connection: {exc}", request=request) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ClientResponseError) as exc:
        raise httpx.RemoteProtocolError(f"malformed or incomplete response: {exc}", request=request) from exc
    except aiohttp.ClientOSError as exc:  # reset or broken pipe on an open connection
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(f"invalid URL {exc}", request=request) from exc
    except aiohttp.ClientError as exc:
        raise httpx.RemoteProtocolError(f"{type(exc).__name__}: {exc}", request=request) from exc


class _Body(httpx.AsyncByteStream):
    """The reply body as aiohttp reads it, at most `max_body` bytes, failures translated.

    Read to its end, the connection goes back to the pool; closed early (a size bound, the
    call deadline), the connection is dropped, never reused with bytes left on it.
    """

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request, max_body: int) -> None:
        self._response = response
        self._request = request
        self._max_body = max_body

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        with _translated(self._request):
            async for chunk in self._response.content.iter_any():
                size += len(chunk)
                if size > self._max_body:
                    self._response.close()
                    raise httpx.RemoteProtocolError(f"response body larger than {self._max_body} bytes",
                                                    request=self._request)
                yield chunk
        self._end()

    async def aclose(self) -> None:
        self._end()

    def _end(self) -> None:
        if self._response.content.at_eof():
            self._response.release()
        else:
            self._response.close()  # a partly read body: the connection cannot carry another


class AiohttpTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive connections through one `aiohttp.ClientSession`.

    Timeouts come from the httpx client per request: `pool` bounds getting a connection (the wait
    for a free one and the connect together), `connect` the connect alone, `read` the gap between
    two bytes of the reply; aiohttp has no write timeout, so a stalled send ends at the call deadline
    (`adapters/deadline.py`). A request is never sent twice by the transport: a POST on a
    kept-alive connection the server had closed fails (RemoteProtocolError, outcome unknown).

    Args:
        limits: `max_connections` (0 or None: unbounded), `keepalive_expiry` (seconds an idle
            connection is kept); `max_keepalive_connections` 0 turns keep-alive off.
        verify: for https origins, an `ssl.SSLContext`; True: the system's trust store (OpenSSL's
            default paths, `SSL_CERT_FILE` and `SSL_CERT_DIR` override them) through the one context
            aiohttp builds when it is imported, which every session shares (a trust store loaded per
            agency session cost ~0.8 MiB each); False: no verification.
        max_body: the largest response body accepted (RemoteProtocolError beyond).
    """

    def __init__(self, *, limits: httpx.Limits | None = None, verify: ssl.SSLContext | bool = True,
                 max_body: int = DEFAULT_MAX_BODY) -> None:
        self.limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
        self._verify = verify
        self._max_body = max_body
        self._session: aiohttp.ClientSession | None = None
        self._closing: aiohttp.ClientSession | None = None  #: for `Connection: close` requests
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        self._urls: dict[str, URL] = {}

    def _open(self, *, closing: bool = False) -> aiohttp.ClientSession:
        """A session, made on first use: aiohttp binds it to the running loop."""
        limits = self.limits
        verify = self._verify
        tls: ssl.SSLContext | bool = verify if isinstance(verify, ssl.SSLContext) else bool(verify)
        keep: dict[str, Any] = ({"force_close": True} if closing or limits.max_keepalive_connections == 0
                                else {"keepalive_timeout": limits.keepalive_expiry or 5.0})
        connector = aiohttp.TCPConnector(limit=limits.max_connections or 0, limit_per_host=0, ssl=tls, **keep)
        # httpx's client owns redirects, cookies and content decoding (so that `read_reply`
        # bounds decoded bytes); the session only moves bytes.
        session = aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar(),
                                        auto_decompress=False, trust_env=False, skip_auto_headers=_SKIP_AUTO)
        if closing:
            self._closing = session
        else:
            self._session = session
        return session

    def _timeout(self, key: tuple[float | None, ...]) -> aiohttp.ClientTimeout:
        """aiohttp's timeouts for httpx's (pool, connect, read), made once per combination.

        aiohttp's `connect` bounds the wait for a pooled connection and the connect together
        (httpx's `pool`), `sock_connect` the connect alone. A zero timeout expires at the first
        wait in httpx; in aiohttp it would mean none, hence a microsecond.
        """
        if len(self._timeouts) >= 64:  # a handful are configured; bounded all the same
            self._timeouts.clear()
        pool, connect, read = (None if t is None else max(t, 1e-6) for t in key)
        timeout = self._timeouts[key] = aiohttp.ClientTimeout(total=None, connect=pool, sock_connect=connect,
                                                              sock_read=read)
        return timeout

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request`; the response's body streams from the connection.

        Raises:
            httpx.TransportError: the subclass saying where the exchange failed.
        """
        raw = request.headers.raw
        closing = False
        for name, value in raw:
            # Refused before connecting: a CR, LF or NUL would let a value smuggle a header.
            if _UNSAFE.search(name) or _UNSAFE.search(value):
                raise httpx.LocalProtocolError("a header name or value contains CR, LF or NUL", request=request)
            if name.lower() == b"connection" and b"close" in value.lower():
                closing = True
        headers = CIMultiDict((k.decode("latin-1"), v.decode("latin-1")) for k, v in raw)
        # aiohttp keeps a connection whose request said `Connection: close`: such a request
        # goes through a session that never keeps one.
        session = (self._closing or self._open(closing=True)) if closing else (self._session or self._open())
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
        key = (timeouts.get("pool"), timeouts.get("connect"), timeouts.get("read"))
        timeout = self._timeouts.get(key) or self._timeout(key)
        data: Any
        try:
            data = request.content
        except httpx.RequestNotRead:  # a streaming body: aiohttp frames it chunked itself
            data = request.stream
            headers.popall("Transfer-Encoding", None)
        options: dict[str, Any] = {}
        if sni := request.extensions.get("sni_hostname"):
            options["server_hostname"] = sni
        with _translated(request):
            try:
                response = await session.request(
                    request.method, URL(str(request.url), encoded=True), data=data or None, headers=headers,
                    allow_redirects=False, timeout=timeout, **options)
            except ValueError as exc:
                if isinstance(exc, aiohttp.ClientError):  # a certificate error is a ValueError too
                    raise
                raise httpx.LocalProtocolError(str(exc), request=request) from exc
        stream: httpx.AsyncByteStream
        length = response.content_length
        if length is not None and length <= min(_EAGER_BODY, self._max_body):
            # A receipt of a few KiB, declared: read here, in one go, so that the layers above
            # (deadline, size bound, decoding) iterate over bytes in hand, not the socket.
            with _translated(request):
                try:
                    stream = httpx.ByteStream(await response.read())
                except BaseException:
                    response.close()  # cut short (the deadline, a reset): never pooled again
                    raise
                response.release()
        else:
            stream = _Body(response, request, self._max_body)
        return httpx.Response(
            response.status,
            headers=[(k, v) for k, v in response.raw_headers],
            stream=stream,
            extensions={"http_version": _VERSIONS.get(response.version, b"HTTP/1.1"),
                        "reason_phrase": (response.reason or "").encode("latin-1")},
            request=request,
        )

    def _url(self, url: str) -> URL:
        """`url` parsed once: an agency is called at a handful of addresses."""
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= 256:  # bounded all the same (polling URLs vary)
                self._urls.clear()
            parsed = self._urls[url] = URL(url, encoded=True)
        return parsed

    async def exchange(self, method: str, url: str, headers: CIMultiDict[str], content: bytes,
                       timeouts: dict[str, float | None], max_bytes: int
                       ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One call without httpx's client around it (`read_reply`'s direct path): the status,
        the raw headers and the body, decoded as it is read and at most `max_bytes` of it.

        Raises:
            BodyTooLarge: the declared or decoded body is larger than `max_bytes`.
            httpx.TransportError: as `handle_async_request` raises them.
        """
        # One search over every name and value (as `handle_async_request` checks them one by one).
        if _UNSAFE.search("".join(chain.from_iterable(headers.items())).encode("latin-1")):
            raise httpx.LocalProtocolError("a header name or value contains CR, LF or NUL")
        closing = "close" in headers.get("Connection", "").lower()  # as in handle_async_request
        session = (self._closing or self._open(closing=True)) if closing else (self._session or self._open())
        key = (timeouts.get("pool"), timeouts.get("connect"), timeouts.get("read"))
        timeout = self._timeouts.get(key) or self._timeout(key)
        with _translated(None):
            async with session.request(method, self._url(url), data=content or None, headers=headers,
                                       allow_redirects=False, timeout=timeout, auto_decompress=True) as response:
                declared = response.headers.get("Content-Length", "")
                encoded = "Content-Encoding" in response.headers
                if not encoded and declared.isdigit() and int(declared) > max_bytes:
                    response.close()
                    raise BodyTooLarge(f"reply of {declared} bytes announced, more than {max_bytes}",
                                       response.status)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_any():
                    size += len(chunk)
                    if size > max_bytes:
                        response.close()  # bytes left on the connection: never pooled again
                        raise BodyTooLarge(f"reply larger than {max_bytes} bytes", response.status)
                    chunks.append(chunk)
                return response.status, list(response.raw_headers), b"".join(chunks)

    async def aclose(self) -> None:
        """Close every connection (the session is made again on next use)."""
        sessions = (self._session, self._closing)
        self._session = self._closing = None
        for session in sessions:
            if session is not None:
                await session.close()


class OutgoingClient(httpx.AsyncClient):
    """An httpx client (an agency's, or the portals' callbacks') that may also hand plain calls
    to aiohttp directly.

    `exchange_direct` sends a call with only a body, headers and the client's timeouts through
    `direct`, within `deadline`, skipping httpx's client (request building, cookies, redirects),
    which costs more CPU per call than aiohttp itself (`bench/http_clients.py`, `direct`);
    `read_reply` and the webhook sender take it when `direct` is set. Anything else, and every
    other use of the client, goes through httpx as usual, on the same transport.
    """

    def __init__(self, *, direct: AiohttpTransport | None, deadline: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.direct = direct
        self.deadline = deadline
        self._targets: dict[int, tuple[httpx.URL | str, httpx.URL, str]] = {}
        self._defaults: tuple[list[tuple[bytes, bytes]], CIMultiDict[str]] | None = None

    def target_of(self, url: httpx.URL | str) -> str:
        """The absolute address of `url` (joined to `base_url`, if any), worked out once per
        URL object and `base_url`: an adapter calls a handful of them, each parsed once. Keyed
        by identity, since an `httpx.URL` hashes by rendering itself; the entry holds the object,
        so its id stays its own while cached."""
        base = self.base_url
        found = self._targets.get(id(url))
        if found is not None and found[0] is url and found[1] is base:
            return found[2]
        target = str(base.join(url)) if base.host else str(url)
        if len(self._targets) >= 256:  # bounded all the same (polling URLs vary)
            self._targets.clear()
        self._targets[id(url)] = (url, base, target)
        return target

    def default_headers(self) -> CIMultiDict[str]:
        """A fresh copy of the client's own headers, as `headers.items()` gives them; they are
        read again only when they changed."""
        raw = self.headers.raw
        if self._defaults is None or self._defaults[0] != raw:
            self._defaults = (raw, CIMultiDict(self.headers.items()))
        return self._defaults[1].copy()

    async def exchange_direct(self, method: str, url: httpx.URL | str, content: bytes,
                              headers: Iterable[tuple[str, str]], timeouts: dict[str, float | None],
                              max_bytes: int) -> tuple[str, int, list[tuple[bytes, bytes]], bytes]:
        """One call on `direct`: the client's own headers then `headers` (names as httpx would
        send them), `timeouts` (`httpx.Timeout.as_dict()`), ended at the call deadline.

        Returns:
            The absolute address called, the status, the raw reply headers and the body.

        Raises:
            BodyTooLarge: the declared or decoded body is larger than `max_bytes`.
            CallDeadlineExceeded: no complete reply within `deadline`.
            httpx.TransportError: as `AiohttpTransport.exchange` raises them.
        """
        assert self.direct is not None
        target = self.target_of(url)
        sent = self.default_headers()
        for name, value in headers:
            sent[name] = value
        scope = asyncio.timeout(self.deadline)
        try:
            async with scope:
                status, raw, body = await self.direct.exchange(method, target, sent, content, timeouts, max_bytes)
        except TimeoutError as exc:
            if not scope.expired():
                raise
            raise CallDeadlineExceeded(f"no complete reply within the call deadline of {self.deadline} s") from exc
        return target, status, raw, body
