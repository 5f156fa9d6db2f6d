"""Grants (授权用证): a holder's one-time, field-minimised authorisation for one department client."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session, selectinload

from backend.audit.chain import record_event
from backend.core.db.once import updated_rows
from backend.core.db.paging import keyset_page
from backend.crypto.encryption import FieldCipher
from backend.errors import Conflict, DomainError, Gone, NotFound, ValidationFailed
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_today
from backend.models import ApiClient, Certificate, CertificateType, Holder
from backend.models.issuance import EXPIRED, REVOKED, SUPERSEDED, SUSPENDED
from backend.models.sharing import (
    CONSENT_APP,
    CONSENT_SMS,
    CONSENT_STAFF,
    GRANT_ACTIVE,
    GRANT_REVOKED,
    GRANT_USED,
    AccessRequest,
    Grant,
    GrantCertificate,
)
from backend.sharing import consent_policy
from backend.wallet.queries import holder_indexes

GRANT_EXPIRED: Final = "expired"  # derived, never stored
GrantStatus = Literal["active", "used", "expired", "revoked"]
STATUS_LABELS: Final = {GRANT_ACTIVE: "有效", GRANT_USED: "已使用", GRANT_EXPIRED: "已过期", GRANT_REVOKED: "已撤销"}
CONSENT_METHODS: Final = (CONSENT_APP, CONSENT_SMS, CONSENT_STAFF)
CODE_DOMAIN: Final = "grant-code"
REDEEM_SCOPE: Final = "redeem"
MIN_OFFER_SECONDS: Final = 30


# -- errors -------------------------------------------------------------------------------------------------------

class GrantNotFound(NotFound):
    code = "grant_not_found"
    message = "授权不存在"


class GrantAlreadyUsed(Conflict):
    code = "grant_already_used"
    message = "该授权已被使用，不能再次使用"


class GrantExpired(Gone):
    code = "grant_expired"
    message = "该授权已过期"


class GrantRevoked(Gone):
    code = "grant_revoked"
    message = "持证人已撤销该授权"


def certificate_state_error(session: Session, certificate: Certificate, now: datetime) -> DomainError | None:
    """Why the certificate cannot be granted or presented now (None when it is valid today)."""
    status = certificate.status
    details = {"certificate_id": certificate.public_id}
    if status == REVOKED:
        return Conflict("该证照已注销，不能授权使用", code="certificate_revoked", details=details)
    if status == SUSPENDED:
        return Conflict("该证照已中止，不能授权使用", code="certificate_suspended", details=details)
    if status == SUPERSEDED:
        successor = session.scalar(select(Certificate.public_id).where(Certificate.previous_id == certificate.id))
        return Conflict("该证照已换发新版本，请使用最新版本", code="certificate_superseded",
                        details={**details, **({"current_id": successor} if successor else {})})
    today = china_today(now)
    if status == EXPIRED or (certificate.valid_until is not None and today > certificate.valid_until):
        return Gone("该证照已过期，不能授权使用", code="certificate_expired", details=details)
    if today < certificate.valid_from:
        return Conflict("该证照尚未生效，不能授权使用", code="certificate_not_yet_valid", details=details)
    return None


def _refuse_unusable(session: Session, certificate: Certificate, now: datetime) -> None:
    error = certificate_state_error(session, certificate, now)
    if error is not None:
        raise error


# -- shared building blocks ---------------------------------------------------------------------------------------

def new_grant_public_id() -> str:
    """128-bit random: the grant's id in URLs and the KB-JWT nonce of its presentations."""
    return secrets.token_hex(16)


def code_digest(cipher: FieldCipher, code: str) -> str:
    """The keyed hash under which a grant code is stored (the code itself never is)."""
    return cipher.keyed_digest(code.encode("utf-8"), CODE_DOMAIN)


def effective_status(grant: Grant, now: datetime) -> str:
    """The stored status, except that an active grant past its expiry (or its code's) is expired."""
    if grant.status == GRANT_ACTIVE and now >= usable_until(grant):
        return GRANT_EXPIRED
    return grant.status


def usable_until(grant: Grant) -> datetime:
    """When the grant stops being redeemable: its own expiry, or its code's if that comes first."""
    if grant.code_expires_at is not None and grant.code_expires_at < grant.expires_at:
        return grant.code_expires_at
    return grant.expires_at


def _check_owned(holder: Holder, certificates: Sequence[Certificate], *, now: datetime,
                 max_age: timedelta | None) -> None:
    """Every certificate is the holder's own or a company's they represent (currently, when `max_age` is given)."""
    if max_age is not None:
        allowed = set(holder_indexes(holder, now=now, max_age=max_age))
    else:
        allowed = {holder.id_index, *(r.company_index for r in holder.representations)}
    for certificate in certificates:
        if certificate.holder_index not in allowed:
            raise NotFound("证照不存在", code="certificate_not_found",
                           details={"certificate_id": certificate.public_id})


