"""The agencies' health as portals see it: up, degraded, down or in maintenance, and why.

A portal asks before its users file (`GET /v1/agencies/health`), so the answer combines what
the hub knows now: the circuit its workers report (unless that report is stale), the agency's
answers over the last hour, and its maintenance calendar.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from domain.timestamps import epoch_rfc3339
from service.maintenance import MaintenanceCalendar
from service.ports import AgencyStatus

__all__ = ["AgencyHealthFeed"]

#: Below this share of answered calls (over the last hour) an agency is degraded.
DEGRADED_BELOW = 0.9
#: Fewer recent calls than this say nothing about an agency's answers.
MIN_CALLS = 3


def _instant(epoch: float) -> str:
    return epoch_rfc3339(epoch)


@dataclass
class AgencyHealthFeed:
    """Reads (blocking: call it from a thread) each agency's health.

    Args:
        agencies: the agencies shown (the routed ones).
        statuses: the circuits as workers reported them (`SqlStore.agency_statuses`).
        answers: `(since epoch, agencies)` → per agency an object with `calls`, `success_ratio`
            and `median_ms` (`storage.ops_metrics.read_agency_answers`).
        calendars: each agency's maintenance windows.
        stale_after: seconds after which a circuit report no longer counts (its worker stopped).
        horizon: seconds of upcoming maintenance windows shown.
        ttl: seconds an answer is reused (every portal may ask often; the store is asked once).
    """

    agencies: Sequence[str]
    statuses: Callable[[], list[AgencyStatus]]
    answers: Callable[[float, Sequence[str]], Mapping[str, Any]]
    calendars: Mapping[str, MaintenanceCalendar]
    stale_after: float = 60.0
    horizon: float = 7 * 86_400.0
    ttl: float = 5.0
    clock: Callable[[], float] = time.time  #: the delivery schedule's clock (maintenance windows)
    wall: Callable[[], float] = time.time  #: the clock reports are stamped with (staleness)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _cached: tuple[float, dict[str, Any]] | None = field(default=None, repr=False)

    def is_stale(self, status: AgencyStatus) -> bool:
        """Whether a circuit report is too old to trust: the worker that sent it stopped."""
        return self.wall() - status.updated_at.timestamp() > self.stale_after

    def read(self) -> dict[str, Any]:
        """The feed's body (cached for `ttl` seconds)."""
        with self._lock:
            mono = time.monotonic()
            if self._cached is None or mono - self._cached[0] >= self.ttl:
                self._cached = (mono, self._compute())
            return self._cached[1]

    def _compute(self) -> dict[str, Any]:
        now = self.clock()
        statuses = {s.agency: s for s in self.statuses()}
        recent = self.answers(now - 3600.0, list(self.agencies))
        listing = []
        for agency in sorted(self.agencies):
            status = statuses.get(agency)
            stale = status is not None and self.is_stale(status)
            answers = recent.get(agency)
            calendar = self.calendars.get(agency) or MaintenanceCalendar()
            resume = calendar.resume_at(now)
            state, reason = _state(status, stale, answers, resume, now)
            listing.append({
                "agency": agency,
                "state": state,
                "reason": reason,
                "circuit": status.circuit if status is not None and not stale else "unknown" if stale else "closed",
                "maintenanceUntil": _instant(resume) if resume is not None else None,
                "upcomingMaintenance": [{"start": _instant(a), "end": _instant(b)}
                                        for a, b in calendar.upcoming(now, self.horizon)],
                "lastHour": {
                    "calls": answers.calls if answers else 0,
                    "successRatio": answers.success_ratio if answers else None,
                    "medianAnswerMs": answers.median_ms if answers else None,
                },
            })
        return {"generatedAt": _instant(now), "agencies": listing}


def _state(status: AgencyStatus | None, stale: bool, answers: Any, resume: float | None,
           now: float) -> tuple[str, str]:
    """(state, short reason): maintenance first, then the circuit, then the recent answers."""
    if resume is not None:
        return "maintenance", "in a maintenance window: no call is made to the agency"
    if status is not None and not stale:
        if status.circuit in ("open", "half_open"):
            return "down", "the agency failed repeatedly: calls are suspended for a while"
        if status.throttled_until and status.throttled_until > now:
            return "degraded", "the agency asked the hub to slow down"
    if answers is not None and answers.calls >= MIN_CALLS:
        ratio = answers.success_ratio or 0.0
        if ratio == 0.0:
            return "down", "no call was answered in the last hour"
        if ratio < DEGRADED_BELOW:
            return "degraded", "some calls failed in the last hour"
    return "up", "answering"
