"""Counter service without a smartphone (第十一条): consent to an assisted access request by a texted code or a
staff member's ID check, and the count of such consents per department (see README.md)."""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, literal, select, update
from sqlalchemy.orm import Session

from backend.adapters.sms import SmsGateway, SmsUnavailable, mask_phone
from backend.audit.chain import record_event
from backend.core.db.once import updated_rows
from backend.crypto.encryption import FieldCipher
from backend.errors import (
    AuditNote,
    Conflict,
    DomainError,
    Gone,
    ServiceUnavailable,
    ValidationFailed,
)
from backend.issuance.certificates import decrypt
from backend.kernel.actors import Actor
from backend.kernel.identifiers import HolderCodeType
from backend.kernel.ids import new_public_id
from backend.models import ApiClient, AuditEvent, Certificate, Holder
from backend.models.sharing import CONSENT_SMS, CONSENT_STAFF, REQUEST_PENDING, AccessRequest
from backend.sharing.counter_consent import (
    MAX_ATTEMPTS,
    CounterConsent,
    RequestLocked,
    chosen_certificates,
    client_request,
    names_a_company,
    open_assisted,
    record_consent,
    registered_holder,
)

CODE_TTL = timedelta(minutes=5)  # an SMS code (短信验证码) is typed in within five minutes
RESEND_AFTER = timedelta(seconds=60)  # a new code no sooner than a minute after the last one
MAX_SENDS = 5  # codes texted per request: then staff attest, or the department starts a new request
# Requests that texted one holder within an hour, from all departments: new requests must not become an SMS bomb.
MAX_REQUESTS_TEXTING_HOLDER = 10
HOLDER_WINDOW = timedelta(hours=1)
OTP_DOMAIN = "counter-sms-code"
SMS_PURPOSE_CHARS = 40
COUNTER_ASSURANCE = "counter_id_check"  # a holder first known through a staff member's check of the ID card

ACTION_SMS_SENT = "access_request.sms_code_sent"
ACTION_SMS_REFUSED = "access_request.sms_code_refused"
ACTION_CONSENT_REFUSED = "access_request.counter_consent_refused"
ACTION_CONSENTED_BY_SMS = "access_request.consented_by_sms"
ACTION_ATTESTED_BY_STAFF = "access_request.attested_by_staff"
CONSENT_ACTIONS = {ACTION_CONSENTED_BY_SMS: CONSENT_SMS, ACTION_ATTESTED_BY_STAFF: CONSENT_STAFF}

# Identity documents a staff member may check at the window (持证人身份证件).
ID_DOCUMENT_TYPES = {
    "resident_id_card": "居民身份证",
    "temporary_resident_id_card": "临时居民身份证",
    "passport": "护照",
    "hk_macao_travel_permit": "港澳居民来往内地通行证",
    "taiwan_travel_permit": "台湾居民来往大陆通行证",
    "foreign_permanent_resident_id_card": "外国人永久居留身份证",
}


class HolderNotRegistered(Conflict):
    code = "holder_not_registered"
    message = ("持证人尚未在本平台实名登录过，无法发送短信验证码；"
               "请核验持证人身份证件后以工作人员核验方式（staff_attested）确认")


class PhoneNotRegistered(Conflict):
    code = "phone_not_registered"
    message = ("持证人未登记手机号码，无法发送短信验证码；"
               "请核验持证人身份证件后以工作人员核验方式（staff_attested）确认")


class SmsCodeThrottled(DomainError):
    code = "sms_code_throttled"
    status = 429
    message = "验证码发送过于频繁，请稍后再试"


class SmsSendLimit(Conflict):
    code = "sms_send_limit"
    message = "该请求的验证码发送次数已达上限；请由工作人员核验身份证件后确认，或重新发起请求"


class SmsCodeNotSent(Conflict):
    code = "sms_code_not_sent"
    message = "尚未向持证人发送验证码，请先发送验证码"


class SmsCodeExpired(Gone):
    code = "sms_code_expired"
    message = "验证码已过期，请重新发送"


class SmsCodeInvalid(ValidationFailed):
    code = "sms_code_invalid"
    message = "验证码错误"


class HolderNotAPerson(ValidationFailed):
    """The request names a company (法人): neither counter path can stand for its consent. Its legal representative
    or authorised agent consents in the app, where the request is visible to them only (access_requests)."""

    code = "holder_not_a_person"
    message = ("持证主体为法人（企业），不能以短信验证码或工作人员核验身份证件的方式在窗口授权；"
               "请由该企业的法定代表人或授权代理人实名登录电子证照小程序，打开本用证请求（可扫描请求二维码）并确认授权")

    def __init__(self) -> None:
        super().__init__(details={"holder_kind": "legal_person", "consent_in": "app",
                                  "consented_by": ["legal_representative", "authorised_agent"]})


