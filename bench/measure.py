"""What every benchmark here does the same way: the bench portal and its filings, free ports,
process CPU and peak memory, percentiles. The caller puts the project root on sys.path first."""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import os
import socket
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import httpx
from sqlalchemy import Engine, text

from cli.client import declarant_of, demo_user
from security.keys import generate_private_key, public_pem
from security.modi import ModiSigner

__all__ = ["BenchPortal", "DeliveryFigures", "add_backend_arguments", "drop_bench_backends", "free_port",
           "fresh_schema", "percentile", "proc_stat", "proc_stats", "report_deliveries", "report_table_writes",
           "report_targets", "rss_bytes", "rss_parts", "server_cpu", "server_of", "settled_filings", "stop_processes",
           "timestamp", "wait_healthy"]

#: The benchmarks' mix: one filing of each of the four original kinds, in turn.
MIX = ("business_start.xml", "runts_registration.xml", "durc_request.xml", "responsibility_declaration.xml")
_EXAMPLES = Path(__file__).resolve().parent.parent / "schemas" / "filing" / "v1" / "examples"


class BenchPortal:
    """The portal every benchmark files as: it signs like any portal (ModI, ES256) with a key made
    per run, and each example is filed by its own declarant."""

    def __init__(self) -> None:
        self.key = generate_private_key("ES256")
        self.docs = [(_EXAMPLES / name).read_bytes() for name in MIX]
        self.users = [demo_user(declarant_of(doc)) for doc in self.docs]
        self.signer = ModiSigner(issuer="bench", private_key=self.key, audience="crocevia")

    def env(self) -> dict[str, str]:
        """The hub's settings (environment) that register this portal."""
        return {"PORTALS__BENCH__ALGORITHM": "ES256", "PORTALS__BENCH__PUBLIC_KEY": public_pem(self.key).decode()}

    def filing(self, i: int) -> tuple[bytes, dict[str, str]]:
        """The `i`-th filing of the mix and its signed headers."""
        doc = self.docs[i % len(self.docs)]
        return doc, self.signer.headers(body=doc, content_type="application/xml", user=self.users[i % len(self.docs)])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stat(pid: int | str) -> tuple[str, list[str]]:
    """A process's name and the fields of /proc/PID/stat after it (field 11 is utime, 13
    cutime). The name is read between the parentheses: it may hold spaces or parentheses.

    Raises:
        OSError: the process has ended, or is not ours to read.
    """
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.index("(") + 1:stat.rindex(")")], stat[stat.rindex(")") + 2:].split()


def proc_stats(pid: int) -> tuple[float, int]:
    """CPU seconds (user+system) and peak resident memory (bytes) of a live process."""
    ticks = os.sysconf("SC_CLK_TCK")
    _, fields = proc_stat(pid)
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return cpu, hwm


#: The servers an end-to-end benchmark loads besides the hub, by the start of their processes'
#: names (/proc/PID/comm): PostgreSQL's postmaster and backends, RabbitMQ's Erlang VM and helpers.
_SERVER_PROCESSES = (("postgres", "postgresql"), ("beam", "rabbitmq"), ("erl_child", "rabbitmq"), ("epmd", "rabbitmq"))


def server_of(comm: str) -> str | None:
    """The server ("postgresql", "rabbitmq") a process of this name belongs to, if any."""
    return next((server for prefix, server in _SERVER_PROCESSES if comm.startswith(prefix)), None)


def server_cpu() -> dict[str, float]:
    """CPU seconds (user+system) the local servers' processes have spent so far, by server.

    A process's reaped children count too: a PostgreSQL backend that ended is in its
    postmaster's figure. Servers with no process on this machine are left out. Everything a
    server does is counted, the benchmark's own reads included: read it only on a machine
    where nothing else uses the servers.
    """
    # Clock ticks summed as integers, divided once: the same ticks read in another order (the
    # processes come and go) give the same seconds, not a float that differs in its last bit.
    spent: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm, fields = proc_stat(entry.name)
        except OSError:  # ended meanwhile, or not ours to read
            continue
        server = server_of(comm)
        if server is None:
            continue
        spent[server] = spent.get(server, 0) + sum(int(f) for f in fields[11:15])
    ticks = os.sysconf("SC_CLK_TCK")
    return {server: total / ticks for server, total in spent.items()}


