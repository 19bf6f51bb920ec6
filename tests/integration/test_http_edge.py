"""The HTTP server's own limits (`[api]`): header read timeout, keep-alive, connections, head size.

A real hub listens on loopback; the clients are raw sockets, since what is tested is what a
misbehaving client does below HTTP libraries (slowloris, idle connections, huge heads).
"""

from __future__ import annotations

import re
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.client import PortalClient
from config.settings import PROJECT_ROOT
from tests.support import TEST_PORTAL_KEY, RunningHub, hub_settings, wait_for

FILING = (PROJECT_ROOT / "schemas" / "filing" / "v1" / "examples" / "durc_request.xml").read_bytes()
#: A request head that is never finished: one byte of it a second.
_SLOW_HEAD = b"POST /v1/filings HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200


def _hub(tmp_path: Path, sims: Any, **api: Any) -> RunningHub:
    settings = hub_settings(f"sqlite:///{tmp_path / 'crocevia.db'}",
                            {agency: sims.soap_endpoint(agency) for agency in sims.urls})
    return RunningHub(settings.model_copy(update={"api": settings.api.model_copy(update=api)}))


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _closed_within(sock: socket.socket, timeout: float) -> tuple[bool, bytes]:
    """Read until the server closes (True) or `timeout` passes (False); returns what it sent."""
    sock.settimeout(timeout)
    received = b""
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(4096)
            if not chunk:
                return True, received
            received += chunk
    except (TimeoutError, socket.timeout):
        return False, received
    except ConnectionResetError:
        return True, received
    return False, received


