"""The supervisor of background tasks, and a worker whose outcome-commit loop died."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timezone

import pytest
from structlog.testing import capture_logs

from service.delivery_port import RetryPolicy
from service.ports import ClaimedJob, Completion
from service.schedule import SchedulePolicy
from service.supervisor import BackgroundTaskDied, Supervisor
from service.worker import AgencyRuntime, DeliveryWorker, WorkerOptions


async def _broken() -> None:
    await asyncio.sleep(0)
    raise KeyError("no such agency")


def test_a_task_that_raises_is_logged_with_its_traceback_and_stops_the_process() -> None:
    """The first death sets stop, is named for readiness and becomes the process's error."""

    async def scenario() -> Supervisor:
        stop = asyncio.Event()
        supervisor = Supervisor(stop)
        supervisor.watch("notifier", _broken())
        supervisor.watch("worker", stop.wait())  # a healthy loop: ends when stop is set
        await asyncio.wait_for(stop.wait(), 5)
        await supervisor.join()
        return supervisor

    with capture_logs() as logs:
        supervisor = asyncio.run(scenario())
    assert supervisor.dead == {"notifier": "KeyError"}
    with pytest.raises(BackgroundTaskDied, match="notifier"):
        supervisor.raise_if_failed()
    died = [e for e in logs if e["event"] == "background_task_died"]
    assert [(e["task"], e["log_level"]) for e in died] == [("notifier", "error")]
    assert isinstance(died[0]["exc_info"], KeyError)


def test_a_loop_returning_before_stop_is_a_death_unless_it_may() -> None:
    """A worker loop that just returns is dead too; the notifier may return when it has nothing to do."""

    async def done() -> None:
        return None

    async def scenario() -> Supervisor:
        stop = asyncio.Event()
        supervisor = Supervisor(stop)
        supervisor.watch("notifier", done(), may_return=True)
        await supervisor.join()
        assert not stop.is_set()
        supervisor.watch("worker", done())
        await supervisor.join()
        assert stop.is_set()
        return supervisor

    with capture_logs():
        assert asyncio.run(scenario()).dead == {"worker": "returned before stop"}


class _Fatal(BaseException):
    """An error the commit loop does not handle (it retries `Exception`s)."""


class _CommitsNothing:
    """A job source with one settled job, whose commit fails beyond what the loop handles."""

    def __init__(self) -> None:
        self.claims = 0

    async def claim(self, owner: str, agencies: Sequence[str], limit: int) -> list[ClaimedJob]:
        self.claims += 1
        if self.claims > 1:
            return []
        return [ClaimedJob(1, "d" * 32, 1, "CRV-2026-000001", "inps", "RichiestaDurc", "m" * 32, "protocolled",
                           {}, 0, datetime.now(timezone.utc))]

    async def complete(self, completions: Sequence[Completion]) -> None:
        raise _Fatal("the store's driver gave up")


def test_a_worker_whose_commit_loop_died_ends_instead_of_piling_up_outcomes() -> None:
    """The worker loop notices its committer is gone and raises (its supervisor stops the process)."""
    inps = AgencyRuntime(name="inps", adapter=object(), retry=RetryPolicy(),  # type: ignore[arg-type]  # never called
                         schedule=SchedulePolicy(), concurrency=1)
    worker = DeliveryWorker(source=_CommitsNothing(), agencies={"inps": inps},
                            deliver=None,  # type: ignore[arg-type]  # the job is already settled: nothing is sent
                            options=WorkerOptions(poll_interval=0.01, max_poll_interval=0.02))

    async def scenario() -> None:
        await asyncio.wait_for(worker.run(asyncio.Event()), 10)

    with capture_logs(), pytest.raises(_Fatal):
        asyncio.run(scenario())
