"""What a simulated agency has received: effects, rejections, refusals and the call count."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["Effect", "Ledger", "now_utc"]

#: How many WS-Addressing `To` values a ledger keeps, and how much of each.
_ADDRESSED_KEPT, _ADDRESS_MAX = 1000, 2048


def now_utc() -> str:
    """An xs:dateTime / RFC 3339 timestamp, to the second, in UTC."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass(slots=True)
class Effect:
    """One message the agency accepted and protocolled; a repeat only bumps `duplicates`.

    A message taken in charge for a late outcome (`mode` push or pull) is an effect from the
    start, `status` "acknowledged" until its protocol number is out (`ready_at`, monotonic);
    a `decision` may follow (`decided`). `received` keeps the fields another agency handed
    over (numeroREA); `corrects` the message a corrected one replaces.
    """

    message_id: str
    operation: str
    protocol_number: str
    protocolled_at: str
    references: dict[str, str]
    received_at: str
    filing_reference: str
    duplicates: int = 0
    status: str = "protocolled"
    mode: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    ready_at: float = 0.0
    decision: str | None = None
    decision_code: str = ""
    decision_text: str = ""
    decided: bool = False
    callbacks: list[dict[str, Any]] = field(default_factory=list)
    received: dict[str, str] = field(default_factory=dict)
    corrects: dict[str, str] | None = None
    #: 1 for the first message this ledger protocolled, then one more per new message.
    arrival: int = 0
    #: The attachments received with the message: name, type, SHA-256, size and form.
    attachments: list[dict[str, Any]] = field(default_factory=list)

    @property
    def esito(self) -> str:
        """The receipt's `esito`: ACQUISITA, or the decision once taken."""
        if self.decided and self.decision == "accepted":
            return "ACCOLTA"
        if self.decided and self.decision == "rejected":
            return "RESPINTA"
        return "ACQUISITA"

    def to_json(self) -> dict[str, Any]:
        return {
            "messageId": self.message_id,
            "operation": self.operation,
            "protocollo": self.protocol_number,
            "dataProtocollo": self.protocolled_at,
            "riferimenti": dict(self.references),
            "receivedAt": self.received_at,
            "filingReference": self.filing_reference,
            "duplicates": self.duplicates,
            "status": self.status,
            "mode": self.mode,
            "correlationId": self.correlation_id,
            "esito": self.esito,
            "callbacks": list(self.callbacks),
            "received": dict(self.received),
            "corrects": dict(self.corrects) if self.corrects else None,
            "arrival": self.arrival,
            "attachments": [dict(a) for a in self.attachments],
        }


@dataclass(slots=True)
class Ledger:
    """The proof that every effect happened exactly once.

    `effects` holds one entry per distinct messageId accepted; `rejected` the business
    rejections; `invalid` the messages refused as malformed or schema-invalid; `calls` every
    request to the agency endpoint, whatever became of it.
    """

    effects: dict[str, Effect] = field(default_factory=dict)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    invalid: list[dict[str, Any]] = field(default_factory=list)
    calls: int = 0
    polls: int = 0  # requests to the status resources of late outcomes
    #: The WS-Addressing `To` of each call that carried one (the last `_ADDRESSED_KEPT`).
    addressed: deque[str] = field(default_factory=lambda: deque(maxlen=_ADDRESSED_KEPT))
    arrivals: int = 0  # new messages protocolled so far: each effect's `arrival`

    def next_arrival(self) -> int:
        """The arrival rank of the next new message (the desk is one event loop: no race)."""
        self.arrivals += 1
        return self.arrivals

    def record_rejection(
        self, operation: str, message_id: str, filing_reference: str, code: str, reason: str
    ) -> None:
        self.rejected.append(
            {
                "messageId": message_id,
                "operation": operation,
                "filingReference": filing_reference,
                "codice": code,
                "motivo": reason,
                "receivedAt": now_utc(),
            }
        )

    def record_invalid(self, operation: str | None, code: str, error: str) -> None:
        self.invalid.append(
            {"operation": operation, "codice": code, "errore": error, "receivedAt": now_utc()}
        )

    def record_addressed(self, to: str) -> None:
        self.addressed.append(to[:_ADDRESS_MAX])

    def clear(self) -> None:
        self.addressed.clear()
        self.effects.clear()
        self.rejected.clear()
        self.invalid.clear()
        self.calls = 0
        self.polls = 0
        self.arrivals = 0

    def to_json(self, agency: str) -> dict[str, Any]:
        return {
            "agency": agency,
            "effects": [effect.to_json() for effect in self.effects.values()],
            "rejected": list(self.rejected),
            "invalid": list(self.invalid),
            "calls": self.calls,
            "polls": self.polls,
            # Only where calls carried WS-Addressing (the sandbox of such a WSDL).
            **({"addressedTo": list(self.addressed)} if self.addressed else {}),
        }
