"""What went over the wire in one try is kept within its bound, and only inside a try."""

from __future__ import annotations

import contextvars
import gc
import weakref

from adapters.wire import capturing, record_received, record_sent


def test_bodies_are_kept_within_the_bound_and_say_when_cut() -> None:
    """A body longer than the bound is cut and marked with its full size; a new request
    forgets the previous reply."""
    with capturing(limit=8) as wire:
        record_sent(b"<short/>")
        record_received(b"0123456789abcdef")
        assert wire.sent == "<short/>"
        assert wire.received == "01234567\n… [cut: 16 bytes in all]"
        record_sent("é".encode() * 3)
        assert (wire.sent, wire.received) == ("ééé", None)


def test_nothing_is_kept_outside_a_try() -> None:
    """Calls made outside a capture (polls, health checks) record nothing anywhere."""
    record_sent(b"outside")
    with capturing() as wire:
        pass
    record_received(b"outside")
    assert (wire.sent, wire.received) == (None, None)


def test_a_context_copied_during_a_try_keeps_nothing_of_it_once_it_ends() -> None:
    """asyncio gives each callback it registers a copy of the current context; a connection
    opened during a try keeps its reading callback, and that copy, while it is kept alive. The
    copy must not keep the try's bodies (a worker keeps hundreds of connections) nor write into
    a try that has ended."""
    with capturing() as wire:
        record_sent(b"<envelope/>")
        kept_by_a_connection = contextvars.copy_context()
        record_received(b"<receipt/>")
    kept_by_a_connection.run(record_received, b"<a later reply/>")
    assert (wire.sent, wire.received) == ("<envelope/>", "<receipt/>")
    ended = weakref.ref(wire)
    del wire
    gc.collect()
    assert ended() is None, "the copied context still holds the ended try's capture"
    assert len(kept_by_a_connection) >= 1  # the copy itself lives on, as a connection's would
