"""Certificate aggregate (电子证照): versions, status events, status lists, idempotency, imports, reminders."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.models.base import Base, JSONDoc
from backend.models.catalog import CertificateType, Department

# Certificate states (DESIGN §3) and their Token Status List values (DESIGN §5).
VALID, SUSPENDED, REVOKED, EXPIRED, SUPERSEDED = "valid", "suspended", "revoked", "expired", "superseded"
STATUS_LIST_VALUE = {VALID: 0, REVOKED: 1, EXPIRED: 1, SUSPENDED: 2, SUPERSEDED: 3}


class StatusList(Base):
    """One IETF Token Status List of an issuer. Bits are derived from certificates; `revision` counts changes."""

    __tablename__ = "status_list"
    __table_args__ = (UniqueConstraint("department_id", "list_number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    list_number: Mapped[int]
    size: Mapped[int]
    allocated: Mapped[int] = mapped_column(default=0)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    token: Mapped[str | None] = mapped_column(Text)  # the last signed statuslist+jwt
    token_revision: Mapped[int | None] = mapped_column(BigInteger)
    token_issued_at: Mapped[datetime | None]
    created_at: Mapped[datetime]

    department: Mapped[Department] = relationship()


class Certificate(Base):
    """One version of an electronic certificate. Personal data is encrypted; lookups use blind indexes."""

    __tablename__ = "certificate"
    __table_args__ = (
        UniqueConstraint("certificate_type_id", "issuer_department_id", "serial", "version"),
        # number_index first: an import looks its numbers up by number_index alone (backend/imports/numbers.py).
        UniqueConstraint("number_index", "certificate_type_id", "issuer_department_id", "version"),
        UniqueConstraint("status_list_id", "status_index"),
        Index("ix_certificate_holder", "holder_index", "status"),
        Index("ix_certificate_expiry", "status", "valid_until"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)  # opaque id for URLs
    identifier: Mapped[str] = mapped_column(String(100), unique=True)  # 证照标识 (GB/T 36904)
    certificate_type_id: Mapped[int] = mapped_column(ForeignKey("certificate_type.id"))
    catalog_version: Mapped[int]
    issuer_department_id: Mapped[int] = mapped_column(ForeignKey("department.id"), index=True)
    serial: Mapped[str] = mapped_column(String(32))
    version: Mapped[int]
    number_index: Mapped[str] = mapped_column(String(64))  # blind index of 证照编号
    number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    holder_code_type: Mapped[str] = mapped_column(String(3))
    holder_index: Mapped[str] = mapped_column(String(64))  # blind index of (code type, code)
    holder_name_enc: Mapped[bytes] = mapped_column(LargeBinary)
    holder_code_enc: Mapped[bytes] = mapped_column(LargeBinary)
    face_enc: Mapped[bytes] = mapped_column(LargeBinary)  # JSON of the face fields
    sd_jwt_enc: Mapped[bytes] = mapped_column(LargeBinary)  # the issued SD-JWT with every disclosure
    content_hash: Mapped[str] = mapped_column(String(64))  # keyed hash of the certificate's content
    issued_on: Mapped[date] = mapped_column(Date)
    valid_from: Mapped[date] = mapped_column(Date)
    valid_until: Mapped[date | None] = mapped_column(Date)  # None = 长期
    status: Mapped[str] = mapped_column(String(12))
    status_reason: Mapped[str | None] = mapped_column(String(200))
    status_changed_at: Mapped[datetime]
    status_list_id: Mapped[int] = mapped_column(ForeignKey("status_list.id"))
    status_index: Mapped[int]
    signing_kid: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(10))  # issued | synced | imported
    previous_id: Mapped[int | None] = mapped_column(ForeignKey("certificate.id"))
    import_batch_id: Mapped[int | None] = mapped_column(ForeignKey("import_batch.id"), index=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    certificate_type: Mapped[CertificateType] = relationship()
    issuer: Mapped[Department] = relationship()
    status_list: Mapped[StatusList] = relationship()
    previous: Mapped[Certificate | None] = relationship(remote_side=[id])


class CertificateEvent(Base):
    """A change of a certificate (issued, reissued, suspended, …): never a silent edit."""

    __tablename__ = "certificate_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificate.id"), index=True)
    event: Mapped[str] = mapped_column(String(16))
    from_status: Mapped[str | None] = mapped_column(String(12))
    to_status: Mapped[str] = mapped_column(String(12))
    reason: Mapped[str | None] = mapped_column(String(200))
    actor: Mapped[str] = mapped_column(String(80))
    occurred_at: Mapped[datetime]


class IdempotencyRecord(Base):
    """An Idempotency-Key a client used: same key + same body → same result; different body → 409."""

    __tablename__ = "idempotency_record"
    __table_args__ = (UniqueConstraint("api_client_id", "scope", "key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    api_client_id: Mapped[int] = mapped_column(ForeignKey("api_client.id"))
    scope: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[int]
    created_at: Mapped[datetime]


class ImportBatch(Base):
    """A batch import (批量导入), its progress and its per-row report.

    Queued by the API with its file spooled (sealed) under `spool_key`; a job claims it (`claimed_by`, `attempts`),
    reports progress through `processed_rows`/`processed_bytes`/`heartbeat_at`, and finishes it.
    """

    __tablename__ = "import_batch"
    __table_args__ = (UniqueConstraint("department_id", "idempotency_key"),
                      Index("ix_import_batch_status", "status", "created_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    submitted_by: Mapped[str] = mapped_column(String(80))  # a label ("client:<id>", "operator:<name>"), truncated
    # The department client that submitted the batch through the API (checked again when it is imported: it must
    # still be active and hold `issue`); None for a CLI (operator) import.
    api_client_id: Mapped[int | None] = mapped_column(ForeignKey("api_client.id"))
    idempotency_key: Mapped[str] = mapped_column(String(128))
    content_hash: Mapped[str] = mapped_column(String(64))
    file_format: Mapped[str] = mapped_column(String(8))  # jsonl | csv
    mode: Mapped[str] = mapped_column(String(8))  # all | partial
    status: Mapped[str] = mapped_column(String(12))  # queued | processing | completed | failed
    total_rows: Mapped[int] = mapped_column(default=0)
    processed_rows: Mapped[int] = mapped_column(default=0)
    imported_rows: Mapped[int] = mapped_column(default=0)
    skipped_rows: Mapped[int] = mapped_column(default=0)
    failed_rows: Mapped[int] = mapped_column(default=0)
    report: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, default=list)
    created_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    spool_key: Mapped[str | None] = mapped_column(String(80))  # the sealed file while the batch is not finished
    file_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    processed_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(80))  # the worker importing it
    attempts: Mapped[int] = mapped_column(default=0)  # claims so far (a dead worker's batch is claimed again)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)  # a failed file's error: code, message, details
    # When an all-or-nothing batch decided to publish (its numbers checked, none taken): from then on it completes,
    # a takeover publishing what is still staged, and its staged numbers are taken for everyone else.
    publishing_since: Mapped[datetime | None]


class ImportStaging(Base):
    """A certificate of a batch being imported, signed and encrypted, waiting to be published (批量导入暂存).

    Exactly the certificate row the batch will insert (column for column, personal data encrypted as there) and its
    holder's notification but for the certificate's id: publishing copies them with INSERT … SELECT. Seen by no one
    but the allocators of status-list slots (a staged row's slot is taken), the checks of certificate numbers (the
    staged number of a batch that is publishing is taken) and the batch itself; deleted when the batch publishes
    or fails, or when a new attempt at a batch that has not started publishing starts.
    """

    __tablename__ = "import_staging"
    __table_args__ = (Index("ix_import_staging_slot", "status_list_id", "status_index"),
                      Index("ix_import_staging_number", "number_index"))

    id: Mapped[int] = mapped_column(primary_key=True)
    import_batch_id: Mapped[int] = mapped_column(ForeignKey("import_batch.id"), index=True)
    row_number: Mapped[int]  # the row of the file, for the report should publishing find its number taken
    public_id: Mapped[str] = mapped_column(String(32))
    identifier: Mapped[str] = mapped_column(String(100))
    certificate_type_id: Mapped[int]
    catalog_version: Mapped[int]
    issuer_department_id: Mapped[int]
    serial: Mapped[str] = mapped_column(String(32))
    version: Mapped[int]
    number_index: Mapped[str] = mapped_column(String(64))
    number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    holder_code_type: Mapped[str] = mapped_column(String(3))
    holder_index: Mapped[str] = mapped_column(String(64))
    holder_name_enc: Mapped[bytes] = mapped_column(LargeBinary)
    holder_code_enc: Mapped[bytes] = mapped_column(LargeBinary)
    face_enc: Mapped[bytes] = mapped_column(LargeBinary)
    sd_jwt_enc: Mapped[bytes] = mapped_column(LargeBinary)
    content_hash: Mapped[str] = mapped_column(String(64))
    issued_on: Mapped[date] = mapped_column(Date)
    valid_from: Mapped[date] = mapped_column(Date)
    valid_until: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(12))
    status_reason: Mapped[str | None] = mapped_column(String(200))
    status_changed_at: Mapped[datetime]
    status_list_id: Mapped[int]
    status_index: Mapped[int]
    signing_kid: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(10))
    previous_id: Mapped[int | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # The holder's notification (its certificate_id is known once the certificate is published).
    notice_public_id: Mapped[str] = mapped_column(String(32))
    notice_title: Mapped[str] = mapped_column(String(200))
    notice_body: Mapped[str] = mapped_column(Text)
    notice_data: Mapped[dict[str, Any]] = mapped_column(JSONDoc)


class Notification(Base):
    """An inbox message for a holder (found by blind index, before or after they first log in) or a department."""

    __tablename__ = "notification"
    __table_args__ = (Index("ix_notification_holder", "holder_index", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    holder_index: Mapped[str | None] = mapped_column(String(64))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"), index=True)
    certificate_id: Mapped[int | None] = mapped_column(ForeignKey("certificate.id"))
    kind: Mapped[str] = mapped_column(String(32))
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONDoc, default=dict)
    created_at: Mapped[datetime]
    read_at: Mapped[datetime | None]
    delivered_at: Mapped[datetime | None]


class ExpiryReminder(Base):
    """One reminder per certificate and horizon (90/30/7 days), never twice."""

    __tablename__ = "expiry_reminder"
    __table_args__ = (UniqueConstraint("certificate_id", "horizon_days"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificate.id"))
    horizon_days: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
