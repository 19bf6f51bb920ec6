"""The portals' agency health feed over real HTTP (issue 11, item 6): a down agency, one in a
maintenance window, one answering, and the windows to come."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx

from cli.client import PortalClient
from config.settings import PROJECT_ROOT, MaintenanceWindowSettings
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_settings

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"


def _hhmm(moment: datetime) -> str:
    return moment.strftime("%H:%M")


def test_health_feed_shows_down_maintenance_and_up_agencies(database_url: str, sims) -> None:  # type: ignore[no-untyped-def]
    """CCIAA answers 503 to everything: down. INPS is inside a maintenance window: maintenance,
    with the window's end. RUNTS answers in ~50 ms: up, median and success ratio from the last
    hour. INAIL's next window is listed ahead. Unsigned callers get 401."""
    now = datetime.now(timezone.utc).replace(second=0, microsecond=0)
    inside = MaintenanceWindowSettings(days="*", start=_hhmm(now - timedelta(minutes=30)),
                                       end=_hhmm(now + timedelta(minutes=30)), tz="UTC")
    later_start = now + timedelta(hours=2)
    later = MaintenanceWindowSettings(days="*", start=_hhmm(later_start),
                                      end=_hhmm(later_start + timedelta(hours=1)), tz="UTC")
    settings = hub_settings(database_url, {a: sims.soap_endpoint(a) for a in sims.urls})
    agencies = dict(settings.agencies)
    agencies["inps"] = agencies["inps"].model_copy(update={"maintenance": [inside]})
    agencies["inail"] = agencies["inail"].model_copy(update={"maintenance": [later]})
    settings = settings.model_copy(update={
        "agencies": agencies, "metrics": settings.metrics.model_copy(update={"store_ttl": 0.0})})
    sims.set_faults("cciaa", [{"operation": "*", "kind": "http_status", "status": 503}])
    sims.set_faults("runts", [{"operation": "*", "kind": "latency", "delay_ms": 50}])
    with RunningHub(settings) as hub, PortalClient(hub.base_url, TEST_PORTAL_KEY) as client:
        unsigned = httpx.get(f"{hub.base_url}/v1/agencies/health")
        assert unsigned.status_code == 401
        assert unsigned.headers["content-type"] == "application/problem+json"
        # A deposit goes to RUNTS alone; a social enterprise to the Registro Imprese, whose
        # communication to RUNTS then waits (held) for a chamber that never answers.
        refs = [client.submit((EXAMPLES / name).read_bytes()).json()["reference"]
                for name in ("runts_deposit_accounts.xml", "runts_registration.xml")]
        views = client.wait_settled(refs, timeout=40)
        states = [{r["agency"]: r["state"] for r in views[ref]["recipients"]} for ref in refs]
        assert states == [{"runts": "protocolled"}, {"cciaa": "undeliverable", "runts": "held"}]

        response = client.agency_health()
        assert response.status_code == 200, response.text
        body = response.json()
    assert body["generatedAt"].endswith("Z")
    feed = {a["agency"]: a for a in body["agencies"]}
    assert set(feed) == {"cciaa", "inail", "inps", "runts"}

    assert feed["cciaa"]["state"] == "down"
    assert feed["cciaa"]["lastHour"]["calls"] >= 3
    assert feed["cciaa"]["lastHour"]["successRatio"] == 0.0

    assert feed["inps"]["state"] == "maintenance"
    until = datetime.fromisoformat(feed["inps"]["maintenanceUntil"].replace("Z", "+00:00"))
    assert until == now + timedelta(minutes=30)
    assert feed["inps"]["upcomingMaintenance"][0]["end"] == feed["inps"]["maintenanceUntil"]

    assert feed["runts"]["state"] == "up"
    assert feed["runts"]["lastHour"] == {"calls": 1, "successRatio": 1.0,
                                         "medianAnswerMs": feed["runts"]["lastHour"]["medianAnswerMs"]}
    assert feed["runts"]["lastHour"]["medianAnswerMs"] >= 50

    assert feed["inail"]["state"] == "up" and feed["inail"]["lastHour"]["calls"] == 0
    upcoming = feed["inail"]["upcomingMaintenance"][0]
    assert datetime.fromisoformat(upcoming["start"].replace("Z", "+00:00")) == later_start
    assert datetime.fromisoformat(upcoming["end"].replace("Z", "+00:00")) == later_start + timedelta(hours=1)
