"""A small portal client for the hub's HTTP API (used by the CLI, the demo and benchmarks)."""

from __future__ import annotations

import time
from typing import Any

import httpx

__all__ = ["PortalClient", "TERMINAL_FILING_STATES"]

TERMINAL_FILING_STATES = frozenset({"protocolled", "partially_rejected", "rejected", "undeliverable"})


class PortalClient:
    def __init__(self, base_url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self._http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
            trust_env=False,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PortalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(self, document: bytes, *, content_type: str = "application/xml",
               idempotency_key: str | None = None) -> httpx.Response:
        headers = {"Content-Type": content_type}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return self._http.post("/v1/filings", content=document, headers=headers)

    def status(self, reference: str) -> httpx.Response:
        return self._http.get(f"/v1/filings/{reference}")

    def wait_settled(self, references: list[str], *, timeout: float = 60.0, interval: float = 0.1) -> dict[str, Any]:
        """Poll until every filing is in a final state (or `timeout`); returns the last views."""
        deadline = time.monotonic() + timeout
        views: dict[str, Any] = {}
        pending = list(references)
        while pending:
            for reference in list(pending):
                view = self.status(reference).json()
                views[reference] = view
                if view.get("state") in TERMINAL_FILING_STATES:
                    pending.remove(reference)
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(interval)
        return views
