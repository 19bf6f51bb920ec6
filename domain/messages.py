"""What travels to an agency and what comes back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["OutgoingMessage", "Receipt"]


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """A normalized message for one agency operation.

    `content` is the request element's content as a tree of dicts and lists, with the common
    envelope under the key `messageHeader` (see docs/agency-contracts.md). It is built once when
    the filing is accepted and stored, so every retry sends the same message with the same id.
    """

    message_id: str
    delivery_id: str
    filing_reference: str
    agency: str
    operation: str
    content: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Receipt:
    """An agency's acknowledgment: its protocol number and any references it returned."""

    protocol_number: str
    protocolled_at: str = ""
    outcome: str = "ACQUISITA"
    references: dict[str, str] = field(default_factory=dict)
