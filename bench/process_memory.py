#!/usr/bin/env python3
"""Resident memory of each process kind right after start, and what its imports cost.

Starts the API (`hub.py serve`), the relay and one worker as `bench/rabbitmq_e2e.py` does
(PostgreSQL + RabbitMQ, a fresh schema and queue prefix, removed at the end), each under
`python -X importtime`. Once the API answers and the others have connected, it prints each
process's RSS; then, per process kind, it imports that process's top-level packages one by one
in a fresh interpreter (libraries, then the project's packages, each in the order the process
first loaded them) and prints the heaviest by
the RSS each added. The split is rough: a package shared by two is charged to the first.

    .venv/bin/python bench/process_memory.py [--top 15]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from measure import BenchPortal, add_backend_arguments, drop_bench_backends, free_port, fresh_schema, rss_bytes, stop_processes, wait_healthy  # noqa: E402
from simulators.launcher import start_simulators  # noqa: E402

AGENCIES = ("cciaa", "inail", "inps", "runts")

#: Imports each group of modules read as JSON on stdin ([[[package, [module, ...]], ...], absent])
#: in turn, after marking absent the modules the process did not load either, and prints, per package,
#: the RSS it added (KiB).
_PROBE = """
import importlib, json, sys
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
sys.path.insert(0, sys.argv[1])
groups, absent = json.loads(sys.stdin.read())
for name in absent:
    sys.modules.setdefault(name, None)
out, before = [], rss()
for package, modules in groups:
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException:  # a module that needs a running process's state: not charged
            pass
    now = rss()
    out.append((package, now - before))
    before = now
print(json.dumps({"base": rss() - sum(k for _, k in out), "packages": out}))
"""


def imported_packages(importtime_log: Path) -> list[tuple[str, list[str]]]:
    """The modules a process imported, grouped by top-level package: the libraries first, then
    the project's own (each charged only for what it adds), each in the order it first loaded."""
    groups: dict[str, list[str]] = {}
    for line in importtime_log.read_text(errors="replace").splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        name = line.rsplit("|", 1)[1].strip()
        if not name or name.startswith("imported package") or name in ("__main__", "sitecustomize", "usercustomize"):
            continue
        groups.setdefault(name.split(".")[0], []).append(name)
    ours = [name for name in groups if (ROOT / name).is_dir() or (ROOT / f"{name}.py").is_file()]
    return ([(name, mods) for name, mods in groups.items() if name not in ours]
            + [(name, groups[name]) for name in ours])


def package_costs(groups: list[tuple[str, list[str]]]) -> tuple[int, list[tuple[str, int]]]:
    """RSS of a bare interpreter (KiB) and what each package added, imported in order in a fresh
    one where the optional modules the process went without (wiring/memory.py) are absent too."""
    from wiring.memory import UNUSED_OPTIONAL_MODULES

    loaded = {name for _, modules in groups for name in modules}
    absent = [name for name in UNUSED_OPTIONAL_MODULES if name not in loaded]
    out = subprocess.run([sys.executable, "-c", _PROBE, str(ROOT)], input=json.dumps([groups, absent]),
                         cwd=ROOT, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["base"], [(name, kib) for name, kib in result["packages"]]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=15, help="packages listed per process kind")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the API answers")
    add_backend_arguments(parser)
    args = parser.parse_args()

    portal = BenchPortal()
    prefix = f"crvbench-{uuid.uuid4().hex[:8]}"
    admin, schema, db_url = fresh_schema(args.database_url)
    logdir = Path(tempfile.mkdtemp(prefix="crocevia-memory-"))
    sims = start_simulators()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AGENCIES__", "DATABASE__", "PORTALS__", "TRANSPORT__", "RELAY__", "WORKER__"))}
        env.update({"DATABASE__URL": db_url, "LOG_LEVEL": "warning", "TRANSPORT__KIND": "rabbitmq",
                    "TRANSPORT__URL": args.rabbitmq_url, "TRANSPORT__PREFIX": prefix, **portal.env()})
        for agency in sims.urls:
            env[f"AGENCIES__{agency.upper()}__ENDPOINT"] = sims.soap_endpoint(agency)
        subprocess.run([sys.executable, str(ROOT / "hub.py"), "migrate"], env=env, cwd=ROOT, check=True,
                       stdout=subprocess.DEVNULL)
        port = free_port()
        for name, argv in (("serve", ["serve", "--port", str(port)]), ("relay", ["relay"]), ("worker", ["worker"])):
            with (logdir / f"{name}.log").open("wb") as log:
                procs[name] = subprocess.Popen([sys.executable, "-X", "importtime", str(ROOT / "hub.py"), *argv],
                                               env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)
        wait_healthy(f"http://127.0.0.1:{port}", procs.values(), logs=logdir)
        time.sleep(args.settle)  # let the relay and the worker connect and declare
        rss = {name: rss_bytes(p.pid) for name, p in procs.items()}
    finally:
        stop_processes(procs.values())
        sims.stop()
        drop_bench_backends(admin, schema, args.rabbitmq_url, prefix, AGENCIES)
    for name in procs:
        packages = imported_packages(logdir / f"{name}.log")
        base, costs = package_costs(packages)
        print(f"{name:<7} RSS after start {rss[name] / 2**20:6.1f} MiB; {len(packages)} top-level packages "
              f"importing to {(base + sum(k for _, k in costs)) / 1024:.1f} MiB (bare interpreter {base / 1024:.1f})")
        heaviest = sorted(costs, key=lambda item: -item[1])[:args.top]
        print("         " + ", ".join(f"{pkg} {kib / 1024:.1f}" for pkg, kib in heaviest))
    print(f"logs (-X importtime): {logdir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
