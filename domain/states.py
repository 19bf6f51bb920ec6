"""States of a delivery (one per recipient) and of a filing (derived from its deliveries)."""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "CORRECTABLE_DELIVERY_STATES",
    "Decision",
    "DeliveryState",
    "ESITO_DECISIONS",
    "FilingKind",
    "FilingState",
    "OPEN_DELIVERY_STATES",
    "RESENDABLE_DELIVERY_STATES",
    "TERMINAL_DELIVERY_STATES",
]


class FilingKind(StrEnum):
    BUSINESS_START = "business_start"
    RUNTS_REGISTRATION = "runts_registration"
    DURC_REQUEST = "durc_request"
    RESPONSIBILITY_DECLARATION = "responsibility_declaration"
    RUNTS_DEPOSIT = "runts_deposit"


class DeliveryState(StrEnum):
    PENDING = "pending"  # planned, waiting for a worker
    WAITING = "waiting"  # waits for another recipient's outcome (route `after`): no job yet
    RETRYING = "retrying"  # a transient failure; the next attempt is scheduled
    ACKNOWLEDGED = "acknowledged"  # the agency took it; its protocol number comes later
    PROTOCOLLED = "protocolled"  # the agency gave its protocol number (activated)
    REJECTED = "rejected"  # the agency refused (permanent): recorded, never retried
    UNDELIVERABLE = "undeliverable"  # retries exhausted; parked for the sender and operations
    HELD = "held"  # the recipient it waits for failed; resumes when that one is resent
    CANCELLED = "cancelled"  # the recipient it waited for was rejected (route `on_reject`)


class Decision(StrEnum):
    """An agency's business decision, which may follow the protocol number later still."""

    ACCEPTED = "accepted"
    REJECTED = "rejected"


#: States a worker or an agency still moves on its own.
OPEN_DELIVERY_STATES = frozenset(
    {DeliveryState.PENDING, DeliveryState.WAITING, DeliveryState.RETRYING, DeliveryState.ACKNOWLEDGED}
)

#: Settled states: no job runs for them; only a resend, a correction, a predecessor's outcome
#: (held) or an agency's late decision (protocolled) moves them again.
TERMINAL_DELIVERY_STATES = frozenset(
    {
        DeliveryState.PROTOCOLLED,
        DeliveryState.REJECTED,
        DeliveryState.UNDELIVERABLE,
        DeliveryState.HELD,
        DeliveryState.CANCELLED,
    }
)

#: A portal may resend these with the same message id (the agency never accepted it).
RESENDABLE_DELIVERY_STATES = frozenset({DeliveryState.UNDELIVERABLE, DeliveryState.CANCELLED})

#: A portal may replace these with a corrected message (a new message id, linked to this one).
CORRECTABLE_DELIVERY_STATES = frozenset({DeliveryState.REJECTED, DeliveryState.UNDELIVERABLE})

#: The agency's `esito` in a receipt → the decision it carries (ACQUISITA carries none).
ESITO_DECISIONS = {"ACCOLTA": Decision.ACCEPTED, "RESPINTA": Decision.REJECTED}


class FilingState(StrEnum):
    IN_PROGRESS = "in_progress"  # no recipient has answered yet
    PARTIALLY_PROTOCOLLED = "partially_protocolled"  # some protocolled, others still open
    PROTOCOLLED = "protocolled"  # every recipient protocolled
    PARTIALLY_REJECTED = "partially_rejected"  # all answered, some protocolled, some rejected
    REJECTED = "rejected"  # every recipient rejected
    UNDELIVERABLE = "undeliverable"  # all settled, at least one recipient could not be reached
