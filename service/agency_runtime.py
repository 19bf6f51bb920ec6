"""What the delivery worker holds for one agency, and the worker's own knobs.

One record per agency instead of parallel mappings keyed by agency name: a worker cannot hold
an adapter without its retry policy or schedule, and adding a per-agency setting touches one
class, not every place that builds a worker.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.circuit import CircuitBreaker
from service.maintenance import MaintenanceCalendar
from service.schedule import LateOutcomePolicy, SchedulePolicy

from service.delivery_port import AgencyAdapter, RetryPolicy

__all__ = ["AgencyRuntime", "WorkerOptions"]


@dataclass(frozen=True)
class AgencyRuntime:
    """One agency as a worker runs it: its adapter and every policy that governs its calls.

    The breaker and calendar are shared, stateful objects; `frozen` only fixes which ones.
    """

    name: str
    adapter: AgencyAdapter
    #: In-process retries of one pass.
    retry: RetryPolicy
    #: When a failed pass is tried again, and when the delivery gives up.
    schedule: SchedulePolicy
    #: Calls in flight at once for this agency (a slow agency fills only its own slots).
    concurrency: int = 16
    #: How an acknowledged delivery's outcome is awaited (None: the schedule's defaults).
    late: LateOutcomePolicy | None = None
    #: None: calls are never held back by a circuit.
    breaker: CircuitBreaker | None = None
    #: None: the agency has no maintenance windows.
    maintenance: MaintenanceCalendar | None = None


@dataclass(frozen=True)
class WorkerOptions:
    """How a worker claims, commits and reports (defaults suit tests and the embedded queue)."""

    #: Jobs claimed per pass of the loop.
    batch_size: int = 64
    #: Outcomes recorded per store transaction.
    commit_batch: int = 64
    #: Tries of a failing commit (not an outage) before the batch is split.
    commit_attempts: int = 3
    #: While calls are still in flight, seconds a short batch of outcomes waits for theirs
    #: before its commit: a commit costs about the same for one outcome as for dozens (see
    #: `storage.delivery_ops`). 0: each batch is committed as soon as it is taken.
    commit_gather: float = 0.01
    #: First and longest wait between claims when nothing is due (doubling while idle).
    poll_interval: float = 0.05
    max_poll_interval: float = 0.5
    #: A job handed out this many times is abandoned as poisoned.
    max_handouts: int = 10
    #: How far a job of a paused agency is moved on (resuming makes it due at once).
    pause_hold: float = 300.0
    #: Breakers are re-reported this often, so readers can tell a live worker's report from a
    #: stopped one's; None: only on a change.
    report_interval: float | None = None
