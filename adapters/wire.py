"""What went over the wire in one try: the request body sent and the reply body received,
each cut to a bound, for operators to read in a filing's history.

`read_reply` (every call to an agency goes through it) records into the capture that
`deliver_with_retries` opens around each try; outside a capture nothing is kept. A context
variable carries it, so the adapters' signatures do not change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["KEEP_WIRE_BYTES", "WireCapture", "capturing", "record_received", "record_sent"]

#: The most of each body kept per try (bytes): a SOAP envelope with its WS-Security header
#: fits; a larger one is cut, and says so. Bounded, as everything read from outside is.
KEEP_WIRE_BYTES = 32_768
_MARK = "\n… [cut: {size} bytes in all]"


@dataclass
class WireCapture:
    """The last request body sent and reply body received within one try (text, bounded)."""

    limit: int = KEEP_WIRE_BYTES
    sent: str | None = None
    received: str | None = None

    def _cut(self, body: bytes) -> str:
        text = body[: self.limit].decode("utf-8", errors="replace")
        return text + _MARK.format(size=len(body)) if len(body) > self.limit else text


_current: ContextVar[WireCapture | None] = ContextVar("crocevia_wire_capture", default=None)


@contextmanager
def capturing(limit: int = KEEP_WIRE_BYTES) -> Iterator[WireCapture]:
    """Keep what the calls made inside the block send and receive."""
    capture = WireCapture(limit)
    token = _current.set(capture)
    try:
        yield capture
    finally:
        _current.reset(token)


def record_sent(body: bytes) -> None:
    """The body of a request about to be sent (a new request forgets the previous reply)."""
    capture = _current.get()
    if capture is not None:
        capture.sent, capture.received = capture._cut(body), None


def record_received(body: bytes) -> None:
    """The (decoded) body of the reply, read within its size bound."""
    capture = _current.get()
    if capture is not None:
        capture.received = capture._cut(body)
