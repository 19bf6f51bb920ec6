"""HTTP helpers shared by the simulators: capped bodies, interruptible pauses, gateway pages."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from http import HTTPStatus

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

__all__ = ["MAX_BODY_BYTES", "BodyTooLargeError", "gateway_response", "pause", "read_body", "trickled"]

#: Largest request body a simulator reads; real agencies cap uploads too.
MAX_BODY_BYTES = 1_048_576


class BodyTooLargeError(ValueError):
    """The request body is larger than `MAX_BODY_BYTES`."""


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """Read the body, stopping as soon as it exceeds `limit` (Content-Length may lie or lack).

    Raises:
        BodyTooLargeError: when the declared or received size exceeds `limit`.
    """
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError(f"corpo di {declared} byte oltre il limite di {limit}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"corpo oltre il limite di {limit} byte")
        chunks.append(chunk)
    return b"".join(chunks)


async def _disconnected(request: Request) -> None:
    """Return once the client has closed the connection (the body is already read)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def pause(request: Request, seconds: float, wake: asyncio.Event) -> bool:
    """Hold the request for `seconds`, as a slow agency would.

    Returns False when the wait was cut short, because the client gave up (its timeout) or the
    simulator was reset or is shutting down (`wake` set): the caller then does not process a
    message nobody is waiting for, which keeps the ledger deterministic.
    """
    sleeper = asyncio.ensure_future(asyncio.sleep(seconds))
    gone = asyncio.ensure_future(_disconnected(request))
    woken = asyncio.ensure_future(wake.wait())
    done, pending = await asyncio.wait({sleeper, gone, woken}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    return sleeper in done and gone not in done and woken not in done


def gateway_response(status: int, retry_after: float | int | None = None) -> Response:
    """What a gateway in front of an agency answers when it is down: an HTML page, no SOAP."""
    headers = {"Retry-After": str(math.ceil(retry_after))} if retry_after is not None else {}
    if status < 400:
        return Response(b"", status_code=status, headers=headers)
    try:
        title = f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        title = str(status)
    # Shaped like a reverse proxy's page, `<hr>` included: HTML, not XML, as in real outages.
    page = (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
        f"<center><h1>{title}</h1></center>\r\n<hr><center>gateway</center>\r\n"
        "</body>\r\n</html>\r\n"
    )
    return Response(page, status_code=status, headers=headers, media_type="text/html")


def trickled(reply: Response, interval: float) -> StreamingResponse:
    """`reply` with its head at once and its body one byte every `interval` seconds.

    Content-Length announces the whole body, so a client must wait for every byte: each gap is
    shorter than its read timeout, the whole reply far longer. A client that gives up closes
    the connection, which ends the stream.
    """
    body = bytes(reply.body)

    async def drip() -> AsyncIterator[bytes]:
        for i in range(len(body)):
            if i:
                await asyncio.sleep(interval)
            yield body[i:i + 1]

    headers = {k: v for k, v in reply.headers.items() if k.lower() != "content-length"}
    headers["content-length"] = str(len(body))
    return StreamingResponse(drip(), status_code=reply.status_code, headers=headers)
