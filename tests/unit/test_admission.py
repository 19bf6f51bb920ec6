"""Admission control of the intake (api/admission.py), over an application that holds its
requests until the test lets them go."""

from __future__ import annotations

import asyncio

import httpx

from api.admission import AdmissionLimits, SubmissionAdmission


class _HeldApp:
    """An ASGI app answering 202 once `release` is set; counts the requests it saw."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def __call__(self, scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        self.entered += 1
        await self.release.wait()
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})


def _client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://hub")  # type: ignore[arg-type]


def test_submissions_beyond_the_limit_wait_then_get_503_with_retry_after() -> None:
    """Two slots, three submissions held: the third waits its bound, then 503 problem+json."""

    async def scenario() -> None:
        held = _HeldApp()
        gate = SubmissionAdmission(held, AdmissionLimits(max_inflight=2, max_wait_ms=50))
        async with _client(gate) as client:
            first = [asyncio.create_task(client.post("/v1/filings", content=b"x")) for _ in range(2)]
            while held.entered < 2:
                await asyncio.sleep(0)  # yield until both are inside the application
            refused = await client.post("/v1/filings", content=b"x")
            held.release.set()
            answers = await asyncio.gather(*first)
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith("intake-busy")
        assert [a.status_code for a in answers] == [202, 202]
        assert held.entered == 2  # the refused one never reached the handler
        assert gate.refused == 1 and gate.inflight == 0

    asyncio.run(scenario())


def test_a_waiting_submission_takes_the_slot_freed_within_its_wait() -> None:
    """One slot: the second submission waits, and is taken when the first finishes."""

    async def scenario() -> None:
        held = _HeldApp()
        gate = SubmissionAdmission(held, AdmissionLimits(max_inflight=1, max_wait_ms=10_000))
        async with _client(gate) as client:
            first = asyncio.create_task(client.post("/v1/filings", content=b"x"))
            while held.entered < 1:
                await asyncio.sleep(0)
            second = asyncio.create_task(client.post("/v1/filings", content=b"x"))
            held.release.set()
            answers = await asyncio.gather(first, second)
        assert [a.status_code for a in answers] == [202, 202]
        assert gate.refused == 0

    asyncio.run(scenario())


def test_reads_and_an_unset_gate_are_never_shed() -> None:
    """Only `POST /v1/filings` is gated; without limits nothing is."""

    async def scenario() -> None:
        held = _HeldApp()
        held.release.set()
        tight = SubmissionAdmission(held, AdmissionLimits(max_inflight=1, max_wait_ms=0))
        unset = SubmissionAdmission(held, None)
        async with _client(tight) as client:
            reads = await asyncio.gather(*(client.get("/v1/filings/x") for _ in range(5)))
        async with _client(unset) as client:
            posts = await asyncio.gather(*(client.post("/v1/filings", content=b"x") for _ in range(5)))
        assert {r.status_code for r in reads + posts} == {202}

    asyncio.run(scenario())
