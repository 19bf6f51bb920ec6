"""Workers' periodic circuit re-reports (issue 11, item 5): they keep a live report fresh, never
hide another live worker's different state, and take over a stopped worker's stale report."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import update

from storage.delivery_tables import agency_status
from storage.engine import build_engine
from storage.migrate import upgrade_to_head
from storage.store import SqlStore

OPEN = {"circuit": "open", "failures": 5, "opened_at": 1.0, "open_until": 31.0, "throttled_until": None}
CLOSED = {"circuit": "closed", "failures": 0, "opened_at": None, "open_until": None, "throttled_until": None}


@pytest.fixture
def store(database_url: str) -> Iterator[SqlStore]:
    engine = build_engine(database_url)
    upgrade_to_head(engine)
    try:
        yield SqlStore(engine)
    finally:
        engine.dispose()


def _shown(store: SqlStore) -> tuple[str, str | None]:
    (status,) = [s for s in store.agency_statuses() if s.agency == "inps"]
    return status.circuit, status.reported_by


def test_re_reports_refresh_their_own_row_and_leave_another_live_state(store: SqlStore) -> None:
    """A re-reports its open circuit; B's closed re-report does not hide it while A is fresh;
    once A's report is older than the horizon, B's re-report replaces it."""
    store.report_agency_status("inps", OPEN, "worker-a")  # a change: always written
    store.report_agency_status("inps", CLOSED, "worker-b", refresh_after=60.0)
    assert _shown(store) == ("open", "worker-a")
    store.report_agency_status("inps", OPEN, "worker-a", refresh_after=60.0)
    assert _shown(store) == ("open", "worker-a")
    # worker-a stopped two minutes ago.
    with store._engine.begin() as conn:  # noqa: SLF001 - age the row as time would
        conn.execute(update(agency_status).values(updated_at=datetime.now(timezone.utc) - timedelta(minutes=2)))
    store.report_agency_status("inps", CLOSED, "worker-b", refresh_after=60.0)
    assert _shown(store) == ("closed", "worker-b")


def test_a_first_re_report_creates_the_row(store: SqlStore) -> None:
    """An agency nobody reported yet gets the re-report's row."""
    store.report_agency_status("inps", CLOSED, "worker-b", refresh_after=60.0)
    assert _shown(store) == ("closed", "worker-b")
