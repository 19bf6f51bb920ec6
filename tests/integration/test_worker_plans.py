"""A worker process plans its prepared statements once per connection on PostgreSQL.

Its reads look rows up by lists of keys (`id = ANY($1)`). PostgreSQL prefers a plan made for
the values at hand to one made for any values, so without `[database] worker_generic_plans` it
plans such a statement again at every execution: under the end-to-end benchmark's half load
that was about an eighth of the server's CPU per delivery. These tests read PostgreSQL's own count
of the worker's job load's executions by kind of plan (`pg_prepared_statements`: on a generic
plan, or on one made for that execution).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import Engine, text

from bootstrap import Role, build_hub
from storage.engine import build_engine
from storage.migrate import upgrade_to_head
from storage.store import SqlStore
from tests.conftest import _postgres_schema_url
from tests.integration.test_store import Clock, _new, _planner
from tests.support import hub_settings

#: How often the job load (`SqlStore.load_jobs`) ran prepared on one connection, by kind of plan.
_LOAD_JOBS_PLANS = text("SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                        " WHERE statement LIKE '%outbox.id AS job_id%'")


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    """A fresh schema: plans and their cache are PostgreSQL's."""
    yield from _postgres_schema_url()


@contextmanager
def _engine(url: str, *, generic_plans: bool) -> Iterator[Engine]:
    # One connection, used again and again: psycopg prepares what it runs often on it.
    engine = build_engine(url, pool_size=1, generic_plans=generic_plans)
    try:
        upgrade_to_head(engine)
        yield engine
    finally:
        engine.dispose()


def _plans_after_loading_jobs_twelve_times(engine: Engine) -> tuple[int, int]:
    store = SqlStore(engine, clock=Clock())
    store.accept_filing(_new(), _planner(["inps", "inail"]))
    jobs = [j.job_id for j in store.claim_unpublished("relay", 10, lease_seconds=5)]
    for _ in range(12):
        loaded, done = store.load_jobs(jobs)
        assert sorted(j.job_id for j in loaded) == sorted(jobs) and done == set()
    with engine.connect() as conn:
        generic, custom = conn.execute(_LOAD_JOBS_PLANS).one()
    return generic, custom


def test_with_generic_plans_the_job_load_is_planned_once_not_at_every_claim(postgresql_url: str) -> None:
    with _engine(postgresql_url, generic_plans=True) as engine:
        generic, custom = _plans_after_loading_jobs_twelve_times(engine)
        assert custom == 0
        assert generic >= 1


def test_without_them_postgresql_plans_the_job_load_again_at_every_claim(postgresql_url: str) -> None:
    """What the setting is for: left to choose, PostgreSQL keeps a plan for the values at hand."""
    with _engine(postgresql_url, generic_plans=False) as engine:
        generic, custom = _plans_after_loading_jobs_twelve_times(engine)
        assert custom >= 5
        assert generic == 0


@pytest.mark.parametrize(("role", "configured", "expected"), [
    ("worker", True, "force_generic_plan"),
    ("worker", False, "auto"),
    ("all", True, "auto"),
    ("relay", True, "auto"),
])
def test_only_a_worker_process_plans_once_per_connection(postgresql_url: str, role: Role, configured: bool,
                                                         expected: str) -> None:
    settings = hub_settings(postgresql_url, {})
    settings = settings.model_copy(update={"database": settings.database.model_copy(
        update={"worker_generic_plans": configured})})
    hub = build_hub(settings, role=role)
    try:
        with hub.engine.connect() as conn:
            conn.rollback()  # the setting outlives the pool's rollbacks
            assert conn.execute(text("SHOW plan_cache_mode")).scalar_one() == expected
    finally:
        hub.dispose()
