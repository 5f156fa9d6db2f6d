"""Compact JWS (RFC 7515) read once: header, payload and signature decoded in one pass, the signature checked with
PyJWT's algorithm objects (over `cryptography`)."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any, Final

import jwt
from jwt.exceptions import InvalidKeyError

from backend.core import json_input
from backend.crypto.jwk import SUPPORTED_ALGS, PublicKey

MALFORMED: Final = "malformed"
BAD_SIGNATURE: Final = "bad_signature"
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_-]*")
_ALGORITHMS: Final = {alg: jwt.get_algorithm_by_name(alg) for alg in SUPPORTED_ALGS}


class JWSError(ValueError):
    """The token is not a well-formed compact JWS (`malformed`) or its signature does not hold (`bad_signature`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CompactJWS:
    """A parsed, not yet verified, compact JWS whose header and payload are JSON objects."""

    header: dict[str, Any]
    payload: dict[str, Any]
    signing_input: bytes
    signature: bytes

    def verify(self, key: PublicKey, alg: str) -> None:
        """Raise JWSError unless `alg` is the header's, one we accept, and the signature holds for `key`."""
        algorithm = _ALGORITHMS.get(alg)
        if algorithm is None or self.header.get("alg") != alg:
            raise JWSError(BAD_SIGNATURE)
        try:
            prepared = algorithm.prepare_key(key)  # refuses a key of another type or curve
        except (InvalidKeyError, TypeError, ValueError) as exc:
            raise JWSError(BAD_SIGNATURE) from exc
        if not algorithm.verify(self.signing_input, prepared, self.signature):
            raise JWSError(BAD_SIGNATURE)


def _segment(text: str) -> bytes:
    """Strict base64url (RFC 7515 §2): the URL-safe alphabet, no padding, and only the canonical encoding."""
    if len(text) % 4 == 1 or not _SEGMENT.fullmatch(text):
        raise JWSError(MALFORMED)
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise JWSError(MALFORMED) from exc
    if base64.urlsafe_b64encode(data).rstrip(b"=") != text.encode("ascii"):
        raise JWSError(MALFORMED)  # set bits past the last byte: another text for the same bytes
    return data


def _object(data: bytes) -> dict[str, Any]:
    try:
        value = json_input.loads(data)
    except ValueError as exc:  # not JSON, nested too deep, NaN or numbers out of range
        raise JWSError(MALFORMED) from exc
    if not isinstance(value, dict):
        raise JWSError(MALFORMED)
    return value


def parse(token: str) -> CompactJWS:
    """Split and decode a compact JWS once; raises JWSError(`malformed`). The signature is not checked here."""
    if not isinstance(token, str):
        raise JWSError(MALFORMED)
    parts = token.split(".")
    if len(parts) != 3:
        raise JWSError(MALFORMED)
    header = _object(_segment(parts[0]))
    if ("kid" in header and not isinstance(header["kid"], str)) or "crit" in header or "b64" in header:
        raise JWSError(MALFORMED)  # no critical extensions are understood here, and payloads are always encoded
    payload = _object(_segment(parts[1]))
    signature = _segment(parts[2])
    return CompactJWS(header, payload, f"{parts[0]}.{parts[1]}".encode("ascii"), signature)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def claims_hold(payload: dict[str, Any], *, audience: str, issuer: str, required: tuple[str, ...]) -> bool:
    """The registered claims of one of our own tokens, as PyJWT's decode(audience=, issuer=, require=) checks
    them, without the times (callers compare them with the app clock): `aud` is `audience` or a list holding it,
    `iss` is `issuer`, every `required` claim is present, `sub` and `jti` are strings, and `iat`, `exp` and
    `nbf` are numbers when present. Our tokens never carry `nbf`, so one that does is refused.
    """
    aud = payload.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud and all(isinstance(a, str) for a in aud))):
        return False
    if payload.get("iss") != issuer or any(name not in payload for name in required) or "nbf" in payload:
        return False
    if any(name in payload and not isinstance(payload[name], str) for name in ("sub", "jti")):
        return False
    return all(_number(payload[name]) for name in ("iat", "exp") if name in payload)
