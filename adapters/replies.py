"""Reading an agency's reply within a size bound, so that an oversized one is never parsed.

The adapters stream the reply and stop at the contract's `max_reply_bytes`
(`ReceiptLimits`): a declared Content-Length beyond it is refused before the body is read,
and a body without one stops being read as soon as it passes the bound (the connection is
then dropped, not reused). The count is of decoded bytes, so a compressed reply cannot
expand past the bound either. An agency client on aiohttp (an `OutgoingClient`) takes a direct path
for plain calls, with the same headers, timeouts, deadline, bound and errors.

Either path hands back a `Reply`: the status, the headers and the body the adapters read, as
httpx's `Response` showed them, without building an httpx `Request` and `Response` around
every call (on the direct path they cost more CPU than the rest of it, aiohttp aside).
"""

from __future__ import annotations

import codecs
import email.message
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, overload

import httpx

from adapters.http_transport import BodyTooLarge, OutgoingClient
from adapters.wire import record_received, record_sent
from domain.errors import AgencyProtocolError

if TYPE_CHECKING:
    from httpx._client import UseClientDefault

    from adapters.base import ErrorContext

__all__ = ["Reply", "ReplyHeaders", "callback_headers", "check_body_size", "read_reply", "reply_headers"]

_T = TypeVar("_T")

#: Headers that describe the body as it came over the wire, not as it is kept after decoding.
_WIRE_HEADERS = frozenset({"content-encoding", "content-length", "transfer-encoding"})


class ReplyHeaders(Mapping[str, str]):
    """A reply's headers as httpx's `Headers` reads them: names without case, the values of a
    repeated name joined with ", ". Looked up in a dict, not by scanning a list."""

    __slots__ = ("_values",)

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values  #: lower-case name → value

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    @overload
    def get(self, name: str, /) -> str | None: ...
    @overload
    def get(self, name: str, default: str, /) -> str: ...
    @overload
    def get(self, name: str, default: _T, /) -> str | _T: ...

    def get(self, name: str, default: Any = None, /) -> Any:
        return self._values.get(name.lower(), default)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"ReplyHeaders({self._values!r})"


