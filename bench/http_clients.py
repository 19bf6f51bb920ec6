#!/usr/bin/env python3
"""Client CPU per agency call: the hand-written pool against httpx tuned and aiohttp (issue 13).

The issue keeps `adapters/http_pool.py` (with `http_wire.py`, `http_connection.py`) only if it is
at least 1.5x cheaper in CPU per call than both libraries. A loopback HTTP/1.1 server in a child
process (it answers each POST on a keep-alive connection with a ~1.5 KB SOAP receipt, at once)
takes `--calls` POSTs of a ~3 KB SOAP body from this process, in turns, through:

- `fast`:    `KeepAliveTransport` inside `DeadlineTransport` inside an `httpx.AsyncClient`,
             read through `adapters.replies.read_reply` (size bound): the hub's path until now;
- `httpx`:   the same client and `read_reply`, on `httpx.AsyncHTTPTransport(limits=..., retries=0,
             http2=False)` with max_connections = keep-alive connections = the concurrency;
- `aiohttp`: `aiohttp.ClientSession` on a `TCPConnector(limit=concurrency)`, a total timeout as
             the call deadline, the reply read in chunks up to the same size bound;
- `seam`:    `adapters.http_transport.AiohttpTransport` in the same client, deadline and
             `read_reply` as `fast` (aiohttp's cost plus httpx's client around it);
- `hub`:     what replaced `fast`: the client `wiring.agencies.agency_http_client` builds with
             `[http] pool = "aiohttp"`, through `read_reply` (its direct path skips httpx's client).

`fast` needs `adapters/http_pool.py`, deleted once these figures decided: `--fast-from` names a
checkout that still has it (its three modules are loaded from there).

CPU is this process's (`time.process_time`, the server excluded) divided by the calls; each run is
preceded by one warm-up call per slot (connections open). Rounds alternate the clients; the summary
gives medians and each client's CPU per call over `fast`'s.

    .venv/bin/python bench/http_clients.py --calls 1000 --concurrency 1,32 --rounds 3 \
        --fast-from /path/to/a/checkout/before/issue-13
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
import httpx  # noqa: E402

from adapters.base import ErrorContext  # noqa: E402
from adapters.deadline import DeadlineTransport  # noqa: E402
from adapters.http_transport import AiohttpTransport  # noqa: E402
from adapters.replies import read_reply  # noqa: E402
from bench.measure import free_port, percentile, proc_stats  # noqa: E402

CLIENTS = ("fast", "httpx", "aiohttp", "seam", "hub")
#: The reply bound the adapters use for a receipt (`ReceiptLimits.max_reply_bytes` order).
MAX_BYTES = 1 << 20
DEADLINE = 30.0
HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '"urn:bench#IscrizioneAzienda"'}
REQUEST_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
    + b'<r:IscrizioneAzienda xmlns:r="urn:bench">' + b"<r:campo>valore</r:campo>" * 120
    + b"</r:IscrizioneAzienda></soap:Body></soap:Envelope>"
)
REPLY_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>'
    b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>'
    b'<r:IscrizioneAziendaResponse xmlns:r="urn:bench"><r:esito>ACQUISITA</r:esito>'
    b"<r:protocollo>INPS.2026.0001.0000001</r:protocollo>"
    b"<r:dataProtocollo>2026-11-28T09:00:00+00:00</r:dataProtocollo>"
    + b"<r:note>" + b"x" * 1200 + b"</r:note>"
    b"</r:IscrizioneAziendaResponse></soap:Body></soap:Envelope>"
)

Call = Callable[[], Awaitable[int]]


class _Agency(asyncio.Protocol):
    """Answers each complete POST on a keep-alive connection with the receipt, at once."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buf[:end]).lower()
            at = head.find(b"content-length:")
            length = int(head[at + 15:].split(b"\r\n", 1)[0]) if at >= 0 else 0
            if len(self.buf) < end + 4 + length:
                return
            del self.buf[:end + 4 + length]
            assert self.transport is not None
            self.transport.write(_REPLY)


_REPLY = (b"HTTP/1.1 200 OK\r\nContent-Type: text/xml; charset=utf-8\r\n"
          b"Content-Length: %d\r\n\r\n" % len(REPLY_BODY)) + REPLY_BODY


def serve(port: int) -> None:
    """The agency, in the child process: prints `ready` once it listens."""
    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(_Agency, "127.0.0.1", port, backlog=1024)
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


#: A checkout holding the hand-written pool (deleted in issue 13), for `fast`.
FAST_FROM: Path | None = None


def _keep_alive_transport() -> type[httpx.AsyncBaseTransport]:
    """`KeepAliveTransport`, loaded from the checkout `--fast-from` names."""
    import importlib.util

    if FAST_FROM is None:
        raise SystemExit("`fast` needs --fast-from CHECKOUT (a tree with adapters/http_pool.py)")
    for name in ("http_wire", "http_connection", "http_pool"):  # in import order
        spec = importlib.util.spec_from_file_location(f"adapters.{name}", FAST_FROM / "adapters" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["adapters.http_pool"].KeepAliveTransport  # type: ignore[no-any-return]


def _httpx_client(kind: str, limits: httpx.Limits) -> httpx.AsyncClient:
    inner: httpx.AsyncBaseTransport
    if kind == "fast":
        inner = _keep_alive_transport()(limits=limits)
    elif kind == "seam":
        inner = AiohttpTransport(limits=limits)
    else:
        inner = httpx.AsyncHTTPTransport(limits=limits, retries=0, http2=False)
    return httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0), limits=limits,
                             transport=DeadlineTransport(inner, DEADLINE), trust_env=False)


