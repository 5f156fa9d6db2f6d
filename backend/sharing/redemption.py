"""Redemption (用证): a department client uses a grant once and receives the consented presentations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import jwt
from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, selectinload

from backend.audit.chain import record_event
from backend.core.db.once import updated_rows
from backend.crypto.encryption import FieldCipher
from backend.crypto.presentation import ClaimPath, present
from backend.errors import AuditNote, Conflict, DomainError, Forbidden, NotFound
from backend.kernel.actors import Actor
from backend.kernel.ids import new_public_id
from backend.keys.deps import Deps
from backend.keys.keystore import HolderKeyNotHeld, KeyStore
from backend.models import AccessRequest, ApiClient, Certificate, Notification, Redemption, SigningKey, UsageRecord
from backend.models.sharing import GRANT_ACTIVE, GRANT_REVOKED, GRANT_USED, REQUEST_DECLINED, Grant, GrantCertificate
from backend.sharing import consent_policy
from backend.sharing.grants import (
    GRANT_EXPIRED,
    GrantAlreadyUsed,
    GrantExpired,
    GrantNotFound,
    GrantRevoked,
    certificate_state_error,
    code_digest,
    effective_status,
)

USAGE_KIND: Final = "redeemed"
NOTIFICATION_KIND: Final = "certificate_used"
# A grant code as the holder's QR carries it: the bare code, or the URL with the code in its fragment.
_CODE = re.compile(r"[A-Za-z0-9_-]{22}")


class GrantWrongClient(Forbidden):
    code = "grant_wrong_client"
    message = "该授权不是给本部门业务系统的"


class AccessRequestNotFound(NotFound):
    code = "access_request_not_found"
    message = "用证请求不存在"


@dataclass(frozen=True)
class Presentation:
    identifier: str  # 证照标识
    sd_jwt: str  # issuer JWT~consented disclosures~KB-JWT


@dataclass(frozen=True)
class Redeemed:
    grant: Grant
    redemption: Redemption
    presentations: list[Presentation]


# -- field names → claim paths -----------------------------------------------------------------------------------

def claim_paths(field: str) -> list[ClaimPath]:
    """Where a grantable field lives in the issued SD-JWT ("holder.code" is code type and code together)."""
    if field == consent_policy.HOLDER_NAME:
        return [("holder", "name")]
    if field == consent_policy.HOLDER_CODE:
        return [("holder", "code_type"), ("holder", "code")]
    if field == consent_policy.CERTIFICATE_NUMBER:
        return [("document", "number")]
    return [("face", field)]


def usage_field_name(field: str) -> str:
    """The name a usage record lists (as show-code checks do): common claims as they are, face fields as face.x."""
    return field if field in consent_policy.COMMON_FIELD_LABELS else f"face.{field}"


def code_from_text(text: str) -> str:
    """The code itself, from the bare code or the URL the holder's QR carries (code in the fragment)."""
    return text.rsplit("#", 1)[-1].strip() if "#" in text else text.strip()


# -- refusals ---------------------------------------------------------------------------------------------------

def _refused(error: DomainError, grant: Grant, client: ApiClient, reason: str, actor: Actor) -> DomainError:
    """The error, carrying its audit note: the edge rolls the request back, then records the attempt."""
    error.audit = AuditNote(actor=actor, action="grant.redeem_refused", object_type="grant",
                            object_id=grant.public_id, details={"reason": reason, "client": client.client_id})
    return error


def _status_error(status: str) -> DomainError:
    if status == GRANT_USED:
        return GrantAlreadyUsed()
    if status == GRANT_REVOKED:
        return GrantRevoked()
    return GrantExpired()


def _check_certificates(session: Session, grant: Grant, now: datetime) -> None:
    """Every covered certificate must still be valid: one revoked (or suspended, superseded, expired) since the
    holder consented is refused with its own code, and the grant stays unused."""
    for covered in grant.certificates:
        error = certificate_state_error(session, covered.certificate, now)
        if error is not None:
            error.details = {"identifier": covered.certificate.identifier,
                             **{k: v for k, v in error.details.items() if k != "certificate_id"}}
            raise error


# -- presentations ------------------------------------------------------------------------------------------------

def _wallet_key(keys: KeyStore, certificate: Certificate, issued: str) -> SigningKey:
    """The platform-held wallet key the certificate's `cnf` binds it to — retired or not: a rotation stops binding
    the old key into new certificates, it does not stop older ones from being presented. None held: 409."""
    payload = jwt.decode(issued.split("~", 1)[0], options={"verify_signature": False})
    try:
        return keys.wallet_key_for(payload.get("cnf"))
    except HolderKeyNotHeld as error:
        error.details = {"identifier": certificate.identifier, **error.details}
        raise


@dataclass(frozen=True)
class _Presentable:
    """A covered certificate ready to present: its issued SD-JWT and the wallet key its `cnf` names."""

    covered: GrantCertificate
    issued: str
    key: SigningKey


def _presentable(keys: KeyStore, cipher: FieldCipher, covered: GrantCertificate) -> _Presentable:
    certificate = covered.certificate
    issued = cipher.decrypt(certificate.sd_jwt_enc, f"certificate:{certificate.public_id}:sd_jwt")
    return _Presentable(covered, issued, _wallet_key(keys, certificate, issued))


def _presentation(keys: KeyStore, item: _Presentable, *, audience: str, nonce: str, now: datetime) -> Presentation:
    wanted = [path for field in item.covered.fields for path in claim_paths(field)]

    def sign(payload: dict[str, Any], headers: dict[str, Any]) -> str:
        return keys.sign_jwt(item.key, payload, headers, allow_retired=True)  # the key `cnf` names, see _wallet_key

    return Presentation(item.covered.certificate.identifier,
                        present(item.issued, wanted, sign=sign, audience=audience, nonce=nonce,
                                iat=int(now.timestamp())))


