"""Per-request accessors shared by the faces: the key store, the clock, the actor's origin."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app, g, request

from backend.clock import now as clock_now
from backend.extensions import db
from backend.security.encryption import FieldCipher
from backend.security.keystore import LocalKeyStore


def keystore() -> LocalKeyStore:
    verification_keys = current_app.extensions.setdefault("ecert.verification_keys", {})
    return LocalKeyStore(db.session(), current_app.config["ECERT_MASTER_KEY"], verification_keys)


def field_cipher() -> FieldCipher:
    cipher: FieldCipher | None = current_app.extensions.get("ecert.cipher")
    if cipher is None:
        cipher = FieldCipher(current_app.config["ECERT_DATA_KEYS"], current_app.config["ECERT_BLIND_INDEX_KEY"])
        current_app.extensions["ecert.cipher"] = cipher
    return cipher


def now() -> datetime:
    return clock_now()


def representation_max_age() -> timedelta:
    """How long a real-name login's assertion that the holder represents a company keeps counting."""
    return timedelta(seconds=current_app.config["ECERT_REPRESENTATION_MAX_AGE"])


def request_actor_context() -> dict[str, str | None]:
    return {"source_ip": request.remote_addr, "request_id": getattr(g, "request_id", None)}
