#!/usr/bin/env python3
"""Scale-out on a three-node RabbitMQ cluster with quorum queues: deliveries/s with 1, 2 and 4
workers.

Starts the cluster with `ops/rabbitmq-cluster/cluster.sh` in a temporary directory (or uses a
running one given by `--urls`), then runs `bench/rabbitmq_e2e.py` once per worker count with the
cluster's nodes as the broker addresses, and prints the figures side by side.

    .venv/bin/python bench/rabbitmq_cluster.py --filings 1000
    .venv/bin/python bench/rabbitmq_cluster.py --filings 1000 --backlog   # the workers' drain rate
    .venv/bin/python bench/rabbitmq_cluster.py --workers 1 2 4 --filings 1000 --urls amqp://...5681/%2F,...
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "ops" / "rabbitmq-cluster" / "cluster.sh"
#: The lines of `rabbitmq_e2e.py`'s report quoted in the summary.
FIGURES = {"deliveries/s": r"^deliveries/s\s+([\d.]+)", "filings/s": r"^fully delivered filings/s\s+([\d.]+)",
           "e2e p95 ms": r"^latency submit→last protocol p50 \d+ ms\s+p95 (\d+) ms",
           "hub CPU/delivery ms": r"hub CPU per delivery ([\d.]+) ms"}


def _run_bench(urls: str, workers: int, args: argparse.Namespace) -> dict[str, str]:
    argv = [sys.executable, str(ROOT / "bench" / "rabbitmq_e2e.py"), "--rabbitmq-url", urls,
            "--workers", str(workers), "--filings", str(args.filings), "--concurrency", str(args.concurrency)]
    if args.rate:
        argv += ["--rate", str(args.rate)]
    if args.backlog:
        argv.append("--backlog")
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
    print(done.stdout, end="")
    if done.returncode:
        print(done.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"rabbitmq_e2e.py failed with {workers} worker(s)")
    found = {}
    for name, pattern in FIGURES.items():
        match = re.search(pattern, done.stdout, re.MULTILINE)
        found[name] = match.group(1) if match else "?"
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--filings", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--backlog", action="store_true",
                        help="accept every filing first, then start the workers: their drain rate, not the intake's")
    parser.add_argument("--urls", help="a running cluster's nodes, comma-separated (default: start one)")
    parser.add_argument("--port", type=int, default=5681, help="AMQP port of node 1 of the cluster started here")
    args = parser.parse_args()

    directory = None
    urls = args.urls
    env = {**os.environ, "CLUSTER_PORT": str(args.port), "CLUSTER_NAME": "crvbench"}
    try:
        if urls is None:
            directory = Path(tempfile.mkdtemp(prefix="crocevia-rmq-cluster-"))
            env["CLUSTER_DIR"] = str(directory)
            print("starting a three-node cluster ...", flush=True)
            started = subprocess.run([str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=300)
            if started.returncode:
                raise SystemExit(f"the cluster did not start: {started.stdout} {started.stderr}")
            urls = started.stdout.split()[-1]
        print(f"cluster nodes: {urls}")
        results = {n: _run_bench(urls, n, args) for n in args.workers}
    finally:
        if directory is not None:
            subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=300)
            shutil.rmtree(directory, ignore_errors=True)
    mode = "workers draining a backlog" if args.backlog else "end to end"
    print(f"\nthree-node cluster, quorum queues (replicated on 3 nodes), one machine with 2 cores, {mode}:")
    print(f"{'workers':>8} " + " ".join(f"{name:>24}" for name in FIGURES))
    for n, found in results.items():
        print(f"{n:>8} " + " ".join(f"{found[name]:>24}" for name in FIGURES))
    return 0


if __name__ == "__main__":
    sys.exit(main())
