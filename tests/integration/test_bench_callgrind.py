"""The benchmarks' instruction counts (`bench/callgrind.py`): only the measured window, in proportion to the work.

`bench/intake_cpu.py --instructions` compares two trees by the instructions the API runs per
filing; a count that took in the start-up, or that did not grow with the work, would make any
change look like a gain or a loss.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from callgrind import callgrind_command, counted_instructions, counting  # noqa: E402 - the bench's own module

#: Imports a module at start (start-up work, outside any window), then for each line it reads
#: loops that many thousand times and answers, so the test knows the work is done.
_PROGRAM = """
import sys, decimal
for line in sys.stdin:
    total = 0
    for i in range(int(line) * 1000):
        total += i * i
    print(total, flush=True)
"""


def _count(windows: list[int], tmp_path: Path, name: str) -> int:
    """The instructions counted while the program ran `windows[0]` thousand loops; the other
    entries run outside the window (before and after it)."""
    out = tmp_path / name
    program = subprocess.Popen(callgrind_command([sys.executable, "-c", _PROGRAM], out),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert program.stdin is not None and program.stdout is not None

    def run(thousands: int) -> None:
        program.stdin.write(f"{thousands}\n")  # type: ignore[union-attr]
        program.stdin.flush()  # type: ignore[union-attr]
        program.stdout.readline()  # type: ignore[union-attr]  # its answer: the loop has ended

    try:
        counted, *outside = windows
        run(0)  # started: callgrind listens before Python has even loaded, and would count that
        for thousands in outside:
            run(thousands)
        with counting(program.pid):
            run(counted)
        for thousands in outside:
            run(thousands)
    finally:
        program.stdin.close()
        program.wait(120)
    return counted_instructions(out)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed (Debian's valgrind package)")
def test_only_the_window_is_counted_and_in_proportion_to_its_work(tmp_path: Path) -> None:
    small = _count([100], tmp_path, "small")
    large = _count([300], tmp_path, "large")
    # The same window with much work outside it: the start-up and the loops before and after it do not count.
    busy_around = _count([100, 400], tmp_path, "busy")
    # Within a small program's spread between runs (±4 % seen); the start-up alone would add ~50 %.
    assert 2.6 < large / small < 3.4, (small, large)
    assert abs(busy_around - small) / small < 0.1, (small, busy_around)


def test_the_counts_are_read_from_this_runs_files_only(tmp_path: Path) -> None:
    """A run's dump and its numbered parts are summed; another run's file that shares the prefix is not."""
    for name, total in (("run", 5), ("run.1", 7), ("run_other", 1000), ("run.1.bak", 1000)):
        (tmp_path / name).write_text(f"# callgrind format\nevents: Ir\nsummary: 0\n\ntotals: {total}\n")
    assert counted_instructions(tmp_path / "run") == 12
