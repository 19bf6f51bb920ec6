"""Admission control for the intake: a bounded number of submissions in flight, a bounded wait
for a slot, and beyond that a quick 503 with `Retry-After` instead of a slow answer for everyone.

Under overload, taking every request makes every request slow (and the slowest time out after
the hub did the work). Refusing early, before the body is read or the signature checked,
costs almost nothing and stores nothing: the portal retries after `Retry-After` seconds.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

import structlog
from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import problem_response

__all__ = ["AdmissionLimits", "SubmissionAdmission"]

log = structlog.get_logger("crocevia.api")

#: The requests the gate applies to: filing submissions (reads and callbacks are not shed).
_GATED = ("POST", "/v1/filings")


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """How much intake the API takes at once (`[api] max_inflight_submissions`, `max_queue_wait_ms`)."""

    max_inflight: int = 32  #: submissions processed at once; 0: no gate
    max_wait_ms: int = 200  #: how long a submission beyond them waits for a slot before 503

    @property
    def retry_after(self) -> str:
        """Seconds a refused portal should wait: at least one, about one queue wait."""
        return str(max(1, math.ceil(self.max_wait_ms / 1000)))


class SubmissionAdmission:
    """Pure ASGI middleware gating `POST /v1/filings`.

    Args:
        app: the application.
        limits: the bounds; None or `max_inflight` 0 passes everything through.
    """

    def __init__(self, app: ASGIApp, limits: AdmissionLimits | None = None) -> None:
        self.app = app
        self.limits = limits or AdmissionLimits(max_inflight=0)
        # Created lazily: the semaphore belongs to the loop that serves the requests.
        self._slots: asyncio.Semaphore | None = None
        self.inflight = 0
        self.refused = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (not self.limits.max_inflight or scope["type"] != "http"
                or (scope["method"], scope["path"]) != _GATED):
            await self.app(scope, receive, send)
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.limits.max_inflight)
        if not await self._admit(self._slots):
            self.refused += 1
            log.info("submission_shed", inflight=self.inflight, wait_ms=self.limits.max_wait_ms)
            response = problem_response(
                503, "intake-busy", "Service Unavailable",
                "the hub is taking as many filings as it can; nothing was recorded, retry later",
                # The body is left unread: closing the connection keeps the client from
                # sending its next request behind it on a connection the server drops.
                instance=scope["path"], headers={"Retry-After": self.limits.retry_after, "Connection": "close"})
            await response(scope, receive, send)
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
            self._slots.release()

    async def _admit(self, slots: asyncio.Semaphore) -> bool:
        """Take a slot, waiting at most `max_wait_ms`; False if none freed up in time."""
        if not slots.locked():
            await slots.acquire()  # a free slot: taken at once, no timer
            return True
        try:
            await asyncio.wait_for(slots.acquire(), self.limits.max_wait_ms / 1000)
        except TimeoutError:
            return False
        return True
