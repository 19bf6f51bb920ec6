"""`hub.py check`: one line per dependency it checked (what and where, never a password),
exit 0 when all answer and 1 otherwise."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

from config.settings import PROJECT_ROOT


def _check(**env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE__", "TRANSPORT__"))}
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "hub.py"), "check"], env={**base, **env},
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_check_says_what_it_checked_and_passes(tmp_path: Path) -> None:
    """A reachable SQLite store: one `ok` line naming it, exit 0."""
    run = _check(DATABASE__URL=f"sqlite:///{tmp_path / 'hub.db'}")
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["database", "ok", f"sqlite:///{tmp_path / 'hub.db'}"]


def test_check_names_what_failed_without_its_password() -> None:
    """An unreachable database and broker: a FAIL line each, the password hidden, exit 1."""
    port = _closed_port()
    run = _check(DATABASE__URL=f"postgresql+psycopg://crocevia:s3cr3t-db@127.0.0.1:{port}/test",
                 TRANSPORT__KIND="rabbitmq", TRANSPORT__URL=f"amqp://crocevia:s3cr3t-mq@127.0.0.1:{port}/%2F")
    assert run.returncode == 1
    lines = run.stderr.splitlines()
    assert [line.split()[:2] for line in lines] == [["database", "FAIL"], ["broker", "FAIL"]]
    assert f"postgresql+psycopg://crocevia:***@127.0.0.1:{port}/test" in lines[0]
    assert f"amqp://crocevia:***@127.0.0.1:{port}/%2F" in lines[1]
    assert "s3cr3t" not in run.stdout + run.stderr
