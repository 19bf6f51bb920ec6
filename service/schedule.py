"""When to try again after a transient failure, and when to give up."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["LateOutcomePolicy", "SchedulePolicy"]


@dataclass(frozen=True, slots=True)
class SchedulePolicy:
    """The persisted schedule: exponential backoff with jitter up to a cap, bounded in
    worker passes (`max_rounds`) and in age; past either bound a delivery is undeliverable."""

    initial_delay: float = 5.0
    max_delay: float = 600.0
    jitter: float = 0.2
    max_rounds: int = 8
    max_age_seconds: float = 86_400.0

    def delay_after(self, rounds: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `rounds`-th failed pass (1-based); never before Retry-After."""
        factor: int = 2 ** max(0, rounds - 1)  # int ** int is typed Any (a negative power is a float)
        base = min(self.max_delay, self.initial_delay * factor)
        spread = base * self.jitter * (rng.random() if rng is not None else random.random())
        delay = min(self.max_delay, base + spread)
        return max(delay, retry_after or 0.0)

    def gives_up(self, rounds: int, age_seconds: float) -> bool:
        return rounds >= self.max_rounds or age_seconds >= self.max_age_seconds


@dataclass(frozen=True, slots=True)
class LateOutcomePolicy:
    """How long an acknowledged delivery waits for its protocol number, and how it asks.

    PULL: the status resource is polled after `poll_initial`, doubling up to `poll_max` (never
    before the agency's Retry-After). PUSH: if no callback arrives within `callback_timeout`
    (doubling up to `poll_max` on later checks), the hub re-sends the same message id, which the
    agency answers with its current state. Past `max_wait` since the acknowledgment the
    delivery is parked as undeliverable for operations.
    """

    poll_initial: float = 1.0
    poll_max: float = 300.0
    callback_timeout: float = 300.0
    max_wait_seconds: float = 7 * 86_400.0

    def next_check(self, polls: int, *, pull: bool, retry_after: float | None = None) -> float:
        """Seconds until the next poll (`pull`) or callback check, after `polls` earlier ones."""
        first = self.poll_initial if pull else self.callback_timeout
        factor: int = 2 ** max(0, polls)
        delay = min(max(self.poll_max, first), first * factor)
        return max(delay, retry_after or 0.0)
