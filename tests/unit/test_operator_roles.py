"""Operator roles are ordered: viewer reads, operator also acts, admin also manages."""

from __future__ import annotations

import pytest

from domain.operators import ROLES, Operator, lockout_key, role_allows


@pytest.mark.parametrize(("role", "required", "allowed"), [
    ("viewer", "viewer", True), ("viewer", "operator", False), ("viewer", "admin", False),
    ("operator", "viewer", True), ("operator", "operator", True), ("operator", "admin", False),
    ("admin", "viewer", True), ("admin", "operator", True), ("admin", "admin", True),
    ("root", "viewer", False), ("admin", "superuser", False),
])
def test_role_allows_what_the_roles_below_allow(role: str, required: str, allowed: bool) -> None:
    """Each role allows its own and the lower roles' actions; unknown roles allow nothing."""
    assert role_allows(role, required) is allowed


def test_operators_are_named_for_the_audit_trail_and_lockouts() -> None:
    """The audit trail and `hub.py lockouts` name an operator `operator:<name>`."""
    assert ROLES == ("viewer", "operator", "admin")
    assert Operator("mrossi", "admin").actor == "operator:mrossi" == lockout_key("mrossi")