@dataclass(frozen=True)
class SmsCodeSent:
    phone_masked: str
    expires_at: datetime
    resend_after: int  # seconds
    sends_left: int


@dataclass(frozen=True)
class StaffAttestation:
    """What the staff member declares: who they are, why the citizen cannot consent in the app, the ID check."""

    staff_id: str
    staff_name: str
    reason: str
    id_document_type: str
    id_document_checked: bool = True


@dataclass(frozen=True)
class CounterConsentCount:
    department_code: str
    sms_code: int
    staff_attested: int


def code_digest(cipher: FieldCipher, request: AccessRequest, code: str) -> str:
    """Keyed digest of a code, bound to its request: a stolen database gives no way to test the 10⁶ codes."""
    return cipher.keyed_digest(f"{request.public_id}:{code}".encode(), OTP_DOMAIN)


def sms_text(code: str, request: AccessRequest) -> str:
    """The message: the code, who asks and why, and a warning for anyone who is not at that window."""
    department = request.department.name
    purpose = request.purpose if len(request.purpose) <= SMS_PURPOSE_CHARS else \
        request.purpose[:SMS_PURPOSE_CHARS - 1] + "…"  # a text message stays a few segments long
    return (f"您的电子证照授权验证码为{code}，{int(CODE_TTL.total_seconds() // 60)}分钟内有效。"
            f"{department}申请使用您的电子证照，用途：{purpose}。"
            f"如非本人在窗口办理，请勿将验证码告知他人。")


def _sends_so_far(session: Session, request: AccessRequest) -> int:
    return int(session.scalar(select(func.count()).select_from(AuditEvent)
                              .where(AuditEvent.object_type == "access_request",
                                     AuditEvent.object_id == request.public_id,
                                     AuditEvent.action == ACTION_SMS_SENT)) or 0)


def _other_requests_texting(session: Session, request: AccessRequest, now: datetime) -> int:
    """Other requests whose last code to this holder was sent within HOLDER_WINDOW (a send moves otp_expires_at)."""
    return int(session.scalar(select(func.count()).select_from(AccessRequest).where(
        AccessRequest.assisted_holder_index == request.assisted_holder_index, AccessRequest.id != request.id,
        AccessRequest.otp_expires_at > now - HOLDER_WINDOW + CODE_TTL)) or 0)


