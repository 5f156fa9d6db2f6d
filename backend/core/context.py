"""Per-request accessors shared by the faces: key store, cipher, evidence storage, import spool, working-day calendar,
clock, the actor's origin."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

from flask import current_app, g, request

from backend.core.caches import AppCaches, Memo
from backend.core.clock import now as clock_now
from backend.core.spool import LocalSpoolStorage, SealedSpool, SpoolStorage
from backend.core.storage import EvidenceStorage, LocalEvidenceStorage, SealedEvidenceStorage
from backend.crypto.encryption import FieldCipher
from backend.extensions import db
from backend.kernel.working_days import WorkingCalendar, cached_calendar
from backend.keys.deps import Deps
from backend.keys.keystore import LocalKeyStore
from backend.keys.platform_jws import VerifiedTokens

T = TypeVar("T")


def app_caches() -> AppCaches:
    """What this app remembers between requests (backend.core.caches), made by create_app."""
    caches: AppCaches = current_app.extensions[AppCaches.EXTENSION]
    return caches


def keystore() -> LocalKeyStore:
    return LocalKeyStore(db.session(), current_app.config["ECERT_MASTER_KEY"], app_caches().keys)


def verified_tokens() -> VerifiedTokens:
    """The app's memo of access tokens whose signature held (backend.keys.platform_jws)."""
    return app_caches().tokens


def current_definitions() -> Memo[str, dict[str, Any]]:
    """The app's memo of current catalog definitions by content hash (backend.catalog.definitions)."""
    return app_caches().definitions


def _extension(name: str, make: Callable[[], T]) -> T:
    """app.extensions[name], made on first use (an app may set its own beforehand, e.g. an object store)."""
    found: T | None = current_app.extensions.get(name)
    if found is None:
        found = current_app.extensions[name] = make()
    return found


def field_cipher() -> FieldCipher:
    return _extension("ecert.cipher", lambda: FieldCipher(current_app.config["ECERT_DATA_KEYS"],
                                                          current_app.config["ECERT_BLIND_INDEX_KEY"]))


def deps() -> Deps:
    """The request's session, key store, field cipher and public URL, for the verbs that sign, seal and verify."""
    return Deps(db.session(), keystore(), field_cipher(), current_app.config["ECERT_PUBLIC_URL"])


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
    inner: EvidenceStorage = _extension("ecert.evidence_storage",
                                        lambda: LocalEvidenceStorage(current_app.config["ECERT_EVIDENCE_DIR"]))
    return SealedEvidenceStorage(inner, field_cipher())


def working_calendar() -> WorkingCalendar:
    """The working-day calendar for objection deadlines (ECERT_HOLIDAY_CALENDAR)."""
    return cached_calendar(str(current_app.config["ECERT_HOLIDAY_CALENDAR"]))


def import_spool() -> SealedSpool:
    """Batch files sealed with the data key in ECERT_IMPORT_SPOOL_DIR (an app may set another storage in
    app.extensions["ecert.import_spool_storage"], e.g. an object store)."""
    storage: SpoolStorage = _extension("ecert.import_spool_storage",
                                       lambda: LocalSpoolStorage(current_app.config["ECERT_IMPORT_SPOOL_DIR"]))
    return SealedSpool(storage, field_cipher())
