"""Prometheus metrics of one process: counters its loops move, and the store's gauges read at scrape.

Each process owns one `HubMetrics` (its own registry: no module-level global, so two hubs in
one test process do not mix their counts). Counters say what this process did since it
started (calls, outcomes, requests); the store gauges say how things stand for the whole hub
(backlog, queue ages, circuits) and are read at scrape time, through a short cache so that
many scrapers cost one reading per `store_ttl` seconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import structlog
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from domain.states import DeliveryState
from service.settle import attempt_result

__all__ = ["BACKLOG_STATES", "CONTENT_TYPE", "OPEN_STATES", "HubMetrics", "StoreGaugeCollector"]

log = structlog.get_logger("crocevia.metrics")

#: The Prometheus text exposition format's media type.
CONTENT_TYPE = CONTENT_TYPE_LATEST
#: Agency call durations (seconds): from a fast local answer to the call deadline.
_CALL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0)
_CIRCUIT_STATES = ("closed", "open", "half_open")
#: Methods counted by name; any other a client invents is `other` (labels stay bounded).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: States counted at each scrape: the backlog operators act on. Settled states
#: (protocolled, rejected, cancelled) only grow; their rate is the outcomes counter's.
BACKLOG_STATES: tuple[str, ...] = tuple(s.value for s in (
    DeliveryState.PENDING, DeliveryState.WAITING, DeliveryState.RETRYING, DeliveryState.ACKNOWLEDGED,
    DeliveryState.UNDELIVERABLE, DeliveryState.HELD))
#: Of those, the states a worker or an agency still moves (an "open" delivery).
OPEN_STATES: tuple[str, ...] = BACKLOG_STATES[:4]


class HubMetrics:
    """The counters and histograms of one process, and what `/metrics` renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.attempts = Counter("crocevia_agency_attempts", "Calls to an agency, by result and error class",
                                ["agency", "result", "error_class"], registry=r)
        self.call_seconds = Histogram("crocevia_agency_call_duration_seconds",
                                      "Time of one call to an agency (answered or failed)", ["agency"],
                                      buckets=_CALL_BUCKETS, registry=r)
        self.outcomes = Counter("crocevia_delivery_outcomes",
                                "Worker passes by the state they left the delivery in (deferred: no call made)",
                                ["agency", "state"], registry=r)
        self.intake = Counter("crocevia_intake_requests", "Filings submitted (POST /v1/filings), by HTTP status",
                              ["status"], registry=r)
        self.http = Counter("crocevia_http_requests", "Every API request, by method and HTTP status",
                            ["method", "status"], registry=r)
        #: The label children `record_request` moves, by label values.
        self._http_children: dict[tuple[str, int], Any] = {}
        self._intake_children: dict[int, Any] = {}
        # The process's own resources (CPU, memory, file descriptors) and Python version.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)

    def count_published(self, published: Callable[[], int]) -> None:
        """Expose the relay's count of outbox rows published and confirmed by the broker."""
        self.registry.register(_Published(published))

    def record_tries(self, agency: str, tries: Iterable[Any]) -> None:
        """One worker pass's calls (`service.delivery_port.TryRecord`): counted and timed."""
        for t in tries:
            result, error_class = attempt_result(t.error)
            # The metric's labels: an invalid message counts as permanent.
            self.attempts.labels(agency, "permanent" if result == "invalid" else result, error_class or "none").inc()
            self.call_seconds.labels(agency).observe(t.duration_ms / 1000.0)

    def record_outcome(self, agency: str, state: str, *, deferred: bool = False) -> None:
        self.outcomes.labels(agency, "deferred" if deferred else state).inc()

    def record_request(self, method: str, path: str, status: int) -> None:
        """Count one API request (and, for a submission, its intake status).

        The label children are looked up once per label value and kept: prometheus-client's
        `labels()` takes a lock and builds the key on every call, i.e. on every request.
        """
        key = (method if method in _METHODS else "other", status)
        http = self._http_children.get(key)
        if http is None:
            http = self._http_children.setdefault(key, self.http.labels(key[0], str(status)))
        http.inc()
        if method == "POST" and path == "/v1/filings":
            intake = self._intake_children.get(status)
            if intake is None:
                intake = self._intake_children.setdefault(status, self.intake.labels(str(status)))
            intake.inc()

    def render(self) -> bytes:
        """The text exposition (blocking when a store collector is registered: run it in a thread)."""
        return generate_latest(self.registry)


