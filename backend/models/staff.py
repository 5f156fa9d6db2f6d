"""Staff of the departments (and the city's administrators) who use the browser console, and their sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.models.base import Base
from backend.models.catalog import Department

DEPARTMENT_STAFF = "department"  # handles its own department's objection queue
CITY_ADMIN = "city_admin"  # 牵头单位: reads every department's queue, acts on none
STAFF_ROLES = (DEPARTMENT_STAFF, CITY_ADMIN)


class StaffAccount(Base):
    """A person who logs into the staff console with a password (argon2id hash, never the password)."""

    __tablename__ = "staff_account"
    __table_args__ = (
        # Department staff belong to exactly one department; city administrators to none.
        CheckConstraint(
            "(role = 'department' AND department_id IS NOT NULL) OR (role = 'city_admin' AND department_id IS NULL)",
            name="role_department",
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    department_id: Mapped[int | None] = mapped_column(ForeignKey("department.id"), index=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    # Lock-out: consecutive failed logins; at the limit the account is locked until `locked_until`.
    failed_attempts: Mapped[int] = mapped_column(default=0)
    locked_until: Mapped[datetime | None]
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]

    department: Mapped[Department | None] = relationship()

    @property
    def is_city_admin(self) -> bool:
        return self.role == CITY_ADMIN


class StaffSession(Base):
    """One console login. The cookie carries a random token; only its SHA-256 is stored.

    A session ends at logout, when idle too long, at its absolute expiry, or when the account is disabled.
    """

    __tablename__ = "staff_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    staff_id: Mapped[int] = mapped_column(ForeignKey("staff_account.id"), index=True)
    created_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    expires_at: Mapped[datetime]  # absolute lifetime, whatever the activity
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(32))  # logout | idle | disabled | expired

    staff: Mapped[StaffAccount] = relationship()
