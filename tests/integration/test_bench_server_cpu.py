"""The end-to-end benchmark's reading of the servers' CPU (`server_cpu` in bench/measure.py).

`bench/rabbitmq_e2e.py` adds it to the hub's CPU to tell what a delivery costs the whole
machine, and so how many deliveries/s the cores allow: a backend that ended during the run
must still count, or the servers look cheaper than they are.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from sqlalchemy import create_engine, text

from tests.conftest import POSTGRES_ADMIN_URL, require_server

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from measure import server_cpu  # noqa: E402 - the bench's own module, found on its folder

#: A query that keeps one backend busy for a few tenths of a second on any machine of this kind.
_BURN = text("SELECT count(*) FROM generate_series(1, 4000000)")


def _postgresql_cpu() -> float:
    spent = server_cpu().get("postgresql")
    if spent is None:
        require_server("PostgreSQL", "no postgres process on this machine to read")
    assert spent is not None
    return spent


def test_the_cpu_of_a_backend_that_ended_is_still_counted() -> None:
    engine = create_engine(POSTGRES_ADMIN_URL)
    try:
        with engine.connect() as conn:
            pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
            before = _postgresql_cpu()
            conn.execute(_BURN)
            while_running = _postgresql_cpu()
    except Exception as exc:  # noqa: BLE001 - any failure means the server is not usable
        require_server("PostgreSQL", str(exc).splitlines()[0])
        raise
    finally:
        engine.dispose()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not Path(f"/proc/{pid}").exists(), "the backend did not end within 10 s"
    after = _postgresql_cpu()
    assert while_running - before >= 0.1  # the busy backend's own CPU
    assert after >= while_running  # and, once it ended, its postmaster's reaped children keep it
