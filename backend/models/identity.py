"""Identity: holders (持证主体) who log in and the companies they represent, department API clients, staff of the
console; their sessions and the one-time values they spent."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.models.base import Base, JSONDoc
from backend.models.catalog import Department

DEPARTMENT_STAFF = "department"  # handles its own department's objection queue
CITY_ADMIN = "city_admin"  # 牵头单位: reads every department's queue, acts on none
STAFF_ROLES = (DEPARTMENT_STAFF, CITY_ADMIN)


# -- holders -------------------------------------------------------------------------------------------------------

class Holder(Base):
    """A citizen (自然人) known by real-name authentication. `id_index` equals Certificate.holder_index."""

    __tablename__ = "holder"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    id_type: Mapped[str] = mapped_column(String(3))
    id_index: Mapped[str] = mapped_column(String(64), unique=True)
    id_number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    name_enc: Mapped[bytes] = mapped_column(LargeBinary)
    phone_enc: Mapped[bytes | None] = mapped_column(LargeBinary)
    assurance_level: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]

    identities: Mapped[list[HolderIdentity]] = relationship(back_populates="holder")
    representations: Mapped[list[Representation]] = relationship(back_populates="holder",
                                                                  order_by="Representation.company_code")


class HolderIdentity(Base):
    """A login identity bound to a holder: an IdP subject, a mini-app openid, or the dev provider.

    `subject` is a keyed digest of the provider's subject (citizen_auth.subject_index), never the subject itself:
    an IdP's `sub` may be an ID number (身份证号), and the dev provider's is "111:<ID number>".
    """

    __tablename__ = "holder_identity"
    __table_args__ = (UniqueConstraint("provider", "subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    holder_id: Mapped[int] = mapped_column(ForeignKey("holder.id"), index=True)
    provider: Mapped[str] = mapped_column(String(200))  # "oidc:<issuer>", "wechat:<appid>", "dev"
    subject: Mapped[str] = mapped_column(String(64))  # HMAC-SHA256 (hex) of the subject, domain "login-subject"
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime]

    holder: Mapped[Holder] = relationship(back_populates="identities")


class Representation(Base):
    """A company (法人) the holder legally represents, as asserted by the identity provider at login.

    It counts only while the assertion is recent (ECERT_REPRESENTATION_MAX_AGE, see wallet.current_representations):
    a former legal representative must not keep reading the company's certificates. Only real-name logins renew it.
    """

    __tablename__ = "representation"
    __table_args__ = (UniqueConstraint("holder_id", "company_code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    holder_id: Mapped[int] = mapped_column(ForeignKey("holder.id"))
    company_code: Mapped[str] = mapped_column(String(18))  # USCC: public, not personal data
    company_index: Mapped[str] = mapped_column(String(64), index=True)  # holder index of ("001", code)
    company_name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(32))  # legal_representative | authorised_agent
    asserted_by: Mapped[str] = mapped_column(String(200))
    asserted_at: Mapped[datetime]

    holder: Mapped[Holder] = relationship(back_populates="representations")


class AuthSession(Base):
    """One login (a refresh-token family). Revoking it ends every token of the family at once."""

    __tablename__ = "auth_session"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)  # `sid` in access tokens
    holder_id: Mapped[int] = mapped_column(ForeignKey("holder.id"), index=True)
    provider: Mapped[str] = mapped_column(String(200))
    auth_time: Mapped[datetime]  # when the holder last authenticated (step-up checks)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(32))

    holder: Mapped[Holder] = relationship()


class RefreshToken(Base):
    """A refresh token, stored only as its SHA-256. Used once; reuse of a used one revokes the family."""

    __tablename__ = "refresh_token"

    id: Mapped[int] = mapped_column(primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("auth_session.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]

    session: Mapped[AuthSession] = relationship()


class LoginNonce(Base):
    """A nonce the platform issued for an OIDC authentication request (POST /api/v1/auth/nonce).

    Stored only as its SHA-256; used once, by the login whose ID token carries it, and only before it expires.
    """

    __tablename__ = "login_nonce"

    id: Mapped[int] = mapped_column(primary_key=True)
    nonce_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    used_at: Mapped[datetime | None]


class IdTokenUse(Base):
    """An ID token that logged someone in (keyed digest of iss, sub and jti or iat+nonce): never accepted again.

    Kept until the token would be refused as too old anyway.
    """

    __tablename__ = "id_token_use"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_index: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)


# -- department clients --------------------------------------------------------------------------------------------

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


# -- staff --------------------------------------------------------------------------------------------------------

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