def send_sms_code(session: Session, sms: SmsGateway | None, cipher: FieldCipher, *, client: ApiClient,
                  request_id: str, actor: Actor, now: datetime) -> SmsCodeSent:
    """Text a fresh 6-digit code to the holder's registered phone; an earlier code stops working.

    The holder must have logged in once with a provider that registered their mobile number; otherwise 409 tells
    staff to attest instead. At most one code a minute (429 with Retry-After) and MAX_SENDS per request.
    """
    request = client_request(session, client, request_id, actor=actor, action=ACTION_SMS_REFUSED)
    open_assisted(request, now)
    holder = registered_holder(session, request)
    if holder is None:  # only people log in: a company never has a holder record, nor a phone of its own
        raise HolderNotAPerson() if names_a_company(session, request) else HolderNotRegistered()
    if holder.phone_enc is None:
        raise PhoneNotRegistered()
    if request.otp_expires_at is not None:
        next_send = request.otp_expires_at - CODE_TTL + RESEND_AFTER
        if now < next_send:
            wait = max(1, int((next_send - now).total_seconds() + 0.999))
            raise SmsCodeThrottled(details={"retry_after": wait}, headers={"Retry-After": str(wait)})
    sent = _sends_so_far(session, request)
    if sent >= MAX_SENDS:
        raise SmsSendLimit(details={"max_sends": MAX_SENDS})
    if _other_requests_texting(session, request, now) >= MAX_REQUESTS_TEXTING_HOLDER:
        wait = int(HOLDER_WINDOW.total_seconds())
        raise SmsCodeThrottled("该持证人近期收到的验证码过多，请稍后再试或由工作人员核验身份证件后确认",
                               details={"retry_after": wait}, headers={"Retry-After": str(wait)})
    if sms is None:
        raise ServiceUnavailable("本平台未配置短信服务，请由工作人员核验身份证件后确认", code="sms_unavailable")
    code = f"{secrets.randbelow(10**6):06d}"
    expires_at = now + CODE_TTL
    # Only if nobody sent a code (or locked the request) since it was read: of concurrent sends one texts, the
    # others are throttled (the limits above counted what the read saw).
    if not updated_rows(session, update(AccessRequest).where(
            AccessRequest.id == request.id, AccessRequest.status == REQUEST_PENDING,
            AccessRequest.otp_attempts < MAX_ATTEMPTS,
            AccessRequest.otp_expires_at.is_not_distinct_from(literal(request.otp_expires_at,
                                                                      AccessRequest.otp_expires_at.type)))
            .values(otp_hash=code_digest(cipher, request, code), otp_expires_at=expires_at)):
        wait = int(RESEND_AFTER.total_seconds())
        raise SmsCodeThrottled(details={"retry_after": wait}, headers={"Retry-After": str(wait)})
    phone = cipher.decrypt(holder.phone_enc, f"holder:{holder.public_id}:phone")
    masked = mask_phone(phone)
    record_event(session, actor=actor, action=ACTION_SMS_SENT, now=now, object_type="access_request",
                 object_id=request.public_id, details={"holder": holder.public_id, "phone": masked,
                                                       "expires_at": expires_at.isoformat()})
    try:
        sms.send(phone, sms_text(code, request))
    except SmsUnavailable:
        # Nothing is kept: the rollback forgets the code and the audit row of a message that never left.
        raise ServiceUnavailable("短信服务暂不可用，请稍后重试或由工作人员核验身份证件后确认", code="sms_unavailable",
                                 headers={"Retry-After": "30"}) from None
    return SmsCodeSent(phone_masked=masked, expires_at=expires_at,
                       resend_after=int(RESEND_AFTER.total_seconds()), sends_left=MAX_SENDS - sent - 1)


def _reserve_code_check(session: Session, request: AccessRequest, now: datetime) -> tuple[int, str] | None:
    """Count one more code attempt before the code is checked: (attempts now, the code digest to check against),
    or None when no check is allowed (locked, decided, no live code).

    One conditional UPDATE decides, so of any number of concurrent guesses at most MAX_ATTEMPTS are ever checked.
    """
    row = session.execute(
        update(AccessRequest)
        .where(AccessRequest.id == request.id, AccessRequest.status == REQUEST_PENDING,
               AccessRequest.otp_attempts < MAX_ATTEMPTS, AccessRequest.otp_hash.is_not(None),
               AccessRequest.otp_expires_at > now)
        .values(otp_attempts=AccessRequest.otp_attempts + 1)
        .returning(AccessRequest.otp_attempts, AccessRequest.otp_hash)
        .execution_options(synchronize_session=False)).first()
    return None if row is None else (row.otp_attempts, row.otp_hash)


def _refuse_unchecked(request: AccessRequest, now: datetime) -> None:
    """Why a code cannot be checked (locked, decided, expired, none sent), as the request was read."""
    open_assisted(request, now)
    if request.otp_hash is None or request.otp_expires_at is None:
        raise SmsCodeNotSent()
    if request.otp_expires_at <= now:
        raise SmsCodeExpired(details={"expired_at": request.otp_expires_at.isoformat()})


def consent_by_sms_code(session: Session, cipher: FieldCipher, *, client: ApiClient, request_id: str, code: str,
                        identifiers: Sequence[str] | None, actor: Actor, now: datetime,
                        commit: Callable[[], None]) -> CounterConsent:
    """The citizen typed in the texted code: the grant is created and the request approved. The code works once.

    Every check counts against MAX_ATTEMPTS before it is made, and `commit` (the caller's commit of the request's
    transaction) makes the count durable before the code is compared: a wrong code's count survives the refusal,
    and concurrent guesses cannot all pass a count read before any of them was counted. The check that uses up the
    last attempt and fails locks the request.
    """
    request = client_request(session, client, request_id, actor=actor, action=ACTION_CONSENT_REFUSED)
    _refuse_unchecked(request, now)
    reserved = _reserve_code_check(session, request, now)
    if reserved is None:  # it changed since it was read: say how
        session.refresh(request)
        _refuse_unchecked(request, now)
        raise RequestLocked(details={"attempts": request.otp_attempts})
    attempts, digest = reserved
    commit()
    if not hmac.compare_digest(code_digest(cipher, request, code), digest):
        left = max(0, MAX_ATTEMPTS - attempts)
        error: DomainError = (SmsCodeInvalid(f"验证码错误，还可尝试 {left} 次", details={"attempts_left": left})
                              if left else RequestLocked(details={"attempts": attempts}))
        error.audit = AuditNote(actor=actor, action=ACTION_SMS_REFUSED, object_type="access_request",
                                object_id=request.public_id, details={"attempts": attempts, "locked": not left})
        raise error
    holder = registered_holder(session, request)
    if holder is None:  # the code was texted to a registered holder; only an erased holder gets here
        raise HolderNotRegistered()
    request.otp_hash = None  # single use
    request.otp_expires_at = None
    return record_consent(session, cipher, request, holder, identifiers, method=CONSENT_SMS,
                          action=ACTION_CONSENTED_BY_SMS, details={}, actor=actor, now=now)


