"""Holders (持证主体) who log in — citizens, and the companies they represent — and their sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from backend.models.base import Base, JSONDoc


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
