#!/usr/bin/env python3
"""The store's `complete_jobs` alone: client CPU per completion at a given batch size.

The worker records its outcomes in batches (`worker.commit_batch`); this benchmark stores
filings of four recipients (cciaa first, inps and inail waiting for its REA number, runts on its
own), then claims and completes their jobs in batches of `--batch` with a fixed mix of outcomes
(protocolled, retrying, acknowledged, rejected), on PostgreSQL and on SQLite. It prints this
process's CPU (user+system, the database server's is not counted) and the wall time per
completion, for each database.

`--instructions` runs it again under valgrind's callgrind and prints, instead of times, the
instructions this process ran per completion in the claim-and-complete loop (the filings'
intake before it is not counted): a figure that repeats within about 1 % (`bench/callgrind.py`),
to compare two trees by when the change is a few percent. The run is ~50 times slower.

    .venv/bin/python bench/complete_jobs.py --filings 400 --batch 64
    .venv/bin/python bench/complete_jobs.py --instructions --filings 100 --batch 8
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from callgrind import OUT_VARIABLE, callgrind_command, counting, instructions_since_last  # noqa: E402
from routing.plan import PlannedDelivery  # noqa: E402
from service.ports import AttemptRecord, ClaimedJob, Completion, NewFiling  # noqa: E402
from measure import fresh_schema  # noqa: E402
from storage.engine import build_engine  # noqa: E402
from storage.migrate import upgrade_to_head  # noqa: E402
from storage.store import SqlStore  # noqa: E402

_HANDOFF = ({"path": ["numeroREA"], "agency": "cciaa", "reference": "numeroREA"},)


def _plan(reference: str) -> list[PlannedDelivery]:
    header = {"messageHeader": {"filingReference": reference}}
    return [
        PlannedDelivery(uuid.uuid4().hex, uuid.uuid4().hex, "cciaa", "IscrizioneImpresa", header),
        PlannedDelivery(uuid.uuid4().hex, uuid.uuid4().hex, "runts", "Op", header),
        *(PlannedDelivery(uuid.uuid4().hex, uuid.uuid4().hex, agency, "Op", header, after="cciaa",
                          on_reject="hold", handoffs=_HANDOFF) for agency in ("inps", "inail")),
    ]


def _filing() -> NewFiling:
    return NewFiling(kind="business_start", portal="bench", subject_tax_code="09182730581", subject_name="Alfa",
                     declarant_tax_code="FTTMRC85C14H501X", declarant_role="legal_representative",
                     document=b"<filing/>", digest="b" * 64, received_at=datetime.now(timezone.utc))


def _completion(job: ClaimedJob, i: int, later: float) -> Completion:
    """A fixed mix: 14 in 20 protocolled, 3 retrying, 2 acknowledged, 1 rejected."""
    now = datetime.now(timezone.utc)
    slot = i % 20
    if slot < 14:
        return Completion(job=job, owner="bench", new_state="protocolled", protocol_number=f"P-{i}",
                          protocolled_at=now.isoformat(), references={"numeroREA": f"RM-{i}"},
                          attempts=[AttemptRecord(1, now, 12.0, "ok")])
    if slot < 17:
        return Completion(job=job, owner="bench", new_state="retrying", last_error="503", next_attempt_at=later,
                          attempts=[AttemptRecord(1, now, 30.0, "transient", "503", "unavailable")])
    if slot < 19:
        return Completion(job=job, owner="bench", new_state="acknowledged", correlation_id=f"c-{i}",
                          next_attempt_at=later, attempts=[AttemptRecord(1, now, 8.0, "ok")])
    return Completion(job=job, owner="bench", new_state="rejected", outcome="rejected", outcome_code="R1",
                      outcome_text="no", attempts=[AttemptRecord(1, now, 9.0, "permanent", "R1", "no")])


def _measure(url: str, filings: int, batch: int, counts: Path | None) -> tuple[int, float, float, float]:
    """Completions made, CPU seconds and wall seconds spent inside `complete_jobs`, and (with
    `counts`, under callgrind) the instructions of the claim-and-complete loop."""
    engine = build_engine(url)
    try:
        upgrade_to_head(engine)
        store = SqlStore(engine)
        for _ in range(filings):
            store.accept_filing(_filing(), _plan)
        later = time.time() + 86_400  # retries and callback checks fall outside the run
        done, cpu, wall, i = 0, 0.0, 0.0, 0
        with counting(os.getpid()) if counts is not None else contextlib.nullcontext():
            while jobs := store.claim_jobs("bench", None, batch, 600):
                completions = []
                for job in jobs:
                    completions.append(_completion(job, i, later))
                    i += 1
                c0, t0 = time.process_time(), time.perf_counter()
                store.complete_jobs(completions)
                cpu += time.process_time() - c0
                wall += time.perf_counter() - t0
                done += len(completions)
        return done, cpu, wall, float(instructions_since_last(counts)) if counts is not None else 0.0
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filings", type=int, default=400, help="filings of four recipients each")
    parser.add_argument("--batch", type=int, default=64, help="completions per complete_jobs call")
    parser.add_argument("--databases", default="postgresql,sqlite")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "CROCEVIA_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--instructions", action="store_true",
                        help="run again under valgrind's callgrind and print the instructions per completion")
    args = parser.parse_args()
    if args.instructions and OUT_VARIABLE not in os.environ:
        out = Path(tempfile.mkdtemp(prefix="crocevia-complete-instructions-")) / "callgrind.out"
        command = callgrind_command([sys.executable, *sys.orig_argv[1:]], out, trace_children=False)
        return subprocess.run(command, env={**os.environ, OUT_VARIABLE: str(out)}, check=False).returncode
    counts = Path(os.environ[OUT_VARIABLE]) if OUT_VARIABLE in os.environ else None

    for kind in args.databases.split(","):
        if kind == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                done, cpu, wall, instructions = _measure(f"sqlite:///{tmp}/bench.db", args.filings, args.batch, counts)
        else:
            admin, schema, db_url = fresh_schema(args.postgres_url)
            try:
                done, cpu, wall, instructions = _measure(db_url, args.filings, args.batch, counts)
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
                admin.dispose()
        if counts is not None:
            print(f"{kind:10s} {done:6d} completions in batches of {args.batch}: "
                  f"{instructions / done / 1e6:.3f} M instructions per completion, claim and complete "
                  f"(valgrind callgrind; times not measured)")
        else:
            print(f"{kind:10s} {done:6d} completions in batches of {args.batch}: "
                  f"CPU {cpu / done * 1000:6.3f} ms/completion, wall {wall / done * 1000:6.3f} ms/completion")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"reproduce: .venv/bin/python bench/complete_jobs.py --filings {args.filings} --batch {args.batch} "
          f"--databases {args.databases}" + (" --instructions" if args.instructions else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
