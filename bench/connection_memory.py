#!/usr/bin/env python3
"""Memory a worker holds per agency connection kept alive and per agency call in flight (issue 13).

A worker keeps up to `concurrency` calls in flight per agency, each on its own HTTP/1.1
connection, and keeps those connections alive between calls. With agencies answering in 500 ms
every slot fills, so a worker's peak grows with the connections it holds: this prices one.

The four agency simulators run in their own process; this process builds one agency's client
and adapter as a worker does (`wiring.agencies.agency_http_client`, `bootstrap.build_agency_runtime`)
and delivers messages planned from the sample filings through `deliver_with_retries`:

1. a few deliveries one at a time (contracts, caches, the first connection);
2. `--calls` deliveries at once against an agency answering in `--latency-ms`: as many
   connections, kept alive afterwards. RssAnon (the heaps) after it, against before it, is the
   memory per kept-alive connection;
3. `--calls` deliveries at once again, on those connections: RssAnon while all of them wait for
   their replies, against after step 2, is the memory per call in flight.

Each reading follows a full collection and a `malloc_trim`, so the heap pages freed by then are
not counted. `--client aiohttp` prices the same connections for aiohttp alone (a `ClientSession`
posting a 3 KB body to a loopback server in a child process that answers 300 bytes after the
same latency): what the library itself holds, against what the hub adds. Each client is
measured in a process of its own (the first would leave the second a heap already grown).
Only this process's memory is read, never the servers'.

    .venv/bin/python -OO bench/connection_memory.py --agency inps --calls 256
    .venv/bin/python -OO bench/connection_memory.py --client aiohttp --calls 256
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

import bootstrap  # noqa: E402
from adapters.base import deliver_with_retries  # noqa: E402
from config.logging import configure_logging  # noqa: E402
from simulators.launcher import start_simulators  # noqa: E402

from adapter_cpu import _http_client, _messages, _settings, contracts_routes_samples  # noqa: E402
from measure import heap_mib  # noqa: E402

WARM_UP = 20
#: A loopback HTTP/1.1 server that answers every request on a kept-alive connection after the
#: latency given (its first argument), with a 300-byte body; it prints its port.
PLAIN_SERVER = r"""
import asyncio, sys

LATENCY = float(sys.argv[1])
REPLY = b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 300\r\n\r\n" + b"x" * 300

async def serve(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            await reader.readexactly(length)
            await asyncio.sleep(LATENCY)
            writer.write(REPLY)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()

async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()

asyncio.run(main())
"""


async def measure(calls: int, latency: float, call: Callable[[int], Awaitable[Any]]) -> tuple[float, float]:
    """KiB per kept-alive connection and per call in flight, with `call(i)` making call i."""
    before = heap_mib()
    opening = [asyncio.ensure_future(call(i)) for i in range(calls)]
    await asyncio.wait(opening)
    for task in opening:
        task.result()
    del opening  # (a gather's future would keep its tasks, and their frames, past the reading)
    kept = heap_mib()
    flight = [asyncio.ensure_future(call(calls + i)) for i in range(calls)]
    await asyncio.sleep(latency * 2 / 3)  # not synchronisation: a reading while all wait for replies
    waiting = heap_mib()
    pending = sum(not f.done() for f in flight)
    await asyncio.wait(flight)
    for task in flight:
        task.result()
    if pending < calls:
        raise RuntimeError(f"only {pending} of {calls} calls were still waiting at the reading:"
                           " give a longer --latency-ms")
    return (kept - before) * 1024 / calls, (waiting - kept) * 1024 / calls


async def hub_client(args: argparse.Namespace, settings: Any, sims: Any) -> tuple[float, float]:
    contracts, routes, samples = contracts_routes_samples(settings)
    conf = settings.agencies[args.agency]
    client = _http_client(conf, args.calls, settings.http, "")
    runtime = bootstrap.build_agency_runtime(settings, contracts, args.agency, client, concurrency=args.calls,
                                             public_url="http://127.0.0.1:9")
    messages = _messages(routes, samples, args.agency, 2 * args.calls + WARM_UP)
    failed: list[str] = []

    async def deliver(i: int) -> None:
        result = await deliver_with_retries(runtime.adapter, messages[WARM_UP + i], runtime.retry)
        if not result.succeeded:
            failed.append(f"{type(result.error).__name__}: {result.error}")

    try:
        for message in messages[:WARM_UP]:
            await deliver_with_retries(runtime.adapter, message, runtime.retry)
        sims.set_faults(args.agency, [{"operation": "*", "kind": "latency", "delay_ms": args.latency_ms}])
        figures = await measure(args.calls, args.latency_ms / 1000, deliver)
    finally:
        await client.aclose()
    if failed:
        raise RuntimeError(f"{len(failed)} deliveries failed, first: {failed[0]}")
    return figures


async def plain_aiohttp(args: argparse.Namespace) -> tuple[float, float]:
    server = subprocess.Popen([sys.executable, "-c", PLAIN_SERVER, str(args.latency_ms / 1000)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        connector = aiohttp.TCPConnector(limit=args.calls)
        async with aiohttp.ClientSession(connector=connector) as session:
            async def post(_: int) -> None:
                async with session.post(f"http://127.0.0.1:{port}/soap", data=b"y" * 3000) as reply:
                    await reply.read()

            for i in range(WARM_UP):
                await post(i)
            return await measure(args.calls, args.latency_ms / 1000, post)
    finally:
        server.kill()
        server.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agency", default="inps", choices=("inps", "inail", "cciaa"))
    parser.add_argument("--calls", type=int, default=256, help="calls at once: connections kept, calls in flight")
    parser.add_argument("--latency-ms", type=int, default=1500, help="the agency's answer time while measured")
    parser.add_argument("--client", default="hub", choices=("hub", "aiohttp"),
                        help="the worker's agency client, or aiohttp alone against a loopback server")
    args = parser.parse_args()
    if args.client == "aiohttp":
        name = "aiohttp alone"
        kept, flight = asyncio.run(plain_aiohttp(args))
    else:
        configure_logging("warning")
        sims = start_simulators()
        try:
            secrets = Path(tempfile.mkdtemp(prefix="crocevia-bench-keys-"))
            endpoints = {agency: sims.soap_endpoint(agency) for agency in sims.urls}
            settings = _settings(argparse.Namespace(external_dir=""), endpoints, secrets)
            name = f"hub, {args.agency} ([http] pool = {settings.http.pool})"
            kept, flight = asyncio.run(hub_client(args, settings, sims))
        finally:
            sims.stop()
    print(f"memory per agency connection and call, {args.calls} at once, answers in {args.latency_ms} ms"
          f" (RssAnon of this process, KiB; python {'-OO' if sys.flags.optimize >= 2 else 'without -OO'})")
    print(f"{'client':36} {'per kept-alive connection':>26} {'per call in flight':>19}")
    print(f"{name:36} {kept:26.1f} {flight:19.1f}")
    print("a worker holds up to [agencies.NAME] concurrency connections per agency (the e2e benches'"
          " --worker-concurrency), all of them while the agency is slow")
    print(f"reproduce: .venv/bin/python -OO bench/connection_memory.py --client {args.client} --agency {args.agency}"
          f" --calls {args.calls} --latency-ms {args.latency_ms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