class StoreGaugeCollector(Collector):
    """The hub-wide gauges, read from the store when scraped (`storage.ops_metrics`).

    Args:
        read: returns a `storage.ops_metrics.StoreGauges` (blocking).
        agencies: the configured agencies, shown (at zero) even before their first delivery.
        ttl: seconds a reading is reused, so that scrapers cannot multiply the store's load.
        stale_after: a circuit not re-reported for this long is marked stale.
        clock: epoch seconds (the store's clock).
    """

    def __init__(self, read: Callable[[], Any], agencies: Sequence[str], *, ttl: float = 5.0,
                 stale_after: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self._read = read
        self._agencies = tuple(agencies)
        self._ttl = ttl
        self._stale_after = stale_after
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, Any] | None = None

    def describe(self) -> list[Any]:
        return []  # read only when scraped, never at registration

    def _reading(self) -> Any:
        with self._lock:  # one reading at a time; concurrent scrapes share it
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= self._ttl:
                self._cached = (now, self._read())
            return self._cached[1]

    def collect(self) -> Iterable[Any]:
        up = GaugeMetricFamily("crocevia_store_up", "1 when the store answered this scrape's reading")
        try:
            g = self._reading()
        except Exception as exc:  # noqa: BLE001 - any driver error: the store is away, say so
            log.warning("metrics_store_unreadable", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        agencies = sorted(set(self._agencies) | {a for a, _ in g.deliveries} | {a for a, _ in g.queue})
        fam = GaugeMetricFamily("crocevia_deliveries", "Deliveries in a backlog state, by agency and state",
                                labels=["agency", "state"])
        for agency in agencies:
            for state in BACKLOG_STATES:
                fam.add_metric([agency, state], g.deliveries.get((agency, state), 0))
        yield fam
        yield _per(agencies, g.oldest_open_age, "crocevia_open_delivery_oldest_age_seconds",
                   "Age of the agency's oldest open delivery (pending, waiting, retrying, acknowledged)")
        fam = GaugeMetricFamily("crocevia_queue_jobs", "Open jobs per agency: due, scheduled or leased",
                                labels=["agency", "state"])
        for agency in agencies:
            for kind in ("due", "scheduled", "leased"):
                fam.add_metric([agency, kind], g.queue.get((agency, kind), 0))
        yield fam
        yield _per(agencies, g.oldest_due_age, "crocevia_queue_oldest_due_age_seconds",
                   "How long the agency's oldest due job has waited for a worker")
        yield GaugeMetricFamily("crocevia_outbox_unpublished_jobs", "Due outbox rows not yet published",
                                value=g.outbox_unpublished)
        yield GaugeMetricFamily("crocevia_outbox_lag_seconds",
                                "How long the oldest due, unpublished outbox row has waited", value=g.outbox_lag)
        fam = GaugeMetricFamily("crocevia_notifier_backlog_events", "Events not yet pushed to a portal",
                                labels=["portal"])
        for portal, count in sorted(g.notifier_backlog.items()):
            fam.add_metric([portal], count)
        yield fam
        yield _per(sorted(g.notifier_oldest_age), g.notifier_oldest_age, "crocevia_notifier_oldest_age_seconds",
                   "Age of the oldest event not yet pushed to the portal", label="portal")
        circuits = {agency: (state, updated) for agency, state, updated in g.circuits}
        state_fam = GaugeMetricFamily("crocevia_circuit_state", "1 for the agency's circuit state as last reported",
                                      labels=["agency", "state"])
        stale_fam = GaugeMetricFamily("crocevia_circuit_stale",
                                      "1 when no worker has reported the agency's circuit recently", labels=["agency"])
        now = self._clock()
        for agency in agencies:
            state, updated = circuits.get(agency, ("closed", None))
            for s in _CIRCUIT_STATES:
                state_fam.add_metric([agency, s], 1 if s == state else 0)
            stale_fam.add_metric([agency], 1 if updated is not None and now - updated > self._stale_after else 0)
        yield state_fam
        yield stale_fam


class _Published(Collector):
    def __init__(self, read: Callable[[], int]) -> None:
        self._read = read

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        yield CounterMetricFamily("crocevia_relay_published", "Outbox rows published to the broker (confirmed)",
                                  value=self._read())


def _per(keys: Sequence[str], values: dict[str, float], name: str, doc: str, label: str = "agency") -> Any:
    fam = GaugeMetricFamily(name, doc, labels=[label])
    for key in keys:
        fam.add_metric([key], round(values.get(key, 0.0), 3))
    return fam
