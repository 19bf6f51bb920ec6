"""Use cases of operator identity: accounts, personal access tokens, console sessions, login.

Secrets are made and checked here and never leave as given: passwords become argon2id hashes
(argon2-cffi), tokens and session ids are kept as SHA-256, TOTP codes (RFC 6238, pyotp) are
checked and their time step remembered so that a code is used once. Every change and every
login, success or failure, is one audit line naming `operator:<name>`; no line carries a
password, a token, a session id or a code.
"""

from __future__ import annotations

import builtins
import hashlib
import hmac
import math
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from domain.operators import OPERATOR_NAME, ROLES, TOKEN_PREFIX, Operator, OperatorError, Role
from domain.timestamps import rfc3339
from service.identity import AuditEntry

__all__ = [
    "Account",
    "IssuedToken",
    "LoginRefused",
    "NewSession",
    "OperatorAccounts",
    "OperatorPolicy",
    "OperatorStore",
    "SessionRecord",
    "TokenRecord",
    "account_json",
    "hash_secret",
]


def hash_secret(value: str) -> str:
    """SHA-256 of a high-entropy secret (token, session id): enough, as it cannot be guessed."""
    return hashlib.sha256(value.encode()).hexdigest()


def _instant(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


@dataclass(frozen=True, slots=True)
class OperatorPolicy:
    """The `[operators]` settings the use cases need (config/crocevia.toml)."""

    session_idle_seconds: float = 1800.0  #: INPS rule: idle console sessions end after 30 minutes
    session_absolute_seconds: float = 28_800.0
    lockout_threshold: int = 10
    failure_window_seconds: float = 300.0
    lockout_seconds: float = 900.0
    token_days: int = 90
    max_token_days: int = 366
    min_password_length: int = 12
    totp_issuer: str = "Crocevia"


@dataclass(frozen=True, slots=True)
class Account:
    """An operator account as stored (the hash and TOTP secret never leave the service)."""

    id: int
    name: str
    role: Role
    disabled: bool
    created_at: datetime
    password_hash: str | None = field(default=None, repr=False)
    totp_secret: str | None = field(default=None, repr=False)
    totp_last_step: int | None = None

    @property
    def has_totp(self) -> bool:
        return self.totp_secret is not None

    def as_operator(self) -> Operator:
        return Operator(self.name, self.role)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: str
    operator: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id_hash: str
    account: Account
    created_at: datetime
    last_seen_at: datetime
    csrf_token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class NewSession:
    """A console session just opened: `cookie` goes to the browser once, never stored."""

    cookie: str = field(repr=False)
    csrf_token: str = field(repr=False)
    operator: Operator
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class IssuedToken:
    id: str
    token: str = field(repr=False)  #: shown once: only its hash is kept
    expires_at: datetime | None = None


class LoginRefused(Exception):
    """A login refused: 401 (`reason` is for the audit line only) or 429 while locked."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


class OperatorStore(Protocol):
    """What the operator use cases need from storage (storage.operators.SqlOperatorStore)."""

    def add(self, name: str, role: str, password_hash: str | None, totp_secret: str | None,
            at: datetime, entry: AuditEntry) -> Account: ...

    def get(self, name: str) -> Account | None: ...

    def list(self) -> list[Account]: ...

    def set_role(self, name: str, role: str, entry: AuditEntry) -> Account | None: ...

    def disable(self, name: str, entry: AuditEntry) -> Account | None: ...

    def add_token(self, account: Account, token_id: str, token_hash: str, label: str, at: datetime,
                  expires_at: datetime | None, entry: AuditEntry) -> None: ...

    def tokens(self, name: str) -> builtins.list[TokenRecord]: ...

    def revoke_token(self, token_id: str, at: datetime, entry: AuditEntry) -> TokenRecord | None: ...

    def token_account(self, token_hash: str) -> tuple[TokenRecord, Account] | None: ...

    def touch_token(self, token_id: str, at: datetime) -> None: ...

    def lock_of(self, name: str, now: float) -> float | None: ...

    def record_login_failure(self, account: Account, now: float, policy: OperatorPolicy,
                             entry: AuditEntry) -> float | None: ...

    def open_session(self, account: Account, id_hash: str, csrf_token: str, at: datetime,
                     totp_step: int | None, entry: AuditEntry, *,
                     ended_before: tuple[datetime, datetime]) -> bool: ...

    def session(self, id_hash: str) -> SessionRecord | None: ...

    def touch_session(self, id_hash: str, at: datetime) -> None: ...

    def close_session(self, id_hash: str, entry: AuditEntry | None) -> bool: ...

    def audit(self, entry: AuditEntry) -> None: ...


#: Verified when the name is unknown, so that a login takes as long whether or not it exists.
_DUMMY_PASSWORD = "crocevia-no-such-operator"


class OperatorAccounts:
    """Operator accounts and their credentials (blocking: run in the thread pool from async code).

    Args:
        store: the accounts' records and the audit trail.
        policy: timeouts, lockout, token lifetime, password length.
        clock: epoch seconds; tests inject one to move time (idle timeout, lockout, expiry).
        hasher: argon2id with the library's RFC 9106 defaults; tests may pass cheaper parameters.
    """

    def __init__(self, store: OperatorStore, policy: OperatorPolicy, *, clock: Callable[[], float],
                 hasher: PasswordHasher | None = None) -> None:
        self._store = store
        self.policy = policy
        self._clock = clock
        self._hasher = hasher or PasswordHasher()

    @cached_property
    def _dummy_hash(self) -> str:
        # Made on first use: a CLI command that never logs anyone in does not pay for it.
        return self._hasher.hash(_DUMMY_PASSWORD)

    def now(self) -> datetime:
        return _instant(self._clock())

    # -- management ---------------------------------------------------------------------------
    def add(self, name: str, role: str, actor: str, *, password: str | None = None,
            totp: bool = False) -> tuple[Account, str | None]:
        """Create an account; returns it and, with `totp`, the provisioning URI (shown once).

        Raises:
            OperatorError: a bad name or role, a short password, or the name is taken (409).
        """
        _check_name(name)
        _check_role(role)
        if password is not None and len(password) < self.policy.min_password_length:
            raise OperatorError("weak-password",
                                f"the password must have at least {self.policy.min_password_length} characters")
        secret = pyotp.random_base32() if totp else None
        entry = AuditEntry(actor, "operator_added", name, "added",
                           {"role": role, "password": password is not None, "totp": totp})
        account = self._store.add(name, role, self._hasher.hash(password) if password else None,
                                  secret, self.now(), entry)
        uri = pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=self.policy.totp_issuer) if secret else None
        return account, uri

    def list(self) -> list[Account]:
        return self._store.list()

    def set_role(self, name: str, role: str, actor: str) -> Account:
        """Raises: OperatorError (unknown role, 422; unknown operator, 404)."""
        _check_role(role)
        before = self._store.get(name)
        if before is None:
            raise OperatorError("operator-not-found", f"no operator {name!r}", 404)
        entry = AuditEntry(actor, "operator_role_changed", name, "changed", {"from": before.role, "to": role})
        changed = self._store.set_role(name, role, entry)
        assert changed is not None
        return changed

    def disable(self, name: str, actor: str) -> Account:
        """Disable an account and end its sessions (its tokens stop working with it).

        Raises: OperatorError (unknown operator, 404).
        """
        changed = self._store.disable(name, AuditEntry(actor, "operator_disabled", name, "disabled", {}))
        if changed is None:
            raise OperatorError("operator-not-found", f"no operator {name!r}", 404)
        return changed

    def issue_token(self, name: str, actor: str, *, label: str = "", days: int | None = None) -> IssuedToken:
        """A new personal access token for `name` (`crv_pat_` + 32 random bytes).

        Raises: OperatorError (unknown or disabled operator, lifetime out of bounds).
        """
        account = self._store.get(name)
        if account is None:
            raise OperatorError("operator-not-found", f"no operator {name!r}", 404)
        if account.disabled:
            raise OperatorError("operator-disabled", f"operator {name!r} is disabled", 409)
        days = self.policy.token_days if days is None else days
        if not 1 <= days <= self.policy.max_token_days:
            raise OperatorError("invalid-token-lifetime",
                                f"a token lives 1 to {self.policy.max_token_days} days")
        label = label.strip()[:100] or "token"
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_id = uuid.uuid4().hex[:16]
        now = self.now()
        expires = now + timedelta(days=days)
        entry = AuditEntry(actor, "operator_token_created", name, "created",
                           {"tokenId": token_id, "label": label, "expiresAt": rfc3339(expires)})
        self._store.add_token(account, token_id, hash_secret(token), label, now, expires, entry)
        return IssuedToken(token_id, token, expires)

    def tokens(self, name: str) -> builtins.list[TokenRecord]:
        return self._store.tokens(name)

    def revoke_token(self, token_id: str, actor: str) -> TokenRecord:
        """Raises: OperatorError (unknown token, 404)."""
        entry = AuditEntry(actor, "operator_token_revoked", "", "revoked", {"tokenId": token_id})
        revoked = self._store.revoke_token(token_id, self.now(), entry)
        if revoked is None:
            raise OperatorError("token-not-found", f"no token {token_id!r}", 404)
        return revoked

    # -- authentication -----------------------------------------------------------------------
    def login(self, name: str, password: str, totp: str | None, client: str) -> NewSession:
        """Check name, password and (when enrolled) the one-time code; open a console session.

        Raises:
            LoginRefused: with `retry_after` while the account is locked out (429), else 401.
        """
        now = self._clock()
        account = self._store.get(name) if OPERATOR_NAME.match(name) else None
        if account is None:
            self._verify(self._dummy_hash, password)  # as long as for a real account
            self._store.audit(AuditEntry("anonymous", "operator_login_failed", "", "unknown-operator",
                                         {"client": client}))
            raise LoginRefused("unknown-operator")
        locked = self._store.lock_of(name, now)
        if locked is not None:
            self._store.audit(AuditEntry(account.as_operator().actor, "operator_login_failed", name,
                                         "locked_out", {"client": client}))
            raise LoginRefused("locked-out", locked - now)
        reason, step = self._check(account, password, totp, now)
        if reason is not None:
            entry = AuditEntry(account.as_operator().actor, "operator_login_failed", name, reason,
                               {"client": client})
            until = self._store.record_login_failure(account, now, self.policy, entry)
            raise LoginRefused(reason, None if until is None else until - now)
        cookie, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        entry = AuditEntry(account.as_operator().actor, "operator_logged_in", name, "ok",
                           {"client": client, "method": "password+totp" if account.has_totp else "password"})
        ended = (_instant(now - self.policy.session_absolute_seconds), _instant(now - self.policy.session_idle_seconds))
        if not self._store.open_session(account, hash_secret(cookie), csrf, _instant(now), step, entry,
                                        ended_before=ended):
            # Another login used this TOTP code in the meantime: a code is good once.
            raise LoginRefused("totp-reused")
        return NewSession(cookie, csrf, account.as_operator(),
                          _instant(now + self.policy.session_absolute_seconds))

    def _check(self, account: Account, password: str, totp: str | None, now: float) -> tuple[str | None, int | None]:
        if account.password_hash is None:
            self._verify(self._dummy_hash, password)
            return "no-password", None
        if not self._verify(account.password_hash, password):
            return "bad-password", None
        if account.disabled:
            return "disabled", None
        if account.totp_secret is None:
            return None, None
        if not totp:
            return "totp-missing", None
        step = _totp_step(account.totp_secret, totp.strip(), now)
        if step is None:
            return "totp-invalid", None
        if account.totp_last_step is not None and step <= account.totp_last_step:
            return "totp-reused", None
        return None, step

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def by_token(self, token: str) -> Operator | str:
        """The operator a personal access token belongs to, or why it is refused."""
        found = self._store.token_account(hash_secret(token))
        if found is None:
            return "token-unknown"
        record, account = found
        now = self.now()
        if record.revoked_at is not None:
            return "token-revoked"
        if record.expires_at is not None and record.expires_at <= now:
            return "token-expired"
        if account.disabled:
            return "operator-disabled"
        self._store.touch_token(record.id, now)
        return account.as_operator()

    def by_session(self, cookie: str) -> SessionRecord | str:
        """The session a cookie names, still within its idle timeout and absolute lifetime
        (an ended one is deleted and audited), or why it is refused."""
        id_hash = hash_secret(cookie)
        record = self._store.session(id_hash)
        if record is None:
            return "session-unknown"
        now = self.now()
        idle = (now - record.last_seen_at).total_seconds() > self.policy.session_idle_seconds
        old = (now - record.created_at).total_seconds() > self.policy.session_absolute_seconds
        if idle or old or record.account.disabled:
            why = "session-idle" if idle else "session-expired" if old else "operator-disabled"
            self._store.close_session(id_hash, AuditEntry(
                record.account.as_operator().actor, "operator_session_ended", record.account.name, why, {}))
            return why
        return record

    def touch_session(self, record: SessionRecord) -> None:
        self._store.touch_session(record.id_hash, self.now())

    def logout(self, record: SessionRecord) -> None:
        actor = record.account.as_operator().actor
        self._store.close_session(record.id_hash, AuditEntry(actor, "operator_logged_out",
                                                             record.account.name, "ok", {}))

    def audit(self, entry: AuditEntry) -> None:
        self._store.audit(entry)


def _totp_step(secret: str, code: str, now: float) -> int | None:
    """The time step whose code `code` is (now, or one step either side for clock drift)."""
    if not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = math.floor(now / totp.interval)
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def _check_name(name: str) -> None:
    if not OPERATOR_NAME.match(name):
        raise OperatorError("invalid-operator-name",
                            "a name is 2 to 63 lowercase letters, digits, '.', '_' or '-', starting with a letter")


def _check_role(role: str) -> None:
    if role not in ROLES:
        raise OperatorError("invalid-role", f"role must be one of {', '.join(ROLES)}")


def account_json(account: Account) -> dict[str, Any]:
    """An account as the operator API and `hub.py operators list --json` show it."""
    return {"name": account.name, "role": account.role, "disabled": account.disabled,
            "totp": account.has_totp, "password": account.password_hash is not None,
            "createdAt": rfc3339(account.created_at)}
