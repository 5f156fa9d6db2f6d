"""Keys: signing keys of departments and of the platform (private parts encrypted with the master key), and the
status lists they sign."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.models.base import Base, JSONDoc
from backend.models.catalog import Department


class SigningKey(Base):
    """One key pair. `purpose`: certificate (department), platform, wallet.

    `origin` is `local` (private part held encrypted here), `external` (a department's own
    system holds the private key; we keep the public key to verify what it syncs) or `kms`.
    """

    __tablename__ = "signing_key"
    __table_args__ = (Index("ix_signing_key_owner", "purpose", "department_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kid: Mapped[str] = mapped_column(String(64), unique=True)
    purpose: Mapped[str] = mapped_column(String(16))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"))
    alg: Mapped[str] = mapped_column(String(8))
    origin: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(8))  # active | retired
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    private_key_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]

    department: Mapped[Department | None] = relationship()


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
