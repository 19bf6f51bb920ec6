"""Request bodies read within a bound: the API never holds more of a body than it accepts."""

from __future__ import annotations

from starlette.requests import Request

__all__ = ["read_bounded"]


async def read_bounded(request: Request, limit: int) -> bytes | None:
    """The whole body, or None once it is known to exceed `limit` bytes: at once from a declared
    Content-Length, else as soon as the chunks read pass the bound (the rest is not read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