def _add_grant(session: Session, *, holder: Holder, client: ApiClient, purpose: str, matter_code: str | None,
               consent_method: str, covered: list[tuple[Certificate, list[str]]], lifetime: int, now: datetime,
               access_request: AccessRequest | None = None, code_hash: str | None = None,
               code_expires_at: datetime | None = None) -> Grant:
    grant = Grant(public_id=new_grant_public_id(), holder_id=holder.id, api_client_id=client.id,
                  department_id=client.department_id,
                  access_request_id=access_request.id if access_request is not None else None,
                  purpose=purpose, matter_code=matter_code, consent_method=consent_method, code_hash=code_hash,
                  code_expires_at=code_expires_at, status=GRANT_ACTIVE, created_at=now,
                  expires_at=now + timedelta(seconds=lifetime))
    session.add(grant)
    session.flush()
    for certificate, fields in covered:
        session.add(GrantCertificate(grant_id=grant.id, certificate_id=certificate.id, fields=fields))
    session.flush()
    return grant


def _audit_created(session: Session, grant: Grant, client: ApiClient, covered: list[tuple[Certificate, list[str]]],
                   *, via: str, actor: Actor, now: datetime) -> None:
    record_event(session, actor=actor, action="grant.created", now=now, object_type="grant",
                 object_id=grant.public_id,
                 details={"via": via, "client": client.client_id, "consent_method": grant.consent_method,
                          "purpose": grant.purpose, "expires_at": grant.expires_at.isoformat(),
                          "certificates": [{"identifier": c.identifier, "fields": fields} for c, fields in covered]})


# -- the department asks: consent to an access request ------------------------------------------------------------

def grant_from_request(session: Session, *, request: AccessRequest, holder: Holder, certificates: list[Certificate],
                       consent_method: str, actor: Actor, now: datetime,
                       max_age: timedelta | None = None) -> Grant:
    """The grant that answers an approved access request: for the requesting client, the wanted fields of each
    chosen certificate's type, the request's lifetime capped by the strictest type policy.

    The caller has found the certificates as the holder's (find_holder_certificate) and done the step-up when
    `consent_policy.needs_step_up` says so; this checks again that each certificate is the holder's own or a
    represented company's (currently, when `max_age` is given), of a wanted type, and valid today. It does not
    change the request's status (the caller does).
    """
    if consent_method not in CONSENT_METHODS:
        raise ValueError(f"unknown consent method {consent_method!r}")
    unique = list({c.id: c for c in certificates}.values())
    if not unique:
        raise ValidationFailed.for_field("certificate_ids", "empty", "请至少选择一张证照")
    _check_owned(holder, unique, now=now, max_age=max_age)
    wanted = {str(item.get("type_code")): list(item.get("fields") or []) for item in request.wanted}
    covered: list[tuple[Certificate, list[str]]] = []
    for certificate in unique:
        ctype: CertificateType = certificate.certificate_type
        if ctype.type_code not in wanted:
            raise ValidationFailed(f"该用证请求不需要「{ctype.name}」", code="certificate_type_not_requested",
                                   details={"certificate_id": certificate.public_id, "type_code": ctype.type_code,
                                            "wanted": sorted(wanted)})
        # The policy may have narrowed since the request was made: checked again at consent.
        fields = consent_policy.check_fields(ctype, wanted[ctype.type_code], field="wanted.fields")
        _refuse_unusable(session, certificate, now)
        covered.append((certificate, fields))
    lifetime = consent_policy.cap_lifetime([c.certificate_type for c, _ in covered], request.consent_seconds)
    client = request.api_client
    grant = _add_grant(session, holder=holder, client=client, purpose=request.purpose,
                       matter_code=request.matter_code, consent_method=consent_method, covered=covered,
                       lifetime=lifetime, now=now, access_request=request)
    _audit_created(session, grant, client, covered, via="request", actor=actor, now=now)
    return grant


# -- the holder offers: a one-time code for a named client ------------------------------------------------------

@dataclass(frozen=True)
class OfferedGrant:
    grant: Grant
    code: str  # shown once, never stored


def _redeeming_client(session: Session, client_id: str) -> ApiClient:
    client = session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
    if client is None or not client.active:
        raise ValidationFailed("没有该部门业务系统，或其已停用", code="unknown_client",
                               details={"fields": [{"field": "client_id", "reason": "unknown_client"}]})
    if REDEEM_SCOPE not in client.scopes:
        raise ValidationFailed("该部门业务系统不能使用授权", code="client_cannot_redeem",
                               details={"fields": [{"field": "client_id", "reason": "missing_redeem_scope"}]})
    return client


