"""Compact JWSs the platform signed for itself (access tokens), verified once per app and remembered."""

from __future__ import annotations

import threading

from backend.crypto import jws
from backend.crypto.jwk import SUPPORTED_ALGS
from backend.keys.keystore import KeyStore


class VerifiedTokens:
    """Tokens whose platform signature held, by exact text; bounded (emptied when full), shared by an app's threads."""

    def __init__(self, capacity: int = 8192) -> None:
        self.capacity = capacity
        self._tokens: dict[str, tuple[jws.CompactJWS, str]] = {}  # token → (parsed, purpose of its key)
        self._lock = threading.Lock()

    def get(self, token: str, purpose: str) -> jws.CompactJWS | None:
        found = self._tokens.get(token)
        return found[0] if found is not None and found[1] == purpose else None

    def add(self, token: str, parsed: jws.CompactJWS, purpose: str) -> None:
        with self._lock:
            if len(self._tokens) >= self.capacity:
                self._tokens.clear()  # tokens live minutes: starting afresh costs one verification each
            self._tokens[token] = (parsed, purpose)


def verify(token: str, *, typ: str, purpose: str, keys: KeyStore, memo: VerifiedTokens | None) -> jws.CompactJWS:
    """The parsed token when it is a compact JWS of header `typ`, signed by a key of `purpose` with the algorithm that
    key is for; raises jws.JWSError otherwise (and for an unknown kid). The claims are not checked here."""
    parsed = memo.get(token, purpose) if memo is not None else None
    if parsed is not None and parsed.header.get("typ") == typ:
        return parsed
    parsed = jws.parse(token)
    header = parsed.header
    if header.get("alg") not in SUPPORTED_ALGS or header.get("typ") != typ or not header.get("kid"):
        raise jws.JWSError(jws.BAD_SIGNATURE)
    try:
        key = keys.verification_key(str(header["kid"]))
    except Exception as exc:  # unknown kid (NotFound) or a key that cannot be loaded
        raise jws.JWSError(jws.BAD_SIGNATURE) from exc
    if key.purpose != purpose:
        raise jws.JWSError(jws.BAD_SIGNATURE)
    parsed.verify(key.public, key.alg)
    if memo is not None:
        memo.add(token, parsed, purpose)
    return parsed
