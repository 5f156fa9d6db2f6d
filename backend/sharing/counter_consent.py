"""What both ways of consenting at the counter share: the client's assisted request and its checks, the chosen
certificates, the decision, the grant and the holder's notice (the verbs are in counter_service)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.audit.chain import record_event
from backend.crypto.encryption import FieldCipher
from backend.errors import AuditNote, Conflict, ValidationFailed
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_today
from backend.kernel.identifiers import HolderCodeType
from backend.kernel.ids import new_public_id
from backend.models import ApiClient, Certificate, CertificateType, Holder, Notification, Representation
from backend.models.issuance import VALID
from backend.models.sharing import CONSENT_SMS, REQUEST_APPROVED, REQUEST_PENDING, AccessRequest, Grant
from backend.sharing import grants
from backend.sharing.access_requests import (
    AccessRequestDecided,
    AccessRequestExpired,
    AccessRequestNotFound,
    record_decision,
)
from backend.wallet.queries import effective_status as certificate_status

MAX_ATTEMPTS = 5  # wrong codes per request: then the request is locked


class RequestNotAssisted(Conflict):
    code = "request_not_assisted"
    message = "该用证请求不是窗口代办请求，请由持证人在小程序中确认"


class RequestLocked(Conflict):
    code = "request_locked"
    message = "验证码错误次数过多，该用证请求已锁定，请重新发起请求或由工作人员核验身份证件后确认"


class NoMatchingCertificates(Conflict):
    code = "no_matching_certificates"
    message = "持证人没有该请求所需类型的有效电子证照"


class CertificatesNotEligible(ValidationFailed):
    code = "certificates_not_eligible"
    message = "所选证照不属于该持证人、不是有效证照或不是请求所需的类型"


@dataclass(frozen=True)
class CounterConsent:
    request: AccessRequest
    grant: Grant
    certificates: list[Certificate]


def client_request(session: Session, client: ApiClient, public_id: str, *, actor: Actor,
                   action: str) -> AccessRequest:
    """The client's own request; anyone else's is 404 as if absent, and the attempt is audited (after the rollback)
    under `action`. Not locked: what is decided on it (a code sent, a check counted, the answer) is decided by
    conditional UPDATEs, which hold on SQLite too (where FOR UPDATE does nothing)."""
    request = session.scalar(select(AccessRequest).where(AccessRequest.public_id == public_id,
                                                         AccessRequest.api_client_id == client.id))
    if request is None:
        error = AccessRequestNotFound()
        error.audit = AuditNote(actor=actor, action=action, object_type="access_request", object_id=public_id[:64],
                                details={"outcome": "not_found"})
        raise error
    return request


def open_assisted(request: AccessRequest, now: datetime) -> None:
    """Pending, unexpired (else 409 access_request_decided / 410 access_request_expired), assisted, not locked."""
    if request.status != REQUEST_PENDING:
        raise AccessRequestDecided(details={"status": request.status})
    if now >= request.expires_at:
        raise AccessRequestExpired(details={"expires_at": request.expires_at.isoformat()})
    if not request.assisted or not request.assisted_holder_index:
        raise RequestNotAssisted()
    if request.otp_attempts >= MAX_ATTEMPTS:
        raise RequestLocked(details={"attempts": request.otp_attempts})


def registered_holder(session: Session, request: AccessRequest) -> Holder | None:
    holder: Holder | None = session.scalar(select(Holder).where(Holder.id_index == request.assisted_holder_index))
    return holder


def names_a_company(session: Session, request: AccessRequest) -> bool:
    """Whether the request's holder is a company: its certificates say so (holder code type 001), or, before it
    holds any, a representative's real-name login named it. (The request keeps only the holder's blind index.)"""
    index = request.assisted_holder_index
    code_type = session.scalar(select(Certificate.holder_code_type).where(Certificate.holder_index == index).limit(1))
    if code_type is not None:
        return bool(code_type == HolderCodeType.USCC.value)
    return session.scalar(select(Representation.id).where(Representation.company_index == index).limit(1)) is not None


def chosen_certificates(session: Session, request: AccessRequest, identifiers: Sequence[str] | None, *,
                        now: datetime) -> list[Certificate]:
    """The named holder's certificates valid today, one of each wanted type: the newest of each type, or those the
    staff member chose by 证照标识 (each must be such a certificate; 422 names those that are not)."""
    wanted = [str(item["type_code"]) for item in request.wanted]
    today = china_today(now)
    eligible = [c for c in session.scalars(
        select(Certificate).join(CertificateType, Certificate.certificate_type_id == CertificateType.id)
        .where(Certificate.holder_index == request.assisted_holder_index, Certificate.status == VALID,
               CertificateType.type_code.in_(wanted))
        .order_by(Certificate.created_at.desc(), Certificate.id.desc()))
        if certificate_status(c, today) == VALID and c.valid_from <= today]
    if identifiers:
        by_identifier = {c.identifier: c for c in eligible}
        chosen, problems, types = [], [], set()
        for position, identifier in enumerate(dict.fromkeys(identifiers)):
            certificate = by_identifier.get(identifier)
            if certificate is None:
                problems.append({"field": f"identifiers[{position}]", "reason": "not_eligible"})
            elif certificate.certificate_type_id in types:
                problems.append({"field": f"identifiers[{position}]", "reason": "duplicate_type"})
            else:
                types.add(certificate.certificate_type_id)
                chosen.append(certificate)
        if problems:
            raise CertificatesNotEligible(details={"fields": problems})
        return chosen
    newest: dict[int, Certificate] = {}
    for certificate in eligible:
        newest.setdefault(certificate.certificate_type_id, certificate)
    if not newest:
        raise NoMatchingCertificates(details={"wanted": wanted})
    return list(newest.values())


def record_consent(session: Session, cipher: FieldCipher, request: AccessRequest, holder: Holder,
                   identifiers: Sequence[str] | None, *, method: str, action: str, details: dict[str, Any],
                   actor: Actor, now: datetime, certificates: list[Certificate] | None = None) -> CounterConsent:
    if certificates is None:
        certificates = chosen_certificates(session, request, identifiers, now=now)
    session.flush()
    # One conditional update decides the request (a concurrent consent or the holder's own answer loses with 409)
    # and queues the department's callback, as an approval in the app does.
    record_decision(session, request, status=REQUEST_APPROVED, holder=holder, consent_method=method, now=now)
    grant = grants.grant_from_request(session, request=request, holder=holder, certificates=certificates,
                                      consent_method=method, actor=actor, now=now)
    record_event(session, actor=actor, action=action, now=now, object_type="access_request",
                 object_id=request.public_id,
                 details={"grant": grant.public_id, "holder": holder.public_id, "consent_method": method,
                          "certificates": [c.identifier for c in certificates], **details})
    session.add(_holder_notification(request, certificates, grant, method=method, now=now))
    session.flush()
    return CounterConsent(request=request, grant=grant, certificates=certificates)


def _holder_notification(request: AccessRequest, certificates: list[Certificate], grant: Grant, *, method: str,
                         now: datetime) -> Notification:
    """The holder's inbox learns of every consent given at a counter, so a consent they did not give is noticed."""
    department = request.department.name
    how = "短信验证码" if method == CONSENT_SMS else "窗口工作人员核验身份证件"
    names = "、".join(dict.fromkeys(c.certificate_type.name for c in certificates))
    return Notification(
        public_id=new_public_id(), holder_index=request.assisted_holder_index, kind="counter_consent",
        title=f"您已在{department}窗口授权使用电子证照",
        body=(f"{department}已通过{how}获得您的授权，使用您的{names}，用途：{request.purpose}。"
              "如非本人办理，请立即在小程序中撤销该授权并联系该部门。"),
        data={"grant_id": grant.public_id, "access_request_id": request.public_id, "consent_method": method,
              "department": request.department.code},
        created_at=now)
