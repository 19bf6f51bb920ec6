#!/usr/bin/env python3
"""What a worker's outgoing HTTP clients hold in memory before they carry any load (issue 13).

Two readings, each in a fresh process of its own under `python -OO` (as a worker runs), of
RssAnon (the heaps) after a collection and a trim:

- `sessions`: one agency client per agency, built as a worker builds them
  (`wiring.agencies.agency_http_client`), each making one call to a loopback server that
  answers 204, which opens its session; the reading after, against before (aiohttp already
  imported: its own TLS contexts are made at import, once per process);
- `worker`: a worker's whole runtime built (`bootstrap.build_hub(role="worker")` and its
  `WorkerSet`) on a throwaway SQLite file, with one portal that has a callback address (its
  notifier then has a real client); the reading, and whether httpcore and h11 were loaded.

`--root` measures another checkout of the hub (a worktree of an earlier commit) with this
script, so that two trees can be alternated in the same minutes. No traffic leaves loopback.

    .venv/bin/python bench/client_memory.py --rounds 3
    .venv/bin/python bench/client_memory.py --rounds 3 --root /tmp/base
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_CHILD = r"""
import asyncio, json, os, sys
sys.path[:0] = [sys.argv[2], sys.argv[3]]
from measure import heap_mib
from wiring.memory import skip_unused_optional_modules
skip_unused_optional_modules()  # as a service does first
import httpx, aiohttp
from config.settings import load_settings

async def sessions():
    from wiring.agencies import agency_http_client

    async def answer(reader, writer):
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n")
            await writer.drain()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    settings = load_settings(None)
    clients = [agency_http_client(conf.model_copy(update={"endpoint": url}), 4, settings.http)
               for conf in settings.agencies.values()]
    before = heap_mib()
    for client in clients:
        await client.get(url)
    after = heap_mib()
    for client in clients:
        await client.aclose()
    server.close()
    return {"clients": len(clients), "KiB": round((after - before) * 1024)}

def worker():
    import bootstrap
    hub = bootstrap.build_hub(load_settings(None), role="worker")

    async def build():
        workers = bootstrap.WorkerSet(hub, None)
        reading = heap_mib()
        await workers.close()
        return reading

    reading = asyncio.run(build())
    hub.dispose()
    return {"MiB": round(reading, 1), "httpcore": "httpcore" in sys.modules, "h11": "h11" in sys.modules}

print(json.dumps(asyncio.run(sessions()) if sys.argv[1] == "sessions" else worker()))
"""


def reading(kind: str, root: Path, database: Path) -> dict[str, object]:
    """One reading of `kind` in a fresh `python -OO` process running `root`'s hub."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE__", "PORTALS__", "TRANSPORT__"))}
    env.update({"DATABASE__URL": f"sqlite:///{database}", "LOG_LEVEL": "warning",
                "PORTALS__BENCH__CALLBACK_URL": "http://127.0.0.1:9/callbacks",
                "PORTALS__BENCH__CALLBACK_SECRET": "bench-callback-secret-" + "x" * 24})
    done = subprocess.run([sys.executable, "-OO", "-c", _CHILD, kind, str(root), str(ROOT / "bench")],
                          cwd=root, env=env, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode:
        raise SystemExit(f"{kind} reading failed in {root}:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--root", type=Path, default=ROOT, help="the hub checkout measured")
    args = parser.parse_args()
    root = args.root.resolve()
    with tempfile.TemporaryDirectory(prefix="crocevia-client-memory-") as tmp:
        database = Path(tmp) / "hub.db"
        reading("worker", root, database)  # creates the schema: not a reading
        sessions, workers = [], []
        for _ in range(args.rounds):
            sessions.append(reading("sessions", root, database))
            workers.append(reading("worker", root, database))
    print(f"hub measured: {root}")
    print(f"agency sessions opened ({sessions[0]['clients']} agencies), KiB of heap: "
          + ", ".join(str(s["KiB"]) for s in sessions)
          + f"; median {statistics.median(s['KiB'] for s in sessions)}")  # type: ignore[misc]
    print("worker built with one portal calling back, MiB of heap: "
          + ", ".join(str(w["MiB"]) for w in workers)
          + f"; httpcore loaded: {workers[0]['httpcore']}, h11 loaded: {workers[0]['h11']}")
    print(f"reproduce: .venv/bin/python bench/client_memory.py --rounds {args.rounds}"
          + (f" --root {root}" if root != ROOT else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
