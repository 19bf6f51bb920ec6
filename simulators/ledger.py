"""What a simulated agency has received: effects, rejections, refusals and the call count."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["Effect", "Ledger", "now_utc"]


def now_utc() -> str:
    """An xs:dateTime / RFC 3339 timestamp, to the second, in UTC."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass(slots=True)
class Effect:
    """One message the agency accepted and protocolled; a repeat only bumps `duplicates`."""

    message_id: str
    operation: str
    protocol_number: str
    protocolled_at: str
    references: dict[str, str]
    received_at: str
    filing_reference: str
    duplicates: int = 0

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

    def clear(self) -> None:
        self.effects.clear()
        self.rejected.clear()
        self.invalid.clear()
        self.calls = 0

    def to_json(self, agency: str) -> dict[str, Any]:
        return {
            "agency": agency,
            "effects": [effect.to_json() for effect in self.effects.values()],
            "rejected": list(self.rejected),
            "invalid": list(self.invalid),
            "calls": self.calls,
        }
