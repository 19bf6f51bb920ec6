"""Logs: one structured event per step, the filing and delivery bound, no personal data."""

from __future__ import annotations

import re

from structlog.contextvars import merge_contextvars
from structlog.testing import capture_logs

from cli.client import PortalClient
from config.settings import PROJECT_ROOT
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_settings

EXAMPLES = PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples"


def test_delivery_logs_carry_context_and_no_tax_codes(sims, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Each delivery event names filing, delivery and agency; no tax code appears in any event."""
    document = (EXAMPLES / "business_start.xml").read_bytes()
    tax_codes = set(re.findall(rb"<taxCode>([A-Z0-9]+)</taxCode>", document))
    endpoints = {agency: sims.soap_endpoint(agency) for agency in sims.urls}
    with capture_logs(processors=[merge_contextvars]) as events:
        with RunningHub(hub_settings(f"sqlite:///{tmp_path / 'db.sqlite'}", endpoints)) as hub:
            with PortalClient(hub.base_url, TEST_PORTAL_KEY) as client:
                reference = client.submit(document).json()["reference"]
                assert client.wait_settled([reference], timeout=30)[reference]["state"] == "protocolled"
    accepted = [e for e in events if e["event"] == "filing_accepted"]
    assert accepted and accepted[0]["filing_ref"] == reference
    protocolled = [e for e in events if e["event"] == "delivery_protocolled"]
    assert {e["agency"] for e in protocolled} == {"cciaa", "inps", "inail"}
    assert all(e["filing_ref"] == reference and len(e["delivery_id"]) == 32 for e in protocolled)
    flat = repr(events).encode()
    assert not [code for code in tax_codes if code in flat]
