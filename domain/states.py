"""States of a delivery (one per recipient) and of a filing (derived from its deliveries)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DeliveryState", "FilingKind", "FilingState", "TERMINAL_DELIVERY_STATES"]


class FilingKind(StrEnum):
    BUSINESS_START = "business_start"
    RUNTS_REGISTRATION = "runts_registration"
    DURC_REQUEST = "durc_request"
    RESPONSIBILITY_DECLARATION = "responsibility_declaration"


class DeliveryState(StrEnum):
    PENDING = "pending"  # planned, waiting for a worker
    RETRYING = "retrying"  # a transient failure; the next attempt is scheduled
    PROTOCOLLED = "protocolled"  # the agency gave its protocol number
    REJECTED = "rejected"  # the agency refused (permanent): recorded, never retried
    UNDELIVERABLE = "undeliverable"  # retries exhausted; parked for the sender and operations


TERMINAL_DELIVERY_STATES = frozenset(
    {DeliveryState.PROTOCOLLED, DeliveryState.REJECTED, DeliveryState.UNDELIVERABLE}
)


class FilingState(StrEnum):
    IN_PROGRESS = "in_progress"  # no recipient has answered yet
    PARTIALLY_PROTOCOLLED = "partially_protocolled"  # some protocolled, others still open
    PROTOCOLLED = "protocolled"  # every recipient protocolled
    PARTIALLY_REJECTED = "partially_rejected"  # all answered, some protocolled, some rejected
    REJECTED = "rejected"  # every recipient rejected
    UNDELIVERABLE = "undeliverable"  # all settled, at least one recipient could not be reached
