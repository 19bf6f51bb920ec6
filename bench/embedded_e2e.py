#!/usr/bin/env python3
"""End-to-end benchmark on the embedded default (SQLite + database queue + simulators).

The hub runs as its own process (`hub.py serve`, API + embedded worker), the four agency
simulators in another, and this script is the portal: it submits a mix of the four filing
kinds over HTTP with bounded concurrency, then reads from the store when each filing's last
protocol number arrived. It prints filings/s accepted, filings/s fully delivered, latency
percentiles from submit to last protocol number, the hub's CPU per filing and peak memory.

    .venv/bin/python bench/embedded_e2e.py --filings 2000 --concurrency 32
    .venv/bin/python bench/embedded_e2e.py --agency-latency-ms 500   # slow agencies
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulators.launcher import start_simulators  # noqa: E402



from measure import free_port as _free_port, proc_stats as _proc_stats  # noqa: E402
from measure import report_deliveries, report_targets, settled_filings  # noqa: E402
from measure import wait_healthy as _wait_healthy  # noqa: E402
from portal_load import PortalLoad  # noqa: E402
from measure import BenchPortal  # noqa: E402

PORTAL = BenchPortal()


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _settled_children(pid: int, expected: int, timeout: float = 60) -> list[int]:
    """The hub's `expected` worker children once started and idle (their start-up CPU, imports
    and connecting, is not the filings'): no CPU tick for half a second."""
    deadline = time.monotonic() + timeout
    while len(found := _children(pid)) < expected and time.monotonic() < deadline:
        time.sleep(0.05)
    if len(found) < expected:
        raise RuntimeError(f"the hub started {len(found)} worker processes, not {expected}")
    last = -1.0
    while time.monotonic() < deadline:
        cpu = sum(_proc_stats(c)[0] for c in found)
        if cpu == last:
            break
        last = cpu
        time.sleep(0.5)
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filings", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.0, help="filings/s to offer (0: as fast as accepted)")
    parser.add_argument("--agency-latency-ms", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--worker-processes", type=int, default=None,
                        help="[embedded] worker_processes: 0 = the worker in the API's process, N = N children "
                             "(default: the configured value)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="crocevia-bench-"))
    db_url = f"sqlite:///{workdir / 'bench.db'}"
    sims = start_simulators()
    hub = None
    try:
        if args.agency_latency_ms:
            for agency in sims.urls:
                sims.set_faults(agency, [{"operation": "*", "kind": "latency", "delay_ms": args.agency_latency_ms}])
        port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENCIES__", "DATABASE__", "PORTALS__"))}
        env.update({"DATABASE__URL": db_url, "LOG_LEVEL": "warning",
                    **PORTAL.env()})
        if args.worker_processes is not None:
            env["EMBEDDED__WORKER_PROCESSES"] = str(args.worker_processes)
        for agency in sims.urls:
            env[f"AGENCIES__{agency.upper()}__ENDPOINT"] = sims.soap_endpoint(agency)
            env[f"AGENCIES__{agency.upper()}__CONCURRENCY"] = "128"
        hub = subprocess.Popen([sys.executable, str(ROOT / "hub.py"), "serve", "--port", str(port)],
                               env=env, cwd=ROOT, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base, [hub])
        children = _settled_children(hub.pid, args.worker_processes or 0)
        api_cpu0 = _proc_stats(hub.pid)[0]
        cpu0 = api_cpu0 + sum(_proc_stats(pid)[0] for pid in children)
        t0_wall = datetime.now(timezone.utc)
        submitted = asyncio.run(PortalLoad(base, args.concurrency, PORTAL).run(args.filings, args.rate))
        start, end, refused, took = submitted.start, submitted.end, sum(submitted.refused.values()), submitted.took_ms
        engine = create_engine(db_url)
        open_q = text("SELECT count(*) FROM deliveries WHERE state NOT IN ('protocolled','rejected','undeliverable')")
        deadline = time.monotonic() + args.timeout
        with engine.connect() as conn:
            while conn.execute(open_q).scalar_one() and time.monotonic() < deadline:
                time.sleep(0.05)
        cpu1, hub_peak = _proc_stats(hub.pid)
        api_cpu = cpu1 - api_cpu0
        child_stats = [_proc_stats(pid) for pid in children]
        cpu1 += sum(cpu for cpu, _ in child_stats)
        rows, states = settled_filings(engine)
        engine.dispose()
        _, sims_peak = _proc_stats(sims.process.pid)
        n = args.filings
        print(f"filings submitted            {n} ({refused} refused), concurrency {args.concurrency}, "
              f"offered rate {args.rate or 'max'}, "
              f"agency latency {args.agency_latency_ms} ms")
        figures = report_deliveries(rows, states, filings=n, accepted_seconds=end - start,
                                    first=t0_wall.timestamp(), submit_ms=took)
        where = (f"API {api_cpu / n * 1000:.2f} ms + {len(children)} worker processes "
                 f"{(cpu1 - cpu0 - api_cpu) / n * 1000:.2f} ms" if children else "API + worker, one process")
        print(f"hub CPU per filing           {(cpu1 - cpu0) / n * 1000:8.2f} ms ({where}), "
              f"{(cpu1 - cpu0) / max(1, figures.deliveries) * 1000:.2f} ms per delivery")
        workers_peak = "".join(f", worker {peak / 2**20:.0f} MiB" for _, peak in child_stats)
        print(f"peak memory                  hub {hub_peak / 2**20:.0f} MiB{workers_peak}, "
              f"simulators {sims_peak / 2**20:.0f} MiB")
        report_targets([("deliveries/s (embedded, SQLite)", figures.deliveries_per_s, "/s", 700, True),
                        ("peak RSS of the hub", hub_peak / 2**20, "MiB", 120, False)])
        print(f"reproduce: .venv/bin/python bench/embedded_e2e.py --filings {n} --concurrency {args.concurrency}"
              + (f" --worker-processes {args.worker_processes}" if args.worker_processes is not None else "")
              + (f" --rate {args.rate:g}" if args.rate else "")
              + (f" --agency-latency-ms {args.agency_latency_ms}" if args.agency_latency_ms else ""))
        return 0
    finally:
        if hub is not None:
            hub.terminate()
            hub.wait(30)
        sims.stop()


if __name__ == "__main__":
    sys.exit(main())