def _health_on(sock: socket.socket) -> None:
    """One whole `GET /health` exchange on an open connection (kept alive)."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    received = b""
    while not received.endswith(b'{"status":"ok"}'):
        chunk = sock.recv(4096)
        assert chunk, f"closed after {received!r}"
        received += chunk
    assert received.startswith(b"HTTP/1.1 200 ")


class _SlowClients:
    """`count` connections that each send one byte of a request head a second, from a thread."""

    def __init__(self, port: int, count: int, bound: float) -> None:
        self.port, self.count, self.bound = port, count, bound
        self.opened_at: dict[int, float] = {}
        self.closed_at: dict[int, float] = {}
        self.answers: dict[int, bytes] = {}
        self.opened = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _SlowClients:
        self._thread.start()
        assert self.opened.wait(30), "the slow connections were not opened"
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(self.bound + 10)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()  # epoll: hundreds of sockets, no FD_SETSIZE limit
        socks: dict[int, socket.socket] = {}
        try:
            for i in range(self.count):
                sock = _connect(self.port)
                sock.setblocking(False)
                socks[i] = sock
                self.opened_at[i] = time.monotonic()
                selector.register(sock, selectors.EVENT_READ, i)
                self._send(i, sock, 0)
            self.opened.set()
            deadline = time.monotonic() + self.bound
            offset, next_byte = 1, time.monotonic() + 1.0
            while len(self.closed_at) < self.count and time.monotonic() < deadline:
                # Wait for the server to answer or close, until the next byte is due (pacing).
                for key, _ in selector.select(timeout=max(0.0, next_byte - time.monotonic())):
                    i = key.data
                    try:
                        chunk = socks[i].recv(4096)
                    except ConnectionResetError:
                        chunk = b""
                    if chunk:
                        self.answers[i] = self.answers.get(i, b"") + chunk
                    else:
                        self._closed(i, selector, socks[i])
                if time.monotonic() >= next_byte:
                    for i, sock in list(socks.items()):
                        if i not in self.closed_at:
                            self._send(i, sock, offset, selector)
                    offset, next_byte = offset + 1, next_byte + 1.0
        finally:
            self.opened.set()
            for sock in socks.values():
                sock.close()
            selector.close()

    def _send(self, i: int, sock: socket.socket, offset: int, selector: selectors.BaseSelector | None = None) -> None:
        try:
            sock.send(_SLOW_HEAD[offset:offset + 1])
        except OSError:  # the server closed it meanwhile
            if selector is not None:
                self._closed(i, selector, sock)

    def _closed(self, i: int, selector: selectors.BaseSelector, sock: socket.socket) -> None:
        if i not in self.closed_at:
            self.closed_at[i] = time.monotonic()
            selector.unregister(sock)


def test_slow_headers_are_closed_within_the_header_timeout_while_filings_are_served(
    tmp_path: Path, sims: Any
) -> None:
    """300 connections trickling a request head (1 byte/s) are each closed with 408 within the
    header timeout, while signed filings sent meanwhile are accepted (202)."""
    header_timeout = 2.0
    with _hub(tmp_path, sims, header_timeout=header_timeout) as hub, \
            PortalClient(hub.base_url, TEST_PORTAL_KEY) as client:
        # Given 300 connections sending their headers one byte a second
        with _SlowClients(hub.port, 300, bound=header_timeout + 8) as slow:
            # When real filings arrive while they are all open
            statuses = []
            for _ in range(3):
                statuses.append(client.submit(FILING).status_code)
            served_at = time.monotonic()
        # Then the filings were served while slow connections were still open
        assert statuses == [202, 202, 202]
        assert len(slow.closed_at) == 300, f"only {len(slow.closed_at)} of 300 slow connections were closed"
        assert any(closed > served_at for closed in slow.closed_at.values())
        # ... and every slow connection was closed within the header timeout (plus scheduling
        # slack on a busy machine), though it kept sending
        held = [slow.closed_at[i] - slow.opened_at[i] for i in range(300)]
        assert max(held) < header_timeout + 2.0, f"a slow connection was held {max(held):.2f}s"
        assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in slow.answers.values())
        assert len(slow.answers) == 300
        assert b"application/problem+json" in slow.answers[0] and b"request-head-timeout" in slow.answers[0]
        # ... and the server still serves afterwards
        assert httpx.get(f"{hub.base_url}/health", trust_env=False).status_code == 200


def test_a_kept_alive_request_trickling_its_head_is_closed_too(tmp_path: Path, sims: Any) -> None:
    """The header timeout also bounds the second request of a kept-alive connection."""
    with _hub(tmp_path, sims, header_timeout=1.0, keep_alive_timeout=30.0) as hub, _connect(hub.port) as sock:
        _health_on(sock)
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")  # never finished
        started = time.monotonic()
        closed, answer = _closed_within(sock, 5.0)
        assert closed and answer.startswith(b"HTTP/1.1 408 ")
        assert time.monotonic() - started < 2.5


def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(tmp_path: Path, sims: Any) -> None:
    """After a response, an idle connection stays open `keep_alive_timeout` seconds, not more."""
    with _hub(tmp_path, sims, keep_alive_timeout=1.0) as hub, _connect(hub.port) as sock:
        _health_on(sock)
        started = time.monotonic()
        closed, _ = _closed_within(sock, 4.0)
        assert closed, "the idle connection was still open after 4 s"
        assert time.monotonic() - started < 2.5


@pytest.fixture
def small_hub(tmp_path: Path, sims: Any) -> Iterator[RunningHub]:
    with _hub(tmp_path, sims, max_connections=5, max_header_bytes=4096, header_timeout=30.0) as hub:
        yield hub


def test_connections_beyond_the_maximum_get_503(small_hub: RunningHub) -> None:
    """`max_connections` connections are served at once; a request on one more answers 503."""
    idle = [_connect(small_hub.port) for _ in range(4)]
    try:
        # Four open connections and this request's: five, the maximum, are served.
        assert httpx.get(f"{small_hub.base_url}/health", trust_env=False).status_code == 200
        idle.append(_connect(small_hub.port))
        wait_for(lambda: httpx.get(f"{small_hub.base_url}/health", trust_env=False).status_code == 503,
                 timeout=5, what="a sixth connection to be refused with 503")
        refused = httpx.get(f"{small_hub.base_url}/health", trust_env=False)
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["type"].endswith(":server-busy") and refused.headers["retry-after"] == "1"
    finally:
        for sock in idle:
            sock.close()
    wait_for(lambda: httpx.get(f"{small_hub.base_url}/health", trust_env=False).status_code == 200,
             timeout=5, what="the hub to serve again once the connections closed")


def test_a_request_head_beyond_the_maximum_is_refused(small_hub: RunningHub) -> None:
    """A request head larger than `max_header_bytes` answers 431 and is not served."""
    url = f"{small_hub.base_url}/health"
    assert httpx.get(url, headers={"X-Pad": "a" * 2000}, trust_env=False).status_code == 200
    refused = httpx.get(url, headers={"X-Pad": "a" * 8000}, trust_env=False)
    assert refused.status_code == 431
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"] == "urn:crocevia:problem:request-head-too-large"


def _answers_until_closed(sock: socket.socket, timeout: float) -> tuple[bool, list[bytes]]:
    """The status lines the server sent, in order, and whether it closed within `timeout`."""
    closed, received = _closed_within(sock, timeout)
    return closed, re.findall(rb"HTTP/1\.1 (\d{3}) ", received)


def test_a_pipelined_request_trickling_its_head_is_answered_408_after_the_one_before(
    tmp_path: Path, sims: Any
) -> None:
    """A second request sent in the same write as the first, its head never finished, is closed
    with 408 within the header timeout, after the first request's answer (not the keep-alive's)."""
    with _hub(tmp_path, sims, header_timeout=1.0, keep_alive_timeout=30.0) as hub, _connect(hub.port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                     b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        started = time.monotonic()
        closed, statuses = _answers_until_closed(sock, 5.0)
        assert closed and time.monotonic() - started < 2.5
        assert statuses == [b"200", b"408"]


def test_a_pipelined_head_beyond_the_maximum_is_refused_after_the_one_before(small_hub: RunningHub) -> None:
    """A too-large head pipelined behind a request is answered 431 after that request's answer,
    in order, and is not served."""
    with _connect(small_hub.port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                     b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 8000 + b"\r\n\r\n")
        closed, statuses = _answers_until_closed(sock, 5.0)
        assert closed
        assert statuses == [b"200", b"431"]


def test_a_head_that_never_ends_a_header_is_refused_once_beyond_the_maximum(small_hub: RunningHub) -> None:
    """A header sent in many writes that never ends its line is refused with 431 once the head
    passes `max_header_bytes` (the server does not buffer it without bound)."""
    with _connect(small_hub.port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ")
        try:
            for _ in range(40):  # 20 000 bytes, five times the bound, 500 at a time
                sock.sendall(b"a" * 500)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed before all was sent
        closed, received = _closed_within(sock, 5.0)
        assert closed and received.startswith(b"HTTP/1.1 431 ")
        assert b"request-head-too-large" in received


def _post_answered_unread(sock: socket.socket) -> None:
    """Send a POST of a 5-byte body to an unknown path, head only, and read its whole 404."""
    sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\n\r\n")
    answered = b""
    while not answered.endswith(b"}"):  # the whole 404 problem+json, body not yet sent
        chunk = sock.recv(4096)
        assert chunk, f"closed after {answered!r}"
        answered += chunk
    assert answered.startswith(b"HTTP/1.1 404 ")


def test_a_head_begun_after_a_body_answered_unread_is_answered_408(tmp_path: Path, sims: Any) -> None:
    """A request answered before its body was read (404 on an unknown path), the body then sent
    with the start of a next head that is never finished: closed with 408 within the header
    timeout, not held open (the keep-alive wait does not apply once bytes arrive)."""
    with _hub(tmp_path, sims, header_timeout=1.0, keep_alive_timeout=30.0) as hub, _connect(hub.port) as sock:
        _post_answered_unread(sock)
        sock.sendall(b"abcde" b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: a")
        started = time.monotonic()
        closed, statuses = _answers_until_closed(sock, 5.0)
        assert closed and time.monotonic() - started < 2.5
        assert statuses == [b"408"]


def test_an_oversize_head_read_with_the_end_of_a_body_answered_unread_is_refused(small_hub: RunningHub) -> None:
    """A request answered before its body was read (404 on an unknown path), then the rest of
    that body and a whole next head beyond `max_header_bytes` in one write: uvicorn parses that
    head within its own loop, and it is still answered 431, not served."""
    with _connect(small_hub.port) as sock:
        _post_answered_unread(sock)
        sock.sendall(b"abcde" b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 8000 + b"\r\n\r\n")
        closed, statuses = _answers_until_closed(sock, 5.0)
        assert closed
        assert statuses == [b"431"]


def test_a_malformed_request_pipelined_behind_two_is_answered_400_after_both(small_hub: RunningHub) -> None:
    """Bytes that are not HTTP, pipelined behind two requests in one write, are answered 400
    problem+json after both answers, in order (the parser reads all three at once), and the
    connection is closed."""
    with _connect(small_hub.port) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 2 + b"NOT HTTP AT ALL\r\n\r\n")
        closed, received = _closed_within(sock, 5.0)
        assert closed
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", received) == [b"200", b"200", b"400"]
        refusal = received[received.index(b"HTTP/1.1 400 "):]
        assert b"application/problem+json" in refusal and b"urn:crocevia:problem:malformed-request" in refusal


def test_a_connection_that_sends_nothing_is_answered_408(tmp_path: Path, sims: Any) -> None:
    """The header timeout runs from the connection's opening: a client that connects and never
    sends a byte is answered 408 and closed, not held until it leaves."""
    with _hub(tmp_path, sims, header_timeout=1.0, keep_alive_timeout=30.0) as hub, _connect(hub.port) as sock:
        started = time.monotonic()
        closed, statuses = _answers_until_closed(sock, 5.0)
        assert closed and time.monotonic() - started < 2.5
        assert statuses == [b"408"]


def test_heads_within_the_maximum_are_served_however_they_are_split(small_hub: RunningHub) -> None:
    """A head sent a few bytes at a time, and a head begun in the same write as the end of a
    body larger than `max_header_bytes`, are each served: only the head's own bytes count."""
    with _connect(small_hub.port) as sock:
        head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " + b"a" * 3000 + b"\r\n\r\n"
        for i in range(0, len(head), 100):
            sock.sendall(head[i:i + 100])
        sock.sendall(b"POST /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 8000\r\n\r\n" + b"b" * 8000
                     + b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        sock.sendall(b"X-Pad: " + b"c" * 3000 + b"\r\n\r\n")
        received = b""
        while received.count(b"HTTP/1.1 ") < 3 or not received.endswith(b'{"status":"ok"}'):
            chunk = sock.recv(65536)
            assert chunk, f"closed after {received!r}"
            received += chunk
        assert re.findall(rb"HTTP/1\.1 (\d{3}) ", received) == [b"200", b"404", b"200"]
