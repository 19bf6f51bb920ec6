"""Lockout after repeated authentication failures: the agencies' own rule, as pure functions.

Ten consecutive failures for the same caller lock it out for five minutes; each further
failure while locked adds five minutes. A success (while not locked) clears the count; a
failure long after the previous one (more than `window_seconds`) starts a new count.

Who "the caller" is decides whom a lock can hurt. A request whose signature does not verify
proves nothing about the portal it names, so its failure counts against the client address
(`address_key`); only a request the portal really signed counts against that portal and the
user it vouches for (`user_key`). Nobody without a portal's key can lock that portal out.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FailureState", "Lockout", "LockoutPolicy", "address_key", "locked_until", "register_failure",
           "user_key"]

#: What `user_key` names when a signed request was refused before its user was verified.
UNKNOWN_USER = "unknown"


def address_key(client: str) -> str:
    """The caller of a request whose signature does not verify: where it came from."""
    return f"address:{client}"


def user_key(portal: str, tax_code: str | None) -> str:
    """The caller of a request `portal` really signed: the portal and the user it names."""
    return f"portal:{portal}/user:{tax_code or UNKNOWN_USER}"


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    threshold: int = 10  #: consecutive failures that lock the caller out
    lock_seconds: float = 300.0  #: how long a lock lasts, and what each failure while locked adds
    window_seconds: float = 300.0  #: a failure older than this no longer counts


@dataclass(frozen=True, slots=True)
class FailureState:
    """One caller's record; times are epoch seconds."""

    failures: int
    last_failure_at: float
    locked_until: float | None = None


def locked_until(state: FailureState | None, now: float) -> float | None:
    """When the caller's lock ends, or None when it is not locked at `now`."""
    if state is None or state.locked_until is None or state.locked_until <= now:
        return None
    return state.locked_until


def register_failure(state: FailureState | None, now: float, policy: LockoutPolicy) -> FailureState:
    """The caller's record after one more failure at `now`."""
    current = locked_until(state, now)
    if state is not None and current is not None:
        return FailureState(state.failures + 1, now, current + policy.lock_seconds)
    if (
        state is None
        or state.locked_until is not None  # a lock that has ended starts a new count
        or now - state.last_failure_at > policy.window_seconds
    ):
        failures = 1
    else:
        failures = state.failures + 1
    lock = now + policy.lock_seconds if failures >= policy.threshold else None
    return FailureState(failures, now, lock)


@dataclass(frozen=True, slots=True)
class Lockout:
    """One caller's failure record, as operators list it; `key` is what `lift` takes."""

    key: str
    state: FailureState

    def locked_at(self, now: float) -> bool:
        return locked_until(self.state, now) is not None
