"""What `/metrics` and the portals' agency health feed read from the store, at bounded cost.

Every query here is bounded by the backlog (open deliveries, open jobs, pending events) or by
a fixed number of the latest attempts, never by the whole history: a scrape every few seconds
must not grow dearer as the hub ages.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import Engine, Select, and_, case, func, select

from service.metrics import BACKLOG_STATES, OPEN_STATES
from storage.delivery_store import NEVER
from storage.delivery_tables import agency_status, filing_events
from storage.tables import attempts, deliveries, outbox

__all__ = ["AgencyAnswers", "StoreGauges", "read_agency_answers", "read_store_gauges", "waiting_events"]

#: The latest attempts the health feed looks at, at most (newest first, then the hour bound).
MAX_RECENT_ATTEMPTS = 20_000


@dataclass(frozen=True, slots=True)
class StoreGauges:
    """One reading of the store for `/metrics` (ages in seconds, at `now`)."""

    deliveries: dict[tuple[str, str], int]  #: (agency, state) → count, backlog states only
    oldest_open_age: dict[str, float]  #: agency → age of its oldest open delivery
    queue: dict[tuple[str, str], int]  #: (agency, due|scheduled|leased) → open jobs
    oldest_due_age: dict[str, float]  #: agency → how long its oldest due job has waited
    outbox_unpublished: int  #: due jobs not yet handed to the broker (RabbitMQ)
    outbox_lag: float  #: how long the oldest of them has waited
    notifier_backlog: dict[str, int]  #: portal → events not yet pushed to its callback
    notifier_oldest_age: dict[str, float]
    circuits: list[tuple[str, str, float | None]] = field(default_factory=list)  #: agency, state, updated epoch


def waiting_events(portals: Sequence[str]) -> Select[str, int, datetime]:
    """Per portal, its events the notifier has still to push and the oldest one's time: read
    from `ix_filing_events_due`, which holds undelivered events only."""
    e = filing_events
    return (
        select(e.c.portal, func.count(), func.min(e.c.created_at))
        # Given up (past the notifier's horizon: next try NEVER) is not a backlog any more.
        .where(e.c.delivered_at.is_(None), e.c.portal.in_(list(portals)), e.c.next_attempt_at < NEVER)
        .group_by(e.c.portal)
    )


def read_store_gauges(engine: Engine, now: float, wall_now: float | None = None,
                      pushed_portals: Sequence[str] = ()) -> StoreGauges:
    """Read the backlog gauges in one connection.

    Args:
        now: the delivery schedule's clock (epoch seconds): the outbox's times are on it.
        wall_now: the wall clock the rows' timestamps were written with (default: `now`).
        pushed_portals: the portals with a callback address: only their events wait for the
            notifier (the others' are read from the feed and never pushed).
    """
    wall = datetime.fromtimestamp(now if wall_now is None else wall_now, timezone.utc)
    leased = and_(outbox.c.leased_until.is_not(None), outbox.c.leased_until >= now)
    due = and_(~leased, outbox.c.available_at <= now)
    with engine.connect() as conn:
        rows = conn.execute(
            select(deliveries.c.agency, deliveries.c.state, func.count())
            .where(deliveries.c.state.in_(BACKLOG_STATES)).group_by(deliveries.c.agency, deliveries.c.state)
        ).all()
        counts = {(r[0], r[1]): int(r[2]) for r in rows}
        oldest_open = {
            r[0]: max(0.0, (wall - _aware(r[1])).total_seconds())
            for r in conn.execute(
                select(deliveries.c.agency, func.min(deliveries.c.created_at))
                .where(deliveries.c.state.in_(OPEN_STATES)).group_by(deliveries.c.agency)
            ).all() if r[1] is not None
        }
        queue: dict[tuple[str, str], int] = {}
        oldest_due: dict[str, float] = {}
        for r in conn.execute(
            select(outbox.c.agency,
                   func.sum(case((due, 1), else_=0)),
                   func.sum(case((and_(~leased, outbox.c.available_at > now), 1), else_=0)),
                   func.sum(case((leased, 1), else_=0)),
                   func.min(case((due, outbox.c.available_at), else_=None)))
            .where(outbox.c.done_at.is_(None)).group_by(outbox.c.agency)
        ).all():
            queue[(r[0], "due")], queue[(r[0], "scheduled")], queue[(r[0], "leased")] = (
                int(r[1] or 0), int(r[2] or 0), int(r[3] or 0))
            if r[4] is not None:
                oldest_due[r[0]] = max(0.0, now - float(r[4]))
        unpublished, first = conn.execute(
            select(func.count(), func.min(outbox.c.available_at))
            .where(outbox.c.done_at.is_(None), outbox.c.published_at.is_(None), due)
        ).one()
        backlog: dict[str, int] = {}
        oldest_event: dict[str, float] = {}
        pending = conn.execute(waiting_events(pushed_portals)).all() if pushed_portals else []
        for portal, waiting, oldest in pending:
            backlog[portal] = int(waiting)
            if oldest is not None:
                oldest_event[portal] = max(0.0, (wall - _aware(oldest)).total_seconds())
        circuits = [(r.agency, r.circuit, _aware(r.updated_at).timestamp() if r.updated_at else None)
                    for r in conn.execute(select(agency_status)).all()]
    return StoreGauges(
        deliveries=counts, oldest_open_age=oldest_open, queue=queue, oldest_due_age=oldest_due,
        outbox_unpublished=int(unpublished or 0), outbox_lag=max(0.0, now - float(first)) if first is not None else 0.0,
        notifier_backlog=backlog, notifier_oldest_age=oldest_event, circuits=circuits,
    )


@dataclass(frozen=True, slots=True)
class AgencyAnswers:
    """An agency's recent calls: how many, how many it answered, and its median answer time."""

    calls: int
    answered: int  #: a receipt or a business refusal (not a transient failure)
    median_ms: float | None

    @property
    def success_ratio(self) -> float | None:
        return round(self.answered / self.calls, 4) if self.calls else None


def read_agency_answers(engine: Engine, since: datetime, agencies: Sequence[str],
                        limit: int = MAX_RECENT_ATTEMPTS) -> dict[str, AgencyAnswers]:
    """Per agency, its attempts started since `since`, among the latest `limit` attempts.

    The bound is on the primary key (the newest `limit` ids), so the cost does not grow with
    the table: attempts are numbered as they are recorded.
    """
    with engine.connect() as conn:
        top = conn.execute(select(func.max(attempts.c.id))).scalar()
        if top is None:
            return {a: AgencyAnswers(0, 0, None) for a in agencies}
        rows = conn.execute(
            select(deliveries.c.agency, attempts.c.result, attempts.c.duration_ms)
            .select_from(attempts.join(deliveries, deliveries.c.id == attempts.c.delivery_id))
            .where(attempts.c.id > top - limit, attempts.c.started_at >= since,
                   deliveries.c.agency.in_(list(agencies)))
        ).all()
    by_agency: dict[str, list[tuple[str, float]]] = {a: [] for a in agencies}
    for agency, result, duration in rows:
        by_agency[agency].append((result, float(duration)))
    answers: dict[str, AgencyAnswers] = {}
    for agency, calls in by_agency.items():
        answered = [d for r, d in calls if r != "transient"]
        answers[agency] = AgencyAnswers(len(calls), len(answered),
                                        round(statistics.median(answered), 1) if answered else None)
    return answers


def _aware(moment: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns: they were written in UTC.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


