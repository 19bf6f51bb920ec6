"""Protocol numbers and references in each agency's own format (docs/agency-contracts.md)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone

__all__ = ["INPS_SEDE", "Counters", "Lookup", "NUMBERING", "Numbered"]

#: The INPS office code in the simulator's protocol numbers (INPS.<sede>.<year>.<seq>).
INPS_SEDE = "0001"

#: `lookup(name)`: the first value of the request field called `name`, or None.
Lookup = Callable[[str], "str | None"]
#: A protocol number and the references that go with it.
Numbered = tuple[str, dict[str, str]]


class Counters:
    """Sequence numbers by key. They survive a reset: an agency never reuses a number."""

    def __init__(self) -> None:
        self._last: defaultdict[str, int] = defaultdict(int)

    def next(self, key: str) -> int:
        self._last[key] += 1
        return self._last[key]


def _year() -> int:
    return datetime.now(timezone.utc).year


def _inps(counters: Counters, lookup: Lookup) -> Numbered:
    # One gapless sequence per year, in order of arrival (the desk numbers on one event loop).
    year = _year()
    return f"INPS.{INPS_SEDE}.{year}.{counters.next(f'protocollo:{year}'):07d}", {}


def _inail(counters: Counters, lookup: Lookup) -> Numbered:
    protocol = f"INAIL/{_year()}/{counters.next('protocollo'):08d}"
    return protocol, {"numeroPAT": f"{counters.next('pat'):09d}"}


def _cciaa(counters: Counters, lookup: Lookup) -> Numbered:
    # Each chamber numbers its own protocol and REA: the province of the registered office
    # picks the chamber. The schema guarantees one sede/provincia.
    province = lookup("provincia") or "XX"
    protocol = f"{province}/RI/{_year()}/{counters.next('protocollo:' + province):06d}"
    return protocol, {"numeroREA": f"{province}-{counters.next('rea:' + province):07d}"}


def _runts(counters: Counters, lookup: Lookup) -> Numbered:
    protocol = f"RUNTS-{_year()}-{counters.next('protocollo'):07d}"
    return protocol, {"numeroRepertorio": f"{counters.next('repertorio'):07d}"}


#: agency -> the function that numbers one accepted message.
NUMBERING: dict[str, Callable[[Counters, Lookup], Numbered]] = {
    "inps": _inps,
    "inail": _inail,
    "cciaa": _cciaa,
    "runts": _runts,
}