def rss_bytes(pid: int) -> int:
    """Current resident memory of a live process (VmRSS, bytes)."""
    return rss_parts(pid)["VmRSS"]


def rss_parts(pid: int) -> dict[str, int]:
    """A live process's resident memory (bytes), whole and by kind: VmRSS, RssAnon (its heaps:
    what it allocated), RssFile (pages of mapped files: the interpreter's and libraries' code,
    faulted in as first used), RssShmem."""
    wanted = ("VmRSS:", "RssAnon:", "RssFile:", "RssShmem:")
    parts = dict.fromkeys((name[:-1] for name in wanted), 0)
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(wanted):
            name, kib = line.split()[:2]
            parts[name[:-1]] = int(kib) * 1024
    return parts


def heap_mib() -> float:
    """This process's anonymous resident memory (RssAnon, MiB) after a collection and a trim:
    what its heaps hold, without the pages freed by then."""
    gc.collect()
    trim = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "malloc_trim", None)
    if trim is not None:
        trim(0)
    return rss_parts(os.getpid())["RssAnon"] / 2**20


def add_backend_arguments(parser: argparse.ArgumentParser, *, rabbitmq_help: str | None = None) -> None:
    """`--database-url` and `--rabbitmq-url`: the machine's PostgreSQL and RabbitMQ unless the
    environment (CROCEVIA_BENCH_POSTGRES, CROCEVIA_BENCH_RABBITMQ) or the command line says."""
    parser.add_argument("--database-url", default=os.environ.get(
        "CROCEVIA_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--rabbitmq-url", default=os.environ.get(
        "CROCEVIA_BENCH_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672/%2F"), help=rabbitmq_help)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def wait_healthy(base: str, processes: Iterable[subprocess.Popen[bytes]], *, timeout: float = 60,
                 logs: object = "the process logs") -> None:
    """Wait until the API at `base` answers `/health`; fail if a process exits first or time runs out."""
    procs = list(processes)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/health", trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError(f"the hub did not start; see {logs}")
        time.sleep(0.1)  # polling a condition with a deadline


def timestamp(value: object) -> float:
    """A stored datetime (or its ISO text, as SQLite returns it) as epoch seconds, UTC if naive."""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).timestamp()


def settled_filings(engine: Engine) -> tuple[list[tuple[float, float, int]], dict[str, int]]:
    """Per filing with protocolled deliveries: (created, last protocol, how many), as epoch
    seconds; and the count of deliveries in each state."""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT f.created_at, max(d.updated_at), count(*) FROM filings f JOIN deliveries d "
            "ON d.filing_id = f.id WHERE d.state = 'protocolled' GROUP BY f.id")).all()
        states: dict[str, int] = dict(conn.execute(text("SELECT state, count(*) FROM deliveries GROUP BY state")).all())
    return [(timestamp(created), timestamp(last), count) for created, last, count in rows], states


@dataclass(frozen=True, slots=True)
class DeliveryFigures:
    """What `report_deliveries` printed, for the lines that set them against the targets."""

    deliveries: int
    deliveries_per_s: float
    e2e_p95_ms: float
    submit_p99_ms: float | None


