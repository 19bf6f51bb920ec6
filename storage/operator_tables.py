"""Tables of operator identity: accounts, personal access tokens, console sessions, login failures.

They share `storage.tables.metadata`, so Alembic sees one schema (revision 0007). Secrets are
never stored as given: passwords as argon2id hashes, tokens and session ids as SHA-256.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, DateTime, Float, ForeignKey, Integer, String, Table

from storage.tables import metadata

__all__ = ["operator_login_failures", "operator_sessions", "operator_tokens", "operators"]

_ID = BigInteger().with_variant(Integer(), "sqlite")  # as `filings.id`

#: One operator account. Rows are never deleted: a departed operator is disabled, so that
#: the audit trail's `operator:<name>` always names one account.
operators = Table(
    "operators",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("role", String(16), nullable=False),
    Column("password_hash", String(255)),  #: argon2id (PHC string); none: tokens only
    Column("totp_secret", String(64)),  #: RFC 6238 base32 secret; none: no second factor
    Column("totp_last_step", BigInteger),  #: the last time step accepted: a code is used once
    Column("disabled", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

#: Personal access tokens for the operator API and CLI: only the SHA-256 of the token is kept.
operator_tokens = Table(
    "operator_tokens",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("operator_id", _ID, ForeignKey("operators.id"), nullable=False, index=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("label", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True)),
    Column("last_used_at", DateTime(timezone=True)),
    Column("revoked_at", DateTime(timezone=True)),
)

#: Console sessions: the SHA-256 of the cookie's value, its operator and CSRF token, and the
#: two instants the idle timeout and the absolute lifetime are judged on.
operator_sessions = Table(
    "operator_sessions",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("operator_id", _ID, ForeignKey("operators.id"), nullable=False, index=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=False),
    Column("csrf_token", String(64), nullable=False),
)

#: Failed logins per account in the current window (epoch seconds); the lock itself is kept
#: in `auth_failures` under `operator:<name>`, where `hub.py lockouts list|lift` sees it.
operator_login_failures = Table(
    "operator_login_failures",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("operator_id", _ID, ForeignKey("operators.id"), nullable=False, index=True),
    Column("failed_at", Float, nullable=False),
)
