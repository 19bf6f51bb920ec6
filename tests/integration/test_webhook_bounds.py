"""A portal's answer to a notification is not read beyond a small bound (issue 10, item 5:
everything read from outside is bounded), over a real loopback portal; its status and its
Retry-After are read the same whichever way the callback goes: the notifier's own client (on
aiohttp, its direct path) or a plain httpx client."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from adapters.webhook import MAX_ANSWER_BYTES, WebhookFailed, WebhookSender, WebhookTarget
from config.settings import load_settings
from tests.agency_server import Reply, agency_server
from tests.support import wait_for
from wiring.notifications import callback_client

TOTAL = 64 * 1024 * 1024

#: The two ways a callback goes out: the notifier's client as the hub builds it, and httpx's own.
CLIENTS: dict[str, Callable[[], httpx.AsyncClient]] = {
    "notifier's client": lambda: callback_client(load_settings(None)),
    "httpx": lambda: httpx.AsyncClient(timeout=httpx.Timeout(10.0), trust_env=False),
}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("status", [200, 500])
async def test_a_huge_answer_is_not_read(status: int, client: str) -> None:
    """A portal answering 64 MB gets its status read, not its body; 2xx is still success."""
    with agency_server(lambda _r: Reply(status, b"x" * TOTAL, stream=True)) as portal:
        async with CLIENTS[client]() as http:
            sender = WebhookSender(http, {"p": WebhookTarget(portal.url, b"secret")})
            if status == 200:
                await sender.send("p", "evt-1", b'{"event": 1}')
            else:
                with pytest.raises(WebhookFailed, match="HTTP 500"):
                    await sender.send("p", "evt-1", b'{"event": 1}')
        assert len(portal.received) == 1
        wait_for(lambda: portal.written, timeout=10, what="the portal's write to end")
    # What the kernel buffers between the two sockets is all the portal could write.
    assert MAX_ANSWER_BYTES < TOTAL and portal.written[0] < TOTAL // 2


@pytest.mark.anyio
@pytest.mark.parametrize("client", CLIENTS)
async def test_a_portal_asking_to_wait_has_its_retry_after_carried_to_the_notifier(client: str) -> None:
    """503 with `Retry-After: 7`: the callback fails with the portal's wish, which the
    notifier's schedule honours; the event goes out signed, with its id."""
    with agency_server(lambda _r: Reply(503, b'{"busy": true}', headers={"Retry-After": "7"})) as portal:
        async with CLIENTS[client]() as http:
            sender = WebhookSender(http, {"p": WebhookTarget(portal.url, b"secret")})
            with pytest.raises(WebhookFailed, match="HTTP 503") as failed:
                await sender.send("p", "evt-7", b'{"event": 7}')
    assert failed.value.retry_after == 7.0
    (received,) = portal.received
    assert received.headers["x-crocevia-event-id"] == "evt-7" and received.body == b'{"event": 7}'
    assert received.headers["x-crocevia-signature"].startswith("t=")
