"""What every benchmark here measures the same way: free ports, process CPU and peak memory,
percentiles."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import httpx

__all__ = ["free_port", "percentile", "proc_stats", "wait_healthy"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_stats(pid: int) -> tuple[float, int]:
    """CPU seconds (user+system) and peak resident memory (bytes) of a live process."""
    ticks = os.sysconf("SC_CLK_TCK")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) * 1024
    return cpu, hwm


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile of a non-empty list."""
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def wait_healthy(base: str, processes: Iterable[subprocess.Popen[bytes]], *, timeout: float = 60,
                 logs: object = "the process logs") -> None:
    """Wait until the API at `base` answers `/health`; fail if a process exits first or time runs out."""
    procs = list(processes)
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{base}/health", trust_env=False).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError(f"the hub did not start; see {logs}")
        time.sleep(0.1)  # polling a condition with a deadline
