"""Timestamps as every answer of the hub shows them: RFC 3339, always with an offset.

One spelling everywhere (UTC with `Z`), so a portal parses one form. A naive datetime is taken as
UTC: SQLite gives back the UTC instants the hub stored without their tzinfo.
"""

from __future__ import annotations

from datetime import datetime, timezone
from zoneinfo import ZoneInfo

__all__ = ["ROME", "agency_instant", "as_utc", "epoch_rfc3339", "parse_agency_instant", "rfc3339"]


def as_utc(moment: datetime) -> datetime:
    """The same instant in UTC; naive means UTC (how the hub stores every instant)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def rfc3339(moment: datetime) -> str:
    """`moment` in RFC 3339 with a `Z` offset (fractional seconds only when it has them)."""
    return as_utc(moment).isoformat().replace("+00:00", "Z")


def epoch_rfc3339(epoch: float) -> str:
    """Epoch seconds (the queue's and the lockouts' timing) in RFC 3339 with `Z`."""
    return rfc3339(datetime.fromtimestamp(epoch, timezone.utc))


#: Where the agencies are: a time an agency gives without an offset is Italian civil time.
ROME = ZoneInfo("Europe/Rome")


def agency_instant(text: str | None) -> str | None:
    """An agency's own timestamp (a protocol date) in RFC 3339 with `Z`.

    Agencies write xs:dateTime, with or without an offset; without one it is Rome's civil time.
    A bare date stays a date, and text that is no date at all is kept as the agency wrote it.
    """
    moment = parse_agency_instant(text)
    if moment is None:
        return text
    return rfc3339(moment)


def parse_agency_instant(text: str | None) -> datetime | None:
    """An agency's timestamp as an aware datetime, or None when it is absent, a bare date or unreadable."""
    if not text or "T" not in text.strip().upper():
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        return None
    return moment.replace(tzinfo=ROME) if moment.tzinfo is None else moment
