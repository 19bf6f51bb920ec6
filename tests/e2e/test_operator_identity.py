"""Operator identity over real HTTP: console login and sessions (idle timeout, absolute
lifetime, CSRF), lockout after failed logins, TOTP, personal access tokens, roles, and portal
credentials refused. Each test runs on SQLite and PostgreSQL.

The hub's identity clock is a `FakeClock` the tests move (sessions, lockout, token expiry).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pyotp
import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from cli.client import demo_user
from config.settings import PROJECT_ROOT
from storage.audit import verify_audit_chain
from storage.operator_tables import operator_sessions, operators
from storage.tables import audit_log
from tests.support import FakeClock, RunningHub, hub_settings, portal_signer

PASSWORD = "correct horse battery staple"
ANNA = "CMPNNA80E59D612B"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def hub(database_url: str, clock: FakeClock) -> Iterator[RunningHub]:
    with RunningHub(hub_settings(database_url, {}), clock=clock, with_workers=False) as running:
        yield running


def _client(hub: RunningHub) -> httpx.Client:
    return httpx.Client(base_url=hub.base_url, timeout=10.0, trust_env=False)


def _add(hub: RunningHub, name: str, role: str, *, password: str | None = PASSWORD, totp: bool = False) -> str | None:
    assert hub.hub.operators is not None
    _, uri = hub.hub.operators.add(name, role, "operator:setup", password=password, totp=totp)
    return uri


def _login(client: httpx.Client, name: str, password: str = PASSWORD, **extra: str) -> httpx.Response:
    return client.post("/v1/ops/session", json={"name": name, "password": password, **extra})


def _problem(response: httpx.Response, status: int, slug: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == f"urn:crocevia:problem:{slug}" and body["status"] == status
    return body


def _audit(hub: RunningHub) -> list:
    with hub.hub.engine.connect() as conn:
        return conn.execute(select(audit_log).order_by(audit_log.c.id)).all()


def _hub_cli(database_url: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("DATABASE__")}, "DATABASE__URL": database_url}
    return subprocess.run([sys.executable, str(PROJECT_ROOT / "hub.py"), *args], env=env, cwd=PROJECT_ROOT,
                          input=stdin, capture_output=True, text=True, timeout=60)


def test_login_whoami_logout(hub: RunningHub) -> None:
    """A console login sets an HttpOnly, SameSite=Strict cookie; whoami names the operator;
    logout (with the CSRF token) ends the session; each step is audited without secrets."""
    _add(hub, "mrossi", "operator")
    with _client(hub) as client:
        login = _login(client, "mrossi")
        assert login.status_code == 201, login.text
        body = login.json()
        assert body["operator"] == {"name": "mrossi", "role": "operator"}
        assert body["expiresAt"].endswith("Z") and body["idleTimeoutSeconds"] == 1800
        cookie_header = login.headers["set-cookie"]
        assert "HttpOnly" in cookie_header and "SameSite=strict" in cookie_header and "Path=/" in cookie_header
        cookie = client.cookies["crocevia_session"]

        me = client.get("/v1/ops/whoami")
        assert me.status_code == 200, me.text
        assert me.json()["name"] == "mrossi" and me.json()["role"] == "operator"
        assert me.json()["via"] == "session" and me.json()["csrfToken"] == body["csrfToken"]

        out = client.delete("/v1/ops/session", headers={"X-CSRF-Token": body["csrfToken"]})
        assert out.status_code == 204, out.text
        assert "crocevia_session" not in client.cookies
        # The old cookie is dead on the server too, not only forgotten by the client.
        client.cookies.set("crocevia_session", cookie)
        _problem(client.get("/v1/ops/whoami"), 401, "session-invalid")
        client.cookies.clear()
        _problem(client.get("/v1/ops/whoami"), 401, "operator-authentication-required")

    lines = _audit(hub)
    actions = [(r.actor, r.action) for r in lines]
    assert ("operator:mrossi", "operator_logged_in") in actions
    assert ("operator:mrossi", "operator_logged_out") in actions
    dumped = repr([tuple(r) for r in lines])
    assert PASSWORD not in dumped and cookie not in dumped and body["csrfToken"] not in dumped
    assert verify_audit_chain(hub.hub.engine).ok


def test_session_cookie_is_secure_when_configured(database_url: str, clock: FakeClock) -> None:
    """`[operators] cookie_secure = true` (behind HTTPS) marks the session cookie Secure."""
    settings = hub_settings(database_url, {})
    settings = settings.model_copy(update={"operators": settings.operators.model_copy(update={"cookie_secure": True})})
    with RunningHub(settings, clock=clock, with_workers=False) as hub, _client(hub) as client:
        _add(hub, "mrossi", "viewer")
        login = _login(client, "mrossi")
        assert login.status_code == 201
        assert "; Secure" in login.headers["set-cookie"] and "HttpOnly" in login.headers["set-cookie"]


def test_login_by_form_and_wrong_password(hub: RunningHub) -> None:
    """A form login works as JSON does; a wrong password or unknown name answers the same 401."""
    _add(hub, "mrossi", "viewer")
    with _client(hub) as client:
        wrong = client.post("/v1/ops/session", data={"name": "mrossi", "password": "not the password"})
        unknown = client.post("/v1/ops/session", data={"name": "nobody", "password": PASSWORD})
        assert _problem(wrong, 401, "invalid-credentials")["detail"] == \
            _problem(unknown, 401, "invalid-credentials")["detail"]
        _problem(client.post("/v1/ops/session", json={"name": "mrossi"}), 400, "invalid-login-request")
        ok = client.post("/v1/ops/session", data={"name": "mrossi", "password": PASSWORD})
        assert ok.status_code == 201, ok.text
        assert client.get("/v1/ops/whoami").json()["name"] == "mrossi"


def test_session_ends_after_30_idle_minutes(hub: RunningHub, clock: FakeClock) -> None:
    """Use keeps a session alive; 30 minutes without a request end it (injected clock)."""
    _add(hub, "mrossi", "viewer")
    with _client(hub) as client:
        assert _login(client, "mrossi").status_code == 201
        for _ in range(3):
            clock.advance(29 * 60)
            assert client.get("/v1/ops/whoami").status_code == 200
        clock.advance(30 * 60 + 1)
        _problem(client.get("/v1/ops/whoami"), 401, "session-idle")
        assert "crocevia_session" not in client.cookies  # told to forget it
        # A session left idle and never presented again is purged at the next login.
        assert _login(client, "mrossi").status_code == 201
        clock.advance(30 * 60 + 1)
        assert _login(client, "mrossi").status_code == 201
        assert hub.count(operator_sessions) == 1
    assert any(r.action == "operator_session_ended" and r.outcome == "session-idle" for r in _audit(hub))


def test_session_ends_at_its_absolute_lifetime(hub: RunningHub, clock: FakeClock) -> None:
    """A session used every 20 minutes still ends 8 hours after login."""
    _add(hub, "mrossi", "viewer")
    with _client(hub) as client:
        assert _login(client, "mrossi").status_code == 201
        for _ in range(8 * 3):
            clock.advance(20 * 60)
            assert client.get("/v1/ops/whoami").status_code == 200
        clock.advance(20 * 60)
        _problem(client.get("/v1/ops/whoami"), 401, "session-expired")


def test_unsafe_requests_with_a_session_need_the_csrf_token(hub: RunningHub) -> None:
    """With the session cookie alone a POST or DELETE is refused (403) and changes nothing;
    with the token in the header or the form field it goes through."""
    _add(hub, "admin", "admin")
    with _client(hub) as client:
        csrf = _login(client, "admin").json()["csrfToken"]
        _problem(client.post("/v1/ops/operators", json={"name": "lbianchi", "role": "viewer"}),
                 403, "csrf-token-invalid")
        _problem(client.post("/v1/ops/operators", data={"name": "lbianchi", "role": "viewer",
                                                        "csrf_token": "forged"}), 403, "csrf-token-invalid")
        _problem(client.delete("/v1/ops/session"), 403, "csrf-token-invalid")
        assert hub.count(operators) == 1
        assert client.get("/v1/ops/whoami").status_code == 200  # the refused logout did not log out

        added = client.post("/v1/ops/operators", data={"name": "lbianchi", "role": "viewer", "csrf_token": csrf})
        assert added.status_code == 201, added.text
        changed = client.post("/v1/ops/operators/lbianchi/role", json={"role": "operator"},
                              headers={"X-CSRF-Token": csrf})
        assert changed.status_code == 200 and changed.json()["role"] == "operator"
    refused = [r for r in _audit(hub) if r.outcome == "csrf-token-invalid"]
    assert len(refused) == 3 and all(r.actor == "operator:admin" for r in refused)


def test_ten_failed_logins_lock_the_account_until_lifted(hub: RunningHub, clock: FakeClock,
                                                         database_url: str) -> None:
    """Ten wrong passwords in 5 minutes lock the account (429 + Retry-After): the right password
    is refused too, until `hub.py lockouts lift operator:NAME`."""
    _add(hub, "mrossi", "operator")
    with _client(hub) as client:
        for _ in range(9):
            _problem(_login(client, "mrossi", "wrong password!"), 401, "invalid-credentials")
            clock.advance(20)
        locked = _login(client, "mrossi", "wrong password!")
        _problem(locked, 429, "locked-out")
        assert int(locked.headers["retry-after"]) == 900
        right = _login(client, "mrossi")
        _problem(right, 429, "locked-out")
        assert "set-cookie" not in right.headers

        listed = _hub_cli(database_url, "lockouts", "list")
        assert listed.returncode == 0 and "operator:mrossi" in listed.stdout and "locked" in listed.stdout
        lifted = _hub_cli(database_url, "lockouts", "lift", "operator:mrossi", "--operator", "capo")
        assert lifted.returncode == 0, lifted.stdout + lifted.stderr
        assert _login(client, "mrossi").status_code == 201
    actions = [(r.actor, r.action, r.outcome) for r in _audit(hub)]
    assert ("operator:mrossi", "caller_locked_out", "locked") in actions
    assert ("operator:capo", "lockout_lifted", "lifted") in actions
    assert ("operator:mrossi", "operator_login_failed", "locked_out") in actions


def test_lockout_expires_and_failures_outside_the_window_do_not_count(hub: RunningHub, clock: FakeClock) -> None:
    """Failures more than 5 minutes apart never lock; a lock ends after its configured time."""
    _add(hub, "mrossi", "operator")
    with _client(hub) as client:
        for _ in range(12):
            _problem(_login(client, "mrossi", "wrong password!"), 401, "invalid-credentials")
            clock.advance(34)  # any ten failures span more than 5 minutes
        for _ in range(10):
            last = _login(client, "mrossi", "wrong password!")
        _problem(last, 429, "locked-out")
        clock.advance(899)
        _problem(_login(client, "mrossi"), 429, "locked-out")
        clock.advance(2)
        assert _login(client, "mrossi").status_code == 201


def test_totp_is_required_when_enrolled(hub: RunningHub, clock: FakeClock) -> None:
    """An enrolled operator logs in with password and the current code, once per code."""
    uri = _add(hub, "mrossi", "operator", totp=True)
    assert uri is not None
    totp = pyotp.parse_uri(uri)
    with _client(hub) as client:
        _problem(_login(client, "mrossi"), 401, "invalid-credentials")
        wrong = "000000" if totp.at(clock()) != "000000" else "111111"
        _problem(_login(client, "mrossi", totp=wrong), 401, "invalid-credentials")
        code = totp.at(clock())
        assert _login(client, "mrossi", totp=code).status_code == 201
        _problem(_login(client, "mrossi", totp=code), 401, "invalid-credentials")  # a code is used once
        clock.advance(30)
        assert _login(client, "mrossi", totp=totp.at(clock())).status_code == 201
    reasons = [r.outcome for r in _audit(hub) if r.action == "operator_login_failed"]
    assert reasons == ["totp-missing", "totp-invalid", "totp-reused"]


def test_personal_access_tokens(hub: RunningHub, clock: FakeClock) -> None:
    """A token authenticates API calls (no CSRF: no cookie); revoked or expired, it gets 401."""
    _add(hub, "admin", "admin", password=None)
    accounts = hub.hub.operators
    assert accounts is not None
    issued = accounts.issue_token("admin", "operator:setup", label="script", days=2)
    assert issued.token.startswith("crv_pat_")
    auth = {"Authorization": f"Bearer {issued.token}"}
    with _client(hub) as client:
        me = client.get("/v1/ops/whoami", headers=auth)
        assert me.status_code == 200 and me.json() == {"name": "admin", "role": "admin", "via": "token"}
        added = client.post("/v1/ops/operators", json={"name": "lbianchi", "role": "viewer"}, headers=auth)
        assert added.status_code == 201, added.text
        assert [o["name"] for o in client.get("/v1/ops/operators", headers=auth).json()["operators"]] == \
            ["admin", "lbianchi"]
        _problem(client.get("/v1/ops/whoami", headers={"Authorization": "Bearer crv_pat_made-up"}),
                 401, "invalid-operator-token")

        later = accounts.issue_token("admin", "operator:setup", days=1)
        clock.advance(86_401)
        _problem(client.get("/v1/ops/whoami", headers={"Authorization": f"Bearer {later.token}"}),
                 401, "invalid-operator-token")

        accounts.revoke_token(issued.id, "operator:setup")
        _problem(client.get("/v1/ops/whoami", headers=auth), 401, "invalid-operator-token")
    tokens = accounts.tokens("admin")
    assert tokens[0].last_used_at is not None and tokens[0].revoked_at is not None
    lines = _audit(hub)
    assert issued.token not in repr([tuple(r) for r in lines])
    assert {"operator_token_created", "operator_token_revoked", "operator_added"} <= {r.action for r in lines}
    assert any(r.actor == "operator:admin" and r.action == "operator_added" and r.subject == "lbianchi"
               for r in lines)


def test_viewer_is_refused_admin_endpoints(hub: RunningHub) -> None:
    """A viewer reads whoami but gets 403 on operator management, by session and by token."""
    _add(hub, "lbianchi", "viewer")
    accounts = hub.hub.operators
    assert accounts is not None
    token = accounts.issue_token("lbianchi", "operator:setup").token
    with _client(hub) as client:
        _problem(client.get("/v1/ops/operators", headers={"Authorization": f"Bearer {token}"}),
                 403, "insufficient-role")
        csrf = _login(client, "lbianchi").json()["csrfToken"]
        _problem(client.get("/v1/ops/operators"), 403, "insufficient-role")
        _problem(client.post("/v1/ops/operators/lbianchi/role", json={"role": "admin"},
                             headers={"X-CSRF-Token": csrf}), 403, "insufficient-role")
        assert client.get("/v1/ops/whoami").json()["role"] == "viewer"
    assert accounts.list()[0].role == "viewer"


def test_disabled_operator_loses_sessions_and_tokens(hub: RunningHub) -> None:
    """An admin disables an operator: their session and token stop working at once."""
    _add(hub, "admin", "admin")
    _add(hub, "mrossi", "operator")
    accounts = hub.hub.operators
    assert accounts is not None
    token = accounts.issue_token("mrossi", "operator:setup").token
    with _client(hub) as admin, _client(hub) as victim:
        csrf = _login(admin, "admin").json()["csrfToken"]
        assert _login(victim, "mrossi").status_code == 201
        done = admin.post("/v1/ops/operators/mrossi/disable", headers={"X-CSRF-Token": csrf})
        assert done.status_code == 200 and done.json()["disabled"] is True
        _problem(victim.get("/v1/ops/whoami"), 401, "session-invalid")
        _problem(victim.get("/v1/ops/whoami", headers={"Authorization": f"Bearer {token}"}),
                 401, "invalid-operator-token")
        _problem(_login(victim, "mrossi"), 401, "invalid-credentials")
        _problem(admin.post("/v1/ops/operators/nobody/disable", headers={"X-CSRF-Token": csrf}),
                 404, "operator-not-found")


def test_portal_credentials_get_nothing_here(hub: RunningHub, clock: FakeClock) -> None:
    """A portal's correctly ModI-signed request to /v1/ops/whoami is 401."""
    signer = portal_signer("test", clock)
    with _client(hub) as client:
        headers = signer.headers(user=demo_user(ANNA))
        _problem(client.get("/v1/ops/whoami", headers=headers), 401, "operator-authentication-required")
        body = b'{"name": "x", "role": "admin"}'
        signed = signer.headers(body=body, content_type="application/json", user=demo_user(ANNA))
        _problem(client.post("/v1/ops/operators", content=body,
                             headers={**signed, "Content-Type": "application/json"}),
                 401, "operator-authentication-required")
    assert hub.count(operators) == 0


