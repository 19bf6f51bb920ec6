#!/usr/bin/env python3
"""Intake CPU benchmark: what one accepted filing costs the API process.

Starts `hub.py serve --no-workers` alone (embedded SQLite by default, or PostgreSQL with
`--database-url`, in a fresh schema that is dropped at the end), submits N ModI-signed filings
with C in flight over HTTP (the mix of `schemas/filing/v1/examples/*.xml` that
bench/rabbitmq_e2e.py uses), waits for every answer, and prints accepted filings/s, the API
process's CPU per filing (user+system from /proc), and p50/p99 intake latency.

The machine's cores are shared with this client: quote CPU per filing, not wall time. CPU time
still moves ±10–20 % between runs here; `--instructions` runs the API under valgrind's
callgrind instead and prints the instructions it ran per filing (`bench/callgrind.py`), which
repeat within ~1 %: the figure to compare two trees by when a change is worth a few percent.
Under callgrind the API runs ~50 times slower, so its CPU, rate and latency are not printed.

    .venv/bin/python bench/intake_cpu.py --filings 1500 --concurrency 16
    .venv/bin/python bench/intake_cpu.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/test
    .venv/bin/python bench/intake_cpu.py --hub-root /tmp/before   # another checkout's hub.py
    .venv/bin/python bench/intake_cpu.py --instructions --filings 300 --concurrency 4
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from portal_load import PortalLoad  # noqa: E402
from callgrind import callgrind_command, counted_instructions, counting  # noqa: E402
from measure import BenchPortal, free_port, fresh_schema, percentile, proc_stats, wait_healthy  # noqa: E402

PORTAL = BenchPortal()



class _Presigned:
    """Every filing signed before the clock starts: the client shares the cores with the API."""

    def __init__(self, n: int) -> None:
        self._signed = [PORTAL.filing(i) for i in range(n)]

    def filing(self, i: int) -> tuple[bytes, dict[str, str]]:
        return self._signed[i]


async def _submit_all(base: str, n: int, concurrency: int) -> tuple[float, list[float], Counter[int | str]]:
    """Submit `n` filings with at most `concurrency` in flight; wall seconds, latencies (ms), refusals."""
    submitted = await PortalLoad(base, concurrency, _Presigned(n)).run(n)
    return submitted.end - submitted.start, submitted.took_ms, submitted.refused


def _warm_up(base: str, n: int) -> None:
    if n > 0:
        asyncio.run(_submit_all(base, n, 4))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filings", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=16, help="portal requests in flight")
    parser.add_argument("--warmup", type=int, default=50, help="filings sent before measuring")
    parser.add_argument("--database-url", default=None,
                        help="PostgreSQL URL (a fresh schema is made and dropped); default: a temporary SQLite file")
    parser.add_argument("--hub-root", default=str(ROOT), help="the checkout whose hub.py is served")
    parser.add_argument("--profile", default=None,
                        help="write a py-spy --gil raw profile of the API process to this file")
    parser.add_argument("--instructions", action="store_true",
                        help="run the API under valgrind's callgrind and print the instructions per filing")
    args = parser.parse_args()
    if args.instructions and args.profile:
        parser.error("--instructions and --profile measure the API each its own way: give one")

    hub_root = Path(args.hub_root).resolve()
    workdir = Path(tempfile.mkdtemp(prefix="crocevia-intake-"))
    schema = None
    admin = None
    if args.database_url:
        admin, schema, db_url = fresh_schema(args.database_url)
    else:
        db_url = f"sqlite:///{workdir / 'bench.db'}"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AGENCIES__", "DATABASE__", "PORTALS__", "TRANSPORT__", "RELAY__", "WORKER__"))}
    env.update({"DATABASE__URL": db_url, "LOG_LEVEL": "warning",
                **PORTAL.env()})
    port = free_port()
    log_path = workdir / "api.log"
    spy = None
    command = [sys.executable, str(hub_root / "hub.py"), "serve", "--no-workers", "--port", str(port)]
    counts = workdir / "callgrind.out"
    if args.instructions:
        command = callgrind_command(command, counts)
    with log_path.open("wb") as log:
        api = subprocess.Popen(command, env=env, cwd=hub_root, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, [api], logs=log_path, timeout=600 if args.instructions else 60)
        _warm_up(base, args.warmup)
        if args.profile:
            py_spy = shutil.which("py-spy")
            if py_spy is None:
                raise SystemExit("--profile needs py-spy on PATH (pip install py-spy, outside the project)")
            spy = subprocess.Popen([py_spy, "record", "--pid", str(api.pid), "--gil",
                                    "--format", "raw", "--rate", "200", "-o", args.profile],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1)
        cpu0, _ = proc_stats(api.pid)
        if args.instructions:
            with counting(api.pid):
                wall, latencies, refused = asyncio.run(_submit_all(base, args.filings, args.concurrency))
        else:
            wall, latencies, refused = asyncio.run(_submit_all(base, args.filings, args.concurrency))
        cpu1, peak = proc_stats(api.pid)
    finally:
        if spy is not None:
            spy.send_signal(2)
            spy.wait(30)
        api.terminate()
        try:
            api.wait(300 if args.instructions else 15)  # callgrind writes its counts as the API ends
        except subprocess.TimeoutExpired:
            api.kill()
        if admin is not None:
            from sqlalchemy import text

            with admin.begin() as conn:
                conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

    accepted = len(latencies)
    print(f"database            {'postgresql' if args.database_url else 'sqlite'} (hub at {hub_root})")
    print(f"filings             {args.filings} submitted, {accepted} accepted, concurrency {args.concurrency}")
    if refused:
        print(f"refused             {dict(refused)} (log: {log_path})")
    if accepted and args.instructions:
        instructions = counted_instructions(counts)
        print(f"api instructions    {instructions / accepted / 1e6:.3f} M per accepted filing "
              f"(valgrind callgrind, {instructions / 1e9:.2f} G in all; CPU, rate and latency not measured)")
    elif accepted:
        print(f"accepted filings/s  {accepted / wall:.1f} (wall {wall:.1f} s, shared cores)")
        print(f"api CPU             {cpu1 - cpu0:.2f} s = {(cpu1 - cpu0) * 1000 / accepted:.2f} ms per accepted filing")
        print(f"intake latency      p50 {percentile(latencies, 50):.1f} ms, p99 {percentile(latencies, 99):.1f} ms")
        print(f"api peak RSS        {peak / 1e6:.0f} MB")
    print(f"reproduce           {shlex.join([sys.executable, *sys.argv])}")
    return 0 if accepted == args.filings else 1


if __name__ == "__main__":
    sys.exit(main())
