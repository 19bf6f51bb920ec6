"""What the API shows about the hub as a whole: its metrics with the store's gauges, and the
agencies' health feed for portals."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

from config.settings import Settings
from service.agency_health import AgencyHealthFeed
from service.metrics import HubMetrics, StoreGaugeCollector
from service.ports import AgencyStatus
from storage.connect import Engine
from storage.ops_metrics import read_agency_answers, read_store_gauges
from wiring.agencies import calendar

__all__ = ["agency_health", "api_metrics"]


def api_metrics(settings: Settings, engine: Engine, agencies: Sequence[str],
                delivery_clock: Callable[[], float]) -> HubMetrics:
    """The API process's metrics: its own counters plus the hub-wide gauges read from the store."""
    metrics = HubMetrics()
    m = settings.metrics
    pushed = sorted(name for name, conf in settings.portals.items() if conf.callback_url)
    metrics.registry.register(StoreGaugeCollector(
        lambda: read_store_gauges(engine, delivery_clock(), time.time(), pushed),
        sorted(agencies),
        ttl=m.store_ttl, stale_after=m.circuit_stale_after))
    return metrics


def agency_health(settings: Settings, engine: Engine, statuses: Callable[[], list[AgencyStatus]],
                  agencies: Sequence[str], delivery_clock: Callable[[], float]) -> AgencyHealthFeed:
    """The portals' agency health feed: circuits, the last hour's answers, maintenance windows."""

    def answers(since: float, names: Sequence[str]) -> Mapping[str, Any]:
        return read_agency_answers(engine, datetime.fromtimestamp(since, timezone.utc), names)

    m, shown = settings.metrics, sorted(agencies)
    return AgencyHealthFeed(
        agencies=shown, statuses=statuses, answers=answers,
        calendars={n: calendar(settings.agencies[n]) for n in shown},
        stale_after=m.circuit_stale_after, ttl=m.store_ttl, clock=delivery_clock)
