"""A portal's answer to a notification is not read beyond a small bound (issue 10, item 5:
everything read from outside is bounded), over a real loopback portal."""

from __future__ import annotations

import httpx
import pytest

from adapters.webhook import MAX_ANSWER_BYTES, WebhookFailed, WebhookSender, WebhookTarget
from tests.agency_server import Reply, agency_server
from tests.support import wait_for

TOTAL = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("status", [200, 500])
async def test_a_huge_answer_is_not_read(status: int) -> None:
    """A portal answering 64 MB gets its status read, not its body; 2xx is still success."""
    with agency_server(lambda _r: Reply(status, b"x" * TOTAL, stream=True)) as portal:
        async with httpx.AsyncClient(timeout=httpx.Timeout(10.0), trust_env=False) as http:
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
