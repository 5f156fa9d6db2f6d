"""What the verbs that sign, seal and verify are handed together: session, key store, field cipher, public URL."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.orm import Session

from backend.crypto.encryption import FieldCipher
from backend.keys.keystore import KeyStore


@dataclass(frozen=True)
class Deps:
    """One request's (or job step's) database session with the key store, the field cipher and the platform's
    public URL (the `iss` of what it signs, the base of its status lists). Faces build it from the app
    (`backend.core.context.deps`); business areas take it as an argument."""

    session: Session
    keys: KeyStore
    cipher: FieldCipher
    public_url: str
