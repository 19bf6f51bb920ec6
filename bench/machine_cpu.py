#!/usr/bin/env python3
"""Where the machine's CPU goes while a benchmark runs: the hub's processes, PostgreSQL,
RabbitMQ, the agency simulators and the benchmark itself (the portal's load).

The end-to-end benchmarks report the hub's own CPU; on this machine kind the hub shares two
cores with everything else, so a delivery's full cost on the machine is what decides the
throughput. This wraps any benchmark command, samples /proc every 0.3 s and prints each
group's CPU seconds, and per delivery when `--deliveries` says how many there were.
PostgreSQL's backends live only as long as their connections: their time is read from the
postmaster's children's total, which they join when they exit. Reads /proc only (Linux).

    .venv/bin/python bench/machine_cpu.py --deliveries 7000 -- .venv/bin/python bench/rabbitmq_e2e.py --workers 2 --filings 4000
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import proc_stat, server_of  # noqa: E402

_TICK = os.sysconf("SC_CLK_TCK")


def _group(comm: str, cmdline: str) -> str:
    server = server_of(comm)
    if server is not None:
        return server
    if "hub.py" in cmdline:
        words = cmdline.split("hub.py", 1)[1].split()
        return f"hub {words[0]}" if words else "hub"
    if "simulators" in cmdline:
        return "simulators"
    return "other"


def _sample() -> dict[int, tuple[str, float]]:
    """Each process's group and CPU seconds; the postmaster's include its exited backends."""
    seen: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm, fields = proc_stat(entry.name)
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        own = (int(fields[11]) + int(fields[12])) / _TICK
        group = _group(comm, cmdline)
        if group == "postgresql" and fields[1] == "1":  # the postmaster: add its reaped children
            own += (int(fields[13]) + int(fields[14])) / _TICK
        seen[int(entry.name)] = (group, own)
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=0, help="divide by this many deliveries")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- the benchmark command")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the benchmark command after --")
    first = _sample()
    last = dict(first)
    started = time.monotonic()
    bench = subprocess.Popen(command)
    while bench.poll() is None:
        for pid, (group, cpu) in _sample().items():
            # A process that has exited but is not reaped yet shows an empty command line:
            # it keeps the group it was first seen in.
            last[pid] = (last[pid][0] if pid in last else group, cpu)
        time.sleep(0.3)
    wall = time.monotonic() - started
    end = _sample()
    # A backend that exited is counted in the postmaster's total: keep only live PostgreSQL rows.
    last = {pid: v for pid, v in last.items() if v[0] != "postgresql" or pid in end}
    last.update({pid: v for pid, v in end.items() if v[0] == "postgresql"})
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # the benchmark and all it waited for
    used: Counter[str] = Counter()
    for pid, (group, cpu) in last.items():
        used[group] += cpu - (first[pid][1] if pid in first else 0.0)
    # The benchmark's own process (the portal) has exited: its time is this process's children's.
    hub_and_sims = sum(v for k, v in used.items() if k.startswith("hub") or k == "simulators")
    used["benchmark (portal)"] = max(0.0, children.ru_utime + children.ru_stime - hub_and_sims)
    print(f"wall {wall:.1f} s; CPU by group (seconds{', ms per delivery' if args.deliveries else ''}):")
    for group, cpu in used.most_common():
        if cpu < 0.05:
            continue
        per = f"  {cpu / args.deliveries * 1000:6.2f} ms" if args.deliveries else ""
        print(f"  {group:<22} {cpu:7.1f} s{per}")
    total = sum(used.values())
    print(f"  {'all':<22} {total:7.1f} s" + (f"  {total / args.deliveries * 1000:6.2f} ms" if args.deliveries else "")
          + f"   ({os.cpu_count()} cores x {wall:.1f} s = {(os.cpu_count() or 1) * wall:.0f} core-s)")
    print("reproduce: .venv/bin/python bench/machine_cpu.py "
          + (f"--deliveries {args.deliveries} " if args.deliveries else "") + "-- " + " ".join(command))
    return bench.returncode


if __name__ == "__main__":
    sys.exit(main())
