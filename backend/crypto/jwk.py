"""JWK helpers: generate key pairs, export public JWKs, RFC 7638 thumbprints, load public keys."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

# Only asymmetric algorithms are ever accepted (no `none`, no HS*).
SUPPORTED_ALGS = ("ES256", "EdDSA")

_PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


class JWKError(ValueError):
    """A JWK is malformed, private where public was expected, or of an unsupported type."""


def generate_private_key(alg: str) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise JWKError(f"unsupported algorithm {alg}")


def private_key_to_der(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def private_key_from_der(der: bytes) -> PrivateKey:
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise JWKError("stored key is of an unsupported type")
    return key


def public_jwk(key: PublicKey) -> dict[str, Any]:
    if isinstance(key, ec.EllipticCurvePublicKey):
        jwk: dict[str, Any] = ECAlgorithm.to_jwk(key, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(key, as_dict=True)
    return {k: v for k, v in jwk.items() if k not in _PRIVATE_MEMBERS}


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url), used as `kid`."""
    members = ("crv", "kty", "x", "y") if jwk.get("kty") == "EC" else ("crv", "kty", "x")
    try:
        required = {name: jwk[name] for name in members}
    except KeyError as exc:
        raise JWKError(f"JWK lacks member {exc.args[0]}") from exc
    digest = hashlib.sha256(json.dumps(required, sort_keys=True, separators=(",", ":")).encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def alg_for_jwk(jwk: dict[str, Any]) -> str:
    if jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
        return "ES256"
    if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
        return "EdDSA"
    raise JWKError("only EC P-256 (ES256) and OKP Ed25519 (EdDSA) keys are accepted")


def load_public_jwk(jwk: dict[str, Any]) -> PublicKey:
    """Parse a public JWK; refuse private members and symmetric or unsupported key types."""
    if not isinstance(jwk, dict):
        raise JWKError("a JWK must be a JSON object")
    if _PRIVATE_MEMBERS & set(jwk):
        raise JWKError("a public JWK must not contain private members")
    alg = alg_for_jwk(jwk)
    try:
        key = ECAlgorithm.from_jwk(jwk) if alg == "ES256" else OKPAlgorithm.from_jwk(jwk)
    except Exception as exc:  # PyJWT raises several types for malformed input
        raise JWKError(f"malformed JWK: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey):
        raise JWKError("a public key was expected")
    return key
