"""A filing's state, derived from the states of its deliveries."""

from __future__ import annotations

from collections.abc import Iterable

from domain.states import TERMINAL_DELIVERY_STATES, DeliveryState, FilingState

__all__ = ["aggregate_filing_state"]


def aggregate_filing_state(states: Iterable[DeliveryState | str]) -> FilingState:
    """Open deliveries keep the filing in progress; once all settle, the worst outcome shows.

    Open: pending, waiting, retrying, acknowledged. Settled: protocolled, rejected,
    undeliverable, held, cancelled. An undeliverable recipient outranks a rejection because it
    needs someone to act on it; held and cancelled recipients count as not protocolled (the
    recipient they waited for failed). Callers pass only current deliveries: one replaced by a
    corrected message no longer counts.
    """
    settled = [DeliveryState(s) for s in states]
    if not settled:
        return FilingState.IN_PROGRESS
    protocolled = sum(s is DeliveryState.PROTOCOLLED for s in settled)
    if any(s not in TERMINAL_DELIVERY_STATES for s in settled):
        return FilingState.PARTIALLY_PROTOCOLLED if protocolled else FilingState.IN_PROGRESS
    if any(s is DeliveryState.UNDELIVERABLE for s in settled):
        return FilingState.UNDELIVERABLE
    if protocolled == len(settled):
        return FilingState.PROTOCOLLED
    if protocolled == 0:
        return FilingState.REJECTED
    return FilingState.PARTIALLY_REJECTED
