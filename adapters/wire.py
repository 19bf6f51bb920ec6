"""What went over the wire in one try: the request body sent and the reply body received,
each cut to a bound, for operators to read in a filing's history.

`read_reply` (every call to an agency goes through it) records into the capture that
`deliver_with_retries` opens around each try; outside a capture nothing is kept. A context
variable carries it, so the adapters' signatures do not change.

The variable holds the capture through a slot emptied when the try ends: asyncio gives every
callback it registers a copy of the current context, and a connection opened during a try
keeps its reading callback, with that copy, for as long as it is kept alive. Without the
slot each kept-alive connection would keep the first try's bodies (2-4 KiB; a worker keeps
hundreds of connections while agencies are slow, issue 13).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["KEEP_WIRE_BYTES", "WireCapture", "capturing", "record_received", "record_sent"]

#: The most of each body kept per try (bytes): a SOAP envelope with its WS-Security header
#: fits; a larger one is cut, and says so. Bounded, as everything read from outside is.
KEEP_WIRE_BYTES = 32_768
_MARK = "\n… [cut: {size} bytes in all]"


class WireCapture:
    """The last request body sent and reply body received within one try (text, bounded).

    The bodies are kept as the bytes given, which the call holds anyway while it is in flight,
    and turned into text when read (once the try has ended): no second copy of each envelope
    for every call waiting on an agency.
    """

    __slots__ = ("__weakref__", "_received", "_sent", "limit")

    def __init__(self, limit: int = KEEP_WIRE_BYTES) -> None:
        self.limit = limit
        self._sent: bytes | None = None
        self._received: bytes | None = None

    @property
    def sent(self) -> str | None:
        """The request body last sent, cut to the bound; None if nothing was sent."""
        return None if self._sent is None else self._cut(self._sent)

    @property
    def received(self) -> str | None:
        """The reply body to that request, cut to the bound; None if none was read."""
        return None if self._received is None else self._cut(self._received)

    def _cut(self, body: bytes) -> str:
        text = body[: self.limit].decode("utf-8", errors="replace")
        return text + _MARK.format(size=len(body)) if len(body) > self.limit else text


#: The open try's capture, in a one-item list emptied when the try ends (see the module's docstring).
_current: ContextVar[Sequence[WireCapture]] = ContextVar("crocevia_wire_capture", default=())


@contextmanager
def capturing(limit: int = KEEP_WIRE_BYTES) -> Iterator[WireCapture]:
    """Keep what the calls made inside the block send and receive."""
    capture = WireCapture(limit)
    slot = [capture]
    token = _current.set(slot)
    try:
        yield capture
    finally:
        slot.clear()  # contexts copied inside the block outlive it: they keep an empty slot
        _current.reset(token)


def record_sent(body: bytes) -> None:
    """The body of a request about to be sent (a new request forgets the previous reply)."""
    for capture in _current.get():
        capture._sent, capture._received = bytes(body), None  # the same object when it is bytes


def record_received(body: bytes) -> None:
    """The body of the reply, read within its size bound."""
    for capture in _current.get():
        capture._received = bytes(body)
