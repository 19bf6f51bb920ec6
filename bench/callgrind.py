"""Instructions counted by valgrind's callgrind: a figure of work that the machine's noise does not move.

CPU time on these shared machines moves by ±10–20 % between runs of the same tree (the host's
other tenants take caches, memory bandwidth and clock), so a change worth 2–3 % of a process's
work cannot be told from two timed runs, nor from ten. callgrind executes the process on a
synthetic CPU and counts the instructions it runs: the same work gives the same count whatever
else the machine does (seen here: the intake's count per filing within ±1 % between runs,
where its CPU time moved ±15 %). It is not a time: cache misses, syscalls' kernel work and
waiting are not in it, and the process runs ~50 times slower, so it measures what a code change
does to the work, not how fast the hub is.

The process starts with instrumentation off (imports and start-up run uninstrumented, about
three times slower than natively); `counting` turns it on for the measured window only, and
`counted_instructions` reads the total from the dump callgrind writes when the process ends.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

__all__ = ["OUT_VARIABLE", "callgrind_command", "counted_instructions", "counting", "instructions_since_last"]

#: Set by a benchmark that runs itself again under callgrind: the counts' file, for the run inside.
OUT_VARIABLE = "CROCEVIA_CALLGRIND_OUT"


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"--instructions needs {name} on PATH (Debian's valgrind package)")
    return found


def callgrind_command(command: Sequence[str], out: Path, *, trace_children: bool = True) -> list[str]:
    """`command` run under callgrind, counting nothing until `counting` says so; its counts go to `out`.

    `command[0]` must be the program itself, not a script that executes another (a pyenv shim).
    With `trace_children` callgrind follows an exec (a service that restarts itself under
    `python -OO`) and every process it starts; without it, the processes it starts (simulators)
    run natively.
    """
    return [_tool("valgrind"), "--tool=callgrind", "--instr-atstart=no",
            f"--trace-children={'yes' if trace_children else 'no'}", f"--callgrind-out-file={out}", *command]


def _control(pid: int, option: str, *, wait: float = 120) -> None:
    """Send `option` to callgrind in `pid`, waiting up to `wait` s for it to listen (a process
    just started under it takes a while to load)."""
    deadline = time.monotonic() + wait
    while True:
        done = subprocess.run([_tool("callgrind_control"), option, str(pid)],
                              capture_output=True, text=True, timeout=60, check=False)
        said = (done.stdout + done.stderr).strip()
        if done.returncode == 0 and "OK" in done.stdout:
            return
        if "not detected" not in said or time.monotonic() > deadline:
            raise RuntimeError(f"callgrind_control {option} failed for pid {pid}: {said}")
        time.sleep(0.2)  # polling a condition with a deadline


def _instrument(pid: int, state: str) -> None:
    _control(pid, f"--instr={state}")


@contextmanager
def counting(pid: int) -> Iterator[None]:
    """Count the instructions of process `pid` (started by `callgrind_command`) inside the block."""
    _instrument(pid, "on")
    try:
        yield
    finally:
        _instrument(pid, "off")


def instructions_since_last(out: Path) -> int:
    """Ask callgrind in this very process to write what it counted since its last dump, and
    read it: one measured window of a benchmark that runs itself under callgrind (`OUT_VARIABLE`).
    The window's own `counting` block must have ended (instrumentation off)."""
    before = set(_parts(out))
    _control(os.getpid(), "--dump")
    written = [part for part in _parts(out) if part not in before]
    if len(written) != 1:
        raise RuntimeError(f"expected one new dump of {out}, found {[p.name for p in written]}")
    return _totals(written[0])


def _parts(out: Path) -> list[Path]:
    """`out` itself, and `out.N` for each dump asked for while the process ran."""
    return sorted(part for part in out.parent.glob(out.name + "*")
                  if part.name == out.name or re.fullmatch(r"\.\d+", part.name[len(out.name):]))


def _totals(part: Path) -> int:
    for line in part.read_text(errors="replace").splitlines():
        if line.startswith("totals:"):
            return int(line.split()[1])
    return 0


def counted_instructions(out: Path) -> int:
    """The instructions counted in the run written to `out`, read once its process has ended."""
    parts = _parts(out)
    if not parts:
        raise RuntimeError(f"callgrind wrote no counts to {out}")
    return sum(_totals(part) for part in parts)
