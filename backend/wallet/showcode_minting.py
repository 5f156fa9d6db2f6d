"""Show codes (亮证) minted: a fresh, short-lived, platform-signed code for a certificate that is valid today."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.audit.chain import record_event
from backend.errors import Conflict, Gone
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_today
from backend.keys import showcode
from backend.keys.keystore import PURPOSE_PLATFORM, KeyStore
from backend.models import Certificate
from backend.models.issuance import EXPIRED, REVOKED, SUPERSEDED, SUSPENDED


@dataclass(frozen=True)
class MintedShowCode:
    token: str
    url: str
    claims: showcode.ShowCodeClaims


class Showable(Protocol):
    """What minting reads of a certificate: a Certificate, or a wallet.queries.HeldCertificateRow."""

    @property
    def id(self) -> int: ...

    @property
    def public_id(self) -> str: ...

    @property
    def identifier(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def valid_from(self) -> date: ...

    @property
    def valid_until(self) -> date | None: ...


def _refuse_unshowable(session: Session, certificate: Showable, now: datetime) -> None:
    """Only a certificate that is valid today can be shown; the others get a clear code."""
    status = certificate.status
    if status == REVOKED:
        raise Conflict("该证照已注销，不能亮证", code="certificate_revoked")
    if status == SUSPENDED:
        raise Conflict("该证照已中止，不能亮证", code="certificate_suspended")
    if status == SUPERSEDED:
        successor = session.scalar(select(Certificate.public_id).where(Certificate.previous_id == certificate.id))
        raise Conflict("该证照已换发新版本，请出示最新版本", code="certificate_superseded",
                       details={"current_id": successor} if successor else None)
    today = china_today(now)
    if status == EXPIRED or (certificate.valid_until is not None and today > certificate.valid_until):
        raise Gone("该证照已过期，不能亮证", code="certificate_expired")
    if today < certificate.valid_from:
        raise Conflict("该证照尚未生效，不能亮证", code="certificate_not_yet_valid")


def mint_show_code(session: Session, keys: KeyStore, certificate: Showable, *, profile: str, lifetime: int,
                   public_url: str, actor: Actor, now: datetime) -> MintedShowCode:
    """A fresh code for a certificate the caller has already checked the holder may show (find_holder_certificate)."""
    _refuse_unshowable(session, certificate, now)
    claims = showcode.new_claims(certificate.public_id, profile, now=now, lifetime=lifetime)
    token = showcode.encode(keys, keys.active_platform_key(PURPOSE_PLATFORM), claims)
    # The token itself is never audited: within its minute it is a bearer credential.
    record_event(session, actor=actor, action="showcode.minted", now=now, object_type="certificate",
                 object_id=certificate.identifier,
                 details={"profile": profile, "nonce": claims.nonce.hex(), "expires_at": claims.expires_at.isoformat()})
    return MintedShowCode(token, showcode.url_for_token(public_url, token), claims)
