"""What went over the wire in one try is kept within its bound, and only inside a try."""

from __future__ import annotations

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
