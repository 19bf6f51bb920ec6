"""PyJWT's decoding, with its check of each base64url segment done by C-speed bytes operations.

PyJWT 2.15 refuses a segment holding anything but the base64url alphabet (GHSA-hxm8-2xgr-2p9m)
by testing each byte in a Python generator: ~24 µs for a ModI token of ~600 characters, a
quarter of verifying it, and the hub verifies three or four per request (issue 13: ~6 % of the
API's CPU). `JWT_READER` is a `PyJWT` whose JWS layer makes the same decisions, in the same
order and with the same messages, through `bytes.translate` and `bytes.rstrip`; everything
else (algorithms, keys, claims, options) is PyJWT's own. `tests/unit/test_jwt_reader.py`
holds the two equal on drawn segments, and fails if PyJWT stops calling this hook.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from jwt import PyJWS, PyJWT
from jwt.exceptions import DecodeError

__all__ = ["JWT_READER", "decode_segment"]

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def decode_segment(segment: bytes, name: str) -> bytes:
    """One base64url segment of a compact JWS, decoded; refused (DecodeError) unless canonical:
    only the alphabet, at most two `=` and only to a multiple of four, no stray trailing bits."""
    stripped = segment.rstrip(b"=")
    padding = len(segment) - len(stripped)
    if (padding > 2 or (padding and len(segment) % 4) or len(stripped) % 4 == 1
            or stripped.translate(None, _ALPHABET)):
        raise DecodeError(f"Invalid {name} padding")
    try:
        decoded = base64.urlsafe_b64decode(stripped + b"=" * (-len(stripped) % 4))
    except (TypeError, binascii.Error) as err:
        raise DecodeError(f"Invalid {name} padding") from err
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != stripped:  # bits set beyond the data
        raise DecodeError(f"Invalid {name} padding")
    return decoded


class _CheckedSegmentsJWS(PyJWS):
    """PyJWS with `decode_segment` as its segment decoder (a hook PyJWT calls for each one)."""

    _decode_base64url_segment = staticmethod(decode_segment)


class _Reader(PyJWT):
    """PyJWT on `_CheckedSegmentsJWS`, built with the signature options PyJWT gives its own."""

    def __init__(self, options: Any = None) -> None:
        super().__init__(options)
        self._jws = _CheckedSegmentsJWS(options=self._get_sig_options())


#: Use as the `jwt` module's `decode` and `decode_complete` (default options).
JWT_READER: PyJWT = _Reader()
