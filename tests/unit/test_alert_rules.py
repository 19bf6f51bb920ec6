"""The Prometheus files shipped in ops/prometheus: valid for promtool, and the alerts fire when
they should (`promtool test rules`). promtool comes with Debian's `prometheus` package, which
`.ci/run` installs: under CI=true its absence is a failure, elsewhere a skip."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from config.settings import PROJECT_ROOT
from tests.conftest import IN_CI

RULES_DIR = PROJECT_ROOT / "ops" / "prometheus"
#: What the issue asks the rules to watch, by alert name.
REQUIRED_ALERTS = {"CroceviaAgencyCircuitOpen", "CroceviaUndeliverableRecipients", "CroceviaOldOpenDelivery",
                   "CroceviaIntakeErrors"}


def _promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        ci_installs = "prometheus" in (PROJECT_ROOT / ".ci" / "run").read_text()
        if IN_CI and ci_installs:
            pytest.fail("promtool is missing although .ci/run installs it (Debian package prometheus)")
        pytest.skip("promtool is not installed (Debian package prometheus)")
    return found


def test_the_required_alerts_are_shipped() -> None:
    """Circuit open over 5 minutes, undeliverable recipients, old open deliveries, intake 5xx rate."""
    groups = yaml.safe_load((RULES_DIR / "alerts.yml").read_text())["groups"]
    names = {rule["alert"] for group in groups for rule in group["rules"] if "alert" in rule}
    assert REQUIRED_ALERTS <= names
    circuit = next(r for g in groups for r in g["rules"] if r.get("alert") == "CroceviaAgencyCircuitOpen")
    assert circuit["for"] == "5m"


def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    """`promtool check rules` and `promtool check config` pass."""
    promtool = _promtool()
    for args in (["check", "rules", "alerts.yml"], ["check", "config", "prometheus.yml"]):
        result = subprocess.run([promtool, *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_fire_when_they_should() -> None:
    """`promtool test rules`: a circuit open 10 minutes alerts and one open 3 minutes does not;
    undeliverable recipients, a 6-hour-old open delivery and 17 % of intake 5xx alert."""
    promtool = _promtool()
    result = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=RULES_DIR, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_scrapes_every_hub_process() -> None:
    """docker-compose.yml runs Prometheus on ops/prometheus, and the scrape config names the API,
    the relay and every worker replica on the metrics ports compose gives them."""
    compose = yaml.safe_load((PROJECT_ROOT / "docker-compose.yml").read_text())["services"]
    assert "prometheus" in compose["prometheus"]["image"]
    assert any(v.startswith("./ops/prometheus:") for v in compose["prometheus"]["volumes"])
    scrape = yaml.safe_load((RULES_DIR / "prometheus.yml").read_text())
    targets = {job["job_name"]: job for job in scrape["scrape_configs"]}
    assert targets["crocevia-api"]["static_configs"][0]["targets"] == ["api:8080"]
    relay_port = compose["relay"]["environment"]["METRICS__RELAY_PORT"]
    assert targets["crocevia-relay"]["static_configs"][0]["targets"] == [f"relay:{relay_port}"]
    worker = targets["crocevia-worker"]["dns_sd_configs"][0]
    assert worker["names"] == ["worker"] and str(worker["port"]) == compose["worker"]["environment"]["METRICS__WORKER_PORT"]
    assert "alerts.yml" in scrape["rule_files"]
