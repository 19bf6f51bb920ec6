"""`security.jwt_reader`: PyJWT's decoding with the segment check in C-speed operations,
deciding exactly as PyJWT's own check does."""

from __future__ import annotations

import base64

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from jwt.api_jws import PyJWS
from jwt.exceptions import DecodeError

from security.jwt_reader import JWT_READER, decode_segment

_LIBRARY_CHECK = PyJWS._decode_base64url_segment  # noqa: SLF001 - the behaviour held equal


def _outcome(check: object, segment: bytes) -> tuple[str, bytes | str]:
    try:
        return "decoded", check(segment, "payload")  # type: ignore[operator]
    except DecodeError as exc:
        return "refused", str(exc)


#: Bytes near the alphabet's edges: its letters, `=`, the standard alphabet's `+` and `/`,
#: whitespace, a dot, a NUL, a non-ASCII byte.
_SEGMENT_BYTES = st.sampled_from(b"AZaz09-_QRSw=+/ \n.\x00\xc3")


@settings(max_examples=3000, deadline=None)
@given(st.one_of(st.binary(max_size=40),
                 st.lists(_SEGMENT_BYTES, max_size=40).map(bytes),
                 st.binary(max_size=60).map(lambda raw: base64.urlsafe_b64encode(raw)),
                 st.binary(max_size=60).map(lambda raw: base64.urlsafe_b64encode(raw).rstrip(b"="))))
def test_each_segment_is_decided_as_pyjwt_decides_it(segment: bytes) -> None:
    """Decoded to the same bytes, or refused with the same message, as PyJWT's own check."""
    assert _outcome(decode_segment, segment) == _outcome(_LIBRARY_CHECK, segment)


@pytest.mark.parametrize("segment", [b"eyJhIjoxfQ", b"eyJhIjoxfQ==", b"eyJhIjoxfR", b"eyJhIjox fQ",
                                     b"e===", b"eyJhIjoxfQ=", b"eyJh=IjoxfQ", b"e", b"", b"eyJhIjoxf+Q"])
def test_the_known_edges_are_decided_alike(segment: bytes) -> None:
    """Canonical, padded, stray trailing bits, a space, three `=`, `=` to no multiple of four,
    `=` inside, one character, empty, the standard alphabet's `+`."""
    assert _outcome(decode_segment, segment) == _outcome(_LIBRARY_CHECK, segment)


def test_the_reader_decodes_through_the_fast_check_and_pyjwt_still_calls_that_hook() -> None:
    """A token decodes and verifies as with the `jwt` module; a junk character in its payload is
    refused; and the reader's JWS layer uses `decode_segment` for the hook PyJWT's `_load` calls
    (if PyJWT renamed it, the reader would silently run the slow check again)."""
    key = ec.generate_private_key(ec.SECP256R1())
    token = jwt.encode({"iss": "portal", "aud": "hub"}, key, algorithm="ES256")
    assert JWT_READER.decode(token, key.public_key(), algorithms=["ES256"], audience="hub") == \
        jwt.decode(token, key.public_key(), algorithms=["ES256"], audience="hub")
    header, payload, signature = token.split(".")
    with pytest.raises(DecodeError, match="Invalid payload padding"):
        JWT_READER.decode(f"{header}.{payload[:4]}!{payload[5:]}.{signature}", key.public_key(),
                          algorithms=["ES256"], audience="hub")
    assert JWT_READER._jws._decode_base64url_segment is decode_segment  # type: ignore[attr-defined]  # noqa: SLF001
    assert "_decode_base64url_segment" in PyJWS._load.__code__.co_names  # noqa: SLF001
