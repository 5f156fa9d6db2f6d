"""Per-request accessors shared by the faces: key store, cipher, evidence storage, import spool, working-day calendar,
clock, the actor's origin."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import current_app, g, request

from backend.core.clock import now as clock_now
from backend.core.spool import LocalSpoolStorage, SealedSpool, SpoolStorage
from backend.core.storage import EvidenceStorage, LocalEvidenceStorage, SealedEvidenceStorage
from backend.crypto.encryption import FieldCipher
from backend.extensions import db
from backend.kernel.working_days import WorkingCalendar, cached_calendar
from backend.keys.keystore import LocalKeyStore
from backend.keys.platform_jws import VerifiedTokens


def keystore() -> LocalKeyStore:
    verification_keys = current_app.extensions.setdefault("ecert.verification_keys", {})
    return LocalKeyStore(db.session(), current_app.config["ECERT_MASTER_KEY"], verification_keys)


def verified_tokens() -> VerifiedTokens:
    """The app's memo of access tokens whose signature held (backend.keys.platform_jws)."""
    memo: VerifiedTokens | None = current_app.extensions.get("ecert.verified_tokens")
    if memo is None:
        memo = current_app.extensions["ecert.verified_tokens"] = VerifiedTokens()
    return memo


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


def evidence_storage() -> SealedEvidenceStorage:
    """Objection evidence, sealed with the data key, in ECERT_EVIDENCE_DIR (an app may set another storage in
    app.extensions["ecert.evidence_storage"], e.g. an object store)."""
    inner: EvidenceStorage | None = current_app.extensions.get("ecert.evidence_storage")
    if inner is None:
        inner = current_app.extensions["ecert.evidence_storage"] = LocalEvidenceStorage(
            current_app.config["ECERT_EVIDENCE_DIR"])
    return SealedEvidenceStorage(inner, field_cipher())


def working_calendar() -> WorkingCalendar:
    """The working-day calendar for objection deadlines (ECERT_HOLIDAY_CALENDAR)."""
    return cached_calendar(str(current_app.config["ECERT_HOLIDAY_CALENDAR"]))


def import_spool() -> SealedSpool:
    """Batch files sealed with the data key in ECERT_IMPORT_SPOOL_DIR (an app may set another storage in
    app.extensions["ecert.import_spool_storage"], e.g. an object store)."""
    storage: SpoolStorage | None = current_app.extensions.get("ecert.import_spool_storage")
    if storage is None:
        storage = current_app.extensions["ecert.import_spool_storage"] = LocalSpoolStorage(
            current_app.config["ECERT_IMPORT_SPOOL_DIR"])
    return SealedSpool(storage, field_cipher())
