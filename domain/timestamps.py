"""Instants as the API answers them: RFC 3339 with an offset, whatever the store gave back."""

from __future__ import annotations

from datetime import datetime, timezone

__all__ = ["rfc3339"]


def rfc3339(moment: datetime) -> str:
    """`moment` in RFC 3339 with its offset; a naive one is UTC (SQLite keeps no offset, and
    the hub stores every instant in UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.isoformat()
