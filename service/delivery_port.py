"""The agency delivery port: what an adapter offers, what one pass returns, and its retry policy.

The worker and `service.settle` depend on these types; the adapters implement them, so the
dependency points inwards (`adapters` imports `service`, never the reverse).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from domain.errors import DeliveryError
from domain.messages import OutgoingMessage, Receipt

__all__ = [
    "AgencyAdapter",
    "DeliveryResult",
    "LateOutcomeAdapter",
    "RetryPolicy",
    "TryRecord",
]


@runtime_checkable
class AgencyAdapter(Protocol):
    """Speaks one agency's protocol. Fakes may subclass this port explicitly."""

    agency: str

    async def deliver(self, message: OutgoingMessage) -> Receipt:
        """Send one message and return the agency's receipt.

        Raises:
            DeliveryError: only its subclasses; any other exception is a bug of the adapter.
        """
        ...

    async def aclose(self) -> None:
        """Release what the adapter owns (never the injected HTTP client)."""
        ...


@runtime_checkable
class LateOutcomeAdapter(Protocol):
    """An adapter that also reads late outcomes: by polling (PULL) or from a callback (PUSH)."""

    agency: str

    async def poll(self, message: OutgoingMessage, poll_url: str) -> Receipt:
        """Ask the status resource once: an acknowledgment while the agency works, else the receipt.

        Raises:
            DeliveryError: as `deliver` does.
        """
        ...

    def read_result(self, operation: str, content_type: str, body: bytes, message_id: str) -> Receipt:
        """Read the receipt an agency POSTed to the hub's callback.

        Raises:
            DeliveryError: AgencyRejected for a refusal, AgencyProtocolError for a body that is
                not a receipt of `operation` for `message_id`.
        """
        ...


@dataclass(frozen=True)
class RetryPolicy:
    """Short in-process retries (seconds); longer outages go to the persisted schedule.

    A plain record: the edge that runs the retries (`adapters.base.deliver_with_retries`)
    turns it into its retry library's stop and wait.
    """

    attempts: int = 3
    initial_wait: float = 0.2
    max_wait: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if min(self.initial_wait, self.max_wait, self.jitter) < 0:
            raise ValueError("waits must not be negative")

    @classmethod
    def without_waits(cls, attempts: int = 3) -> RetryPolicy:
        """A policy that retries immediately: for tests."""
        return cls(attempts=attempts, initial_wait=0.0, max_wait=0.0, jitter=0.0)


@dataclass
class TryRecord:
    """One call to the adapter."""

    number: int
    started_at: datetime
    duration_ms: float
    error: DeliveryError | None
    #: The request body sent and the reply body received, bounded (adapters.wire).
    sent: str | None = None
    received: str | None = None


@dataclass
class DeliveryResult:
    """What one pass returns (`deliver_with_retries`, `poll_once`): a receipt or the last
    error, and every try."""

    receipt: Receipt | None
    error: DeliveryError | None
    tries: list[TryRecord] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        """Whether the pass ended with a receipt (an acknowledgment included)."""
        return self.receipt is not None