def _joined(raw: Iterable[tuple[bytes, bytes]], encoding: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in raw:
        name = key.decode(encoding).lower()
        if name in _WIRE_HEADERS:
            continue
        text = value.decode(encoding)
        values[name] = f"{values[name]}, {text}" if name in values else text
    return values


def reply_headers(raw: list[tuple[bytes, bytes]], body: bytes) -> ReplyHeaders:
    """The headers of a reply whose (decoded) body is `body`, as httpx's `Response` built from
    them showed them: the wire's framing headers dropped, the body's own `content-length`
    added, names and values decoded as ASCII, else UTF-8, else Latin-1, all alike."""
    for encoding in ("ascii", "utf-8"):
        try:
            values = _joined(raw, encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        values = _joined(raw, "iso-8859-1")
    if body:
        values["content-length"] = str(len(body))
    return ReplyHeaders(values)


def callback_headers(content_type: str, body: bytes) -> ReplyHeaders:
    """The headers of a body an agency POSTed to the hub (a callback), read as a reply's.

    Raises:
        UnicodeEncodeError: a content type that is not ASCII, as httpx refused it.
    """
    return reply_headers([(b"content-type", content_type.encode("ascii"))], body)


@dataclass(frozen=True, slots=True)
class Reply:
    """An agency's reply, read whole within its bound: what the adapters (and zeep's
    `process_reply`) read of it."""

    status_code: int
    headers: ReplyHeaders
    content: bytes
    #: The address called.
    url: str

    @property
    def encoding(self) -> str:
        """The body's charset, as httpx's `Response.encoding` gives it (default UTF-8)."""
        message = email.message.Message()
        message["content-type"] = self.headers.get("content-type", "")
        charset = message.get_content_charset(failobj=None)
        if charset:
            try:
                codecs.lookup(charset)
                return charset
            except LookupError:
                pass
        return "utf-8"


def _too_large(ctx: ErrorContext, text: str) -> AgencyProtocolError:
    return ctx.build(AgencyProtocolError, text, code="REPLY_TOO_LARGE")


def check_body_size(body: bytes, max_bytes: int, ctx: ErrorContext) -> None:
    """Refuse a body already in hand (an agency's callback) that is larger than `max_bytes`.

    Raises:
        AgencyProtocolError: code `REPLY_TOO_LARGE`.
    """
    if len(body) > max_bytes:
        raise _too_large(ctx, f"reply of {len(body)} bytes, more than {max_bytes}")


async def read_reply(http: httpx.AsyncClient, method: str, url: httpx.URL | str, *,
                     max_bytes: int, ctx: ErrorContext,
                     follow_redirects: bool | UseClientDefault = httpx.USE_CLIENT_DEFAULT,
                     **kwargs: Any) -> Reply:
    """Send one request and read its reply, at most `max_bytes` of (decoded) body.

    Args:
        http: the agency's client.
        method, url, kwargs: as for `httpx.AsyncClient.request` (`content`, `headers`,
            `timeout`, ...).
        follow_redirects: `httpx.USE_CLIENT_DEFAULT` for the client's own setting.
        max_bytes: the largest body accepted.
        ctx: who the error is about.

    Returns:
        The reply with its body read (and decoded); its headers without the wire's framing.

    Raises:
        AgencyProtocolError: the body is larger than `max_bytes` (code `REPLY_TOO_LARGE`).
        httpx.HTTPError: as `httpx.AsyncClient.send` and reading the body raise them.
    """
    if isinstance(http, OutgoingClient) and http.direct is not None and _plain(kwargs, follow_redirects):
        return await _read_direct(http, method, url, max_bytes=max_bytes, ctx=ctx, **kwargs)
    request = http.build_request(method, url, **kwargs)
    try:
        record_sent(request.content)
    except httpx.RequestNotRead:  # streamed with its attachments: the bytes are not kept
        record_sent(b"(a streamed body: the message and its attachments)")
    response = await http.send(request, stream=True, follow_redirects=follow_redirects)
    try:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_bytes:
            raise _too_large(ctx, f"reply of {declared} bytes announced, more than {max_bytes}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(ctx, f"reply larger than {max_bytes} bytes")
            chunks.append(chunk)
    finally:
        await response.aclose()
    body = b"".join(chunks)
    record_received(body)
    return Reply(response.status_code, reply_headers(response.headers.raw, body), body, str(request.url))


#: What a direct call may carry: anything else (a JSON body, params, files) goes through httpx.
_DIRECT_KWARGS = frozenset({"content", "headers", "timeout"})


def _plain(kwargs: dict[str, Any], follow_redirects: bool | UseClientDefault) -> bool:
    return kwargs.keys() <= _DIRECT_KWARGS and isinstance(kwargs.get("content", b""), bytes) and (
        follow_redirects is httpx.USE_CLIENT_DEFAULT or follow_redirects is False)


async def _read_direct(http: OutgoingClient, method: str, url: httpx.URL | str, *,
                       max_bytes: int, ctx: ErrorContext, content: bytes = b"", headers: Any = None,
                       timeout: Any = httpx.USE_CLIENT_DEFAULT) -> Reply:
    """`read_reply` on aiohttp without httpx's client: the same headers sent (the client's
    defaults, then the call's), the same timeouts, call deadline, size bound and errors."""
    timeouts = (http.timeout if timeout is httpx.USE_CLIENT_DEFAULT else httpx.Timeout(timeout)).as_dict()
    record_sent(content)
    try:
        target, status, raw, body = await http.exchange_direct(
            method, url, content, _call_headers(headers) if headers else (), timeouts, max_bytes)
    except BodyTooLarge as exc:
        raise _too_large(ctx, str(exc)) from exc
    record_received(body)
    return Reply(status, reply_headers(raw, body), body, target)


def _call_headers(headers: Any) -> Iterable[tuple[str, str]]:
    """A call's headers as `httpx.Headers(headers).items()` gives them (lower-case names, the
    values of a repeated name joined), without building one for a plain dict of ASCII text."""
    if isinstance(headers, dict):
        merged: dict[str, str] = {}
        for name, value in headers.items():
            if type(name) is not str or type(value) is not str or not (name.isascii() and value.isascii()):
                break
            key = name.lower()
            merged[key] = f"{merged[key]}, {value}" if key in merged else value
        else:
            return merged.items()
    return httpx.Headers(headers).items()
