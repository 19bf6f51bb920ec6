"""Configure structlog once: one JSON event per line, context bound per request or job."""

from __future__ import annotations

import logging
import sys
from typing import IO

import structlog

__all__ = ["configure_logging"]


def configure_logging(level: str = "info", stream: IO[str] | None = None) -> None:
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    out = stream or sys.stderr
    logging.basicConfig(level=numeric, stream=out, format="%(message)s", force=True)
    for noisy in ("uvicorn.access", "httpx", "httpcore", "zeep", "alembic"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
