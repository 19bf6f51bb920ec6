#!/usr/bin/env python3
"""The bench portal's callback address: a portal that verifies and records every event pushed to it.

The end-to-end benchmarks start it as a process of its own (its CPU is the portal's, not the
hub's) when asked for callbacks, and point the bench portal's `callback_url` here. It does
what a portal does with a callback: checks the signature (`adapters.webhook.verify_signature`,
the function a portal is given), reads the event, answers 204. It records, per event, its id,
filing reference, sequence and when it was written and received; on SIGTERM it writes them to
`--out` (JSON) and exits. A forged signature is answered 401 and counted. `--slow-every N
--slow-ms MS` makes it a portal with a tail: every Nth callback is answered MS late. While a
benchmark runs, `EventBacklog` reads the store once a second: the most events seen waiting, and
the oldest one's age (printed with the callbacks' figures).

    .venv/bin/python bench/callback_sink.py --port 8765 --secret-file S --out events.json
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import orjson
from aiohttp import web
from sqlalchemy import Engine, create_engine, text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.webhook import SIGNATURE_HEADER, verify_signature  # noqa: E402
from measure import free_port, percentile, proc_stats  # noqa: E402

#: One received event: id, filing reference, sequence, written at, received at (epoch seconds).
Received = tuple[str, str, int, float, float]


class CallbackSink:
    """Verifies and records the events POSTed to `/callbacks`."""

    def __init__(self, secret: bytes, slow_every: int = 0, slow_ms: int = 0) -> None:
        self._secret = secret
        self._slow_every = slow_every
        self._slow = slow_ms / 1000
        self._calls = 0
        self.received: list[Received] = []
        self.forged = 0

    async def callback(self, request: web.Request) -> web.Response:
        body = await request.read()
        self._calls += 1
        if self._slow_every and self._calls % self._slow_every == 0:
            await asyncio.sleep(self._slow)
        if not verify_signature(self._secret, request.headers.get(SIGNATURE_HEADER), body):
            self.forged += 1
            return web.Response(status=401)
        event = orjson.loads(body)
        written = datetime.fromisoformat(event["createdAt"]).timestamp()
        self.received.append((event["id"], event["reference"], event["sequence"], written, time.time()))
        return web.Response(status=204)

    def summary(self) -> dict[str, object]:
        return {"received": self.received, "forged": self.forged}


async def serve(port: int, sink: CallbackSink) -> None:
    app = web.Application()
    app.router.add_post("/callbacks", sink.callback)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    print("ready", flush=True)
    await stop.wait()
    await runner.cleanup()


class EventBacklog(threading.Thread):
    """Reads, once a `period`, how many events wait in the store to be pushed and how old the
    oldest is: a notifier falling behind shows while the run lasts (the twelfth round's lag was
    found this way), not only in the latencies at its end."""

    def __init__(self, database_url: str, period: float = 1.0) -> None:
        super().__init__(daemon=True)
        self._url, self._period = database_url, period
        self.halt = threading.Event()
        self.most = (0, 0.0)  #: the most events seen waiting, and at which minute of the run
        self.oldest = 0.0  #: the oldest waiting event's greatest age seen, in seconds
        self._t0 = time.monotonic()

    def run(self) -> None:
        waiting = text("SELECT count(*), min(created_at) FROM filing_events WHERE delivered_at IS NULL")
        engine = create_engine(self._url)
        try:
            with engine.connect() as conn:
                while True:
                    count, created = conn.execute(waiting).one()
                    conn.rollback()  # a fresh snapshot each time (SQLite's reads keep theirs)
                    if count > self.most[0]:
                        self.most = (count, (time.monotonic() - self._t0) / 60)
                    if created is not None:
                        created = created if created.tzinfo else created.replace(tzinfo=timezone.utc)
                        self.oldest = max(self.oldest, time.time() - created.timestamp())
                    if self.halt.wait(self._period):  # the period between readings, not synchronisation
                        return
        finally:
            engine.dispose()

    def summary(self) -> str:
        return (f"events waiting (read every {self._period:g} s)  most {self.most[0]} (minute {self.most[1]:.1f}), "
                f"the oldest at most {self.oldest:.1f} s old")


class CallbackSinkProcess:
    """The sink as a benchmark drives it: started at once in its own process on a free loopback
    port, with a secret made for the run (in a file of `workdir`, not on a command line)."""

    def __init__(self, workdir: Path, *, slow_every: int = 0, slow_ms: int = 0) -> None:
        self._secret = secrets.token_urlsafe(32)
        secret_file = workdir / "callback-secret"
        secret_file.touch(mode=0o600)
        secret_file.write_text(self._secret)
        self._out = workdir / "callbacks.json"
        port = free_port()
        self.url = f"http://127.0.0.1:{port}/callbacks"
        self._process = subprocess.Popen(
            [sys.executable, __file__, "--port", str(port), "--secret-file", str(secret_file), "--out", str(self._out),
             "--slow-every", str(slow_every), "--slow-ms", str(slow_ms)],
            stdout=subprocess.PIPE)
        assert self._process.stdout is not None
        if self._process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the callback sink did not start")
        self._cpu = 0.0
        self._taken_in_store = 0
        self._summary: dict[str, object] | None = None
        self._backlog: EventBacklog | None = None

    def watch_backlog(self, database_url: str) -> None:
        """From now on, read the events waiting in the store once a second (`report` prints it)."""
        self._backlog = EventBacklog(database_url)
        self._backlog.start()

    def portal_env(self, portal: str) -> dict[str, str]:
        """The hub's settings that give `portal` this callback address and secret."""
        return {f"PORTALS__{portal}__CALLBACK_URL": self.url, f"PORTALS__{portal}__CALLBACK_SECRET": self._secret}

    def wait_all_taken(self, engine: Engine, deadline: float) -> None:
        """Wait (until `deadline`, monotonic) until the store has no event left to push."""
        waiting = text("SELECT count(*) FROM filing_events WHERE delivered_at IS NULL")
        with engine.connect() as conn:
            while conn.execute(waiting).scalar_one() and time.monotonic() < deadline:
                time.sleep(0.05)
            self._taken_in_store = conn.execute(
                text("SELECT count(*) FROM filing_events WHERE delivered_at IS NOT NULL")).scalar_one()

    def stop(self) -> float:
        """Stop the sink (once) and read what it received; its CPU seconds."""
        if self._backlog is not None:
            self._backlog.halt.set()
            self._backlog.join(10)
        if self._summary is None:
            if self._process.poll() is None:
                self._cpu = proc_stats(self._process.pid)[0]
                self._process.terminate()
            self._process.wait(30)
            self._summary = (orjson.loads(self._out.read_bytes()) if self._out.exists()
                             else {"received": [], "forged": 0})
        return self._cpu

    def report(self, *, filings: int, since: float) -> None:
        """Print what the portal saw: events per filing, their rate, their lag, and any repeat,
        forgery or event out of its filing's order."""
        self.stop()
        assert self._summary is not None
        if self._backlog is not None:
            print(self._backlog.summary())
        received: list[Received] = [tuple(r) for r in self._summary["received"]]  # type: ignore[misc, union-attr]
        ids = {r[0] for r in received}
        by_filing: dict[str, list[Received]] = defaultdict(list)
        for r in received:
            by_filing[r[1]].append(r)
        out_of_order = sum(1 for events in by_filing.values()
                           if [e[2] for e in sorted(events, key=lambda e: e[4])] != sorted(e[2] for e in events))
        lags = [(r[4] - r[3]) * 1000 for r in received]
        last = max((r[4] for r in received), default=since)
        print(f"callbacks                    {len(ids)} events taken by the portal ({len(ids) / max(1, filings):.2f} "
              f"per filing; the store counts {self._taken_in_store} delivered), {len(received) - len(ids)} repeats, "
              f"{self._summary['forged']} forged, {out_of_order} filings out of order")
        if lags:
            print(f"callbacks/s                  {len(ids) / max(1e-9, last - since):8.1f}")
            print(f"latency event→portal         p50 {statistics.median(lags):.0f} ms  "
                  f"p95 {percentile(lags, 95):.0f} ms  p99 {percentile(lags, 99):.0f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret-file", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--slow-every", type=int, default=0, help="answer every Nth callback late (0: none)")
    parser.add_argument("--slow-ms", type=int, default=0, help="how late")
    args = parser.parse_args()
    sink = CallbackSink(args.secret_file.read_bytes().strip(), args.slow_every, args.slow_ms)
    asyncio.run(serve(args.port, sink))
    args.out.write_bytes(orjson.dumps(sink.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
