#!/usr/bin/env python3
"""Overload at the intake: offer twice the sustained rate and see what the admission gate does.

Starts the hub as separate processes on RabbitMQ + PostgreSQL (API, relay, N workers) and the
simulators; first measures the sustained intake (closed loop, `--concurrency` in flight), then
offers `--factor` times that rate open loop for `--seconds`, and prints, for each phase: the
accepted latency percentiles (submit → 202), the share refused (503 + Retry-After), and that
every accepted filing was stored and delivered. `--max-inflight 0` switches the gate off
(the comparison: without it latency grows with the backlog).

    .venv/bin/python bench/intake_overload.py --workers 2 --seconds 10
    .venv/bin/python bench/intake_overload.py --workers 2 --seconds 10 --max-inflight 0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from measure import BenchPortal, add_backend_arguments, drop_bench_backends, free_port, fresh_schema, percentile, proc_stats, stop_processes, wait_healthy  # noqa: E402
from simulators.launcher import start_simulators  # noqa: E402

PORTAL = BenchPortal()
AGENCIES = ("cciaa", "inail", "inps", "runts")


class _Load:
    """Signed submissions; records (status, seconds, Retry-After) per request."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.results: list[tuple[int | str, float, str | None]] = []

    async def one(self, client: httpx.AsyncClient, i: int) -> None:
        doc, headers = PORTAL.filing(i)
        t0 = time.perf_counter()
        try:
            r = await client.post("/v1/filings", content=doc, headers=headers)
        except httpx.TransportError as exc:
            self.results.append((type(exc).__name__, time.perf_counter() - t0, None))
            return
        self.results.append((r.status_code, time.perf_counter() - t0, r.headers.get("retry-after")))

    def client(self, connections: int) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncClient(base_url=self.base, limits=limits, timeout=60, trust_env=False,
                                 headers={"Content-Type": "application/xml"})

    async def closed(self, n: int, concurrency: int) -> float:
        """`n` submissions, `concurrency` in flight; returns accepted filings/s."""
        queue = iter(range(n))
        async with self.client(concurrency) as client:
            async def worker() -> None:
                for i in queue:
                    await self.one(client, i)
            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - t0
        return sum(1 for s, _, _ in self.results if s == 202) / elapsed

    async def open(self, rate: float, seconds: float) -> None:
        """Offer `rate` submissions/s for `seconds`, whatever the answers take (open loop)."""
        n = int(rate * seconds)
        async with self.client(1024) as client:
            t0 = time.perf_counter()
            tasks = []
            for i in range(n):
                await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
                tasks.append(asyncio.create_task(self.one(client, i)))
            await asyncio.gather(*tasks)


