"""A circuit breaker per agency: a pure state machine over the outcomes of agency calls.

closed ──(N consecutive transient failures)──▶ open ──(cool-down elapsed)──▶ half-open
  ▲                                                                            │
  └────────────(the single probe is answered)──────◀──(probe fails: open again)┘

The worker asks `admit(now)` before each pass and reports the pass with `record(...)`. A
refused pass is rescheduled without a call and without counting against the delivery. An
agency's Retry-After pauses every call to it (`throttle`), whatever the circuit's state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Admission", "CircuitBreaker", "CircuitState"]


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Admission:
    """May a pass call the agency now? If not, `retry_at` (epoch seconds) says when to look again."""

    allowed: bool
    probe: bool = False
    retry_at: float = 0.0
    reason: str = ""


class CircuitBreaker:
    """One agency's breaker. Not thread-safe: it lives in one worker's event loop.

    Args:
        failure_threshold: consecutive transient failures (calls, not passes) that open it.
        cool_down: seconds the circuit stays open before one probe may go through.
        probe_wait: seconds a pass waits while the probe is in flight.
    """

    def __init__(self, failure_threshold: int = 5, cool_down: float = 30.0, probe_wait: float = 1.0) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.cool_down = cool_down
        self.probe_wait = probe_wait
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.opened_at: float | None = None
        self.throttled_until = 0.0
        self._probe_in_flight = False

    @property
    def open_until(self) -> float | None:
        return None if self.opened_at is None else self.opened_at + self.cool_down

    def admit(self, now: float) -> Admission:
        """Decide whether the next pass may call the agency; may move open → half-open."""
        if now < self.throttled_until:
            return Admission(False, retry_at=self.throttled_until, reason="the agency asked to retry later")
        if self.state is CircuitState.CLOSED:
            return Admission(True)
        if self.state is CircuitState.OPEN:
            assert self.open_until is not None
            if now < self.open_until:
                return Admission(False, retry_at=self.open_until, reason="circuit open")
            self.state = CircuitState.HALF_OPEN
        if self._probe_in_flight:
            return Admission(False, retry_at=now + self.probe_wait, reason="circuit half-open, probe in flight")
        self._probe_in_flight = True
        return Admission(True, probe=True)

    def record(self, answered: Iterable[bool], now: float, *, probe: bool = False) -> bool:
        """Report one pass: for each call in order, True when the agency answered (a receipt or
        a refusal), False for a transient failure. Returns True when the state changed."""
        before = (self.state, self.opened_at)
        last: bool | None = None
        for ok in answered:
            last = ok
            self.failures = 0 if ok else self.failures + 1
        if probe:
            self._probe_in_flight = False
            if last is False:
                self._open(now)
            elif last is True:
                self._close()
            else:  # the probe made no call (cancelled): let another pass probe
                self.state = CircuitState.OPEN if self.opened_at is not None else CircuitState.CLOSED
        elif last is True and self.state is not CircuitState.CLOSED:
            # A pass that began before the circuit opened got an answer: the agency is back.
            self._close()
        elif self.state is CircuitState.CLOSED and self.failures >= self.failure_threshold:
            self._open(now)
        return (self.state, self.opened_at) != before

    def throttle(self, until: float) -> bool:
        """No call before `until` (the agency's Retry-After). Returns True when extended."""
        if until > self.throttled_until:
            self.throttled_until = until
            return True
        return False

    def snapshot(self) -> dict[str, object]:
        """What the status API shows."""
        return {
            "circuit": self.state.value,
            "failures": self.failures,
            "opened_at": self.opened_at,
            "open_until": self.open_until if self.state is not CircuitState.CLOSED else None,
            "throttled_until": self.throttled_until or None,
        }

    def _open(self, now: float) -> None:
        self.state = CircuitState.OPEN
        self.opened_at = now

    def _close(self) -> None:
        self.state = CircuitState.CLOSED
        self.failures = 0
        self.opened_at = None
