"""Catalog aggregate (证照目录): departments and the certificate types they define and issue."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Column, ForeignKey, Integer, String, Table, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.models.base import Base, JSONDoc

certificate_type_issuer = Table(
    "certificate_type_issuer",
    Base.metadata,
    Column("certificate_type_id", ForeignKey("certificate_type.id"), primary_key=True),
    Column("department_id", ForeignKey("department.id"), primary_key=True),
)


class Department(Base):
    """A department (部门) identified by its 统一社会信用代码."""

    __tablename__ = "department"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(18), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    level: Mapped[str] = mapped_column(String(16))
    region_code: Mapped[str] = mapped_column(String(6))
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    parent: Mapped[Department | None] = relationship(remote_side=[id])
    issuable_types: Mapped[list[CertificateType]] = relationship(
        secondary=certificate_type_issuer, back_populates="issuers", order_by="CertificateType.type_code"
    )


class CertificateType(Base):
    """A catalog entry (证照目录项). `definition` holds the validated catalog document."""

    __tablename__ = "certificate_type"

    id: Mapped[int] = mapped_column(primary_key=True)
    type_code: Mapped[str] = mapped_column(String(21), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    defining_department_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    holder_category: Mapped[str] = mapped_column(String(16))
    classification_level: Mapped[int]
    catalog_version: Mapped[int] = mapped_column(Integer, default=1)
    content_hash: Mapped[str] = mapped_column(String(64))
    definition: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    defining_department: Mapped[Department] = relationship()
    issuers: Mapped[list[Department]] = relationship(
        secondary=certificate_type_issuer, back_populates="issuable_types", order_by="Department.code"
    )
    versions: Mapped[list[CertificateTypeVersion]] = relationship(
        back_populates="certificate_type", order_by="CertificateTypeVersion.version"
    )


class CertificateTypeVersion(Base):
    """Every catalog version of a type, kept so that old certificates can be read against it."""

    __tablename__ = "certificate_type_version"
    __table_args__ = (UniqueConstraint("certificate_type_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    certificate_type_id: Mapped[int] = mapped_column(ForeignKey("certificate_type.id"))
    version: Mapped[int]
    content_hash: Mapped[str] = mapped_column(String(64))
    definition: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    created_at: Mapped[datetime]

    certificate_type: Mapped[CertificateType] = relationship(back_populates="versions")
