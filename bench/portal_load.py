"""The bench portal's load: signed filings submitted over HTTP, a bounded number in flight,
optionally paced (open loop). The throughput, intake-CPU and soak benchmarks submit through it
(`bench/intake_overload.py` keeps its own client: it records each refusal and its Retry-After).

The load generator shares the machine's two cores with the hub, so its own cost per request is
kept low: aiohttp's client, one connection per request in flight. httpx's pool, which these
benchmarks used before, looked at every pooled connection at every request (32 connections: 90 %
of the generator's time, most of a core at full load). `bench/rabbitmq_e2e.py` reports the
generator's CPU per filing; its `--client httpx` runs the former client, to compare.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

import aiohttp
import httpx

__all__ = ["PortalLoad", "Submitted"]


class SignedFilings(Protocol):
    def filing(self, i: int) -> tuple[bytes, dict[str, str]]: ...


@dataclass
class Submitted:
    """What a run of submissions gave: its clock, the accepted requests' times, the refusals."""

    start: float = 0.0  # perf_counter at the first submission
    end: float = 0.0
    took_ms: list[float] = field(default_factory=list)  # each accepted (202) request's time
    refused: Counter[int | str] = field(default_factory=Counter)  # by status or transport error

    @property
    def accepted(self) -> int:
        return len(self.took_ms)


class PortalLoad:
    """Submits `portal`'s filings to `base`'s `/v1/filings` with at most `concurrency` in flight.

    `client` is "aiohttp" (the default) or "httpx", to compare the generator's own cost.
    """

    def __init__(self, base: str, concurrency: int, portal: SignedFilings, *, client: str = "aiohttp") -> None:
        if client not in ("aiohttp", "httpx"):
            raise ValueError(f"unknown client {client!r}")
        self.base, self.concurrency, self.portal, self.client = base.rstrip("/"), concurrency, portal, client

    async def run(self, n: int | None, rate: float = 0.0, until: float | None = None) -> Submitted:
        """Submit `n` filings (or until monotonic time `until`), paced at `rate`/s if > 0."""
        out = Submitted()
        post = self._aiohttp_post if self.client == "aiohttp" else self._httpx_post
        counter = iter(range(n if n is not None else 2**62))
        async with self._session() as session:
            out.start = time.perf_counter()

            async def one() -> None:
                for i in counter:
                    if rate:
                        await asyncio.sleep(max(0.0, out.start + i / rate - time.perf_counter()))
                    if until is not None and time.monotonic() >= until:
                        return
                    doc, signed = self.portal.filing(i)
                    sent = time.perf_counter()
                    status = await post(session, doc, signed)
                    if status == 202:
                        out.took_ms.append((time.perf_counter() - sent) * 1000)
                    else:
                        out.refused[status] += 1

            await asyncio.gather(*(one() for _ in range(self.concurrency)))
            out.end = time.perf_counter()
        return out

    def _session(self) -> aiohttp.ClientSession | httpx.AsyncClient:
        headers = {"Content-Type": "application/xml"}
        if self.client == "httpx":
            limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
            return httpx.AsyncClient(base_url=self.base, limits=limits, timeout=60, trust_env=False, headers=headers)
        return aiohttp.ClientSession(
            self.base, connector=aiohttp.TCPConnector(limit=self.concurrency),
            timeout=aiohttp.ClientTimeout(total=60), headers=headers)

    @staticmethod
    async def _aiohttp_post(session: aiohttp.ClientSession, doc: bytes, signed: dict[str, str]) -> int | str:
        try:
            async with session.post("/v1/filings", data=doc, headers=signed) as response:
                await response.read()
                return response.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            return type(exc).__name__

    @staticmethod
    async def _httpx_post(session: httpx.AsyncClient, doc: bytes, signed: dict[str, str]) -> int | str:
        try:
            return (await session.post("/v1/filings", content=doc, headers=signed)).status_code
        except httpx.TransportError as exc:
            return type(exc).__name__
