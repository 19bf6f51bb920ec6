"""The portal's desk over filings: search with keyset pages, archive and unarchive.

The queries live in `storage.portal_desk`; this module holds what the API and the store share:
the filters, the page, the opaque cursor and the refusals.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import StrEnum
from typing import Any, Protocol

import orjson

from domain.states import FilingState

__all__ = [
    "SETTLED_FILING_STATES",
    "ArchiveFilter",
    "DeskCursorInvalid",
    "DeskFilters",
    "DeskPage",
    "FilingDesk",
    "FilingNotSettled",
    "FilingUnknown",
    "decode_desk_cursor",
    "encode_desk_cursor",
]

#: A filing in one of these states has every recipient's answer: it may be archived, and its
#: payloads purged once the retention period has passed.
SETTLED_FILING_STATES = frozenset({FilingState.PROTOCOLLED, FilingState.PARTIALLY_REJECTED,
                                   FilingState.REJECTED, FilingState.UNDELIVERABLE})


class ArchiveFilter(StrEnum):
    """Which filings a search lists: the desk's (not archived), the archive, or both."""

    ACTIVE = "false"
    ARCHIVED = "true"
    ANY = "any"


@dataclass(frozen=True, slots=True)
class DeskFilters:
    """What a portal searches its filings by; the fields combine with AND."""

    portal: str
    user: str  # the tax code whose own and delegated filings are searched
    reference: str | None = None
    subject_tax_code: str | None = None
    protocol_number: str | None = None  # any recipient's
    kind: str | None = None
    state: str | None = None  # the filing's
    agency: str | None = None  # a recipient's
    filed_from: datetime | None = None  # inclusive
    filed_to: datetime | None = None  # exclusive
    #: None: not archived ones, unless a reference is given (then archived or not).
    archived: ArchiveFilter | None = None


@dataclass(frozen=True, slots=True)
class DeskPage:
    items: list[dict[str, Any]]
    next_cursor: str | None = None


class DeskCursorInvalid(ValueError):
    """A cursor this API did not hand out (or one that was altered)."""


def encode_desk_cursor(created_at: datetime, filing_id: int) -> str:
    """The last item's position in the order (created_at, id), newest first, as an opaque token."""
    moment = created_at.replace(tzinfo=timezone.utc) if created_at.tzinfo is None else created_at
    micros = int(moment.timestamp()) * 1_000_000 + moment.microsecond
    return base64.urlsafe_b64encode(orjson.dumps(["f", micros, filing_id])).decode().rstrip("=")


def decode_desk_cursor(cursor: str) -> tuple[datetime, int]:
    """The position a cursor names.

    Raises:
        DeskCursorInvalid: not a cursor of this API.
    """
    try:
        tag, micros, filing_id = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, TypeError) as exc:
        raise DeskCursorInvalid("the cursor is not one this API handed out") from exc
    if tag != "f" or not isinstance(micros, int) or not isinstance(filing_id, int) or micros < 0:
        raise DeskCursorInvalid("the cursor is not one this API handed out")
    try:
        seconds, rest = divmod(micros, 1_000_000)
        moment = datetime.fromtimestamp(seconds, timezone.utc).replace(microsecond=rest)
    except (OverflowError, OSError, ValueError) as exc:
        raise DeskCursorInvalid("the cursor is not one this API handed out") from exc
    return moment, filing_id


class FilingUnknown(LookupError):
    """No filing with that reference in the caller's scope (another's is as absent)."""


class FilingNotSettled(Exception):
    """Only a settled filing may be archived: some recipient has not answered yet."""

    def __init__(self, reference: str, state: str) -> None:
        super().__init__(f"filing {reference} is {state}: only a settled filing may be archived")
        self.reference = reference
        self.state = state


class FilingDesk(Protocol):
    """The portal's search and archive (`storage.portal_desk.PortalDesk`)."""

    def search(self, f: DeskFilters, limit: int, after: tuple[datetime, int] | None = None) -> DeskPage: ...

    def set_archived(self, reference: str, portal: str, user: str, archived: bool, *, actor: str,
                     context: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The filing's summary after (un)archiving it, and whether it changed.

        Raises:
            FilingUnknown: not the caller's filing.
            FilingNotSettled: archiving a filing still in progress.
        """
        ...
