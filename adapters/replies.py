"""Reading an agency's reply within a size bound, so that an oversized one is never parsed.

The adapters stream the reply and stop at the contract's `max_reply_bytes`
(`ReceiptLimits`): a declared Content-Length beyond it is refused before the body is read,
and a body without one stops being read as soon as it passes the bound (the connection is
then dropped, not reused). The count is of decoded bytes, so a compressed reply cannot
expand past the bound either. An agency client on aiohttp (`AgencyClient`) takes a direct path
for plain calls, with the same headers, timeouts, deadline, bound and errors.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import httpx
from multidict import CIMultiDict

from adapters.deadline import CallDeadlineExceeded
from adapters.http_transport import AgencyClient, AiohttpTransport, BodyTooLarge
from adapters.wire import record_received, record_sent
from domain.errors import AgencyProtocolError

if TYPE_CHECKING:
    from httpx._client import UseClientDefault

    from adapters.base import ErrorContext

__all__ = ["check_body_size", "read_reply"]

#: Headers that describe the body as it came over the wire, not as it is kept after decoding.
_WIRE_HEADERS = frozenset({b"content-encoding", b"content-length", b"transfer-encoding"})


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
                     **kwargs: Any) -> httpx.Response:
    """Send one request and read its reply, at most `max_bytes` of (decoded) body.

    Args:
        http: the agency's client.
        method, url, kwargs: as for `httpx.AsyncClient.request` (`content`, `headers`,
            `timeout`, ...).
        follow_redirects: `httpx.USE_CLIENT_DEFAULT` for the client's own setting.
        max_bytes: the largest body accepted.
        ctx: who the error is about.

    Returns:
        The reply with its body read (and decoded).

    Raises:
        AgencyProtocolError: the body is larger than `max_bytes` (code `REPLY_TOO_LARGE`).
        httpx.HTTPError: as `httpx.AsyncClient.send` and reading the body raise them.
    """
    if isinstance(http, AgencyClient) and http.direct is not None and _plain(kwargs, follow_redirects):
        return await _read_direct(http, http.direct, method, url, max_bytes=max_bytes, ctx=ctx, **kwargs)
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
    headers = [(k, v) for k, v in response.headers.raw if k.lower() not in _WIRE_HEADERS]
    return httpx.Response(response.status_code, headers=headers, content=body,
                          request=request, extensions=response.extensions)


#: What a direct call may carry: anything else (a JSON body, params, files) goes through httpx.
_DIRECT_KWARGS = frozenset({"content", "headers", "timeout"})


def _plain(kwargs: dict[str, Any], follow_redirects: bool | UseClientDefault) -> bool:
    return kwargs.keys() <= _DIRECT_KWARGS and isinstance(kwargs.get("content", b""), bytes) and (
        follow_redirects is httpx.USE_CLIENT_DEFAULT or follow_redirects is False)


async def _read_direct(http: AgencyClient, transport: AiohttpTransport, method: str, url: httpx.URL | str, *,
                       max_bytes: int, ctx: ErrorContext, content: bytes = b"", headers: Any = None,
                       timeout: Any = httpx.USE_CLIENT_DEFAULT) -> httpx.Response:
    """`read_reply` on aiohttp without httpx's client: the same headers sent (the client's
    defaults, then the call's), the same timeouts, call deadline, size bound and errors."""
    target = str(http.base_url.join(url)) if http.base_url.host else str(url)
    sent = CIMultiDict(http.headers.items())
    if headers:
        for name, value in httpx.Headers(headers).items():
            sent[name] = value
    timeouts = (http.timeout if timeout is httpx.USE_CLIENT_DEFAULT else httpx.Timeout(timeout)).as_dict()
    record_sent(content)
    scope = asyncio.timeout(http.deadline)
    try:
        async with scope:
            status, raw, body = await transport.exchange(method, target, sent, content, timeouts, max_bytes)
    except BodyTooLarge as exc:
        raise _too_large(ctx, str(exc)) from exc
    except TimeoutError as exc:
        if not scope.expired():
            raise
        raise CallDeadlineExceeded(f"no complete reply within the call deadline of {http.deadline} s") from exc
    record_received(body)
    kept = [(k, v) for k, v in raw if k.lower() not in _WIRE_HEADERS]
    return httpx.Response(status, headers=kept, content=body, request=httpx.Request(method, http.url_of(target)))
