"""The start-up check that a job's lease outlives the longest worker pass the settings allow.

A worker holds a job under a lease (`worker.lease_seconds`; with RabbitMQ the same figure
decides when an unacknowledged job is requeued). If a pass could outlast it, the job is taken
again while the first pass still talks to the agency, and the same message goes out twice.
Each call ends at its agency's `call_deadline`, and the in-process retries are bounded, so
the longest pass is known from the settings: the start is refused when the lease is shorter.
"""

from __future__ import annotations

from collections.abc import Iterable

from config.settings import AgencySettings, Settings

__all__ = ["LeaseTooShortError", "check_lease_budget", "worst_pass_seconds"]

#: HTTP exchanges one late-outcome poll may make (the status, then the result it points to).
_EXCHANGES_PER_POLL = 2


class LeaseTooShortError(ValueError):
    """`worker.lease_seconds` is not longer than the worst pass of some agency."""


def worst_pass_seconds(agency: AgencySettings) -> float:
    """The longest one worker pass for `agency` can take: every in-process try running to its
    call deadline, with the longest wait between tries (tenacity caps each at `max_wait`), or
    a late-outcome poll whose exchanges all run to the deadline."""
    retry = agency.retry
    attempts = max(1, retry.attempts)
    delivery = attempts * agency.call_deadline + (attempts - 1) * retry.max_wait
    poll = _EXCHANGES_PER_POLL * agency.call_deadline
    return max(delivery, poll)


def check_lease_budget(settings: Settings, agencies: Iterable[str]) -> None:
    """Refuse a configuration whose job lease could expire under a running pass.

    Raises:
        LeaseTooShortError: naming the lease, and for each agency at fault the settings that
            make its pass longer (call_deadline, retry.attempts, retry.max_wait).
    """
    lease = settings.worker.lease_seconds
    problems = []
    for name in sorted(agencies):
        conf = settings.agencies.get(name)
        if conf is None:
            continue
        worst = worst_pass_seconds(conf)
        if worst >= lease:
            problems.append(
                f"agencies.{name}: a pass may take {worst:g} s (call_deadline {conf.call_deadline:g} s "
                f"x retry.attempts {conf.retry.attempts} + waits of up to retry.max_wait "
                f"{conf.retry.max_wait:g} s)"
            )
    if problems:
        raise LeaseTooShortError(
            f"worker.lease_seconds ({lease:g} s) must be longer than the longest worker pass, or a "
            f"job is taken again while its call runs: " + "; ".join(problems)
            + ". Raise worker.lease_seconds or lower those settings."
        )
