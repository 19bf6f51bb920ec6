"""The pure parts of observability: upcoming maintenance windows, the health states a portal
sees, and what `/metrics` says when the store cannot be read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from prometheus_client.parser import text_string_to_metric_families

from service.agency_health import AgencyHealthFeed
from service.maintenance import MaintenanceCalendar, MaintenanceWindow
from service.metrics import HubMetrics, StoreGaugeCollector
from service.ports import AgencyStatus

ROME = ZoneInfo("Europe/Rome")


def _epoch(*args: int) -> float:
    return datetime(*args, tzinfo=ROME).timestamp()


def test_upcoming_windows_are_listed_in_order_merged_and_bounded() -> None:
    """From Saturday 22:00: the window holding midnight (23:00-01:00, chained to 01:00-02:00)
    comes first as one span, then next Saturday's; nothing beyond the horizon."""
    night = MaintenanceWindow.parse("sat", "23:00", "01:00")
    early = MaintenanceWindow.parse("sun", "01:00", "02:00")
    calendar = MaintenanceCalendar([night, early])
    now = _epoch(2026, 11, 28, 22, 0)
    spans = calendar.upcoming(now, 8 * 86_400)
    assert spans == [(_epoch(2026, 11, 28, 23, 0), _epoch(2026, 11, 29, 2, 0)),
                     (_epoch(2026, 12, 5, 23, 0), _epoch(2026, 12, 6, 2, 0))]
    assert calendar.upcoming(now, 3600) == []  # 23:00 is beyond a one-hour horizon
    inside = calendar.upcoming(_epoch(2026, 11, 29, 0, 30), 3600)
    assert inside == [(_epoch(2026, 11, 28, 23, 0), _epoch(2026, 11, 29, 2, 0))]  # the current one first


@dataclass
class _Answers:
    calls: int
    answered: int
    median_ms: float | None

    @property
    def success_ratio(self) -> float | None:
        return self.answered / self.calls if self.calls else None


def _status(agency: str, circuit: str = "closed", *, updated: float, throttled_until: float | None = None
            ) -> AgencyStatus:
    return AgencyStatus(agency=agency, circuit=circuit, failures=0, opened_at=None, open_until=None,
                        throttled_until=throttled_until, reported_by="worker-1",
                        updated_at=datetime.fromtimestamp(updated, timezone.utc))


def test_health_states_follow_circuit_throttle_answers_and_staleness() -> None:
    """open circuit → down; Retry-After in force → degraded; 2 of 4 answered → degraded; a
    stale open circuit says nothing (its worker stopped): the answers decide."""
    now = 1_800_000_000.0
    statuses = [
        _status("inps", "open", updated=now - 5),
        _status("inail", updated=now - 5, throttled_until=now + 60),
        _status("cciaa", updated=now - 5),
        _status("runts", "open", updated=now - 600),
    ]
    answers = {"inps": _Answers(5, 0, None), "inail": _Answers(4, 4, 10.0), "cciaa": _Answers(4, 2, 30.0),
               "runts": _Answers(10, 10, 20.0)}
    feed = AgencyHealthFeed(agencies=["cciaa", "inail", "inps", "runts"], statuses=lambda: statuses,
                            answers=lambda since, names: answers, calendars={}, stale_after=60.0,
                            clock=lambda: now, wall=lambda: now)
    body = {a["agency"]: a for a in feed.read()["agencies"]}
    assert {name: a["state"] for name, a in body.items()} == {
        "inps": "down", "inail": "degraded", "cciaa": "degraded", "runts": "up"}
    assert body["runts"]["circuit"] == "unknown"
    assert body["cciaa"]["lastHour"] == {"calls": 4, "successRatio": 0.5, "medianAnswerMs": 30.0}


def test_metrics_say_the_store_is_down_instead_of_failing_the_scrape() -> None:
    """A store that cannot be read gives `crocevia_store_up 0` and the process's own counters,
    never a failed scrape."""
    def unreachable() -> None:
        raise ConnectionError("database away")

    metrics = HubMetrics()
    metrics.registry.register(StoreGaugeCollector(unreachable, ["inps"], ttl=0.0))
    metrics.record_request("POST", "/v1/filings", 503)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    assert families["crocevia_store_up"].samples[0].value == 0
    assert "crocevia_deliveries" not in families
    intake = families["crocevia_intake_requests"].samples
    assert [(s.labels, s.value) for s in intake if s.name.endswith("_total")] == [({"status": "503"}, 1.0)]


def test_request_labels_stay_bounded_whatever_the_client_sends() -> None:
    """An invented HTTP method is counted as `other`, not as a new label value."""
    metrics = HubMetrics()
    metrics.record_request("BREW", "/coffee", 405)
    metrics.record_request("GET", "/healthz", 200)
    families = {f.name: f for f in text_string_to_metric_families(metrics.render().decode())}
    methods = {s.labels["method"] for s in families["crocevia_http_requests"].samples}
    assert methods == {"other", "GET"}
