#!/usr/bin/env python3
"""End-to-end benchmark on RabbitMQ + PostgreSQL with N worker processes.

Every part is its own OS process: the API (`hub.py serve`), one relay (`hub.py relay`), N
workers (`hub.py worker`), the four agency simulators; this script is the portal. It submits a
mix of the four filing kinds over HTTP with bounded concurrency (optionally paced), waits until
every delivery is settled, and prints filings/s accepted and delivered, deliveries/s, latency
percentiles from submit to last protocol number, and each process's CPU and peak memory. Over
the same window it reads what PostgreSQL's and RabbitMQ's processes on this machine spent, and
so the whole machine's CPU per delivery (with the rate two cores allow at that cost); once the
hub has stopped, the rows each table took per delivery, from PostgreSQL's statistics.

With `--callbacks` the bench portal has a callback address, as portals usually do: the
workers' notifiers push every filing event to `bench/callback_sink.py` (a process of its own,
which verifies each signature), the run ends when every event is taken, and the figures
include what the notifiers cost; the callbacks' own figures follow (events per filing, their
rate, from an event's writing to the portal's receipt).

It uses a fresh schema in the PostgreSQL database and a fresh queue prefix on the broker, and
removes both at the end.

    .venv/bin/python bench/rabbitmq_e2e.py --workers 1 --filings 2000
    .venv/bin/python bench/rabbitmq_e2e.py --workers 4 --filings 2000 --agency-latency-ms 500
    .venv/bin/python bench/rabbitmq_e2e.py --workers 2 --filings 4000 --callbacks
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulators.launcher import start_simulators  # noqa: E402

AGENCIES = ("cciaa", "inail", "inps", "runts")


from measure import free_port as _free_port, proc_stats as _proc_stats  # noqa: E402
from measure import (  # noqa: E402
    add_backend_arguments, drop_bench_backends, fresh_schema, report_deliveries, report_table_writes, report_targets,
    server_cpu, settled_filings, stop_processes, timestamp,
)
from measure import wait_healthy as _wait_healthy  # noqa: E402
from measure import BenchPortal  # noqa: E402
from portal_load import PortalLoad  # noqa: E402
from callback_sink import CallbackSinkProcess  # noqa: E402

PORTAL = BenchPortal()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filings", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32, help="portal requests in flight")
    parser.add_argument("--rate", type=float, default=0.0, help="filings/s to offer (0: as fast as accepted)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes")
    parser.add_argument("--worker-concurrency", type=int, default=128, help="calls in flight per agency per worker")
    parser.add_argument("--agency-latency-ms", type=int, default=0)
    add_backend_arguments(parser, rabbitmq_help="the broker; a cluster's nodes separated by commas (the first is tried first)")
    parser.add_argument("--backlog", action="store_true",
                        help="accept every filing first, then start the workers: measures their drain rate")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--client", choices=("aiohttp", "httpx"), default="aiohttp",
                        help="the portal's HTTP client (its own CPU is reported apart from the hub's)")
    parser.add_argument("--callbacks", action="store_true",
                        help="the bench portal has a callback address: every filing event is pushed to it")
    parser.add_argument("--callback-slow", default="", metavar="EVERY:MS",
                        help="with --callbacks: the portal answers every EVERYth callback MS late (a tail)")
    args = parser.parse_args()
    args.rabbitmq_url, *more_urls = args.rabbitmq_url.split(",")

    prefix = f"crvbench-{uuid.uuid4().hex[:8]}"
    admin, schema, db_url = fresh_schema(args.database_url)
    logdir = Path(tempfile.mkdtemp(prefix="crocevia-bench-"))
    sims = start_simulators()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    slow_every, _, slow_ms = args.callback_slow.partition(":")
    sink = (CallbackSinkProcess(logdir, slow_every=int(slow_every or 0), slow_ms=int(slow_ms or 0))
            if args.callbacks else None)
    try:
        if args.agency_latency_ms:
            for agency in sims.urls:
                sims.set_faults(agency, [{"operation": "*", "kind": "latency", "delay_ms": args.agency_latency_ms}])
        port = _free_port()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AGENCIES__", "DATABASE__", "PORTALS__", "TRANSPORT__", "RELAY__", "WORKER__"))}
        env.update({"DATABASE__URL": db_url, "LOG_LEVEL": "warning",
                    "TRANSPORT__KIND": "rabbitmq", "TRANSPORT__URL": args.rabbitmq_url, "TRANSPORT__PREFIX": prefix,
                    "TRANSPORT__URLS": json.dumps(more_urls),
                    **PORTAL.env()})
        if sink is not None:
            env.update(sink.portal_env("BENCH"))
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
        if not args.backlog:
            for i in range(args.workers):
                start(f"worker{i + 1}", "worker", "--concurrency", str(args.worker_concurrency))
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base, procs.values(), logs=logdir)
        time.sleep(2)  # let relay and workers connect and declare (not measured)
        cpu0 = {name: _proc_stats(p.pid)[0] for name, p in procs.items()}
        sims_cpu0, _ = _proc_stats(sims.process.pid)
        servers0 = server_cpu()
        t0_wall = datetime.now(timezone.utc)
        portal_cpu0 = time.process_time()
        if sink is not None:
            sink.watch_backlog(db_url)
        load = PortalLoad(base, args.concurrency, PORTAL, client=args.client)
        submitted = asyncio.run(load.run(args.filings, args.rate))
        portal_cpu = time.process_time() - portal_cpu0
        refused, took = submitted.refused, submitted.took_ms
        engine = create_engine(db_url)
        if args.backlog:
            # Every job waits in RabbitMQ first; then the workers start and drain the backlog.
            unpublished = text("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            with engine.connect() as conn:
                while conn.execute(unpublished).scalar_one():
                    time.sleep(0.05)
            for i in range(args.workers):
                start(f"worker{i + 1}", "worker", "--concurrency", str(args.worker_concurrency))
                cpu0[f"worker{i + 1}"] = 0.0
        open_q = text("SELECT count(*) FROM deliveries WHERE state NOT IN ('protocolled','rejected','undeliverable')")
        deadline = time.monotonic() + args.timeout
        with engine.connect() as conn:
            while conn.execute(open_q).scalar_one() and time.monotonic() < deadline:
                time.sleep(0.05)
        if sink is not None:  # and every event of those filings taken by the portal
            sink.wait_all_taken(engine, deadline)
        stats = {name: _proc_stats(p.pid) for name, p in procs.items()}
        servers = {name: spent - servers0.get(name, 0.0) for name, spent in server_cpu().items()}
        with engine.connect() as conn:
            first = t0_wall.timestamp()
            if args.backlog:  # the drain: from the first completed delivery to the last
                first = timestamp(conn.execute(text("SELECT min(updated_at) FROM deliveries")).scalar_one())
        rows, states = settled_filings(engine)
        sims_cpu1, sims_peak = _proc_stats(sims.process.pid)
        engine.dispose()
        n = args.filings
        print(f"filings submitted            {n} ({sum(refused.values())} refused: {dict(refused)}), concurrency {args.concurrency}, "
              f"offered rate {args.rate or 'max'}, agency latency {args.agency_latency_ms} ms, "
              f"{args.workers} worker process(es) x {args.worker_concurrency} per agency")
        figures = report_deliveries(
            rows, states, filings=n, accepted_seconds=submitted.end - submitted.start, first=first, submit_ms=took,
            note=("  (--backlog: rates are the workers' drain, first to last delivery; latencies include the wait)"
                  if args.backlog else None))
        deliveries = figures.deliveries
        hub_cpu = 0.0
        for name, (cpu, peak) in stats.items():
            used = cpu - cpu0[name]
            hub_cpu += used
            print(f"  {name:<10} CPU {used:7.1f} s = {used / max(1, deliveries) * 1000:5.2f} ms per delivery   "
                  f"peak memory {peak / 2**20:5.0f} MiB")
        print(f"  {'simulators':<10} CPU {sims_cpu1 - sims_cpu0:7.1f} s   peak memory {sims_peak / 2**20:5.0f} MiB")
        for name, used in servers.items():
            print(f"  {name:<10} CPU {used:7.1f} s = {used / max(1, deliveries) * 1000:5.2f} ms per delivery "
                  f"(the server's processes on this machine)")
        sink_cpu = 0.0
        if sink is not None:
            sink_cpu = sink.stop()
            print(f"  {'callbacks':<10} CPU {sink_cpu:7.1f} s   (the portal's callback address: the load, not the hub)")
        print(f"  {'portal':<10} CPU {portal_cpu:7.1f} s = {portal_cpu / max(1, n) * 1000:5.2f} ms per filing "
              f"(this script, {args.client}: the load, not the hub)")
        print(f"  hub CPU per delivery {hub_cpu / max(1, deliveries) * 1000:.2f} ms (API + relay + workers); "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other processes included)")
        everything = hub_cpu + sum(servers.values()) + (sims_cpu1 - sims_cpu0) + portal_cpu + sink_cpu
        machine = everything / max(1, deliveries)
        cores = os.cpu_count() or 1
        print(f"  machine CPU per delivery {machine * 1000:.2f} ms (all of the above): {cores} cores allow at most "
              f"{cores / machine if machine else 0:.0f} deliveries/s; 600/s needs {cores / 600 * 1000:.2f} ms")
        targets = [(f"deliveries/s (RabbitMQ + PostgreSQL, {args.workers} workers)", figures.deliveries_per_s, "/s",
                    600, True),
                   ("hub CPU per delivery", hub_cpu / max(1, deliveries) * 1000, "ms", 2, False),
                   ("peak RSS, largest hub process", max(peak for _, peak in stats.values()) / 2**20, "MiB", 120, False)]
        if args.rate:  # the latency targets hold at half the sustained load
            targets += [("submit p99 (at half the sustained load)", figures.submit_p99_ms or 0.0, "ms", 50, False),
                        ("submit→last protocol p95 (at half the load)", figures.e2e_p95_ms, "ms", 250, False)]
        report_targets(targets)
        if sink is not None:
            sink.report(filings=n, since=t0_wall.timestamp())
        stop_processes(procs.values())
        report_table_writes(admin, schema, deliveries)
        print(f"reproduce: .venv/bin/python bench/rabbitmq_e2e.py --workers {args.workers} --filings {n} "
              f"--concurrency {args.concurrency} --worker-concurrency {args.worker_concurrency}"
              + (f" --rate {args.rate:g}" if args.rate else "")
              + (f" --agency-latency-ms {args.agency_latency_ms}" if args.agency_latency_ms else "")
              + (" --backlog" if args.backlog else "")
              + (" --callbacks" if args.callbacks else "")
              + (f" --callback-slow {args.callback_slow}" if args.callbacks and args.callback_slow else "")
              + (f" --client {args.client}" if args.client != "aiohttp" else ""))
        return 0
    finally:
        stop_processes(procs.values())
        if sink is not None:
            sink.stop()
        sims.stop()
        drop_bench_backends(admin, schema, args.rabbitmq_url, prefix, AGENCIES)


if __name__ == "__main__":
    sys.exit(main())
