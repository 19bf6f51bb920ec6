"""Retry now from the console against the simulators: under an agency's Retry-After the form
is refused until *force* is ticked with a reason; forced, the filing is protocolled once."""

from __future__ import annotations

import re

import httpx

from tests.e2e.test_delivery_semantics import (  # noqa: F401 - fixtures
    DURC,
    HubFactory,
    _by_agency,
    _one_effect,
    _settled,
    _submit,
    _wait_view,
    client_for,
    make_hub,
)
from tests.support import wait_for

PASSWORD = "correct horse battery staple"


def test_retry_now_under_retry_after_needs_force_and_a_reason(
        make_hub: HubFactory, client_for, sims) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """409 page under Retry-After, 422 when forced without a reason, then protocolled."""
    sims.set_faults("inps", [{"kind": "http_status", "status": 429, "retry_after": 3600, "times": 1}])
    with make_hub() as hub:
        assert hub.hub.operators is not None
        hub.hub.operators.add("mrossi", "operator", "operator:setup", password=PASSWORD)
        portal = client_for(hub)
        ref = _submit(portal, DURC)
        _wait_view(portal, ref, lambda v: _by_agency(v)["inps"]["state"] == "retrying", what="inps retrying")
        wait_for(lambda: hub.hub.store.throttled_until("inps"), what="the throttle reported")
        path = f"/console/filings/{ref}/recipients/inps/retry"
        with httpx.Client(base_url=hub.base_url, timeout=10, trust_env=False) as client:
            assert client.post("/console/login", data={"name": "mrossi", "password": PASSWORD}).status_code == 303
            confirm = client.get(path)
            assert confirm.status_code == 200 and "Retry-After" in confirm.text and 'name="force"' in confirm.text
            token = re.search(r'name="csrf_token" value="([^"]+)"', confirm.text).group(1)  # type: ignore[union-attr]

            throttled = client.post(path, data={"csrf_token": token})
            assert throttled.status_code == 409 and "spunta «forza»" in throttled.text
            no_reason = client.post(path, data={"csrf_token": token, "force": "on"})
            assert no_reason.status_code == 422 and "Serve una motivazione" in no_reason.text
            assert sims.ledger("inps")["calls"] == 1

            forced = client.post(path, data={"csrf_token": token, "force": "on", "reason": "INPS confirmed by phone"})
            assert forced.status_code == 303, forced.text
        view = _settled(portal, ref, "protocolled")
        _one_effect(sims, _by_agency(view)["inps"], ref)
        assert sims.ledger("inps")["calls"] == 2
