"""The audit trail's hash chain: each line's hash covers the previous hash and the line.

`hash = sha256(prev_hash || "\\n" || canonical(line))`, the first line chained to
`GENESIS_HASH`. Editing a line changes its hash; deleting one breaks the next line's
`prev_hash`; so a verifier walking the lines in order finds the first one tampered with.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

__all__ = ["GENESIS_HASH", "audit_hash", "canonical_line"]

#: The `prev_hash` of the first line.
GENESIS_HASH = "0" * 64


def _instant(at: datetime) -> str:
    # SQLite hands back naive datetimes, PostgreSQL aware ones in the session's zone: both
    # are read as the same UTC instant, to the microsecond.
    if at.tzinfo is not None:
        at = at.astimezone(timezone.utc).replace(tzinfo=None)
    return at.isoformat(timespec="microseconds")


def canonical_line(
    *, at: datetime, actor: str, action: str, subject: str, outcome: str,
    detail: Mapping[str, Any] | None,
) -> bytes:
    """The bytes a line's hash covers: sorted-key compact JSON of the line's content.

    The id is left out so a line can be hashed before the database numbers it; the order
    of lines is fixed by the chain itself.
    """
    line = {
        "at": _instant(at),
        "actor": actor,
        "action": action,
        "subject": subject or "",
        "outcome": outcome,
        "detail": detail if detail is not None else None,
    }
    return json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def audit_hash(prev_hash: str, canonical: bytes) -> str:
    """The hash of a line whose predecessor's hash is `prev_hash`."""
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical).hexdigest()
