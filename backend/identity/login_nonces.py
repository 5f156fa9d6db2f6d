"""Single-use login state for OIDC: nonces the platform issues, and the ID tokens it has already accepted."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from sqlalchemy import CursorResult, delete, select, update
from sqlalchemy.orm import Session

from backend.core.db.once import insert_once
from backend.crypto.encryption import FieldCipher
from backend.models import IdTokenUse, LoginNonce

NONCE_TTL = timedelta(minutes=10)
MAX_NONCE_LENGTH = 256
TOKEN_USE_DOMAIN = "id-token-use"


class NonceOutcome(Enum):
    ACCEPTED = "accepted"
    UNKNOWN = "unknown"  # never issued here, or expired (or purged)
    USED = "used"


@dataclass(frozen=True)
class IssuedNonce:
    nonce: str
    expires_in: int  # seconds


def _hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


def issue_login_nonce(session: Session, *, now: datetime) -> IssuedNonce:
    """A fresh 256-bit nonce for one authentication request; only its SHA-256 is stored."""
    nonce = secrets.token_urlsafe(32)
    session.add(LoginNonce(nonce_hash=_hash(nonce), created_at=now, expires_at=now + NONCE_TTL))
    session.flush()
    return IssuedNonce(nonce, int(NONCE_TTL.total_seconds()))


def consume_login_nonce(session: Session, nonce: str, *, now: datetime) -> NonceOutcome:
    """Use the nonce up, atomically: of two logins racing with the same nonce, exactly one is ACCEPTED.

    A conditional UPDATE (not a read, then a write) decides, so the database's row lock settles the race.
    """
    if not 1 <= len(nonce) <= MAX_NONCE_LENGTH:
        return NonceOutcome.UNKNOWN
    digest = _hash(nonce)
    result = session.execute(
        update(LoginNonce)
        .where(LoginNonce.nonce_hash == digest, LoginNonce.used_at.is_(None), LoginNonce.expires_at > now)
        .values(used_at=now)
        .execution_options(synchronize_session=False))
    if isinstance(result, CursorResult) and result.rowcount == 1:
        return NonceOutcome.ACCEPTED
    # Not taken: say why (no row, or an expired unused one, is UNKNOWN).
    used_at = session.scalar(select(LoginNonce.used_at).where(LoginNonce.nonce_hash == digest))
    return NonceOutcome.USED if used_at is not None else NonceOutcome.UNKNOWN


def id_token_index(cipher: FieldCipher, *, issuer: str, subject: str, jti: str | None, issued_at: int | float,
                   nonce: str) -> str:
    """Keyed digest naming one ID token: (iss, sub, jti), or (iss, sub, iat, nonce) when the IdP sets no jti.

    Keyed, because `sub` may be an ID number and a low-entropy jti would make a plain hash guessable.
    """
    parts: list[str | int | float] = [issuer, subject, "jti", jti] if jti else [issuer, subject, "iat", issued_at,
                                                                                 "nonce", nonce]
    return cipher.keyed_digest(json.dumps(parts, ensure_ascii=False).encode(), TOKEN_USE_DOMAIN)


def remember_id_token(session: Session, token_index: str, *, keep_until: datetime) -> bool:
    """Record an accepted ID token; False when it was accepted before (a replay): the caller refuses the login.

    Of concurrent logins with the same token exactly one records it. The row belongs to the login's transaction: a
    login refused later (rolled back) leaves no trace here.
    """
    return insert_once(session, IdTokenUse, {"token_index": token_index, "expires_at": keep_until},
                       unique=["token_index"])


def purge_login_state(session: Session, *, now: datetime) -> int:
    """Forget expired nonces (used or not) and replay entries past their keeping time. Idempotent."""
    removed = 0
    for model in (LoginNonce, IdTokenUse):
        result = session.execute(delete(model).where(model.expires_at <= now))
        removed += result.rowcount if isinstance(result, CursorResult) else 0
    return removed