def _report(phase: str, results: list[tuple[int | str, float, str | None]]) -> None:
    statuses = Counter(s for s, _, _ in results)
    accepted = [t * 1000 for s, t, _ in results if s == 202]
    refused = [(t * 1000, ra) for s, t, ra in results if s in (429, 503)]
    print(f"{phase}: {len(results)} submitted, answers {dict(statuses)}")
    if accepted:
        print(f"  accepted {len(accepted)}: submit latency p50 {percentile(accepted, 50):.0f} ms  "
              f"p95 {percentile(accepted, 95):.0f} ms  p99 {percentile(accepted, 99):.0f} ms  (target p99 ≤ 50 ms "
              "at half load)")
    share = len(refused) / max(1, len(results))
    with_retry = sum(1 for _, ra in refused if ra)
    if refused:
        print(f"  refused {len(refused)} ({share:.0%}), {with_retry} with Retry-After; answered in p50 "
              f"{percentile([t for t, _ in refused], 50):.0f} ms  p99 {percentile([t for t, _ in refused], 99):.0f} ms")
    else:
        print("  refused none")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=400, help="filings of the sustained-rate phase")
    parser.add_argument("--concurrency", type=int, default=32, help="in flight in the sustained phase")
    parser.add_argument("--rate", type=float, default=0.0, help="offered filings/s (default: factor × sustained)")
    parser.add_argument("--factor", type=float, default=2.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--max-inflight", type=int, default=None, help="[api] max_inflight_submissions (0: no gate)")
    parser.add_argument("--max-wait-ms", type=int, default=None, help="[api] max_queue_wait_ms")
    add_backend_arguments(parser)
    args = parser.parse_args()

    prefix = f"crvbench-{uuid.uuid4().hex[:8]}"
    admin, schema, db_url = fresh_schema(args.database_url)
    logdir = Path(tempfile.mkdtemp(prefix="crocevia-bench-"))
    sims = start_simulators()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        port = free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AGENCIES__", "DATABASE__", "PORTALS__", "TRANSPORT__", "RELAY__", "WORKER__",
                                    "API__"))}
        env.update({"DATABASE__URL": db_url, "LOG_LEVEL": "warning", "TRANSPORT__KIND": "rabbitmq",
                    "TRANSPORT__URL": args.rabbitmq_url, "TRANSPORT__PREFIX": prefix,
                    **PORTAL.env()})
        if args.max_inflight is not None:
            env["API__MAX_INFLIGHT_SUBMISSIONS"] = str(args.max_inflight)
        if args.max_wait_ms is not None:
            env["API__MAX_QUEUE_WAIT_MS"] = str(args.max_wait_ms)
        for agency in sims.urls:
            env[f"AGENCIES__{agency.upper()}__ENDPOINT"] = sims.soap_endpoint(agency)
        subprocess.run([sys.executable, str(ROOT / "hub.py"), "migrate"], env=env, cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)

        def start(name: str, *argv: str) -> None:
            with (logdir / f"{name}.log").open("wb") as log:
                procs[name] = subprocess.Popen([sys.executable, str(ROOT / "hub.py"), *argv],
                                               env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

        start("api", "serve", "--port", str(port))
        start("relay", "relay")
        for i in range(args.workers):
            start(f"worker{i + 1}", "worker")
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, procs.values(), logs=logdir)
        time.sleep(2)  # let relay and workers connect and declare (not measured)

        # The sustained rate is what the API takes with no more in flight than its gate admits.
        concurrency = min(args.concurrency, args.max_inflight or args.concurrency)
        sustained = _Load(base)
        rate_found = asyncio.run(sustained.closed(args.warmup, concurrency))
        _report(f"sustained (closed loop, {concurrency} in flight): {rate_found:.1f} filings/s accepted",
                sustained.results)
        rate = args.rate or args.factor * rate_found
        api_cpu0 = proc_stats(procs["api"].pid)[0]
        overload = _Load(base)
        asyncio.run(overload.open(rate, args.seconds))
        api_cpu = proc_stats(procs["api"].pid)[0] - api_cpu0
        _report(f"offered {rate:.1f} filings/s for {args.seconds:g} s (open loop); gate "
                f"{env.get('API__MAX_INFLIGHT_SUBMISSIONS', 'default')} in flight, "
                f"{env.get('API__MAX_QUEUE_WAIT_MS', 'default')} ms wait", overload.results)
        accepted = sum(1 for s, _, _ in sustained.results + overload.results if s == 202)
        engine = create_engine(db_url)
        open_q = text("SELECT count(*) FROM deliveries WHERE state NOT IN ('protocolled','rejected','undeliverable')")
        deadline = time.monotonic() + 300
        with engine.connect() as conn:
            while conn.execute(open_q).scalar_one() and time.monotonic() < deadline:
                time.sleep(0.1)  # polling a condition with a deadline
            stored = conn.execute(text("SELECT count(*) FROM filings")).scalar_one()
            states: dict[str, int] = dict(conn.execute(text("SELECT state, count(*) FROM deliveries GROUP BY state")).all())
        engine.dispose()
        print(f"accepted {accepted}, stored {stored} filings ({'none lost' if stored == accepted else 'MISMATCH'}); "
              f"deliveries {states}; API CPU in the overload phase {api_cpu:.1f} s; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        return 0 if stored == accepted else 1
    finally:
        stop_processes(procs.values())
        sims.stop()
        drop_bench_backends(admin, schema, args.rabbitmq_url, prefix, AGENCIES)


if __name__ == "__main__":
    sys.exit(main())
