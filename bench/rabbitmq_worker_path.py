#!/usr/bin/env python3
"""The RabbitMQ path alone: relay publish rate, and one worker's throughput at a given agency latency.

`bench/rabbitmq_e2e.py` measures everything end to end, where the agency adapters (zeep, httpx)
and the simulators take most of the CPU. This benchmark isolates what the transport adds: it
stores N deliveries (four agencies) in a fresh PostgreSQL schema, publishes them all with the
real relay (`OutboxRelay` + `RabbitPublisher`, confirms), then runs one real `DeliveryWorker`
over the real `RabbitJobSource` whose "agency call" only waits `--latency-ms`, and commits the
outcomes in the store as usual. It prints messages/s published and deliveries/s completed, and
this process's CPU per delivery.

    .venv/bin/python bench/rabbitmq_worker_path.py --deliveries 4000 --latency-ms 500 --concurrency 128
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from service.delivery_port import DeliveryResult, RetryPolicy, TryRecord  # noqa: E402
from config.logging import configure_logging  # noqa: E402
from domain.messages import Receipt  # noqa: E402
from routing.plan import PlannedDelivery  # noqa: E402
from service.ports import NewFiling  # noqa: E402
from service.relay import OutboxRelay  # noqa: E402
from service.schedule import SchedulePolicy  # noqa: E402
from service.worker import AgencyRuntime, DeliveryWorker, WorkerOptions  # noqa: E402
from measure import add_backend_arguments, fresh_schema  # noqa: E402
from storage.engine import build_engine  # noqa: E402
from storage.migrate import upgrade_to_head  # noqa: E402
from storage.store import SqlStore  # noqa: E402
from transport.amqp import delete_topology  # noqa: E402
from transport.rabbitmq import RabbitJobSource, RabbitPublisher, Topology, amqp_parameters  # noqa: E402

AGENCIES = ("cciaa", "inail", "inps", "runts")


def _plan(reference: str) -> list[PlannedDelivery]:
    return [PlannedDelivery(uuid.uuid4().hex, uuid.uuid4().hex, agency, "Op",
                            {"messageHeader": {"filingReference": reference}}) for agency in AGENCIES]


def _filing() -> NewFiling:
    return NewFiling(kind="durc_request", portal="bench", subject_tax_code="09182730581", subject_name="Alfa",
                     declarant_tax_code="FTTMRC85C14H501X", declarant_role="legal_representative",
                     document=b"<filing/>", digest="b" * 64, received_at=datetime.now(timezone.utc))


async def _run(args: argparse.Namespace, store: SqlStore, prefix: str) -> None:
    topology = Topology(prefix, AGENCIES)
    url = args.rabbitmq_url
    jobs = store.pending_jobs()

    # Phase 1: the relay publishes every job (confirms in batches).
    stop = asyncio.Event()
    relay = OutboxRelay(store=store, publisher=RabbitPublisher(amqp_parameters(url, name="bench-relay"), topology),
                        batch_size=args.relay_batch)
    t0, c0 = time.perf_counter(), time.process_time()
    task = asyncio.create_task(relay.run(stop))
    while relay.published < jobs:
        await asyncio.sleep(0.01)
    publish_s, publish_cpu = time.perf_counter() - t0, time.process_time() - c0
    stop.set()
    await task

    # Phase 2: one worker; each "agency call" waits `latency`, as a real agency would answer.
    async def deliver(_adapter: object, message: object, _policy: object) -> DeliveryResult:
        started = datetime.now(timezone.utc)
        await asyncio.sleep(args.latency_ms / 1000)
        receipt = Receipt(protocol_number=f"P-{uuid.uuid4().hex[:12]}", protocolled_at=started.isoformat())
        return DeliveryResult(receipt=receipt, error=None,
                              tries=[TryRecord(1, started, float(args.latency_ms), None)])

    source = RabbitJobSource(parameters=amqp_parameters(url, name="bench-worker"), topology=topology,
                             prefetch={a: args.concurrency for a in AGENCIES}, store=store)
    runtimes = {a: AgencyRuntime(name=a, adapter=object(), retry=RetryPolicy(),  # type: ignore[arg-type]  # `deliver` ignores it
                                 schedule=SchedulePolicy(), concurrency=args.concurrency) for a in AGENCIES}
    worker = DeliveryWorker(source=source, agencies=runtimes, deliver=deliver,
                            options=WorkerOptions(commit_batch=args.commit_batch))
    source.listen(worker.notify)
    await source.start()
    stop = asyncio.Event()
    t1, c1 = time.perf_counter(), time.process_time()
    task = asyncio.create_task(worker.run(stop))
    while worker.delivered < jobs:  # committed outcomes, counted by the worker itself
        await asyncio.sleep(0.05)
    work_s, work_cpu = time.perf_counter() - t1, time.process_time() - c1
    stop.set()
    await task
    await source.close()
    print(f"deliveries                   {jobs} over {len(AGENCIES)} agencies")
    print(f"relay: published             {jobs / publish_s:8.0f} msg/s with confirms "
          f"(batch {args.relay_batch}; CPU {publish_cpu / jobs * 1000:.2f} ms/msg)")
    print(f"worker: completed            {jobs / work_s:8.1f} deliveries/s at {args.latency_ms} ms agency latency, "
          f"{args.concurrency} in flight per agency (ceiling {len(AGENCIES) * args.concurrency / max(args.latency_ms, 1) * 1000:.0f}/s)")
    print(f"worker CPU per delivery      {work_cpu / jobs * 1000:8.2f} ms (transport + store + worker, no adapter)")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"reproduce: .venv/bin/python bench/rabbitmq_worker_path.py --deliveries {jobs} "
          f"--latency-ms {args.latency_ms} --concurrency {args.concurrency} --commit-batch {args.commit_batch}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=4000)
    parser.add_argument("--latency-ms", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=128, help="calls in flight per agency")
    parser.add_argument("--relay-batch", type=int, default=500)
    parser.add_argument("--commit-batch", type=int, default=64, help="outcomes per commit (worker.commit_batch)")
    add_backend_arguments(parser)
    args = parser.parse_args()
    configure_logging(os.environ.get("LOG_LEVEL", "warning"))  # as the e2e benchmark's processes

    prefix = f"crvbench-{uuid.uuid4().hex[:8]}"
    admin, schema, db_url = fresh_schema(args.database_url)
    engine = build_engine(db_url, pool_size=20)
    try:
        upgrade_to_head(engine)
        store = SqlStore(engine)
        for _ in range(args.deliveries // len(AGENCIES)):
            store.accept_filing(_filing(), _plan)
        asyncio.run(_run(args, store, prefix))
        return 0
    finally:
        engine.dispose()
        delete_topology(args.rabbitmq_url, Topology(prefix, AGENCIES))
        with admin.begin() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    sys.exit(main())
