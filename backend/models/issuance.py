"""Issuance (电子证照): certificate versions, their status events, idempotency of issuing calls, expiry reminders."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, Integer, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.models.base import Base
from backend.models.catalog import CertificateType, Department
from backend.models.keys import StatusList

# Certificate states (DESIGN §3) and their Token Status List values (DESIGN §5).
VALID, SUSPENDED, REVOKED, EXPIRED, SUPERSEDED = "valid", "suspended", "revoked", "expired", "superseded"
STATUS_LIST_VALUE = {VALID: 0, REVOKED: 1, EXPIRED: 1, SUSPENDED: 2, SUPERSEDED: 3}


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


class ExpiryReminder(Base):
    """One reminder per certificate and horizon (90/30/7 days), never twice."""

    __tablename__ = "expiry_reminder"
    __table_args__ = (UniqueConstraint("certificate_id", "horizon_days"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificate.id"))
    horizon_days: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
