"""The API request counters: same series and counts, label children looked up once."""

from __future__ import annotations

from typing import Any

import pytest

from service.metrics import HubMetrics


def _value(m: HubMetrics, name: str, labels: dict[str, str]) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_requests_are_counted_by_method_and_status_and_submissions_by_status() -> None:
    m = HubMetrics()
    for _ in range(3):
        m.record_request("POST", "/v1/filings", 202)
    m.record_request("POST", "/v1/filings", 422)
    m.record_request("POST", "/v1/other", 404)
    m.record_request("BREW", "/", 405)
    assert _value(m, "crocevia_http_requests_total", {"method": "POST", "status": "202"}) == 3
    assert _value(m, "crocevia_http_requests_total", {"method": "POST", "status": "404"}) == 1
    assert _value(m, "crocevia_http_requests_total", {"method": "other", "status": "405"}) == 1
    assert _value(m, "crocevia_intake_requests_total", {"status": "202"}) == 3
    assert _value(m, "crocevia_intake_requests_total", {"status": "422"}) == 1
    # A POST elsewhere is no submission: no intake series for its status, not even at zero.
    assert _value(m, "crocevia_intake_requests_total", {"status": "404"}) is None


def test_label_children_are_looked_up_once_per_label_values(monkeypatch: pytest.MonkeyPatch) -> None:
    m = HubMetrics()
    calls: list[tuple[Any, ...]] = []
    for counter in (m.http, m.intake):
        real = counter.labels

        def counting(*values: Any, _real: Any = real) -> Any:
            calls.append(values)
            return _real(*values)

        monkeypatch.setattr(counter, "labels", counting)
    for _ in range(50):
        m.record_request("POST", "/v1/filings", 202)
        m.record_request("GET", "/v1/filings/x", 200)
    assert sorted(calls) == [("202",), ("GET", "200"), ("POST", "202")]
    assert _value(m, "crocevia_http_requests_total", {"method": "GET", "status": "200"}) == 50
    assert _value(m, "crocevia_intake_requests_total", {"status": "202"}) == 50
