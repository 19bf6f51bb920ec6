#!/usr/bin/env python3
"""Memory soak: the hub under a steady paced load for N minutes, each process's RSS sampled.

Issue 13's target: <= 120 MiB peak per process, and a soak at half load that shows no growth.
This starts the RabbitMQ + PostgreSQL setup (API, relay, N workers as their own processes), or
with `--embedded` one `hub.py serve` on SQLite, plus the four agency simulators. Unless `--rate`
is given it first measures a short maximum (`--probe-filings` unpaced) and offers half of it.
Then it submits at that rate for `--minutes`, reads every process's VmRSS each
`--sample-seconds`, and prints per process: peak (VmHWM), the median RSS of the first and the
last minute, and the least-squares slope of RSS over time in MiB/min (over the whole run, and
after the first minute, which holds the warm-up), each beside its target; then the slopes after
warm-up of its two parts, anonymous memory (the heaps) and file-backed pages (library code paged
in as first used), which tell what grows. A soak longer than ten minutes also prints the slope
of each ten-minute window: growth that stops shows as slopes falling window after window.
With `--callbacks` the bench portal has a callback address, as portals usually do: the
workers' notifiers push every event to `bench/callback_sink.py` throughout, and what the portal
received is reported at the end (as `rabbitmq_e2e.py --callbacks` does).

    .venv/bin/python bench/soak.py --minutes 3
    .venv/bin/python bench/soak.py --minutes 10 --rate 80 --callbacks
    .venv/bin/python bench/soak.py --embedded --minutes 10 --rate 20
    .venv/bin/python bench/soak.py --minutes 10 --samples-csv /tmp/soak.csv

Memory-related settings can be varied for a comparison through the environment as usual
(e.g. MEMORY__MALLOC_ARENA_MAX=0 for glibc's default arenas).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

from sqlalchemy import create_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from simulators.launcher import start_simulators  # noqa: E402

from portal_load import PortalLoad  # noqa: E402
from callback_sink import CallbackSinkProcess  # noqa: E402
from measure import BenchPortal, add_backend_arguments, drop_bench_backends, free_port, fresh_schema, proc_stats, rss_bytes, rss_parts, stop_processes, wait_healthy  # noqa: E402

PORTAL = BenchPortal()
AGENCIES = ("cciaa", "inail", "inps", "runts")
#: Issue 13: peak resident memory per process.
PEAK_TARGET_MIB = 120.0
#: "No growth": after warm-up, a slope this small adds under 5 MiB an hour-ish soak would notice.
SLOPE_TARGET_MIB_PER_MIN = 0.1
#: The first minute holds the warm-up (what loads on first use); the settled slope starts after it.
WARM_UP_MINUTES = 1.0
#: A soak longer than this also reports its slope window by window.
WINDOW_MINUTES = 10.0


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points; 0 with fewer than two distinct x."""
    if len(points) < 2:
        return 0.0
    mx = statistics.fmean(x for x, _ in points)
    my = statistics.fmean(y for _, y in points)
    sxx = sum((x - mx) ** 2 for x, _ in points)
    if not sxx:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in points) / sxx


class Sample(NamedTuple):
    """One reading of a process: minutes since the sampling started, and its RSS in MiB, whole and
    in its anonymous (the heaps) and file-backed (library code paged in as first used) parts."""

    minute: float
    rss: float
    anon: float
    files: float


class Sampler(threading.Thread):
    """Reads each process's RSS every `period` seconds until stopped, into `samples`."""

    def __init__(self, pids: dict[str, int], period: float) -> None:
        super().__init__(daemon=True)
        self.pids, self.period = pids, period
        self.samples: dict[str, list[Sample]] = {name: [] for name in pids}
        self.halt = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        while True:
            now = (time.monotonic() - self.t0) / 60
            for name, pid in self.pids.items():
                try:
                    parts = rss_parts(pid)
                except FileNotFoundError:  # the process died: the report says so
                    continue
                self.samples[name].append(Sample(now, parts["VmRSS"] / 2**20, parts["RssAnon"] / 2**20,
                                                 parts["RssFile"] / 2**20))
            if self.halt.wait(self.period):  # the period between samples, not synchronisation
                return