# -- the record of a use ------------------------------------------------------------------------------------------

def _record_use(session: Session, grant: Grant, redemption: Redemption, client: ApiClient, *, via: str,
                actor: Actor, now: datetime) -> None:
    """Usage history and an inbox message per certificate (by the holder's blind index), and one audit event."""
    department = client.department
    for covered in grant.certificates:
        certificate = covered.certificate
        ctype = certificate.certificate_type
        session.add(UsageRecord(
            public_id=new_public_id(), holder_index=certificate.holder_index, certificate_id=certificate.id,
            kind=USAGE_KIND, verifier_kind="client", verifier_id=client.client_id,
            verifier_department_id=client.department_id, purpose=grant.purpose,
            fields=[usage_field_name(field) for field in covered.fields], occurred_at=now))
        labels = "、".join(item.label for item in consent_policy.field_labels(ctype, covered.fields))
        session.add(Notification(
            public_id=new_public_id(), holder_index=certificate.holder_index, certificate_id=certificate.id,
            kind=NOTIFICATION_KIND, title=f"您的{ctype.name}已被{department.name}使用",
            body=f"{department.name}依据您的授权使用了您的{ctype.name}（{labels}），事由：{grant.purpose}。"
                 "如非本人授权，请立即联系发证部门。",
            data={"identifier": certificate.identifier, "grant_id": grant.public_id}, created_at=now))
    record_event(session, actor=actor, action="grant.redeemed", now=now, object_type="grant",
                 object_id=grant.public_id,
                 details={"via": via, "client": client.client_id, "redemption": redemption.public_id,
                          "purpose": grant.purpose,
                          "certificates": [{"identifier": c.certificate.identifier, "fields": c.fields}
                                           for c in grant.certificates]})


# -- redeeming ------------------------------------------------------------------------------------------------

def _with_certificates() -> Any:
    return selectinload(Grant.certificates).selectinload(GrantCertificate.certificate) \
        .selectinload(Certificate.certificate_type)


def _redeem(deps: Deps, grant: Grant, *, client: ApiClient, via: str, actor: Actor, now: datetime) -> Redeemed:
    session, keys = deps.session, deps.keys
    if grant.api_client_id != client.id:
        raise _refused(GrantWrongClient(), grant, client, "wrong_client", actor)
    status = effective_status(grant, now)
    if status != GRANT_ACTIVE:
        raise _refused(_status_error(status), grant, client, status, actor)
    _check_certificates(session, grant, now)
    # Everything that could still refuse is checked before the grant is spent.
    presentable = [_presentable(keys, deps.cipher, covered) for covered in grant.certificates]
    # The one decision: of all concurrent redeemers, the database lets exactly one change the row.
    won = updated_rows(session, update(Grant).where(
        Grant.id == grant.id, Grant.status == GRANT_ACTIVE, Grant.api_client_id == client.id,
        Grant.expires_at > now, or_(Grant.code_expires_at.is_(None), Grant.code_expires_at > now),
    ).values(status=GRANT_USED, used_at=now))
    session.refresh(grant)  # what the winner (or a revocation) left behind
    if not won:  # still active here means it expired in between
        status = GRANT_EXPIRED if grant.status == GRANT_ACTIVE else grant.status
        raise _refused(_status_error(status), grant, client, status, actor)
    redemption = Redemption(public_id=new_public_id(), grant_id=grant.id, api_client_id=client.id, redeemed_at=now,
                            request_id=actor.request_id)
    session.add(redemption)
    session.flush()  # the unique grant_id: a second guard behind the conditional update
    presentations = [_presentation(keys, item, audience=client.client_id, nonce=grant.public_id, now=now)
                     for item in presentable]
    _record_use(session, grant, redemption, client, via=via, actor=actor, now=now)
    return Redeemed(grant, redemption, presentations)


def redeem_by_code(deps: Deps, code: str, *, client: ApiClient, actor: Actor, now: datetime) -> Redeemed:
    """Redeem the grant a holder offered with a one-time code (the code or the URL its QR carries)."""
    code = code_from_text(code)
    grant = None
    if _CODE.fullmatch(code):
        grant = deps.session.scalar(select(Grant).where(Grant.code_hash == code_digest(deps.cipher, code))
                                    .options(_with_certificates()))
    if grant is None:
        raise GrantNotFound("授权码无效", code="grant_not_found")
    return _redeem(deps, grant, client=client, via="code", actor=actor, now=now)


def redeem_by_request(deps: Deps, request_public_id: str, *, client: ApiClient, actor: Actor,
                      now: datetime) -> Redeemed:
    """Redeem the grant that answered the client's own access request."""
    session = deps.session
    request = session.scalar(select(AccessRequest).where(AccessRequest.public_id == request_public_id))
    if request is None:
        raise AccessRequestNotFound()
    if request.api_client_id != client.id:
        error = GrantWrongClient("该用证请求不是本部门业务系统发起的")
        error.audit = AuditNote(actor=actor, action="grant.redeem_refused", object_type="access_request",
                                object_id=request.public_id,
                                details={"reason": "wrong_client", "client": client.client_id})
        raise error
    grant = session.scalar(select(Grant).where(Grant.access_request_id == request.id).options(_with_certificates()))
    if grant is None:
        if request.status == REQUEST_DECLINED:
            raise Conflict("持证人已拒绝该用证请求", code="access_request_declined")
        raise Conflict("持证人尚未同意该用证请求", code="access_request_pending")
    return _redeem(deps, grant, client=client, via="request", actor=actor, now=now)

