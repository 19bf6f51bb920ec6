"""A misbehaving agency for tests: a real HTTP server on loopback answering what the test says.

Each request is recorded (method, path, headers, body); the test's `answer` function turns it
into a reply, so a reply can echo the message id it received. A reply without a
`Content-Length` is streamed in chunks and its connection closed, so a test can see how much
of it the hub bothered to read (`written`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["Answer", "Recorded", "Reply", "agency_server"]


@dataclass(frozen=True)
class Recorded:
    """One request the agency received."""

    method: str
    path: str
    headers: dict[str, str]  #: lower-case names
    body: bytes


@dataclass(frozen=True)
class Reply:
    """What to answer: `stream` sends the body in chunks without a Content-Length."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = False


Answer = Callable[[Recorded], Reply]


@dataclass
class AgencyServer:
    """The running server: `url`, what it `received`, how many body bytes it `written`."""

    url: str
    received: list[Recorded] = field(default_factory=list)
    written: list[int] = field(default_factory=list)


def _handler(server: AgencyServer, answer: Answer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet test output
            pass

        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            recorded = Recorded(self.command, self.path,
                                {k.lower(): v for k, v in self.headers.items()},
                                self.rfile.read(length))
            server.received.append(recorded)
            reply = answer(recorded)
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            if not reply.stream:
                self.send_header("Content-Length", str(len(reply.body)))
            else:
                self.send_header("Connection", "close")
            self.end_headers()
            sent = 0
            try:
                for start in range(0, len(reply.body), 65536):
                    self.wfile.write(reply.body[start:start + 65536])
                    sent += len(reply.body[start:start + 65536])
            except (BrokenPipeError, ConnectionResetError):
                pass  # the hub stopped reading: what it read is in `written`
            server.written.append(sent)
            if reply.stream:
                self.close_connection = True

        do_POST = do_GET = _serve  # noqa: N815 - http.server's naming

    return Handler


@contextmanager
def agency_server(answer: Answer, path: str = "") -> Iterator[AgencyServer]:
    """Serve `answer` on a free loopback port until the block ends; `url` ends with `path`."""
    holder = AgencyServer(url="")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(holder, answer))
    httpd.daemon_threads = True
    holder.url = f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
