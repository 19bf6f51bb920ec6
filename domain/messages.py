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
    #: The agency contract version the message was mapped for (None: the current one).
    contract_version: str | None = None


@dataclass(frozen=True, slots=True)
class Receipt:
    """An agency's answer that is not a failure.

    Usually its protocol number and any references it returned (`outcome` is the agency's
    `esito`: ACQUISITA, or ACCOLTA / RESPINTA when the receipt also carries a decision, with
    `outcome_code` and `outcome_text` for a rejection). With `acknowledged_only` the agency took
    the message in charge without a protocol number yet (AgID non-blocking patterns): the
    number comes later by callback (`correlation_id`, PUSH) or from `poll_url` (PULL);
    `retry_after` is the agency's hint for the next poll.
    """

    protocol_number: str
    protocolled_at: str = ""
    outcome: str = "ACQUISITA"
    references: dict[str, str] = field(default_factory=dict)
    acknowledged_only: bool = False
    correlation_id: str | None = None
    poll_url: str | None = None
    retry_after: float | None = None
    outcome_code: str = ""
    outcome_text: str = ""

    @classmethod
    def acknowledgment(
        cls,
        *,
        correlation_id: str | None = None,
        poll_url: str | None = None,
        retry_after: float | None = None,
    ) -> Receipt:
        """A taking-in-charge without a protocol number (HTTP 202, or a poll still running)."""
        return cls(
            protocol_number="",
            outcome="PRESA_IN_CARICO",
            acknowledged_only=True,
            correlation_id=correlation_id,
            poll_url=poll_url,
            retry_after=retry_after,
        )
