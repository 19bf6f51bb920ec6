"""An agency's maintenance windows: weekly local-time spans in which no call is made."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["MaintenanceWindow", "MaintenanceCalendar", "parse_days"]

_DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_days(spec: str) -> frozenset[int]:
    """`"sun"`, `"mon-fri"`, `"sat,sun"`, `"*"` → weekday numbers (Monday 0).

    Raises:
        ValueError: an unknown day name or a malformed range.
    """
    spec = spec.strip().lower()
    if spec in ("*", "daily", "every"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in filter(None, (p.strip() for p in spec.split(","))):
        first, _, last = part.partition("-")
        try:
            start = _DAY_NAMES.index(first.strip()[:3])
            end = _DAY_NAMES.index(last.strip()[:3]) if last else start
        except ValueError:
            raise ValueError(f"unknown day in {spec!r}: use mon..sun, ranges (mon-fri) or *") from None
        day = start
        while True:  # a range may wrap the week: fri-mon
            days.add(day)
            if day == end:
                break
            day = (day + 1) % 7
    if not days:
        raise ValueError(f"no day in {spec!r}")
    return frozenset(days)


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """From `start` to `end` local time on each of `days`; `end <= start` runs past midnight."""

    days: frozenset[int]
    start: time
    end: time
    tz: ZoneInfo

    @classmethod
    def parse(cls, days: str, start: str, end: str, tz: str = "Europe/Rome") -> MaintenanceWindow:
        return cls(parse_days(days), time.fromisoformat(start), time.fromisoformat(end), ZoneInfo(tz))

    def _spans_from(self, day: date) -> tuple[datetime, datetime] | None:
        if day.weekday() not in self.days:
            return None
        begin = datetime.combine(day, self.start, self.tz)
        finish_day = day if self.end > self.start else day + timedelta(days=1)
        return begin, datetime.combine(finish_day, self.end, self.tz)

    def spans_between(self, start: float, end: float) -> list[tuple[float, float]]:
        """The window's spans (epoch start, epoch end) that overlap `[start, end)`."""
        first = datetime.fromtimestamp(start, self.tz).date() - timedelta(days=1)
        spans = []
        for offset in range(int((end - start) // 86_400) + 3):
            span = self._spans_from(first + timedelta(days=offset))
            if span is not None and span[1].timestamp() > start and span[0].timestamp() < end:
                spans.append((span[0].timestamp(), span[1].timestamp()))
        return spans

    def end_if_inside(self, now: float) -> float | None:
        """The epoch at which the window holding `now` ends, or None when `now` is outside."""
        local = datetime.fromtimestamp(now, self.tz)
        for day in (local.date() - timedelta(days=1), local.date()):
            span = self._spans_from(day)
            if span is not None and span[0].timestamp() <= now < span[1].timestamp():
                return span[1].timestamp()
        return None


class MaintenanceCalendar:
    """All the windows of one agency; overlapping or adjacent windows chain."""

    def __init__(self, windows: Iterable[MaintenanceWindow] = ()) -> None:
        self.windows: Sequence[MaintenanceWindow] = tuple(windows)

    def __bool__(self) -> bool:
        return bool(self.windows)

    def upcoming(self, now: float, horizon: float, limit: int = 20) -> list[tuple[float, float]]:
        """The spans (epoch start, end) that hold `now` or begin before `now + horizon`, in
        order, overlapping ones merged: what a portal shows its users before they file."""
        spans = sorted(s for w in self.windows for s in w.spans_between(now, now + horizon))
        merged: list[tuple[float, float]] = []
        for begin, finish in spans:
            if merged and begin <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], finish))
            else:
                merged.append((begin, finish))
        return merged[:limit]

    def resume_at(self, now: float) -> float | None:
        """When calls may resume if `now` is inside a window, else None."""
        resume: float | None = None
        moment = now
        for _ in range(len(self.windows) + 1):  # follow chained windows, at most once each
            ends = [e for w in self.windows if (e := w.end_if_inside(moment)) is not None]
            if not ends:
                break
            moment = resume = max(ends)
        return resume
