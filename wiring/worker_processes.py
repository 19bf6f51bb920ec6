"""The embedded hub's worker processes: `hub.py serve` with `[embedded] worker_processes` > 0
runs its delivery workers as `hub.py worker` children on the same SQLite file.

Why: a filing's work mostly holds the GIL, so the API and a worker in one process share one
core (issue 13). Children use the others. The database stays the queue: each child claims jobs
under a lease (SQLite's `BEGIN IMMEDIATE` serialises the claims), so no job is handed to two.

Each child gets one end of a socket pair (its `--wake-fd`): the API writes a byte to one child
in turn when a filing is accepted, so a child waits no poll interval for new work (the loopback
socket costs a system call, the poll stays the fallback); and a child that reads the end of the
stream knows its API is gone (killed) and stops. A child that ends while the API runs is a
background task's death: the API stops, loudly, as for any of its tasks (exit 70).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import structlog

from service.supervisor import Supervisor

__all__ = ["WorkerProcessDied", "WorkerProcesses", "child_environment", "listen_for_wakes", "worker_command"]

log = structlog.get_logger("crocevia.worker_processes")

#: Seconds a child has to drain its in-flight deliveries after SIGTERM before it is killed
#: (its leased jobs are then taken again when the lease runs out).
STOP_GRACE_SECONDS = 30.0

_HUB = Path(__file__).resolve().parent.parent / "hub.py"


class WorkerProcessDied(RuntimeError):
    """A worker child ended while the API still ran."""

    def __init__(self, index: int, pid: int, returncode: int) -> None:
        how = f"killed by signal {-returncode}" if returncode < 0 else f"exit status {returncode}"
        super().__init__(f"worker process {index} (pid {pid}) ended: {how}")
        self.returncode = returncode


def worker_command(config_file: str | None) -> list[str]:
    """`hub.py worker` with the API's settings file, without a metrics listener of its own
    (N children on one port would collide)."""
    config = ["--config", str(config_file)] if config_file else []
    return [sys.executable, str(_HUB), *config, "worker", "--metrics-port", "0"]


class WorkerProcesses:
    """`count` worker children of this process, supervised, woken, and stopped with it."""

    def __init__(self, command: Sequence[str], count: int, *, env: Mapping[str, str]) -> None:
        self._command = list(command)
        self._count = count
        self._env = dict(env)
        self._wakes: list[socket.socket] = []
        self._turn = itertools.count()

    async def start(self, supervisor: Supervisor, stop: asyncio.Event) -> None:
        """Start the children; each is watched as `worker-process-<i>` by `supervisor`."""
        for index in range(self._count):
            ours, theirs = socket.socketpair()
            ours.setblocking(False)
            try:
                # A session of its own: a terminal's Ctrl-C reaches the API only, which then
                # stops the children in order (else they could end first and look dead).
                proc = await asyncio.create_subprocess_exec(
                    *self._command, "--wake-fd", str(theirs.fileno()), pass_fds=(theirs.fileno(),),
                    env=self._env, start_new_session=True)
            except BaseException:
                ours.close()
                raise
            finally:
                theirs.close()
            self._wakes.append(ours)
            log.info("worker_process_started", index=index, pid=proc.pid)
            supervisor.watch(f"worker-process-{index}", self._supervise(index, proc, stop))

    def wake(self) -> None:
        """New jobs may be due (called from the API's threads): wake one child, in turn."""
        if not self._wakes:
            return
        sock = self._wakes[next(self._turn) % len(self._wakes)]
        try:
            sock.send(b"\0")
        except BlockingIOError:
            pass  # its buffer is full of wakes it has not read yet: it is awake already
        except OSError as exc:  # the child is gone: its watcher reports and stops the API
            log.warning("worker_process_wake_failed", error=type(exc).__name__)

    async def _supervise(self, index: int, proc: asyncio.subprocess.Process, stop: asyncio.Event) -> None:
        ended = asyncio.ensure_future(proc.wait())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({ended, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if ended.done() and not stop.is_set():
            raise WorkerProcessDied(index, proc.pid, ended.result())
        if not ended.done():
            proc.send_signal(signal.SIGTERM)  # the worker drains its in-flight deliveries
            try:
                await asyncio.wait_for(asyncio.shield(ended), STOP_GRACE_SECONDS)
            except TimeoutError:
                log.error("worker_process_killed", index=index, pid=proc.pid, grace_seconds=STOP_GRACE_SECONDS)
                proc.kill()
                await ended
        code = ended.result()
        log.info("worker_process_stopped", index=index, pid=proc.pid, returncode=code)

    def close(self) -> None:
        for sock in self._wakes:
            sock.close()
        self._wakes.clear()


def listen_for_wakes(fd: int, wake: Callable[[], None], parent_gone: Callable[[], None]) -> Callable[[], None]:
    """In a worker child: call `wake` when the API writes to `fd`, `parent_gone` when the API's
    end closes (it died or was killed). Returns what stops listening."""
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()

    def readable() -> None:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return
        except OSError as exc:  # reset: the API's end is gone as surely as at the stream's end
            data, why = b"", type(exc).__name__
        else:
            why = "its wake socket closed"
        if data:
            wake()
            return
        loop.remove_reader(fd)
        log.error("api_process_gone", reason=why)
        parent_gone()

    loop.add_reader(fd, readable)

    def close() -> None:
        loop.remove_reader(fd)
        sock.close()

    return close


def child_environment(public_url: str) -> dict[str, str]:
    """This process's environment for a child, with the API's address for agencies' callbacks
    (the API may listen elsewhere than `[api]` says: `hub.py serve --port`)."""
    env = dict(os.environ)
    env.setdefault("API__PUBLIC_URL", public_url)
    return env