async def _with_httpx(kind: str, url: str, concurrency: int, run: Callable[[Call], Awaitable[dict[str, float]]]
                      ) -> dict[str, float]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    ctx = ErrorContext(agency="bench", operation="IscrizioneAzienda")
    if kind == "hub":
        from config.settings import AgencySettings
        from wiring.agencies import agency_http_client

        conf = AgencySettings(endpoint=url, read_timeout=10.0, connect_timeout=2.0, call_deadline=DEADLINE)
        made = agency_http_client(conf, concurrency)
    else:
        made = _httpx_client(kind, limits)
    async with made as client:
        async def call() -> int:
            response = await read_reply(client, "POST", url, max_bytes=MAX_BYTES, ctx=ctx,
                                        content=REQUEST_BODY, headers=HEADERS)
            return response.status_code if len(response.content) == len(REPLY_BODY) else -1
        return await run(call)


async def _with_aiohttp(url: str, concurrency: int, run: Callable[[Call], Awaitable[dict[str, float]]]
                        ) -> dict[str, float]:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=30,
                                     use_dns_cache=True, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=DEADLINE, connect=2.0, sock_read=10.0)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=True,
                                     trust_env=False) as session:
        async def call() -> int:
            async with session.post(url, data=REQUEST_BODY, headers=HEADERS) as response:
                # The same bound as read_reply: a declared length first, then the bytes as read.
                if response.content_length is not None and response.content_length > MAX_BYTES:
                    raise RuntimeError("reply too large")
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.content.iter_any():
                    size += len(chunk)
                    if size > MAX_BYTES:
                        raise RuntimeError("reply too large")
                    chunks.append(chunk)
            return response.status if len(b"".join(chunks)) == len(REPLY_BODY) else -1
        return await run(call)


async def _drive(kind: str, url: str, calls: int, concurrency: int) -> dict[str, float]:
    async def run(call: Call) -> dict[str, float]:
        async def timed() -> float:
            t0 = time.perf_counter()
            if await call() != 200:
                raise RuntimeError(f"{kind}: unexpected reply")
            return time.perf_counter() - t0

        await asyncio.gather(*(timed() for _ in range(concurrency)))  # warm-up: connections open
        remaining = calls
        latencies: list[float] = []

        async def lane() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                latencies.append(await timed())

        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        await asyncio.gather(*(lane() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        return {"rps": calls / wall, "cpu_us": cpu / calls * 1e6,
                "p50": percentile(latencies, 50) * 1000, "p99": percentile(latencies, 99) * 1000}

    if kind == "aiohttp":
        return await _with_aiohttp(url, concurrency, run)
    return await _with_httpx(kind, url, concurrency, run)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--concurrency", default="1,32", help="comma-separated")
    parser.add_argument("--rounds", type=int, default=3, help="repeat the clients, alternating")
    parser.add_argument("--clients", default=",".join(CLIENTS))
    parser.add_argument("--fast-from", type=Path, help="a checkout with adapters/http_pool.py, for `fast`")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)  # the child's port
    args = parser.parse_args()
    global FAST_FROM
    FAST_FROM = args.fast_from
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE)
    command = (f".venv/bin/python bench/http_clients.py --calls {args.calls} --concurrency {args.concurrency} "
               f"--rounds {args.rounds} --clients {args.clients}"
               + (f" --fast-from {args.fast_from}" if args.fast_from else ""))
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == b"ready"
        url = f"http://127.0.0.1:{port}/soap"
        clients = args.clients.split(",")
        levels = [int(c) for c in args.concurrency.split(",")]
        print(f"# {args.calls} POSTs of {len(REQUEST_BODY)} B, replies of {len(REPLY_BODY)} B, "
              f"{os.cpu_count()} CPUs, httpx {httpx.__version__}, aiohttp {aiohttp.__version__}")
        print(f"{'client':<9}{'conc':>5}{'calls/s':>9}{'CPU µs/call':>13}{'p50 ms':>9}{'p99 ms':>9}")
        results: dict[tuple[str, int], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for level in levels:
                for kind in clients:
                    r = asyncio.run(_drive(kind, url, args.calls, level))
                    results.setdefault((kind, level), []).append(r)
                    print(f"{kind:<9}{level:>5}{r['rps']:>9.0f}{r['cpu_us']:>13.0f}{r['p50']:>9.2f}"
                          f"{r['p99']:>9.2f}", flush=True)
        print(f"# medians of {args.rounds} rounds; ratio = CPU per call / fast's (≥ 1.5 keeps the pool)")
        print(f"{'client':<9}{'conc':>5}{'calls/s':>9}{'CPU µs/call':>13}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>7}")
        for level in levels:
            fast = results.get(("fast", level))
            base = statistics.median(r["cpu_us"] for r in fast) if fast else None
            for kind in clients:
                runs = results[(kind, level)]
                med = {key: statistics.median(r[key] for r in runs) for key in runs[0]}
                ratio = f"{med['cpu_us'] / base:>7.2f}" if base else f"{'-':>7}"
                print(f"{kind:<9}{level:>5}{med['rps']:>9.0f}{med['cpu_us']:>13.0f}{med['p50']:>9.2f}"
                      f"{med['p99']:>9.2f}{ratio}")
        server_cpu, _ = proc_stats(server.pid)
        print(f"# server process CPU: {server_cpu:.1f} s (not counted above)")
        print(f"# reproduce: {command}")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
