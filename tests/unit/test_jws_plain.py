"""`api.jws` parses a plain token once and judges it as PyJWT does; any other token is PyJWT's."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest

from api.jws import PreparedKey, checked_claims, parse_plain
from security.keys import generate_private_key

KEY = generate_private_key("ES256")
OTHER = generate_private_key("ES256")
REQUIRED = ("iss", "aud", "iat", "exp", "jti")
CLAIMS = {"iss": "portal", "aud": "crocevia", "iat": 1, "exp": 2, "jti": "jti-00000001"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(claims: dict[str, Any] | None = None, headers: dict[str, Any] | None = None, key: Any = KEY) -> str:
    return jwt.encode(CLAIMS if claims is None else claims, key, algorithm="ES256", headers=headers)


def _raw(header: dict[str, Any], claims: dict[str, Any] = CLAIMS) -> str:
    """A token PyJWT would not sign (its signature does not matter to the parse)."""
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.AAAA"


def _pyjwt(token: str) -> tuple[str, Any]:
    """What `jwt.decode` says with `api.modi`'s options: the claims, or its error's class."""
    try:
        return "ok", jwt.decode(token, KEY.public_key(), algorithms=["ES256"], audience="crocevia",
                                options={"require": list(REQUIRED), "verify_exp": False, "verify_iat": False,
                                         "verify_nbf": False, "verify_iss": False})
    except jwt.PyJWTError as exc:
        return "error", type(exc)


def _ours(token: str) -> tuple[str, Any]:
    plain = parse_plain(token)
    assert plain is not None
    try:
        return "ok", checked_claims(plain, PreparedKey.of(KEY.public_key(), "ES256"), REQUIRED, "crocevia")
    except jwt.PyJWTError as exc:
        return "error", type(exc)


@pytest.mark.parametrize("token", [
    _token(),
    _token(key=OTHER),
    _token({**CLAIMS, "aud": ["other", "crocevia"]}),
    _token({**CLAIMS, "aud": "other"}),
    _token({**CLAIMS, "aud": ""}),
    _token({**CLAIMS, "aud": [1]}),
    _token({**CLAIMS, "aud": {"a": 1}}),
    _token({k: v for k, v in CLAIMS.items() if k != "exp"}),
    _token({**CLAIMS, "jti": None}),
    _token({**CLAIMS, "jti": 7}),
    _token({**CLAIMS, "sub": 7}),
    _token(headers={"kid": "k1"}),
], ids=["valid", "other-key", "aud-list", "aud-other", "aud-empty", "aud-not-str", "aud-object", "no-exp",
        "jti-null", "jti-int", "sub-int", "kid"])
def test_a_plain_token_is_judged_as_pyjwt_judges_it(token: str) -> None:
    assert _ours(token) == _pyjwt(token)


@pytest.mark.parametrize("token", [
    _raw({"alg": "ES256", "kid": 7}),
    _raw({"alg": "ES256", "crit": ["b64"], "b64": False}),
    _token() + "=",
    _token().replace(".", "==.", 1),
    "a.b",
    "a.b.c.d",
    "é" + _token(),
    _b64(b'{"alg":"ES256"}') + "." + _b64(b"[1]") + ".AA",
    _b64(b"[]") + "." + _b64(json.dumps(CLAIMS).encode()) + ".AA",
    _b64(b'{"alg":"ES256"}') + "." + _b64(b"{") + ".AA",
    _b64(b'{"alg":"ES256"}') + "." + _b64(json.dumps(CLAIMS).encode()) + ".A",
    _b64(b'{"alg":"ES256"}') + "." + _b64(json.dumps(CLAIMS).encode()) + ".AB",  # not canonical
], ids=["kid-int", "crit", "padded", "padded-header", "two-segments", "four-segments", "non-ascii",
        "payload-array", "header-array", "payload-not-json", "signature-one-char", "signature-not-canonical"])
def test_any_other_token_is_left_to_pyjwt(token: str) -> None:
    assert parse_plain(token) is None