def series(samples: list[Sample], part: str, after: float = 0.0,
           before: float = float("inf")) -> list[tuple[float, float]]:
    """(minute, MiB) of one part (`rss`, `anon` or `files`) of the samples taken in [after, before)."""
    return [(s.minute, getattr(s, part)) for s in samples if after <= s.minute < before]


def report(sampler: Sampler, peaks: dict[str, int], minutes: float, out: Callable[[str], None] = print) -> bool:
    """Print per process peak, first/last-minute medians and slopes beside the targets: whether all met them."""
    ok = True
    out(f"{'process':<10} {'peak MiB':>9} {'first-min':>10} {'last-min':>9} {'slope/min':>10} "
        f"{'slope>1min':>11}   targets: peak <= {PEAK_TARGET_MIB:.0f} MiB, "
        f"slope after warm-up <= {SLOPE_TARGET_MIB_PER_MIN} MiB/min;   of which anon / file")
    for name, samples in sampler.samples.items():
        if not samples:
            out(f"{name:<10} no samples (the process died?)")
            ok = False
            continue
        points = series(samples, "rss")
        end = points[-1][0]
        first = [mib for t, mib in points if t <= 1.0] or [points[0][1]]
        last = [mib for t, mib in points if t >= end - 1.0]
        peak = peaks.get(name, 0) / 2**20 or max(mib for _, mib in points)
        whole, settled = slope(points), slope(series(samples, "rss", after=WARM_UP_MINUTES))
        met = peak <= PEAK_TARGET_MIB and settled <= SLOPE_TARGET_MIB_PER_MIN
        ok &= met
        anon = slope(series(samples, "anon", after=WARM_UP_MINUTES))
        files = slope(series(samples, "files", after=WARM_UP_MINUTES))
        out(f"{name:<10} {peak:9.1f} {statistics.median(first):10.1f} {statistics.median(last):9.1f} "
            f"{whole:10.3f} {settled:11.3f}   {'ok' if met else 'MISSED':<6}   {anon:.3f} / {files:.3f}")
    if minutes > WINDOW_MINUTES:
        # Growth that stops shows as a falling slope window after window.
        starts = range(0, int(minutes), int(WINDOW_MINUTES))
        out(f"slope by {WINDOW_MINUTES:g}-minute window (MiB/min): "
            + ", ".join(f"[{start}, {min(start + WINDOW_MINUTES, minutes):g})" for start in starts))
        for name, samples in sampler.samples.items():
            windows = (slope(series(samples, "rss", after=start, before=start + WINDOW_MINUTES)) for start in starts)
            out(f"{name:<10} " + ", ".join(f"{value:.3f}" for value in windows))
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=0.0, help="filings/s (0: half a measured maximum)")
    parser.add_argument("--probe-filings", type=int, default=300, help="unpaced filings that measure the maximum")
    parser.add_argument("--sample-seconds", type=float, default=3.0)
    parser.add_argument("--concurrency", type=int, default=32, help="portal requests in flight")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (RabbitMQ)")
    parser.add_argument("--embedded", action="store_true", help="one `hub.py serve` on SQLite, no broker")
    parser.add_argument("--samples-csv", default=None, help="also write every sample here")
    parser.add_argument("--callbacks", action="store_true",
                        help="the bench portal has a callback address (bench/callback_sink.py): the notifiers run too")
    add_backend_arguments(parser)
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="crocevia-soak-"))
    schema = f"soak_{uuid.uuid4().hex[:10]}"
    prefix = f"crvsoak-{uuid.uuid4().hex[:8]}"
    admin = None
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AGENCIES__", "DATABASE__", "PORTALS__", "TRANSPORT__", "RELAY__", "WORKER__"))}
    env.update({"LOG_LEVEL": "warning", **PORTAL.env()})
    if args.embedded:
        env["DATABASE__URL"] = f"sqlite:///{workdir / 'soak.db'}"
    else:
        admin, schema, db_url = fresh_schema(args.database_url)
        env.update({"DATABASE__URL": db_url,
                    "TRANSPORT__KIND": "rabbitmq", "TRANSPORT__URL": args.rabbitmq_url,
                    "TRANSPORT__PREFIX": prefix, "TRANSPORT__URLS": json.dumps([])})
    sims = start_simulators()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    sink = CallbackSinkProcess(workdir) if args.callbacks else None
    if sink is not None:
        env.update(sink.portal_env("BENCH"))
    try:
        for agency in sims.urls:
            env[f"AGENCIES__{agency.upper()}__ENDPOINT"] = sims.soap_endpoint(agency)
        subprocess.run([sys.executable, str(ROOT / "hub.py"), "migrate"], env=env, cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)

        def start(name: str, *argv: str) -> None:
            with (workdir / f"{name}.log").open("wb") as log:
                procs[name] = subprocess.Popen([sys.executable, str(ROOT / "hub.py"), *argv],
                                               env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

        port = free_port()
        start("api" if not args.embedded else "hub", "serve", "--port", str(port))
        if not args.embedded:
            start("relay", "relay")
            for i in range(args.workers):
                start(f"worker{i + 1}", "worker")
        base = f"http://127.0.0.1:{port}"
        wait_healthy(base, procs.values(), logs=workdir)
        started = {name: rss_bytes(p.pid) / 2**20 for name, p in procs.items()}
        print("RSS after start-up (MiB): " + ", ".join(f"{n} {m:.1f}" for n, m in started.items()))
        rate = args.rate
        if not rate:
            probe = asyncio.run(PortalLoad(base, args.concurrency, PORTAL).run(args.probe_filings))
            seconds = probe.end - probe.start
            rate = max(1.0, probe.accepted / seconds / 2)
            print(f"probe: {probe.accepted} accepted in {seconds:.1f} s: maximum {probe.accepted / seconds:.1f}"
                  f" filings/s; soaking at half, {rate:.1f} filings/s")
        sampler = Sampler({name: p.pid for name, p in procs.items()}, args.sample_seconds)
        sampler.start()
        if sink is not None:
            sink.watch_backlog(env["DATABASE__URL"])
        load_started = time.time()
        portal = asyncio.run(PortalLoad(base, args.concurrency, PORTAL).run(
            None, rate, until=time.monotonic() + args.minutes * 60))
        sampler.halt.set()
        sampler.join()
        peaks = {name: proc_stats(p.pid)[1] for name, p in procs.items() if p.poll() is None}
        print(f"soak: {args.minutes:g} min at {rate:.1f} filings/s offered, {portal.accepted} accepted, "
              f"{sum(portal.refused.values())} refused {dict(portal.refused)}; {'embedded' if args.embedded else f'RabbitMQ, {args.workers} workers'}; "
              f"RSS sampled every {args.sample_seconds:g} s")
        ok = report(sampler, peaks, args.minutes)
        if sink is not None:  # what the portal received: every event, once, in order, and how late
            engine = create_engine(env["DATABASE__URL"])
            sink.wait_all_taken(engine, time.monotonic() + 120)
            engine.dispose()
            sink.report(filings=portal.accepted, since=load_started)
        if args.samples_csv:
            with open(args.samples_csv, "w") as f:
                f.write("process,minute,rss_mib,anon_mib,file_mib\n")
                for name, samples in sampler.samples.items():
                    f.writelines(f"{name},{s.minute:.4f},{s.rss:.2f},{s.anon:.2f},{s.files:.2f}\n" for s in samples)
        print(f"reproduce: .venv/bin/python bench/soak.py --minutes {args.minutes:g} --rate {rate:.1f}"
              + (" --embedded" if args.embedded else f" --workers {args.workers}")
              + (" --callbacks" if args.callbacks else ""))
        return 0 if ok else 1
    finally:
        stop_processes(procs.values())
        if sink is not None:
            sink.stop()
        sims.stop()
        if admin is not None:
            drop_bench_backends(admin, schema, args.rabbitmq_url, prefix, AGENCIES)


if __name__ == "__main__":
    sys.exit(main())