def offer_grant(session: Session, cipher: FieldCipher, holder: Holder, certificate: Certificate, *, client_id: str,
                fields: Sequence[str], purpose: str, expires_in: int, step_up: Callable[[], None], actor: Actor,
                now: datetime) -> OfferedGrant:
    """A one-time code for `client_id` to use the chosen fields of a certificate the caller has found as the
    holder's (find_holder_certificate). The code lives at most 10 minutes and never beyond the type's policy;
    `step_up` is called (and must raise 401 reauth_required without a recent login) when the type needs it."""
    client = _redeeming_client(session, client_id)
    ctype = certificate.certificate_type
    chosen = consent_policy.check_fields(ctype, fields)
    if consent_policy.needs_step_up([ctype]):
        step_up()
    _refuse_unusable(session, certificate, now)
    lifetime = max(1, consent_policy.cap_lifetime([ctype], min(expires_in, consent_policy.CODE_MAX_SECONDS)))
    code = secrets.token_urlsafe(16)  # 128 bits
    covered = [(certificate, chosen)]
    grant = _add_grant(session, holder=holder, client=client, purpose=purpose, matter_code=None,
                       consent_method=CONSENT_APP, covered=covered, lifetime=lifetime, now=now,
                       code_hash=code_digest(cipher, code), code_expires_at=now + timedelta(seconds=lifetime))
    _audit_created(session, grant, client, covered, via="offer", actor=actor, now=now)
    return OfferedGrant(grant, code)


# -- the holder's view and control --------------------------------------------------------------------------------

@dataclass(frozen=True)
class GrantPage:
    items: list[Grant]
    next_cursor: str | None


def list_holder_grants(session: Session, holder: Holder, *, now: datetime, status: str | None = None,
                       limit: int = 20, cursor: str | None = None) -> GrantPage:
    """The grants the holder gave, newest first, optionally only those of one (effective) status."""
    stmt = (select(Grant).where(Grant.holder_id == holder.id)
            .options(selectinload(Grant.department), selectinload(Grant.api_client),
                     selectinload(Grant.certificates).selectinload(GrantCertificate.certificate)
                     .selectinload(Certificate.certificate_type)))
    live = and_(Grant.expires_at > now, (Grant.code_expires_at.is_(None)) | (Grant.code_expires_at > now))
    if status == GRANT_ACTIVE:
        stmt = stmt.where(Grant.status == GRANT_ACTIVE, live)
    elif status == GRANT_EXPIRED:
        stmt = stmt.where(Grant.status == GRANT_ACTIVE, ~live)
    elif status is not None:
        stmt = stmt.where(Grant.status == status)
    items, next_cursor = keyset_page(session, stmt, Grant.created_at, Grant.public_id, limit=limit, cursor=cursor)
    return GrantPage(items, next_cursor)


def find_holder_grant(session: Session, holder: Holder, public_id: str) -> Grant:
    """One of the holder's grants; anyone else's is a 404 (no existence oracle)."""
    grant = session.scalar(select(Grant).where(Grant.public_id == public_id, Grant.holder_id == holder.id))
    if grant is None:
        raise GrantNotFound()
    return grant


def revoke_grant(session: Session, holder: Holder, public_id: str, *, actor: Actor, now: datetime) -> Grant:
    """Revoke one of the holder's grants at once: an unused code stops working. Revoking twice is harmless; a used
    grant cannot be revoked (409 grant_already_used). Atomic against a redemption at the same moment."""
    grant = find_holder_grant(session, holder, public_id)
    if grant.status == GRANT_REVOKED:
        return grant
    changed = updated_rows(session, update(Grant).where(Grant.id == grant.id, Grant.status == GRANT_ACTIVE)
                           .values(status=GRANT_REVOKED, revoked_at=now))
    session.refresh(grant)
    if not changed:
        if grant.status == GRANT_USED:
            raise GrantAlreadyUsed("该授权已被使用，不能撤销")
        return grant  # revoked by a concurrent request
    record_event(session, actor=actor, action="grant.revoked", now=now, object_type="grant",
                 object_id=grant.public_id,
                 details={"client": grant.api_client.client_id, "was": effective_status_before(grant, now)})
    return grant


def effective_status_before(grant: Grant, now: datetime) -> str:
    """What the grant was before a revocation: active, or already expired."""
    return GRANT_EXPIRED if now >= usable_until(grant) else GRANT_ACTIVE
