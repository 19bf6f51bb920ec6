#!/usr/bin/env python3
"""Client CPU per agency call: httpx's default transport against `KeepAliveTransport`.

A loopback HTTP/1.1 server in a child process answers every POST with a small SOAP reply after
`--delay-ms` (an agency's latency). This process drives `--requests` calls with `--concurrency`
in flight through an `httpx.AsyncClient` per transport, built as `wiring.agencies.agency_http_client`
builds the agency clients, and prints requests/s, this process's CPU per request
(`time.process_time`, the server excluded) and p50/p99 latency. A warm-up of one call per
slot (connections opened) precedes each measured run. Transports:

- `httpx-as-wired`: `AsyncHTTPTransport(retries=0)` as bootstrap built it before: the client's
  `limits` are ignored when a transport is passed, so httpcore's defaults apply (100
  connections, 20 kept alive);
- `httpx`: `AsyncHTTPTransport(retries=0, limits=...)` with the limits the client asked for;
- `fast`: `adapters.http_pool.KeepAliveTransport` with the same limits;
- `fast-direct` (and `httpx-direct`, on request): the transport alone, called with one prebuilt
  `httpx.Request`, to separate its cost from the client's (URL and header merging, cookies).

    .venv/bin/python bench/http_pool.py --requests 3072 --concurrency 128 --delay-ms 500
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from adapters.http_pool import KeepAliveTransport  # noqa: E402
from bench.measure import free_port, percentile, proc_stats  # noqa: E402

TRANSPORTS = ("httpx-as-wired", "httpx", "fast", "fast-direct")

_REPLY_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
    b'<r:IscrizioneAziendaResponse xmlns:r="urn:bench"><r:esito>ACQUISITA</r:esito>'
    b'<r:protocollo>INPS.2026.0001.0000001</r:protocollo>'
    b'<r:dataProtocollo>2026-11-28T09:00:00+00:00</r:dataProtocollo>'
    + b"<r:note>" + b"x" * 600 + b"</r:note>"
    b"</r:IscrizioneAziendaResponse></soap:Body></soap:Envelope>"
)
_REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\n"
          b"Content-Length: %d\r\n\r\n" % len(_REPLY_BODY)) + _REPLY_BODY
_REQUEST_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
    + b"<r:IscrizioneAzienda xmlns:r=\"urn:bench\">" + b"<r:campo>valore</r:campo>" * 80
    + b"</r:IscrizioneAzienda></soap:Body></soap:Envelope>"
)


# -- the server (child process) ------------------------------------------------------------


class _Agency(asyncio.Protocol):
    """Answers each request on a keep-alive connection after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[:end + 4 + length]
            asyncio.get_running_loop().call_later(self.delay, self._reply)

    def _reply(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_REPLY)


def serve(port: int, delay: float) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Agency(delay), "127.0.0.1", port, backlog=1024)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


# -- the client (this process) -------------------------------------------------------------


def _transport(kind: str, limits: httpx.Limits) -> httpx.AsyncBaseTransport:
    if kind == "httpx-as-wired":
        return httpx.AsyncHTTPTransport(retries=0)
    if kind.startswith("httpx"):
        return httpx.AsyncHTTPTransport(retries=0, limits=limits)
    return KeepAliveTransport(limits=limits)


async def _drive(kind: str, url: str, requests: int, concurrency: int) -> dict[str, float]:
    headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"urn:bench#IscrizioneAzienda"'}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(10.0, connect=2.0)
    transport = _transport(kind, limits)
    client = httpx.AsyncClient(timeout=timeout, limits=limits, transport=transport, trust_env=False)
    prebuilt = client.build_request("POST", url, content=_REQUEST_BODY, headers=headers)
    async with client:
        async def call() -> float:
            t0 = time.perf_counter()
            if kind.endswith("-direct"):
                response = await transport.handle_async_request(prebuilt)
                await response.aread()
            else:
                response = await client.post(url, content=_REQUEST_BODY, headers=headers)
            if response.status_code != 200 or len(response.content) != len(_REPLY_BODY):
                raise RuntimeError(f"unexpected reply {response.status_code}")
            return time.perf_counter() - t0

        await asyncio.gather(*(call() for _ in range(concurrency)))  # warm-up: connections open
        remaining = requests
        latencies: list[float] = []

        async def lane() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                latencies.append(await call())

        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return {"rps": requests / wall, "cpu_ms": cpu / requests * 1000,
            "p50": percentile(latencies, 50) * 1000, "p99": percentile(latencies, 99) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3072)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--delay-ms", type=float, default=500.0)
    parser.add_argument("--rounds", type=int, default=1, help="repeat the transports, alternating")
    parser.add_argument("--transports", default=",".join(TRANSPORTS))
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the child's port
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.delay_ms / 1000)
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--delay-ms", str(args.delay_ms)],
                              stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        url = f"http://127.0.0.1:{port}/soap"
        print(f"# {args.requests} POSTs, {args.concurrency} in flight, server delay {args.delay_ms:g} ms, "
              f"{os.cpu_count()} CPUs")
        print(f"{'transport':<16}{'req/s':>9}{'CPU ms/req':>12}{'p50 ms':>9}{'p99 ms':>9}")
        results: dict[str, list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for kind in args.transports.split(","):
                r = asyncio.run(_drive(kind, url, args.requests, args.concurrency))
                results.setdefault(kind, []).append(r)
                print(f"{kind:<16}{r['rps']:>9.0f}{r['cpu_ms']:>12.3f}{r['p50']:>9.1f}{r['p99']:>9.1f}", flush=True)
        best = {kind: min(r["cpu_ms"] for r in runs) for kind, runs in results.items()}
        for base, other in (("httpx-as-wired", "fast"), ("httpx", "fast"), ("httpx-direct", "fast-direct")):
            if base in best and other in best:
                print(f"# CPU per request, {base} / {other}: {best[base] / best[other]:.1f}x (best runs)")
        server_cpu, _ = proc_stats(server.pid)
        print(f"# server process CPU: {server_cpu:.1f} s (not counted above)")
        print(f"# reproduce: .venv/bin/python bench/http_pool.py --requests {args.requests} "
              f"--concurrency {args.concurrency} --delay-ms {args.delay_ms:g} --rounds {args.rounds} "
              f"--transports {args.transports}")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
