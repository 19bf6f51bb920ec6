"""The operator API's read model as the API sees it: search filters and pages, opaque cursors,
timestamps (the queries themselves live in storage.ops_queries)."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson

from domain.timestamps import as_utc
from domain.timestamps import epoch_rfc3339 as to_epoch_rfc3339
from domain.timestamps import rfc3339 as to_rfc3339

__all__ = [
    "SEARCH_COLUMNS",
    "CursorInvalid",
    "OpsReader",
    "SearchFilters",
    "SearchPage",
    "decode_cursor",
    "encode_cursor",
    "epoch_rfc3339",
    "rfc3339",
    "utc",
]


class CursorInvalid(ValueError):
    """A search cursor that this hub did not hand out (or that was altered)."""


def encode_cursor(filing_id: int, delivery_id: str) -> str:
    """An opaque cursor: the last row's position in the search order."""
    return base64.urlsafe_b64encode(orjson.dumps([filing_id, delivery_id])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    """The position a cursor names.

    Raises:
        CursorInvalid: not a cursor of this API.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        filing_id, delivery_id = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise CursorInvalid("the cursor is not one this API handed out") from exc
    if not isinstance(filing_id, int) or not isinstance(delivery_id, str) or len(delivery_id) > 32:
        raise CursorInvalid("the cursor is not one this API handed out")
    return filing_id, delivery_id


def utc(moment: datetime | None) -> datetime | None:
    """A stored instant as an aware UTC datetime (SQLite hands them back naive, in UTC)."""
    return as_utc(moment) if moment is not None else None


def rfc3339(moment: datetime | None) -> str | None:
    """RFC 3339 with a `Z` offset, the operator API's timestamps."""
    return to_rfc3339(moment) if moment is not None else None


def epoch_rfc3339(epoch: float | None) -> str | None:
    """An epoch-seconds column (the queue's timing) as RFC 3339."""
    return to_epoch_rfc3339(epoch) if epoch else None


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """What an operator searches by; every field is optional and they combine with AND."""

    reference: str | None = None
    state: str | None = None  # the recipient's state
    filing_state: str | None = None
    agency: str | None = None
    kind: str | None = None
    subject_tax_code: str | None = None
    portal: str | None = None
    protocol_number: str | None = None
    message_id: str | None = None
    created_from: datetime | None = None  # the filing's creation, inclusive
    created_to: datetime | None = None  # exclusive


@dataclass(frozen=True, slots=True)
class SearchPage:
    rows: list[dict[str, Any]]
    next_cursor: str | None = None


#: The columns a search row shows, in CSV order.
SEARCH_COLUMNS = (
    "reference", "kind", "portal", "filingState", "subjectTaxCode", "createdAt", "agency", "operation",
    "deliveryId", "messageId", "state", "protocolNumber", "outcome", "outcomeCode", "attempts", "lastError",
    "updatedAt",
)


class OpsReader(Protocol):
    """What the operator API reads (storage.ops_queries.OpsQueries)."""

    def agency_summaries(self, now: datetime) -> list[dict[str, Any]]: ...

    def search(self, f: SearchFilters, limit: int, after: tuple[int, str] | None = None) -> SearchPage: ...

    def search_all(self, f: SearchFilters, after: tuple[int, str] | None = None, *,
                   batch: int = 500, limit: int | None = None) -> Iterator[dict[str, Any]]: ...

    def filing_detail(self, reference: str) -> dict[str, Any] | None: ...

    def problems(self, since: datetime | None = None, *, max_groups: int = 500) -> list[dict[str, Any]]: ...
