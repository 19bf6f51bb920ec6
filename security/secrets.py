"""Shared secrets kept in files beside the database: read, or created at random on first use.

Kept apart from `bootstrap` (which only wires) because creating a secret file is an action
on disk with its own rules: mode 0600, created exactly once even when two processes start
together.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

__all__ = ["callback_secret", "ensure_secret_file"]


def ensure_secret_file(path: Path) -> bytes:
    """The secret in `path`, created with a random secret (mode 0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it meanwhile
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(32))
    return path.read_text().strip().encode()


def callback_secret(inline: str | None, file: Path | None) -> bytes | None:
    """The secret callbacks are signed with: given inline, else kept in `file` (created on
    first use), else none."""
    if inline is not None:
        return inline.encode()
    if file is not None:
        return ensure_secret_file(file)
    return None
