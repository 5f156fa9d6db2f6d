"""Wallet: show-code checks already on record (亮证核验): a refreshed page or a scanner's retry records nothing new."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import Base


class ShowCodeUse(Base):
    """A genuine show code checked by one verifier with one outcome: written to usage history and audit once.

    A code is named by its certificate and nonce (both signed), so a re-encoded token is the same code. A row is
    bookkeeping, not evidence (the usage record and the audit event are): `flask jobs purge` forgets rows older than
    ECERT_SHOW_CODE_USE_RETENTION_DAYS, long after the code itself expired (showcodes.purge_show_code_uses).
    """

    __tablename__ = "show_code_use"
    __table_args__ = (UniqueConstraint("certificate_public_id", "nonce", "verifier", "outcome"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    certificate_public_id: Mapped[str] = mapped_column(String(32))  # as in the code, even for a certificate gone
    nonce: Mapped[str] = mapped_column(String(16))  # hex, as in the showcode.minted audit event
    verifier: Mapped[str] = mapped_column(String(80))  # "public", or "client:<client_id>" for a department scanner
    outcome: Mapped[str] = mapped_column(String(48))  # the state shown, or "<state>:<reason>" for a refused code
    recorded_at: Mapped[datetime]