def report_deliveries(rows: list[tuple[float, float, int]], states: dict[str, int], *, filings: int,
                      accepted_seconds: float, first: float, note: str | None = None,
                      submit_ms: list[float] | None = None) -> DeliveryFigures:
    """Print the rates and latencies every end-to-end benchmark reports.

    Rates of delivery run from `first` (epoch seconds) to the last protocol number; latency is
    from a filing's acceptance to its last protocol number; `submit_ms` are the portal's own
    request times (request sent to 202 read), when it measured them."""
    latencies = [(last - created) * 1000 for created, last, _ in rows]
    deliveries = sum(count for *_, count in rows)
    last_done = max(last for _, last, _ in rows)
    rate = deliveries / (last_done - first)
    print(f"deliveries                   {deliveries} protocolled; states {states}")
    print(f"accepted filings/s           {filings / accepted_seconds:8.1f}")
    print(f"fully delivered filings/s    {len(rows) / (last_done - first):8.1f}")
    print(f"deliveries/s                 {rate:8.1f}")
    if note:
        print(note)
    submit_p99 = None
    if submit_ms:
        submit_p99 = percentile(submit_ms, 99)
        print(f"latency of submit (202)      p50 {statistics.median(submit_ms):.0f} ms  "
              f"p95 {percentile(submit_ms, 95):.0f} ms  p99 {submit_p99:.0f} ms")
    p95 = percentile(latencies, 95)
    print(f"latency submit→last protocol p50 {statistics.median(latencies):.0f} ms  "
          f"p95 {p95:.0f} ms  p99 {percentile(latencies, 99):.0f} ms")
    return DeliveryFigures(deliveries, rate, p95, submit_p99)


def report_targets(figures: Sequence[tuple[str, float, str, float, bool]]) -> None:
    """Print each figure beside its target (issue 13): (what, value, unit, target, higher is better)."""
    print("against the targets (issue 13):")
    for what, value, unit, target, higher in figures:
        met = value >= target if higher else value <= target
        sign = "≥" if higher else "≤"
        print(f"  {what:<44} {value:9.1f} {unit:<5} target {sign} {target:g} {unit:<5} {'met' if met else 'NOT met'}")


_TABLE_WRITES = text(
    "SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del FROM pg_stat_user_tables"
    " WHERE schemaname = :schema AND n_tup_ins + n_tup_upd + n_tup_del > 0 ORDER BY relname")


def report_table_writes(admin: Engine, schema: str, deliveries: int, *, settle: float = 5.0) -> None:
    """Print the rows each table of `schema` took per delivery: inserted, updated (with the
    share PostgreSQL could update in place, HOT, touching no index) and deleted.

    Call it once the hub's processes have stopped: a backend reports its counts when it ends
    (and only from time to time while it lives). They are read until two reads agree.
    """
    deadline = time.monotonic() + settle
    with admin.connect() as conn:
        rows = conn.execute(_TABLE_WRITES, {"schema": schema}).all()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            conn.rollback()  # a new snapshot of the statistics
            again = conn.execute(_TABLE_WRITES, {"schema": schema}).all()
            if again == rows:
                break
            rows = again
    per = 1 / max(1, deliveries)
    print("rows written per delivery (PostgreSQL's table statistics, read once the hub stopped):")
    totals = [0, 0, 0, 0]
    for name, inserted, updated, hot, deleted in rows:
        totals = [t + v for t, v in zip(totals, (inserted, updated, hot, deleted), strict=True)]
        print(f"  {name:<16} inserted {inserted * per:5.2f}  updated {updated * per:5.2f} "
              f"(in place {hot / max(1, updated):4.0%})  deleted {deleted * per:5.2f}")
    inserted, updated, hot, deleted = totals
    print(f"  {'all tables':<16} inserted {inserted * per:5.2f}  updated {updated * per:5.2f} "
          f"(in place {hot / max(1, updated):4.0%})  deleted {deleted * per:5.2f}")


def fresh_schema(database_url: str) -> tuple[Engine, str, str]:
    """A new PostgreSQL schema for one run: the admin engine (to drop it afterwards), the
    schema's name, and the URL whose connections work in it."""
    from sqlalchemy import create_engine

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(database_url, pool_pre_ping=True)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in database_url else "?"
    return admin, schema, f"{database_url}{sep}options=-csearch_path%3D{schema}"


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], *, grace: float = 30) -> None:
    """Ask every process to stop (SIGTERM), then kill those still running after `grace` s."""
    procs = list(procs)
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()


def drop_bench_backends(admin: Engine, schema: str, rabbitmq_url: str, prefix: str,
                        agencies: Iterable[str]) -> None:
    """Remove what a RabbitMQ + PostgreSQL benchmark made: its queues, then (always) its schema."""
    from transport.amqp import Topology, delete_topology

    try:
        delete_topology(rabbitmq_url, Topology(prefix, tuple(agencies)))
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
