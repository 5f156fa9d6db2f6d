"""Show-code tokens (亮证码): compact, platform-signed, short-lived, small enough for a version ≤ 10 QR code.
Their 99-byte layout is in backend/keys/README.md."""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final

import jwt
from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from backend.crypto.jwk import JWKError, PublicKey, load_public_jwk
from backend.errors import DomainError
from backend.keys.keystore import PURPOSE_PLATFORM, KeyCache, KeyStore, SignerKey
from backend.models import SigningKey

VERSION: Final = 1
PROFILES: Final = ("basic", "full")
DOMAIN: Final = b"ecert:show-code:v1\x00"
NONCE_BYTES: Final = 8
SHORT_KID_BYTES: Final = 3
SIGNATURE_BYTES: Final = 64
_HEADER = struct.Struct(">B16sB8sIH3s")
TOKEN_BYTES: Final = _HEADER.size + SIGNATURE_BYTES  # 99
TOKEN_CHARS: Final = TOKEN_BYTES * 4 // 3  # 132
MAX_LIFETIME: Final = 300  # seconds; a longer lifetime is refused even if correctly signed
CLOCK_SKEW: Final = timedelta(seconds=5)  # another server's clock may run this far ahead of ours
PATH_PREFIX: Final = "/v/"
_TOKEN_RE: Final = re.compile(rf"[A-Za-z0-9_-]{{{TOKEN_CHARS}}}")
_HEX_ID_RE: Final = re.compile(r"[0-9a-f]{32}")

# Why a token was refused (stable codes for audit and the department API).
MALFORMED: Final = "malformed"
UNKNOWN_KEY: Final = "unknown_key"
BAD_SIGNATURE: Final = "bad_signature"
NOT_YET_VALID: Final = "not_yet_valid"
EXPIRED: Final = "expired"


class ShowCodeRefused(Exception):
    """The token is not a show code we issued, or no longer valid. `claims` is set once the signature held."""

    def __init__(self, reason: str, claims: ShowCodeClaims | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.claims = claims


@dataclass(frozen=True)
class ShowCodeClaims:
    certificate_id: str  # Certificate.public_id
    profile: str
    nonce: bytes
    issued_at: int
    lifetime: int

    @property
    def issued_at_datetime(self) -> datetime:
        return datetime.fromtimestamp(self.issued_at, UTC)

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.issued_at + self.lifetime, UTC)


def new_claims(certificate_id: str, profile: str, *, now: datetime, lifetime: int) -> ShowCodeClaims:
    if not _HEX_ID_RE.fullmatch(certificate_id):
        raise ValueError("certificate public ids are 32 lower-case hex characters")
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {PROFILES}")
    if not 1 <= lifetime <= MAX_LIFETIME:
        raise ValueError(f"lifetime must be 1..{MAX_LIFETIME} seconds")
    return ShowCodeClaims(certificate_id, profile, secrets.token_bytes(NONCE_BYTES), int(now.timestamp()), lifetime)


def short_kid(kid: str) -> bytes:
    """The first 3 bytes of a base64url kid (its first 4 characters)."""
    return base64.urlsafe_b64decode(kid[:4])


def _header(claims: ShowCodeClaims, kid_prefix: bytes) -> bytes:
    return _HEADER.pack(VERSION, bytes.fromhex(claims.certificate_id), PROFILES.index(claims.profile), claims.nonce,
                        claims.issued_at, claims.lifetime, kid_prefix)


def encode(keys: KeyStore, key: SignerKey, claims: ShowCodeClaims) -> str:
    """Sign the claims with the (active) platform key; answers the 132-character token."""
    header = _header(claims, short_kid(key.kid))
    signature = keys.sign_bytes(key, DOMAIN + header)
    if len(signature) != SIGNATURE_BYTES:
        raise ValueError(f"show codes need a {SIGNATURE_BYTES}-byte signature, {key.alg} gave {len(signature)}")
    return base64.urlsafe_b64encode(header + signature).decode("ascii")


def url_for_token(public_url: str, token: str) -> str:
    return f"{public_url.rstrip('/')}{PATH_PREFIX}{token}"


def token_from_text(text: str) -> str:
    """A token, or the token inside a show-code URL (as a scanner reads it from the QR)."""
    text = text.strip()
    if PATH_PREFIX in text:
        text = text.rsplit(PATH_PREFIX, 1)[1]
    return text.split("?", 1)[0].split("#", 1)[0]


