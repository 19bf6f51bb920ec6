"""docker-compose.yml: every part of the scaled-out hub, health-checked, configured by environment."""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

import pytest
import yaml

from config.settings import PROJECT_ROOT

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
LONG_RUNNING = ("postgres", "rabbitmq", "simulators", "api", "relay", "worker")
HUB_SERVICES = ("api", "relay", "worker", "migrate")


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_every_part_of_the_hub_is_a_service(services: dict[str, Any]) -> None:
    """RabbitMQ with management, PostgreSQL, API, relay, workers, simulators (and the migration)."""
    assert set(LONG_RUNNING) | {"migrate"} <= set(services)
    assert "management" in services["rabbitmq"]["image"]
    assert services["worker"]["deploy"]["replicas"] >= 2


def test_long_running_services_have_health_checks(services: dict[str, Any]) -> None:
    """Each long-running service says how to tell it is healthy."""
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck", {})
        assert check.get("test"), name


def test_hub_services_are_configured_by_environment_and_run_real_commands(services: dict[str, Any]) -> None:
    """The hub's containers get their settings from the environment and call hub.py commands that exist."""
    from hub import cli

    for name in HUB_SERVICES:
        env = services[name]["environment"]
        assert env["TRANSPORT__KIND"] == "rabbitmq", name
        assert env["DATABASE__URL"].startswith("postgresql+psycopg://"), name
        assert all(env[f"AGENCIES__{a}__ENDPOINT"] for a in ("INPS", "INAIL", "CCIAA", "RUNTS")), name
        command = services[name]["command"]
        assert command[:2] == ["python", "hub.py"] and command[2] in cli.commands, (name, command)
    for name in ("relay", "worker"):
        test = services[name]["healthcheck"]["test"]
        assert test[-1] in cli.commands, test
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


@pytest.mark.skipif(not (shutil.which("docker-compose") or shutil.which("docker")), reason="no compose client")
def test_the_compose_client_accepts_the_file() -> None:
    """`docker compose config` (or docker-compose v1) validates it where a client is installed."""
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, timeout=60)
        if probe.returncode != 0:
            continue  # e.g. a docker client without the compose plugin
        result = subprocess.run([*command, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                                timeout=60, cwd=PROJECT_ROOT)
        assert result.returncode == 0, result.stderr
        return
    pytest.skip("no working compose client (docker compose plugin or docker-compose)")
