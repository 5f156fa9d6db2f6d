"""Audit (责任倒查): the tamper-evident hash chain of events, its signed checkpoints, and the holders' usage records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import Base, JSONDoc


class AuditEvent(Base):
    """One security-relevant action. `seq` is dense and assigned under the chain-head lock."""

    __tablename__ = "audit_event"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime]
    actor_type: Mapped[str] = mapped_column(String(16))
    actor_id: Mapped[str] = mapped_column(String(64))
    department_code: Mapped[str | None] = mapped_column(String(18), index=True)
    action: Mapped[str] = mapped_column(String(64), index=True)
    object_type: Mapped[str | None] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(128), index=True)
    outcome: Mapped[str] = mapped_column(String(16))
    source_ip: Mapped[str | None] = mapped_column(String(45))
    request_id: Mapped[str | None] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    leaf_hash: Mapped[str] = mapped_column(String(64))
    chain_hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The single row holding the chain's head; updating it serialises writers."""

    __tablename__ = "audit_head"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger)
    chain_hash: Mapped[str] = mapped_column(String(64))


class AuditCheckpoint(Base):
    """The chain head at `seq`, signed with the platform key."""

    __tablename__ = "audit_checkpoint"

    id: Mapped[int] = mapped_column(primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    chain_hash: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(2048))
    kid: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]


class UsageRecord(Base):
    """A use of a certificate (verification of a show code, a redemption): the holder's usage history."""

    __tablename__ = "usage_record"
    __table_args__ = (Index("ix_usage_record_holder", "holder_index", "occurred_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    holder_index: Mapped[str] = mapped_column(String(64))
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificate.id"), index=True)
    kind: Mapped[str] = mapped_column(String(24))  # show_code_checked | verified | redeemed
    verifier_kind: Mapped[str] = mapped_column(String(16))  # public | client
    verifier_id: Mapped[str | None] = mapped_column(String(64))
    verifier_department_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"))
    purpose: Mapped[str | None] = mapped_column(String(200))
    fields: Mapped[list[str]] = mapped_column(JSONDoc, default=list)  # names of the fields shown or disclosed
    occurred_at: Mapped[datetime]
