"""Pushing filing events to a portal's callback address, signed so that the portal can verify.

Signature (header `X-Crocevia-Signature`): `t=<unix seconds>,v1=<hex HMAC-SHA256>` computed
with the portal's secret over `"<t>." + body`. Binding the timestamp lets a portal refuse an
old message replayed by someone who captured it; the event id (`X-Crocevia-Event-Id`, also in
the body) stays the same across retries so that a repeat is recognisable.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from adapters.base import parse_retry_after
from adapters.http_transport import BodyTooLarge, OutgoingClient
from domain.errors import NotificationFailed

__all__ = [
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "WebhookFailed",
    "WebhookSender",
    "WebhookTarget",
    "sign_body",
    "verify_signature",
]

#: Carries `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`.
SIGNATURE_HEADER = "X-Crocevia-Signature"
#: The event's stable id.
EVENT_ID_HEADER = "X-Crocevia-Event-Id"
#: How much of a portal's answer is read (its body is not used; beyond, the connection is dropped).
MAX_ANSWER_BYTES = 64 * 1024
#: How old a signature `verify_signature` accepts by default (seconds).
DEFAULT_TOLERANCE = 300.0


def _mac(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign_body(secret: bytes, body: bytes, timestamp: float) -> str:
    """The signature header's value for `body` sent at `timestamp`."""
    t = int(timestamp)
    return f"t={t},v1={_mac(secret, t, body)}"


def verify_signature(
    secret: bytes, header: str | None, body: bytes, *, now: float | None = None,
    tolerance: float = DEFAULT_TOLERANCE,
) -> bool:
    """Whether `header` signs `body` with `secret`, no older than `tolerance` seconds.

    What a portal runs on each callback (constant-time comparison).
    """
    if not header:
        return False
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        t = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - t) > tolerance:
        return False
    return hmac.compare_digest(_mac(secret, t, body), parts.get("v1", ""))


class WebhookFailed(NotificationFailed):
    """The portal did not take the event (transport failure or a non-2xx answer)."""


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    url: str
    secret: bytes
    #: The most callbacks in flight to this portal at once (per notifier).
    concurrency: int = 32


class WebhookSender:
    """POSTs events to portals' callback addresses.

    Args:
        http: the hub's client for portal callbacks (its timeouts apply).
        targets: portal id → where to POST and with which secret to sign.
        clock: epoch seconds for the signature's timestamp.
    """

    def __init__(self, http: httpx.AsyncClient, targets: Mapping[str, WebhookTarget],
                 clock: Callable[[], float] = time.time) -> None:
        self._http = http
        self._targets = dict(targets)
        self._clock = clock

    @property
    def portals(self) -> dict[str, int]:
        """Each portal, and the most callbacks in flight to it at once."""
        return {portal: target.concurrency for portal, target in sorted(self._targets.items())}

    async def send(self, portal: str, event_id: str, body: bytes) -> None:
        """Deliver one event; returns when the portal answered 2xx.

        Raises:
            WebhookFailed: any other outcome (the notifier retries later).
        """
        target = self._targets[portal]
        headers = {
            "Content-Type": "application/json",
            EVENT_ID_HEADER: event_id,
            SIGNATURE_HEADER: sign_body(target.secret, body, self._clock()),
            "User-Agent": "crocevia-notifier/1",
        }
        http = self._http
        if isinstance(http, OutgoingClient) and http.direct is not None:
            status, retry_after = await self._post_direct(http, target.url, headers, body)
        else:
            status, retry_after = await self._post(target.url, headers, body)
        if not 200 <= status < 300:
            raise WebhookFailed(f"HTTP {status}", retry_after=parse_retry_after(retry_after))

    async def _post_direct(self, http: OutgoingClient, url: str, headers: dict[str, str],
                           body: bytes) -> tuple[int, str | None]:
        """The POST on aiohttp without httpx's client around it (the agencies' direct path):
        the status and any Retry-After; an answer past the bound is cut, its status kept."""
        try:
            _, status, raw, _ = await http.exchange_direct("POST", url, body, headers.items(),
                                                           http.timeout.as_dict(), MAX_ANSWER_BYTES)
        except BodyTooLarge as exc:
            return exc.status, None
        except httpx.HTTPError as exc:
            raise WebhookFailed(f"{type(exc).__name__}: {exc}") from exc
        retry_after = next((v.decode("latin-1") for k, v in raw if k.lower() == b"retry-after"), None)
        return status, retry_after

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> tuple[int, str | None]:
        """The POST through httpx's client: the status and any Retry-After."""
        try:
            # Only the status matters: the portal's body is drained up to a small bound (a
            # short one keeps the connection reusable) and never kept, whatever its size.
            async with self._http.stream("POST", url, content=body, headers=headers) as response:
                drained = 0
                async for chunk in response.aiter_raw():
                    drained += len(chunk)
                    if drained > MAX_ANSWER_BYTES:
                        break
        except httpx.HTTPError as exc:
            raise WebhookFailed(f"{type(exc).__name__}: {exc}") from exc
        return response.status_code, response.headers.get("retry-after")
