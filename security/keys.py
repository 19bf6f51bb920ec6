"""Key material: load PEM keys and certificates, generate the embedded default's keys on first run.

Portals sign with RS256 (RSA) or ES256 (EC P-256); the hub registers each portal's public key
or certificate. For the embedded default the demo portal's and the hub's own keys are created
beside the SQLite file on first run (mode 0600), so that nothing secret ships in the repository.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

__all__ = [
    "ALGORITHMS",
    "PrivateKey",
    "PublicKey",
    "algorithm_of",
    "ensure_private_key",
    "ensure_self_signed_certificate",
    "generate_private_key",
    "load_certificate",
    "load_private_key",
    "load_public_key",
    "private_pem",
    "public_key_of",
    "public_pem",
    "sign_sha256",
]

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

#: The JWS algorithms ModI allows for these patterns, and nothing else (never `none`, never HS*).
ALGORITHMS = ("RS256", "ES256")


def generate_private_key(algorithm: str) -> PrivateKey:
    """A fresh key for `algorithm`: RSA 2048 for RS256, P-256 for ES256.

    Raises:
        ValueError: an algorithm outside `ALGORITHMS`.
    """
    if algorithm == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if algorithm == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unsupported signature algorithm {algorithm!r}; expected one of {ALGORITHMS}")


def algorithm_of(key: PrivateKey | PublicKey) -> str:
    """The JWS algorithm a key signs with.

    Raises:
        ValueError: a key that is neither RSA nor EC P-256.
    """
    if isinstance(key, (rsa.RSAPrivateKey, rsa.RSAPublicKey)):
        return "RS256"
    if isinstance(key, (ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey)):
        if isinstance(key.curve, ec.SECP256R1):
            return "ES256"
    raise ValueError(f"unsupported key type {type(key).__name__}")


def public_key_of(key: object) -> PublicKey:
    """`key` as a public key the hub signs or verifies with (RSA or EC P-256).

    Raises:
        ValueError: any other key.
    """
    if isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
        algorithm_of(key)
        return key
    raise ValueError(f"unsupported key type {type(key).__name__}")


def sign_sha256(key: PrivateKey, data: bytes) -> bytes:
    """A SHA-256 signature of `data`: RSASSA-PKCS1-v1_5 for RSA; for EC the fixed-size
    `r || s` that JWS (RFC 7518 section 3.4) and XML-DSig (RFC 4051 section 3.3) carry, not DER.
    """
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    size = (key.curve.key_size + 7) // 8
    return r.to_bytes(size, "big") + s.to_bytes(size, "big")


def private_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: PrivateKey | CertificatePublicKeyTypes) -> bytes:
    public = key.public_key() if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) else key
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_private_key(pem: bytes) -> PrivateKey:
    """An unencrypted PKCS#8 or traditional PEM private key.

    Raises:
        ValueError: not a PEM key of a supported type.
    """
    key = serialization.load_pem_private_key(pem, password=None)
    if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        algorithm_of(key)
        return key
    raise ValueError(f"unsupported key type {type(key).__name__}")


def load_certificate(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def load_public_key(pem: bytes) -> PublicKey:
    """A public key from a PEM public key or a PEM X.509 certificate.

    Raises:
        ValueError: neither, or a key of an unsupported type.
    """
    if b"-----BEGIN CERTIFICATE-----" in pem:
        return public_key_of(load_certificate(pem).public_key())
    return public_key_of(serialization.load_pem_public_key(pem))


def _write_secret(path: Path, data: bytes) -> bool:
    """Create `path` with mode 0600, whole or not at all; False when another process won.

    The key is written to a private temporary file and linked into place: a concurrent
    reader never sees a half-written key, and a concurrent writer's link fails.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as fh:  # mkstemp creates the file with mode 0600
            fh.write(data)
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def ensure_private_key(path: Path, algorithm: str) -> PrivateKey:
    """The private key in `path`, generated there (mode 0600) for `algorithm` when the file does
    not exist. A key that exists is used as it is: `algorithm_of(key)` says how it signs.
    """
    if not path.exists():
        _write_secret(path, private_pem(generate_private_key(algorithm)))
    return load_private_key(path.read_bytes())


def ensure_self_signed_certificate(path: Path, key: PrivateKey, common_name: str,
                                   days: int = 825) -> x509.Certificate:
    """The certificate in `path`, or a self-signed one for `key` written there on first run.

    Production configures a certificate issued by a CA the agency trusts; the self-signed one
    only lets the embedded default sign WS-Security envelopes end to end.
    """
    if not path.exists():
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=days))
            .sign(key, hashes.SHA256())
        )
        _write_secret(path, cert.public_bytes(serialization.Encoding.PEM))
    certificate = load_certificate(path.read_bytes())
    if public_pem(certificate.public_key()) != public_pem(key):
        raise ValueError(f"{path} certifies another key than the hub's signing key")
    return certificate