_CANDIDATES: Final = select(SigningKey.kid, SigningKey.alg, SigningKey.public_jwk).where(
    SigningKey.purpose == PURPOSE_PLATFORM, SigningKey.department_id.is_(None),
    SigningKey.kid.like(bindparam("pattern"), escape="/"))


def _candidate_keys(session: Session, prefix: bytes, cache: KeyCache) -> list[tuple[str, str, PublicKey]]:
    """(kid, alg, public key) of the platform keys, active or retired, whose kid starts with the token's short key
    id, read from the database (and remembered in `cache` for `_known_candidates`).

    Plain columns on the session's connection: the ORM's entity loading cost more than the query.
    """
    text = base64.urlsafe_b64encode(prefix).decode("ascii")
    pattern = text.replace("/", "//").replace("%", "/%").replace("_", "/_") + "%"  # "_" is base64url, and LIKE's
    found = []
    for kid, alg, jwk in session.connection().execute(_CANDIDATES, {"pattern": pattern}):
        public = cache.show_code_keys.get(kid)
        if public is None:
            try:
                public = load_public_jwk({k: v for k, v in jwk.items() if k not in {"kid", "use", "alg"}})
            except JWKError:
                continue
            with cache.lock:
                cache.show_code_keys[kid] = public
        found.append((kid, alg, public))
    if found:
        with cache.lock:
            cache.kids_by_prefix[prefix] = cache.kids_by_prefix.get(prefix, frozenset()) | {kid for kid, _, _ in found}
    return found


def _known_candidates(keys: KeyStore, prefix: bytes) -> list[tuple[str, str, PublicKey]]:
    """The platform keys met before under this short key id (`cache.kids_by_prefix`: only ids that named a platform
    key). A kid names one key wherever it is found; whether this database holds it, as a platform key, is asked of
    the key store. A key made later under a known short id is found by the fallback to the database."""
    found = []
    for kid in keys.cache.kids_by_prefix.get(prefix, ()):
        try:
            key = keys.verification_key(kid)
        except (DomainError, JWKError):  # not a key of this database
            continue
        if key.purpose == PURPOSE_PLATFORM and key.department_id is None:
            found.append((kid, key.alg, key.public))
    return found


def _signed_by(candidates: list[tuple[str, str, PublicKey]], message: bytes, signature: bytes) -> bool:
    return any(jwt.get_algorithm_by_name(alg).verify(message, public, signature) for _, alg, public in candidates)


def decode(session: Session, token: str, *, now: datetime, keys: KeyStore | None = None) -> ShowCodeClaims:
    """Check a token completely — format, key, signature, then time — and answer its claims.

    With `keys`, the platform keys already met under the token's short key id are tried first, without a query;
    the database is asked when none of them verifies (a new key, or a forgery). Raises ShowCodeRefused with a
    reason; an expired or not-yet-valid token carries its (authentic) claims.
    """
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        raise ShowCodeRefused(MALFORMED)
    try:
        raw = base64.urlsafe_b64decode(token)
    except (binascii.Error, ValueError) as exc:
        raise ShowCodeRefused(MALFORMED) from exc
    if len(raw) != TOKEN_BYTES:
        raise ShowCodeRefused(MALFORMED)
    header, signature = raw[:_HEADER.size], raw[_HEADER.size:]
    version, certificate_id, profile, nonce, issued_at, lifetime, kid_prefix = _HEADER.unpack(header)
    if version != VERSION or profile >= len(PROFILES) or not 1 <= lifetime <= MAX_LIFETIME:
        raise ShowCodeRefused(MALFORMED)
    message = DOMAIN + header
    tried = _known_candidates(keys, kid_prefix) if keys is not None else []
    if not _signed_by(tried, message, signature):
        candidates = _candidate_keys(session, kid_prefix, keys.cache if keys is not None else KeyCache())
        if not candidates:
            raise ShowCodeRefused(UNKNOWN_KEY)
        seen = {kid for kid, _, _ in tried}
        if not _signed_by([c for c in candidates if c[0] not in seen], message, signature):
            raise ShowCodeRefused(BAD_SIGNATURE)
    claims = ShowCodeClaims(certificate_id.hex(), PROFILES[profile], nonce, issued_at, lifetime)
    moment = now.timestamp()
    if issued_at > moment + CLOCK_SKEW.total_seconds():
        raise ShowCodeRefused(NOT_YET_VALID, claims)
    if moment >= issued_at + lifetime:
        raise ShowCodeRefused(EXPIRED, claims)
    return claims
