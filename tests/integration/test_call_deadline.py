"""The whole-call deadline of the agency clients against a real trickling server on loopback
(issue 10, item 4), with both transports of `[http] pool`.

The server sends a reply's head at once, then one body byte every 100 ms: each gap is far
inside the read timeout, so only a bound on the whole call can end it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from adapters.base import ErrorContext, classify_httpx_error
from adapters.deadline import CallDeadlineExceeded
from wiring.agencies import agency_http_client
from config.lease_budget import LeaseTooShortError, check_lease_budget, worst_pass_seconds
from config.settings import AgencySettings, HttpSettings, RetrySettings, Settings
from domain.errors import OutcomeUnknown

DEADLINE = 1.5
#: Seconds between two body bytes; 200 bytes would take 20 s.
INTERVAL = 0.1
BODY_BYTES = 200


class TricklingAgency:
    """HTTP/1.1 on loopback: `/ok` answers at once (keep-alive), `/trickle` drips its body.

    Each connection gets a number, sent back in `X-Connection`, so a test sees which
    connection carried a request; `closed_at` records when a trickling connection was closed
    by the client.
    """

    def __init__(self) -> None:
        self.connections = 0
        self.trickles = 0
        self.closed_at: float | None = None
        self.closed = asyncio.Event()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                path = lines[0].split(" ")[1]
                length = next((int(v) for k, _, v in (h.partition(":") for h in lines[1:])
                               if k.strip().lower() == "content-length"), 0)
                await reader.readexactly(length)
                if path == "/trickle":
                    await self._trickle(reader, writer, number)
                    return
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Connection: %d\r\n\r\nok" % number)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _trickle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, number: int) -> None:
        self.trickles += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: %d\r\n"
                     b"X-Connection: %d\r\n\r\n" % (BODY_BYTES, number))
        for _ in range(BODY_BYTES):
            writer.write(b"<")
            await writer.drain()
            try:
                # The pause between bytes doubles as the watch for the client hanging up.
                if await asyncio.wait_for(reader.read(1), INTERVAL) == b"":
                    break
            except TimeoutError:
                continue
        self.closed_at = time.monotonic()
        self.closed.set()


@pytest.mark.parametrize("pool", ["aiohttp", "httpx"])
def test_a_trickling_reply_ends_at_the_call_deadline_and_its_connection_is_dropped(pool: str) -> None:
    """The call ends at the deadline as outcome-unknown; the agency sees that connection
    closed, and the next call goes out on a new one."""

    async def main() -> None:
        agency = TricklingAgency()
        await agency.start()
        conf = AgencySettings(endpoint=agency.url, read_timeout=2.0, call_deadline=DEADLINE)
        client = agency_http_client(conf, 4, HttpSettings(pool=pool))
        try:
            warm = await client.get(f"{agency.url}/ok")
            assert warm.text == "ok" and warm.headers["x-connection"] == "1"
            started = time.monotonic()
            with pytest.raises(CallDeadlineExceeded) as info:
                await client.post(f"{agency.url}/trickle", content=b"<msg/>")
            ended = time.monotonic()
            assert DEADLINE <= ended - started < DEADLINE + 0.5
            error = classify_httpx_error(info.value, ErrorContext("inps", "RichiestaDurc", "d1"))
            assert isinstance(error, OutcomeUnknown) and "deadline" in error.text
            # The agency sees the connection closed at the deadline, not at the reply's end.
            await asyncio.wait_for(agency.closed.wait(), 2.0)
            assert agency.closed_at is not None and agency.closed_at - ended < 1.0
            after = await client.get(f"{agency.url}/ok")
            assert after.text == "ok" and after.headers["x-connection"] == "2"
            assert agency.connections == 2 and agency.trickles == 1
        finally:
            await client.aclose()
            await agency.stop()

    asyncio.run(main())


def test_a_prompt_reply_is_read_whole_within_the_deadline() -> None:
    """Under the deadline nothing changes: body, status and elapsed time as before."""

    async def main() -> None:
        agency = TricklingAgency()
        await agency.start()
        client = agency_http_client(AgencySettings(endpoint=agency.url, call_deadline=DEADLINE), 2,
                              HttpSettings(pool="httpx"))
        try:
            reply = await client.post(f"{agency.url}/ok", content=b"x")
            assert reply.status_code == 200 and reply.content == b"ok"
            assert reply.elapsed.total_seconds() < DEADLINE
        finally:
            await client.aclose()
            await agency.stop()

    asyncio.run(main())


# -- the lease outlives the pass ------------------------------------------------------------------


def _settings(lease: float, **agency: object) -> Settings:
    conf = AgencySettings(endpoint="http://127.0.0.1:1/soap", **agency)  # type: ignore[arg-type]
    base = Settings()
    return base.model_copy(update={"agencies": {"inps": conf},
                                   "worker": base.worker.model_copy(update={"lease_seconds": lease})})


def test_the_worst_pass_counts_every_try_at_its_deadline_and_the_waits() -> None:
    """3 tries of 15 s and 2 waits of up to 2 s: 49 s, inside the default 60 s lease."""
    conf = AgencySettings(endpoint="http://x", call_deadline=15.0, retry=RetrySettings(attempts=3, max_wait=2.0))
    assert worst_pass_seconds(conf) == 49.0
    check_lease_budget(_settings(60.0, call_deadline=15.0), ["inps"])


def test_a_lease_shorter_than_the_worst_pass_refuses_to_start() -> None:
    """The message names the lease and the agency settings that make the pass long."""
    settings = _settings(20.0, call_deadline=10.0)
    with pytest.raises(LeaseTooShortError) as info:
        check_lease_budget(settings, ["inps"])
    text = str(info.value)
    for name in ("worker.lease_seconds", "agencies.inps", "call_deadline", "retry.attempts", "retry.max_wait"):
        assert name in text
    from bootstrap import build_hub

    with pytest.raises(LeaseTooShortError):
        build_hub(settings, migrate=False)
