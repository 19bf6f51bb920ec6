"""What most end-to-end tests start from: a hub on the test database delivering to the simulators,
and a portal client signed as the test portal. A module that needs another hub defines its own
`hub` fixture, which takes precedence over this one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cli.client import PortalClient
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_settings


@pytest.fixture
def hub(database_url: str, sims) -> Iterator[RunningHub]:  # type: ignore[no-untyped-def]
    endpoints = {agency: sims.soap_endpoint(agency) for agency in sims.urls}
    with RunningHub(hub_settings(database_url, endpoints)) as running:
        yield running


@pytest.fixture
def client(hub: RunningHub) -> Iterator[PortalClient]:
    with PortalClient(hub.base_url, TEST_PORTAL_KEY) as c:
        yield c
