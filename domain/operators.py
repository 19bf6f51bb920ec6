"""Operators: who they are, what their role allows, and the rules of their credentials.

Operators are the hub's third kind of caller (DESIGN.md, "Trust at the edges"): never a
portal, never an agency. Their roles are ordered, each allowing what the ones below allow.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "OPERATOR_NAME",
    "ROLES",
    "TOKEN_PREFIX",
    "Operator",
    "OperatorError",
    "Role",
    "lockout_key",
    "role_allows",
]

Role = Literal["viewer", "operator", "admin"]
#: Roles from least to most allowed: viewer reads, operator also acts, admin also manages.
ROLES: tuple[Role, ...] = get_args(Role)

#: Personal access tokens start with this, so a leaked one is recognisable (secret scanners).
TOKEN_PREFIX = "crv_pat_"

#: An operator's name: a login, not personal data beyond itself; safe in audit lines.
OPERATOR_NAME = re.compile(r"^[a-z][a-z0-9._-]{1,62}$")


class OperatorError(ValueError):
    """A request about operators that cannot be done as asked (bad name, role, password)."""

    def __init__(self, slug: str, detail: str, status: int = 422) -> None:
        super().__init__(detail)
        self.slug = slug
        self.detail = detail
        self.status = status


@dataclass(frozen=True)
class Operator:
    """An authenticated operator: the audit trail names them `operator:<name>`."""

    name: str
    role: Role

    @property
    def actor(self) -> str:
        return f"operator:{self.name}"


def role_allows(role: str, required: str) -> bool:
    """Whether `role` may do what `required` may (unknown roles allow nothing)."""
    if role not in ROLES or required not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(required)


def lockout_key(name: str) -> str:
    """How `hub.py lockouts list|lift` names a locked operator account."""
    return f"operator:{name}"

