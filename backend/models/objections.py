"""Objection aggregate (异议, 第八条、第十四条): a dispute about a certificate's data, its timeline, evidence and
escalations. What the filer wrote is personal data: encrypted like a certificate's face."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.models.base import Base
from backend.models.catalog import Department
from backend.models.issuance import Certificate

# Objection states: filed → in progress (受理) → resolved (已更正) or rejected (驳回); rejection is possible at once.
SUBMITTED, IN_PROGRESS, REJECTED, RESOLVED = "submitted", "in_progress", "rejected", "resolved"
OPEN_STATES = (SUBMITTED, IN_PROGRESS)
_OPEN = text("status IN ('submitted', 'in_progress')")


class Objection(Base):
    """One objection about one certificate version, in the issuing department's queue."""

    __tablename__ = "objection"
    __table_args__ = (
        Index("ix_objection_queue", "department_id", "status", "created_at"),
        Index("ix_objection_filer_holder", "filer_holder_id", "created_at"),
        # One open objection per certificate and filer, even when a double tap sends two at once.
        Index("uq_objection_open_by_holder", "certificate_id", "filer_holder_id", unique=True,
              sqlite_where=_OPEN, postgresql_where=_OPEN),
        Index("uq_objection_open_by_department", "certificate_id", "filer_department_id", unique=True,
              sqlite_where=_OPEN, postgresql_where=_OPEN),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificate.id"), index=True)  # the disputed version
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"))  # the issuer: whose queue it is in
    filer_kind: Mapped[str] = mapped_column(String(12))  # citizen | department
    filer_holder_id: Mapped[int | None] = mapped_column(ForeignKey("holder.id"))
    filer_department_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"))
    filer_client_id: Mapped[str | None] = mapped_column(String(64))
    disputed_enc: Mapped[bytes] = mapped_column(LargeBinary)  # JSON [{"field", "claimed_value"}]
    description_enc: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(12))
    answer: Mapped[str | None] = mapped_column(String(500))  # the department's reason or note, shown to the filer
    evidence_count: Mapped[int] = mapped_column(Integer, default=0)
    acknowledge_due_at: Mapped[datetime]
    resolve_due_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    corrected_certificate_id: Mapped[int | None] = mapped_column(ForeignKey("certificate.id"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    certificate: Mapped[Certificate] = relationship(foreign_keys=[certificate_id])
    department: Mapped[Department] = relationship(foreign_keys=[department_id])
    filer_department: Mapped[Department | None] = relationship(foreign_keys=[filer_department_id])
    corrected_certificate: Mapped[Certificate | None] = relationship(foreign_keys=[corrected_certificate_id])
    events: Mapped[list[ObjectionEvent]] = relationship(back_populates="objection", order_by="ObjectionEvent.id")
    evidence: Mapped[list[ObjectionEvidence]] = relationship(back_populates="objection",
                                                             order_by="ObjectionEvidence.position")


class ObjectionEvent(Base):
    """One step of the status timeline (filed, accepted, rejected, resolved, escalated): never edited."""

    __tablename__ = "objection_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    objection_id: Mapped[int] = mapped_column(ForeignKey("objection.id"), index=True)
    event: Mapped[str] = mapped_column(String(24))
    from_status: Mapped[str | None] = mapped_column(String(12))
    to_status: Mapped[str] = mapped_column(String(12))
    note: Mapped[str | None] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(String(80))  # "<kind>:<id>", as in certificate_event
    occurred_at: Mapped[datetime]

    objection: Mapped[Objection] = relationship(back_populates="events")


class ObjectionEvidence(Base):
    """A cleaned evidence image (metadata stripped, re-encoded), sealed and kept in the evidence storage."""

    __tablename__ = "objection_evidence"
    __table_args__ = (UniqueConstraint("objection_id", "position"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    objection_id: Mapped[int] = mapped_column(ForeignKey("objection.id"))
    position: Mapped[int]  # 1..5, as in GET …/evidence/{n}
    storage_key: Mapped[str] = mapped_column(String(128), unique=True)
    media_type: Mapped[str] = mapped_column(String(16))  # image/jpeg | image/png
    width: Mapped[int]
    height: Mapped[int]
    size: Mapped[int]  # bytes of the cleaned image
    digest: Mapped[str] = mapped_column(String(64))  # keyed hash of the cleaned image
    created_at: Mapped[datetime]

    objection: Mapped[Objection] = relationship(back_populates="evidence")


class ObjectionEscalation(Base):
    """An overdue deadline reported to the city administrators (牵头单位): once per objection and level."""

    __tablename__ = "objection_escalation"
    __table_args__ = (UniqueConstraint("objection_id", "level"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    objection_id: Mapped[int] = mapped_column(ForeignKey("objection.id"))
    level: Mapped[str] = mapped_column(String(16))  # acknowledge | resolve
    due_at: Mapped[datetime]
    created_at: Mapped[datetime]
