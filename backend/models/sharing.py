"""Sharing (授权用证): access requests, grants, the certificates and fields they cover, redemptions.
The rules they keep are described in backend/sharing/README.md."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.models.base import Base, JSONDoc
from backend.models.catalog import Department
from backend.models.identity import ApiClient, Holder
from backend.models.issuance import Certificate

# Access request states.
REQUEST_PENDING, REQUEST_APPROVED, REQUEST_DECLINED = "pending", "approved", "declined"
# Stored grant states; "expired" is derived from `expires_at` when read, never written by a sweep.
GRANT_ACTIVE, GRANT_USED, GRANT_REVOKED = "active", "used", "revoked"
# How consent was given: in the holder's app, by a one-time SMS code typed at the counter, or attested by staff
# who checked the physical ID card (counted separately for the city's review, 第十一条).
CONSENT_APP, CONSENT_SMS, CONSENT_STAFF = "app", "sms_code", "staff_attested"


class AccessRequest(Base):
    """A department's request to use certificates (用证请求), shown as a QR at its counter or website."""

    __tablename__ = "access_request"
    __table_args__ = (Index("ix_access_request_client", "api_client_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)  # 128-bit random, the id in URLs
    api_client_id: Mapped[int] = mapped_column(ForeignKey("api_client.id"))
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    # [{"type_code": "...", "fields": ["..."]}] — validated against each type's sharing policy when created.
    wanted: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc)
    purpose: Mapped[str] = mapped_column(String(200))  # 用证事由
    matter_code: Mapped[str] = mapped_column(String(64))  # 事项编码
    consent_seconds: Mapped[int]  # how long the resulting grant may last
    callback_url: Mapped[str | None] = mapped_column(String(500))
    status: Mapped[str] = mapped_column(String(12), default=REQUEST_PENDING)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]  # the request must be answered before this
    decided_at: Mapped[datetime | None]
    holder_id: Mapped[int | None] = mapped_column(ForeignKey("holder.id"), index=True)  # who answered
    # Counter service (assisted): the holder is named up front by the blind index of their code.
    assisted: Mapped[bool] = mapped_column(default=False)
    assisted_holder_index: Mapped[str | None] = mapped_column(String(64), index=True)
    otp_hash: Mapped[str | None] = mapped_column(String(64))  # keyed hash of the SMS one-time code
    otp_expires_at: Mapped[datetime | None]
    otp_attempts: Mapped[int] = mapped_column(default=0)
    consent_method: Mapped[str | None] = mapped_column(String(16))
    attested_by: Mapped[str | None] = mapped_column(String(64))  # staff member (department's own staff id)
    attestation_reason: Mapped[str | None] = mapped_column(String(200))
    id_document_checked: Mapped[bool | None]
    # Callback to the department's system after the decision (outbox: delivered after commit, retried).
    callback_attempts: Mapped[int] = mapped_column(default=0)
    callback_delivered_at: Mapped[datetime | None]
    callback_next_at: Mapped[datetime | None] = mapped_column(index=True)

    api_client: Mapped[ApiClient] = relationship()
    department: Mapped[Department] = relationship()
    holder: Mapped[Holder | None] = relationship()
    grant: Mapped[Grant | None] = relationship(back_populates="access_request", uselist=False)


class Grant(Base):
    """A holder's authorisation (授权) for one department client to use certificates once."""

    __tablename__ = "access_grant"  # "grant" is an SQL keyword
    __table_args__ = (Index("ix_access_grant_holder", "holder_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)  # also the KB-JWT nonce
    holder_id: Mapped[int] = mapped_column(ForeignKey("holder.id"))  # who consented
    api_client_id: Mapped[int] = mapped_column(ForeignKey("api_client.id"))  # the only client that may redeem
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    access_request_id: Mapped[int | None] = mapped_column(ForeignKey("access_request.id"), unique=True)
    purpose: Mapped[str] = mapped_column(String(200))
    matter_code: Mapped[str | None] = mapped_column(String(64))
    consent_method: Mapped[str] = mapped_column(String(16), default=CONSENT_APP)
    # Offered grants carry a one-time code (授权码): 128-bit random, only its keyed hash is stored.
    code_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    code_expires_at: Mapped[datetime | None]  # at most 10 minutes after creation
    status: Mapped[str] = mapped_column(String(12), default=GRANT_ACTIVE)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]  # capped by the strictest type policy (max_grant_seconds)
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    holder: Mapped[Holder] = relationship()
    api_client: Mapped[ApiClient] = relationship()
    department: Mapped[Department] = relationship()
    access_request: Mapped[AccessRequest | None] = relationship(back_populates="grant")
    certificates: Mapped[list[GrantCertificate]] = relationship(back_populates="grant", order_by="GrantCertificate.id")
    redemption: Mapped[Redemption | None] = relationship(back_populates="grant", uselist=False)


class GrantCertificate(Base):
    """One certificate covered by a grant and the fields (by name) the holder consented to disclose."""

    __tablename__ = "access_grant_certificate"
    __table_args__ = (UniqueConstraint("grant_id", "certificate_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("access_grant.id"))
    certificate_id: Mapped[int] = mapped_column(ForeignKey("certificate.id"), index=True)
    fields: Mapped[list[str]] = mapped_column(JSONDoc)

    grant: Mapped[Grant] = relationship(back_populates="certificates")
    certificate: Mapped[Certificate] = relationship()


class Redemption(Base):
    """The one use of a grant (用证记录). Unique per grant: a second guard behind the conditional update."""

    __tablename__ = "redemption"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    grant_id: Mapped[int] = mapped_column(ForeignKey("access_grant.id"), unique=True)
    api_client_id: Mapped[int] = mapped_column(ForeignKey("api_client.id"))
    redeemed_at: Mapped[datetime]
    request_id: Mapped[str | None] = mapped_column(String(64))  # the HTTP request id, for trace-back (责任倒查)

    grant: Mapped[Grant] = relationship(back_populates="redemption")
    api_client: Mapped[ApiClient] = relationship()