def attest_by_staff(session: Session, cipher: FieldCipher, *, client: ApiClient, request_id: str,
                    attestation: StaffAttestation, identifiers: Sequence[str] | None, actor: Actor,
                    now: datetime) -> CounterConsent:
    """A staff member checked the citizen's physical ID document and attests their consent.

    The staff member, the reason and the document check are recorded on the request and in the audit trail under
    their own action. A citizen who never logged in becomes a holder known from their certificates.
    """
    if not attestation.id_document_checked:
        raise ValidationFailed.for_field("id_document_checked", "must_be_true",
                                         "工作人员须核验持证人的身份证件原件后方可确认")
    if attestation.id_document_type not in ID_DOCUMENT_TYPES:
        raise ValidationFailed.for_field("id_document_type", "unknown", "字段 id_document_type 不是可核验的证件类型")
    request = client_request(session, client, request_id, actor=actor, action=ACTION_CONSENT_REFUSED)
    open_assisted(request, now)
    certificates = chosen_certificates(session, request, identifiers, now=now)
    holder = registered_holder(session, request) or _holder_from_certificate(session, cipher, certificates[0],
                                                                              now=now)
    request.attested_by = attestation.staff_id
    request.attestation_reason = attestation.reason
    request.id_document_checked = True
    details = {"staff_id": attestation.staff_id, "staff_name": attestation.staff_name, "reason": attestation.reason,
               "id_document_checked": True, "id_document_type": attestation.id_document_type}
    return record_consent(session, cipher, request, holder, identifiers, method=CONSENT_STAFF,
                          action=ACTION_ATTESTED_BY_STAFF, details=details, actor=actor, now=now,
                          certificates=certificates)


def _holder_from_certificate(session: Session, cipher: FieldCipher, certificate: Certificate, *,
                             now: datetime) -> Holder:
    """A holder record for a citizen who never logged in, from the certificate's holder name and code (checked
    against the ID card at the window). A later real-name login finds it by the same blind index."""
    if certificate.holder_code_type == HolderCodeType.USCC.value:
        raise HolderNotAPerson()
    content = decrypt(cipher, certificate)
    public_id = new_public_id()
    holder = Holder(public_id=public_id, id_type=certificate.holder_code_type, id_index=certificate.holder_index,
                    id_number_enc=cipher.encrypt(content.holder_code, f"holder:{public_id}:id_number"),
                    name_enc=cipher.encrypt(content.holder_name, f"holder:{public_id}:name"),
                    assurance_level=COUNTER_ASSURANCE, created_at=now)
    session.add(holder)
    session.flush()
    return holder


def count_counter_consents(session: Session, *, since: datetime | None = None,
                           until: datetime | None = None) -> list[CounterConsentCount]:
    """Consents given at counters per department, SMS-code and staff-attested counted apart (from the audit chain),
    for the city's review of staff attestations."""
    stmt = (select(AuditEvent.department_code, AuditEvent.action, func.count())
            .where(AuditEvent.action.in_(list(CONSENT_ACTIONS)), AuditEvent.outcome == "success")
            .group_by(AuditEvent.department_code, AuditEvent.action))
    if since is not None:
        stmt = stmt.where(AuditEvent.occurred_at >= since)
    if until is not None:
        stmt = stmt.where(AuditEvent.occurred_at < until)
    counts: dict[str, dict[str, int]] = {}
    for department_code, action, number in session.execute(stmt):
        counts.setdefault(department_code or "", {})[CONSENT_ACTIONS[action]] = int(number)
    return [CounterConsentCount(code, by_method.get(CONSENT_SMS, 0), by_method.get(CONSENT_STAFF, 0))
            for code, by_method in sorted(counts.items())]
