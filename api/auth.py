"""Which portal is calling: a bearer key checked against the SHA-256 digests in config.

The signed ModI requests of a later issue replace this; the seam stays the same: a request
in, a portal id out, or `None`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

__all__ = ["PortalAuthenticator"]


class PortalAuthenticator:
    def __init__(self, key_digests: Mapping[str, str]) -> None:
        """`key_digests`: portal id → hex SHA-256 of its API key."""
        self._by_digest = {digest.lower(): portal for portal, digest in key_digests.items()}

    def portal_for(self, authorization: str | None) -> str | None:
        if not authorization or not authorization.startswith("Bearer "):
            return None
        digest = hashlib.sha256(authorization[7:].strip().encode()).hexdigest()
        for known, portal in self._by_digest.items():
            if hmac.compare_digest(known, digest):
                return portal
        return None
