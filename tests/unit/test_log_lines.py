"""Every log event reaches the stream in one write, its newline included.

`hub.py serve`'s worker children share the API's stream. With an unbuffered stream (as under
`PYTHONUNBUFFERED=1`) an event written as its text and then its newline let two children's
events, logged at the same instant, become one line of two JSON objects: readers of the log
(one event per line) lost both.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest
import structlog

from tests.support import process_logging


class _Recording(io.StringIO):
    """A stream that keeps each write apart."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


@pytest.fixture
def stream() -> Iterator[_Recording]:
    """A hub process's logging into a recording stream, the test runner's put back after."""
    recording = _Recording()
    with process_logging(recording):
        yield recording


def test_each_event_is_one_whole_line_in_one_write(stream: _Recording) -> None:
    log = structlog.get_logger("crocevia.test")
    log.error("api_process_gone", reason="its wake socket closed")
    log.info("worker_stopped", delivered=0)
    assert len(stream.writes) == 2, stream.writes
    for written, event in zip(stream.writes, ("api_process_gone", "worker_stopped"), strict=True):
        assert written.endswith("\n") and written.count("\n") == 1
        assert json.loads(written)["event"] == event
