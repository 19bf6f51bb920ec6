"""Configure structlog once: one JSON event per line, context bound per request or job.

Libraries that log through the standard library (uvicorn, alembic) are rendered by the same
JSON renderer, so every line of the hub's output is one parseable event.

Expected faults are one line each: pika reports one refused connection attempt on seven
ERROR lines (and a lost connection on three), so its connection plumbing is quieted to the one
summary line per attempt, as a WARNING; the transport logs its own line with the retry.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, TextIO

# Imported when logging is configured: hub.py's services first mark the optional packages they
# never use (wiring/memory.py), which structlog would otherwise load on import (issue 13).
if TYPE_CHECKING:
    import structlog

__all__ = ["configure_logging", "quiet_pika"]

#: pika's connection plumbing: every line it logs about an attempt is repeated by a summary.
_PIKA_PLUMBING = ("pika.adapters.utils.connection_workflow", "pika.adapters.utils.io_services_utils")
#: The loggers that write pika's summary of a failed attempt or a lost connection.
_PIKA_SUMMARIES = ("pika.adapters.base_connection", "pika.adapters.blocking_connection")
#: Summary lines kept, as warnings: an attempt failed (async, blocking), a connection was lost.
_PIKA_KEEP = ("Self-initiated stack bring-up failed", "Connection workflow failed", "connection_lost")
#: Lines that only announce the summary that follows them.
_PIKA_DROP = ("Full-stack connection workflow failed", "Transport indicated EOF", "Error in _create_connection")


class _PikaOneLine(logging.Filter):
    """One WARNING line per failed connection attempt or lost connection; pika's other lines
    (a channel closed by the broker, a protocol error) pass as they are."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        if message.startswith(_PIKA_DROP):
            return False
        if message.startswith(_PIKA_KEEP) and record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = None
        return True


def quiet_pika(level: int = logging.WARNING) -> None:
    """Keep pika's loggers at WARNING or above and its connection faults to one line each
    (idempotent: the filters are installed once)."""
    logging.getLogger("pika").setLevel(max(level, logging.WARNING))
    for name in _PIKA_PLUMBING:
        logging.getLogger(name).setLevel(logging.CRITICAL)
    for name in _PIKA_SUMMARIES:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _PikaOneLine) for f in logger.filters):
            logger.addFilter(_PikaOneLine())


def configure_logging(level: str = "info", stream: TextIO | None = None) -> None:
    import structlog

    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    out = stream or sys.stderr
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for noisy in ("uvicorn.access", "httpx", "httpcore", "zeep", "alembic"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    quiet_pika(numeric)
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        # One write per event, the line and its newline together: processes sharing the stream
        # (`hub.py serve`'s worker children) interleave only whole lines. print() wrote the
        # newline apart, and with an unbuffered stream two children's events became one line.
        logger_factory=structlog.WriteLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