def test_cli_manages_operators(hub: RunningHub, database_url: str) -> None:
    """`hub.py operators`: add with a password from stdin and TOTP, list, role, token (printed
    once), revoke-token, disable; each audited as the acting operator."""
    added = _hub_cli(database_url, "operators", "add", "mrossi", "--role", "viewer", "--password-stdin", "--totp",
                     "--operator", "capo", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    assert "otpauth://totp/Crocevia:mrossi?secret=" in added.stdout
    assert _hub_cli(database_url, "operators", "role", "mrossi", "operator", "--operator", "capo").returncode == 0
    listed = _hub_cli(database_url, "operators", "list", "--json")
    assert '"name":"mrossi","role":"operator"' in listed.stdout and '"totp":true' in listed.stdout
    issued = _hub_cli(database_url, "operators", "token", "mrossi", "--label", "ci", "--days", "7",
                      "--operator", "capo")
    assert issued.returncode == 0, issued.stderr
    token = next(line for line in issued.stdout.splitlines() if line.startswith("crv_pat_"))
    token_id = issued.stdout.split("token id ")[1].split()[0]
    with _client(hub) as client:
        me = client.get("/v1/ops/whoami", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["role"] == "operator"
        assert _hub_cli(database_url, "operators", "revoke-token", token_id, "--operator", "capo").returncode == 0
        _problem(client.get("/v1/ops/whoami", headers={"Authorization": f"Bearer {token}"}),
                 401, "invalid-operator-token")
    assert _hub_cli(database_url, "operators", "disable", "mrossi", "--operator", "capo").returncode == 0
    dup = _hub_cli(database_url, "operators", "add", "mrossi", "--role", "viewer")
    assert dup.returncode == 1 and "exists" in dup.stdout
    mine = [r.action for r in _audit(hub) if r.actor == "operator:capo"]
    assert mine == ["operator_added", "operator_role_changed", "operator_token_created",
                    "operator_token_revoked", "operator_disabled"]
    assert PASSWORD not in repr([tuple(r) for r in _audit(hub)])


def test_admin_api_refuses_bad_input_precisely(hub: RunningHub) -> None:
    """Bad names, roles, short passwords and taken names get precise problems; nothing is added."""
    _add(hub, "admin", "admin")
    accounts = hub.hub.operators
    assert accounts is not None
    auth = {"Authorization": f"Bearer {accounts.issue_token('admin', 'operator:setup').token}"}
    with _client(hub) as client:
        cases = [({"name": "Bad Name", "role": "viewer"}, 422, "invalid-operator-name"),
                 ({"name": "lbianchi", "role": "root"}, 422, "invalid-role"),
                 ({"name": "lbianchi", "role": "viewer", "password": "short"}, 422, "weak-password"),
                 ({"name": "admin", "role": "viewer"}, 409, "operator-exists"),
                 ({"role": "viewer"}, 400, "invalid-operator-request")]
        for body, status, slug in cases:
            _problem(client.post("/v1/ops/operators", json=body, headers=auth), status, slug)
        _problem(client.post("/v1/ops/operators", content=b"[1]", headers={**auth, "Content-Type": "application/json"}),
                 400, "invalid-json")
        _problem(client.post("/v1/ops/operators/nobody/role", json={"role": "admin"}, headers=auth),
                 404, "operator-not-found")
    assert [a.name for a in accounts.list()] == ["admin"]


def test_no_secret_reaches_the_logs(hub: RunningHub, clock: FakeClock) -> None:
    """Passwords, TOTP codes, tokens, session cookies and CSRF tokens never appear in the logs."""
    uri = _add(hub, "mrossi", "admin", totp=True)
    assert uri is not None
    code = pyotp.parse_uri(uri).at(clock())
    accounts = hub.hub.operators
    assert accounts is not None
    token = accounts.issue_token("mrossi", "operator:setup").token
    with capture_logs() as logs, _client(hub) as client:
        _problem(_login(client, "mrossi", "wrong password!", totp=code), 401, "invalid-credentials")
        login = _login(client, "mrossi", totp=code)
        assert login.status_code == 201
        csrf = login.json()["csrfToken"]
        cookie = client.cookies["crocevia_session"]
        client.get("/v1/ops/whoami", headers={"Authorization": f"Bearer {token}"})
        client.get("/v1/ops/whoami", headers={"Authorization": "Bearer crv_pat_guess"})
        client.delete("/v1/ops/session", headers={"X-CSRF-Token": csrf})
    events = {entry["event"] for entry in logs}
    assert {"operator_login_failed", "operator_logged_in", "operator_token_refused"} <= events
    text = repr(logs)
    for secret in (PASSWORD, "wrong password!", code, token, "crv_pat_guess", cookie, csrf):
        assert secret not in text
