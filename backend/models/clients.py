"""Department API clients (OAuth 2 client credentials with private_key_jwt) and the one-time values they spent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.models.base import Base, JSONDoc
from backend.models.catalog import Department


class ApiClient(Base):
    """A department's business system registered to call /gov/v1."""

    __tablename__ = "api_client"

    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    name: Mapped[str] = mapped_column(String(100))
    scopes: Mapped[list[str]] = mapped_column(JSONDoc)
    public_jwks: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
    callback_allowlist: Mapped[list[str]] = mapped_column(JSONDoc, default=list)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]

    department: Mapped[Department] = relationship()


class ClientAssertionUse(Base):
    """A one-time value a client has spent, kept until it would be refused as stale anyway.

    `jti` is a client assertion's `jti`, or "kb:" + SHA-256 (hex) of a KB-JWT's signed part that the client had
    verified (POST /gov/v1/verify accepts each presentation once).
    """

    __tablename__ = "client_assertion_use"
    __table_args__ = (UniqueConstraint("api_client_id", "jti"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    api_client_id: Mapped[int] = mapped_column(ForeignKey("api_client.id"))
    jti: Mapped[str] = mapped_column(String(128))
    expires_at: Mapped[datetime]
