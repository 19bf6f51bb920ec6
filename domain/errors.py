"""Errors of the domain, split by what the hub must do next.

Delivery errors follow one rule: a *transient* error is retried, a *permanent* one is recorded
and never retried. Adapters translate their library's exceptions into this tree once.
"""

from __future__ import annotations

__all__ = [
    "AdapterMisconfigured",
    "AgencyProtocolError",
    "AgencyRejected",
    "AgencyThrottled",
    "AgencyUnreachable",
    "DeliveryError",
    "MessageRejectedAsInvalid",
    "NotificationFailed",
    "OutcomeUnknown",
    "PermanentDeliveryError",
    "TransientDeliveryError",
]


#: `code` is stored in a 64-character column; `text` is kept to a readable size. Both often
#: come from the agency (a fault's code and reason), so they are bounded here, once.
CODE_MAX, TEXT_MAX = 64, 2000


class DeliveryError(Exception):
    """A delivery to an agency failed; `code` and `text` are what the audit keeps."""

    #: The agency's HTTP status when it answered (set by the adapter's classifier); None when
    #: no HTTP answer came (refused connection, timeout). Operators see it per attempt.
    http_status: int | None = None

    def __init__(
        self,
        text: str,
        *,
        agency: str = "",
        operation: str = "",
        delivery_id: str = "",
        code: str = "",
    ) -> None:
        text = text if len(text) <= TEXT_MAX else text[:TEXT_MAX] + "…"
        super().__init__(text)
        self.text = text
        self.agency = agency
        self.operation = operation
        self.delivery_id = delivery_id
        self.code = (code or type(self).__name__)[:CODE_MAX]

    def __str__(self) -> str:
        return f"{self.code}: {self.text}" if self.code else self.text


class TransientDeliveryError(DeliveryError):
    """Worth another attempt later."""


class AgencyUnreachable(TransientDeliveryError):
    """Connection refused, connect timeout, 502/503/504, circuit open."""


class AgencyThrottled(TransientDeliveryError):
    """429 or 503 with Retry-After: no new attempt before `retry_after` seconds."""

    def __init__(self, text: str, *, retry_after: float | None = None, **kw: str) -> None:
        super().__init__(text, **kw)
        self.retry_after = retry_after


class OutcomeUnknown(TransientDeliveryError):
    """The request may have reached the agency; retry only with the same message id."""


class AgencyProtocolError(TransientDeliveryError):
    """The agency answered something that is not a valid reply (truncated, not XML)."""


class PermanentDeliveryError(DeliveryError):
    """The agency will never accept this message as it is: record, do not retry."""


class AgencyRejected(PermanentDeliveryError):
    """A business rejection with the agency's own code and reason."""


class MessageRejectedAsInvalid(PermanentDeliveryError):
    """Our message failed the agency's schema (ours or theirs)."""


class AdapterMisconfigured(PermanentDeliveryError):
    """401/403/404, an operation missing from the contract, a TLS failure."""


class NotificationFailed(Exception):
    """A portal did not take a filing event (unreachable, or a non-2xx answer): an expected
    fault the notifier retries until its horizon. `retry_after` is the portal's wish, if any."""

    def __init__(self, text: str, *, retry_after: float | None = None) -> None:
        super().__init__(text)
        self.retry_after = retry_after
