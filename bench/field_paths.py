#!/usr/bin/env python3
"""The mappings' paths evaluated by threads at once: one shared `etree.XPath`, a compiled copy
per thread (`routing.mapping.ThreadXPath`), and the walk of child steps (`ChildPath`).

The intake plans each filing in one of its threads (`[api] threads`, 8), and every thread
evaluates the same compiled paths. lxml serialises the calls of one `etree.XPath` with a lock
and releases the GIL for it and for the evaluation; this prints the CPU per call (this
process, `time.process_time`) of each way with 1 and with N threads, over the shipped
mappings' child-step paths and the example business start filing, and the ratio to the shared
XPath. The conditions of `config/routes.toml` are timed the same way (shared and per thread;
they are not child steps).

    .venv/bin/python bench/field_paths.py --threads 8 --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lxml import etree

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from routing.mapping import _CHILD_STEPS, FILING_NAMESPACES, ChildPath, ThreadXPath  # noqa: E402

EXAMPLE = ROOT / "schemas" / "filing" / "v1" / "examples" / "business_start.xml"


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)


def child_step_paths() -> list[str]:
    """Every child-step path the shipped mappings hold (plain fields and `each`)."""
    found: set[str] = set()
    for path in sorted((ROOT / "config" / "mappings").glob("*.toml")):
        for text in _strings(tomllib.loads(path.read_text()).get("fields", {})):
            if _CHILD_STEPS.fullmatch(text):
                found.add(text)
    return sorted(found)


def conditions() -> list[str]:
    routes = tomllib.loads((ROOT / "config" / "routes.toml").read_text()).get("route", [])
    return sorted({f"boolean({r['when']})" for r in routes if r.get("when")})


def _timed(threads: int, calls: int, make: Callable[[], Callable[[etree._Element], Any]]) -> float:
    """CPU µs per call with `threads` threads each making `calls` calls on its own document."""
    data = EXAMPLE.read_bytes()
    start = threading.Barrier(threads + 1)

    def run() -> None:
        root = etree.fromstring(data)
        evaluate = make()
        start.wait()
        for _ in range(calls):
            evaluate(root)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.process_time()
    for worker in workers:
        worker.join()
    return 1e6 * (time.process_time() - began) / (threads * calls)


def _all(paths: list[Any]) -> Callable[[etree._Element], None]:
    def evaluate(root: etree._Element) -> None:
        for path in paths:
            path(root)
    return evaluate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--calls", type=int, default=4000, help="passes over every path, in all, per measure")
    parser.add_argument("--rounds", type=int, default=3, help="the median round is reported")
    args = parser.parse_args()

    paths = child_step_paths()
    tests = conditions()
    shared_paths = [etree.XPath(p, namespaces=FILING_NAMESPACES, smart_strings=False) for p in paths]
    per_thread_paths = [ThreadXPath(p, smart_strings=False) for p in paths]
    walks = [ChildPath(p).first for p in paths]
    shared_tests = [etree.XPath(t, namespaces=FILING_NAMESPACES) for t in tests]
    per_thread_tests = [ThreadXPath(t) for t in tests]
    ways: list[tuple[str, int, Callable[[], Callable[[etree._Element], Any]]]] = [
        ("child-step paths: one shared etree.XPath each", len(paths), lambda: _all(shared_paths)),
        ("child-step paths: a copy per thread (ThreadXPath)", len(paths), lambda: _all(per_thread_paths)),
        ("child-step paths: walked (ChildPath.first)", len(paths), lambda: _all(walks)),
        ("route conditions: one shared etree.XPath each", len(tests), lambda: _all(shared_tests)),
        ("route conditions: a copy per thread (ThreadXPath)", len(tests), lambda: _all(per_thread_tests)),
    ]
    print(f"{len(paths)} child-step paths from config/mappings, {len(tests)} conditions from config/routes.toml; "
          f"{EXAMPLE.name}; CPU µs per evaluation, median of {args.rounds} rounds")
    print(f"{'':52} {'1 thread':>10} {f'{args.threads} threads':>11} {'vs shared':>10}")
    baseline: float | None = None
    for name, count, make in ways:
        figures = []
        for threads in (1, args.threads):
            passes = max(1, args.calls // threads)
            per_pass = statistics.median(_timed(threads, passes, make) for _ in range(args.rounds))
            figures.append(per_pass / count)
        if "shared" in name:
            baseline = figures[1]
        ratio = f"{baseline / figures[1]:.1f}x less" if baseline and "shared" not in name else ""
        print(f"{name:52} {figures[0]:10.2f} {figures[1]:11.2f} {ratio:>10}")
    print(f"reproduce: .venv/bin/python bench/field_paths.py --threads {args.threads} --calls {args.calls} "
          f"--rounds {args.rounds}")


if __name__ == "__main__":
    main()
