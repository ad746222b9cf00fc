"""Signed JWT client assertions: OAuth 2.0 client authentication with a private key
(RFC 7523 section 2.2, the ``private_key_jwt`` method), which vendors such as NetSuite
require for machine-to-machine access instead of a client secret."""

from __future__ import annotations

import base64
import json
import secrets
from dataclasses import dataclass
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

AssertionAlgorithm = Literal["PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "RS256"]
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# Short-lived: an assertion is used once, right away (NetSuite refuses more than an hour).
LIFETIME_SECONDS = 300
# Signing with a larger RSA key costs seconds of CPU and no vendor asks for one.
MAX_RSA_BITS = 8192
# A PEM private key of MAX_RSA_BITS is about 6.5 KiB.
MAX_PEM_CHARS = 16 * 1024

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
# RFC 7518 3.4: the curve each ES algorithm uses, and the size of r and s in bytes.
_CURVES: dict[str, tuple[type[ec.EllipticCurve], int]] = {
    "ES256": (ec.SECP256R1, 32),
    "ES384": (ec.SECP384R1, 48),
    "ES512": (ec.SECP521R1, 66),
}


class AssertionKeyError(ValueError):
    """The private key cannot sign with the algorithm; the message never quotes the key."""


@dataclass(frozen=True)
class AssertionClaims:
    """Who the assertion speaks for and to whom."""

    client_id: str
    audience: str
    key_id: str | None = None
    # Scopes carried in the assertion's own `scope` claim, for endpoints that read them there.
    scope: str | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _load_key(pem: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if len(pem) > MAX_PEM_CHARS:
        raise AssertionKeyError(f"is longer than {MAX_PEM_CHARS} characters")
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except TypeError:
        raise AssertionKeyError("is encrypted; give the key without a passphrase") from None
    except (ValueError, UnsupportedAlgorithm):
        raise AssertionKeyError("is not a PEM private key") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise AssertionKeyError("is neither an RSA nor an EC key")
    return key


def _signature(
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, algorithm: str, data: bytes
) -> bytes:
    digest = _HASHES[algorithm[2:]]()
    if algorithm.startswith("ES"):
        curve, size = _CURVES[algorithm]
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, curve):
            raise AssertionKeyError(f"is not an EC key on the curve {algorithm} uses")
        r, s = decode_dss_signature(key.sign(data, ec.ECDSA(digest)))
        # JWS wants the two integers side by side, not DER (RFC 7518 3.4).
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise AssertionKeyError(f"is not an RSA key, which {algorithm} needs")
    if key.key_size > MAX_RSA_BITS:
        raise AssertionKeyError(f"has more than {MAX_RSA_BITS} bits")
    if algorithm.startswith("PS"):
        # RFC 7518 3.5: MGF1 with the same hash, salt as long as the hash.
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        return key.sign(data, pss, digest)
    return key.sign(data, padding.PKCS1v15(), digest)


def client_assertion(
    private_key_pem: str,
    algorithm: AssertionAlgorithm,
    claims: AssertionClaims,
    issued_at: int,
) -> str:
    """A compact JWS: iss and sub are the client id, aud the token endpoint, a fresh
    jti, and an expiry LIFETIME_SECONDS after issued_at. CPU-bound: run it off the loop.

    Raises AssertionKeyError when the key is unusable for the algorithm.
    """
    header: dict[str, str] = {"alg": algorithm, "typ": "JWT"}
    if claims.key_id:
        header["kid"] = claims.key_id
    payload: dict[str, str | int] = {
        "iss": claims.client_id,
        "sub": claims.client_id,
        "aud": claims.audience,
        "iat": issued_at,
        "exp": issued_at + LIFETIME_SECONDS,
        "jti": secrets.token_urlsafe(24),
    }
    if claims.scope:
        payload["scope"] = claims.scope
    signing_input = ".".join(
        _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, payload)
    ).encode("ascii")
    signature = _signature(_load_key(private_key_pem), algorithm, signing_input)
    return f"{signing_input.decode('ascii')}.{_b64(signature)}"
