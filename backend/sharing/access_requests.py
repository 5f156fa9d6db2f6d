"""A department asks (用证请求) for certificate types and fields, with a purpose and a matter; the holder approves
it in the mini-app with certificates they hold or represent (a grant), or declines it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from backend.adapters.callbacks import CallbackUrlRefused, check_callback_url, normalise_allowlist_entry
from backend.audit.chain import record_event
from backend.crypto.encryption import FieldCipher
from backend.crypto.masking import mask_certificate_number
from backend.errors import AuditNote, Conflict, Gone, NotFound, ValidationFailed
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_clock, china_today
from backend.kernel.identifiers import validate_holder_code
from backend.kernel.ids import holder_index, new_public_id
from backend.models import AccessRequest, ApiClient, Certificate, CertificateType, Grant, Holder, Notification
from backend.models.issuance import VALID
from backend.models.sharing import CONSENT_APP, REQUEST_APPROVED, REQUEST_DECLINED, REQUEST_PENDING
from backend.sharing import consent_policy, grants
from backend.wallet.queries import Owner, certificate_number, find_holder_certificate, owners
from backend.wallet.queries import effective_status as certificate_status

REQUEST_EXPIRED = "expired"  # derived when read: a pending request past `expires_at`
STATUS_LABELS = {REQUEST_PENDING: "待确认", REQUEST_APPROVED: "已授权", REQUEST_DECLINED: "已拒绝",
                 REQUEST_EXPIRED: "已过期"}
MAX_WANTED_TYPES = 10


class AccessRequestNotFound(NotFound):
    code = "access_request_not_found"
    message = "用证请求不存在"


class AccessRequestExpired(Gone):
    code = "access_request_expired"
    message = "用证请求已过期，请让部门重新发起"


class AccessRequestDecided(Conflict):
    code = "access_request_decided"
    message = "该用证请求已处理，不能重复操作"


# -- creation (department side) ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WantedInput:
    type_code: str
    fields: list[str]


@dataclass(frozen=True)
class AssistedHolder:
    """Counter service: the holder at the window, by 持证主体代码类型 and 持证主体代码 (never stored as such)."""

    code_type: str
    code: str


@dataclass(frozen=True)
class AccessRequestInput:
    """What a department asks: the types and fields it wants, why (用证事由), for which matter (事项编码), how long
    the holder's consent should last, where to call back, and (counter service) the holder at the window."""

    wanted: list[WantedInput]
    purpose: str
    matter_code: str
    consent_seconds: int | None = None
    callback_url: str | None = None
    assisted_holder: AssistedHolder | None = None


def _wanted_types(session: Session, wanted: list[WantedInput]) -> list[tuple[CertificateType, list[str]]]:
    """Each wanted type with its fields checked against the sharing policy; every problem named at once."""
    codes = [item.type_code for item in wanted]
    types = types_by_code(session, codes)
    problems = []
    seen: set[str] = set()
    for position, code in enumerate(codes):
        if code not in types:
            problems.append({"field": f"wanted[{position}].type_code", "reason": "unknown_type", "type_code": code})
        elif code in seen:
            problems.append({"field": f"wanted[{position}].type_code", "reason": "duplicate_type", "type_code": code})
        seen.add(code)
    if problems:
        unknown = [p["type_code"] for p in problems if p["reason"] == "unknown_type"]
        message = f"未知的证照类型：{'、'.join(unknown)}" if unknown else "同一证照类型只能请求一次"
        raise ValidationFailed(message, code="unknown_certificate_type" if unknown else "duplicate_certificate_type",
                               details={"fields": problems})
    checked: list[tuple[CertificateType, list[str]]] = []
    refused: list[dict[str, Any]] = []
    refusals: list[consent_policy.FieldsNotShareable] = []
    for position, item in enumerate(wanted):
        ctype = types[item.type_code]
        try:
            checked.append((ctype, consent_policy.check_fields(ctype, item.fields, field=f"wanted[{position}].fields")))
        except consent_policy.FieldsNotShareable as refusal:
            refusals.append(refusal)
            refused.append({"type_code": ctype.type_code, "type_name": ctype.name,
                            "fields": [entry["name"] for entry in refusal.details["fields"]],
                            "allowed": refusal.details["allowed"]})
    if refusals:
        names = "；".join(f"{r['type_name']}：{'、'.join(r['fields'])}" for r in refused)
        raise consent_policy.FieldsNotShareable(
            f"所请求的字段超出共享范围（{names}）",
            details={"fields": [entry for refusal in refusals for entry in refusal.details["fields"]],
                     "types": refused})
    return checked


def create_access_request(session: Session, cipher: FieldCipher, client: ApiClient, asked: AccessRequestInput, *,
                          allow_http_callbacks: bool, answer_within: int, actor: Actor,
                          now: datetime) -> AccessRequest:
    """Validate and store a department's request; `consent_seconds` is capped by the strictest type policy.
    `answer_within`: seconds the holder has to answer; `allow_http_callbacks`: outside production only."""
    checked = _wanted_types(session, asked.wanted)
    callback_url, assisted = asked.callback_url, asked.assisted_holder
    if callback_url is not None:
        try:
            callback_url = check_callback_url(callback_url, list(client.callback_allowlist or []),
                                              allow_http=allow_http_callbacks)
        except CallbackUrlRefused as refused:
            raise ValidationFailed("回调地址不在该客户端登记的白名单内" if refused.reason == "not_in_allowlist"
                                   else "回调地址无效", code="callback_url_not_allowed",
                                   details={"fields": [{"field": "callback_url", "reason": refused.reason}]}) from None
    assisted_index = None
    if assisted is not None:
        code = validate_holder_code(assisted.code_type, assisted.code, field="holder.code")
        assisted_index = holder_index(cipher, assisted.code_type.strip(), code)
    granted = consent_policy.cap_lifetime([ctype for ctype, _ in checked], asked.consent_seconds)
    request = AccessRequest(
        public_id=new_public_id(), api_client_id=client.id, department_id=client.department_id,
        wanted=[{"type_code": ctype.type_code, "fields": fields} for ctype, fields in checked],
        purpose=asked.purpose, matter_code=asked.matter_code, consent_seconds=granted, callback_url=callback_url,
        status=REQUEST_PENDING, created_at=now, expires_at=now + timedelta(seconds=answer_within),
        assisted=assisted is not None, assisted_holder_index=assisted_index)
    session.add(request)
    session.flush()
    record_event(session, actor=actor, action="access_request.created", now=now, object_type="access_request",
                 object_id=request.public_id,
                 details={"wanted": request.wanted, "purpose": asked.purpose, "matter_code": asked.matter_code,
                          "consent_seconds": granted, "requested_consent_seconds": asked.consent_seconds,
                          "assisted": request.assisted, "callback": callback_url is not None})
    return request


def effective_status(request: AccessRequest, now: datetime) -> str:
    if request.status == REQUEST_PENDING and now >= request.expires_at:
        return REQUEST_EXPIRED
    return request.status


def get_client_request(session: Session, client: ApiClient, public_id: str) -> AccessRequest:
    """The client's own request; another client's (same department or not) is a 404."""
    request = session.scalar(select(AccessRequest).where(AccessRequest.public_id == public_id,
                                                         AccessRequest.api_client_id == client.id))
    if request is None:
        raise AccessRequestNotFound()
    return request


def grant_public_id(session: Session, request: AccessRequest) -> str | None:
    if request.status != REQUEST_APPROVED:
        return None
    return session.scalar(select(Grant.public_id).where(Grant.access_request_id == request.id))


# -- the holder's side ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WantedView:
    certificate_type: CertificateType
    fields: list[consent_policy.ConsentField]
    step_up_required: bool


@dataclass(frozen=True)
class MatchingCertificate:
    certificate: Certificate
    owner: Owner
    number_masked: str


@dataclass(frozen=True)
class HolderRequestView:
    request: AccessRequest
    status: str
    wanted: list[WantedView]
    matching: list[MatchingCertificate]
    grant_id: str | None


def types_by_code(session: Session, codes: list[str]) -> dict[str, CertificateType]:
    rows = session.scalars(select(CertificateType).where(CertificateType.type_code.in_(codes)))
    return {ctype.type_code: ctype for ctype in rows}


def _types_of(session: Session, request: AccessRequest) -> dict[str, CertificateType]:
    return types_by_code(session, [item["type_code"] for item in request.wanted])


def find_holder_request(session: Session, holder: Holder, public_id: str, *, now: datetime,
                        max_age: timedelta) -> AccessRequest:
    """The request as this holder may see it, else 404 (decided by someone else; assisted for someone else)."""
    request = session.scalar(select(AccessRequest).where(AccessRequest.public_id == public_id)
                             .options(selectinload(AccessRequest.department)))
    if request is None:
        raise AccessRequestNotFound()
    if request.status != REQUEST_PENDING:
        if request.holder_id != holder.id:
            raise AccessRequestNotFound()
    elif request.assisted and request.assisted_holder_index not in owners(holder, now=now, max_age=max_age):
        raise AccessRequestNotFound()
    return request


def _matching(session: Session, cipher: FieldCipher, holder: Holder, types: list[CertificateType], *, now: datetime,
              max_age: timedelta, only: str | None) -> list[MatchingCertificate]:
    by_index = owners(holder, now=now, max_age=max_age)
    if only is not None:  # an assisted request: only the named holder's (or company's) certificates
        by_index = {index: owner for index, owner in by_index.items() if index == only}
    if not by_index or not types:
        return []
    today = china_today(now)
    rows = session.scalars(select(Certificate).where(
        Certificate.holder_index.in_(list(by_index)), Certificate.status == VALID,
        Certificate.certificate_type_id.in_([t.id for t in types])).order_by(Certificate.created_at.desc()))
    return [MatchingCertificate(c, by_index[c.holder_index], mask_certificate_number(certificate_number(cipher, c)))
            for c in rows if certificate_status(c, today) == VALID and c.valid_from <= today]


def view_for_holder(session: Session, cipher: FieldCipher, holder: Holder, public_id: str, *, now: datetime,
                    max_age: timedelta) -> HolderRequestView:
    """The consent screen: who asks, why, each field by its Chinese label, and the holder's matching certificates."""
    request = find_holder_request(session, holder, public_id, now=now, max_age=max_age)
    types = _types_of(session, request)
    wanted = []
    for item in request.wanted:
        ctype = types[item["type_code"]]
        wanted.append(WantedView(ctype, consent_policy.field_labels(ctype, item["fields"]),
                                 consent_policy.needs_step_up([ctype])))
    status = effective_status(request, now)
    matching = _matching(session, cipher, holder, list(types.values()), now=now, max_age=max_age,
                         only=request.assisted_holder_index if request.assisted else None) \
        if status == REQUEST_PENDING else []
    return HolderRequestView(request, status, wanted, matching, grant_public_id(session, request))


# -- decisions -----------------------------------------------------------------------------------------------------

def _refuse_stale(request: AccessRequest, now: datetime) -> None:
    if request.status != REQUEST_PENDING:
        raise AccessRequestDecided(details={"status": request.status})
    if now >= request.expires_at:
        raise AccessRequestExpired(details={"expires_at": request.expires_at.isoformat()})


def record_decision(session: Session, request: AccessRequest, *, status: str, holder: Holder,
                    consent_method: str | None, now: datetime) -> None:
    """Move a pending, unexpired request to `status` with one conditional update: of two concurrent answers exactly
    one wins, the other gets 409 (decided) or 410 (expired). Queues the department's callback (outbox) if any.

    Shared by the holder's answer in the app and the counter service's assisted consent.
    """
    _refuse_stale(request, now)
    result = session.execute(
        update(AccessRequest)
        .where(AccessRequest.id == request.id, AccessRequest.status == REQUEST_PENDING,
               AccessRequest.expires_at > now)
        .values(status=status, decided_at=now, holder_id=holder.id, consent_method=consent_method,
                callback_next_at=now if request.callback_url else None)
        .execution_options(synchronize_session=False))
    session.refresh(request)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        _refuse_stale(request, now)
        raise AccessRequestDecided(details={"status": request.status})


def _refusal_note(error: NotFound, actor: Actor, action: str, public_id: str) -> NotFound:
    """Someone else's (or an unknown) request: audited by the edge after the rollback, answered as 404."""
    error.audit = AuditNote(actor=actor, action=action, object_type="access_request", object_id=public_id[:64],
                            details={"outcome": "not_found"})
    return error


def _chosen_certificates(session: Session, holder: Holder, request: AccessRequest, certificate_ids: list[str], *,
                         now: datetime, max_age: timedelta) -> list[Certificate]:
    """The holder's chosen certificates, one per type (grants.grant_from_request checks types and validity)."""
    chosen: list[Certificate] = []
    seen_types: set[str] = set()
    for position, public_id in enumerate(dict.fromkeys(certificate_ids)):
        certificate = find_holder_certificate(session, holder, public_id, now=now, max_age=max_age)
        if request.assisted and certificate.holder_index != request.assisted_holder_index:
            raise NotFound("证照不存在", code="certificate_not_found")
        type_code = certificate.certificate_type.type_code
        if type_code in seen_types:
            raise ValidationFailed("每种证照只能选择一张", code="duplicate_certificate_type",
                                   details={"fields": [{"field": f"certificate_ids[{position}]",
                                                        "reason": "duplicate_type", "type_code": type_code}]})
        seen_types.add(type_code)
        chosen.append(certificate)
    return chosen


GRANT_NOTICE = ("您已授权{department}使用证照", "您已同意{department}为办理“{purpose}”使用您的{types}（{fields}），"
                "授权在 {expires} 前有效、仅可使用一次。如非本人操作，请在“我的授权”中撤销。")


def approve_access_request(session: Session, cipher: FieldCipher, holder: Holder, public_id: str, *,
                           certificate_ids: list[str], step_up: Callable[[], None], actor: Actor, now: datetime,
                           max_age: timedelta) -> tuple[AccessRequest, Grant]:
    """Consent in the app: the chosen certificates (the holder's or a represented company's, of wanted types, valid)
    become a grant for the requesting client. `step_up()` is called when a chosen type needs a recent login; it
    raises 401 reauth_required when the login is too old."""
    try:
        request = find_holder_request(session, holder, public_id, now=now, max_age=max_age)
    except AccessRequestNotFound as error:
        raise _refusal_note(error, actor, "access_request.approve_refused", public_id) from None
    _refuse_stale(request, now)
    certificates = _chosen_certificates(session, holder, request, certificate_ids, now=now, max_age=max_age)
    if consent_policy.needs_step_up([c.certificate_type for c in certificates]):
        step_up()
    record_decision(session, request, status=REQUEST_APPROVED, holder=holder, consent_method=CONSENT_APP, now=now)
    grant = grants.grant_from_request(session, request=request, holder=holder, certificates=certificates,
                                      consent_method=CONSENT_APP, actor=actor, now=now, max_age=max_age)
    types = _types_of(session, request)
    fields = [label.label for item in request.wanted if item["type_code"] in {c.certificate_type.type_code
                                                                             for c in certificates}
              for label in consent_policy.field_labels(types[item["type_code"]], item["fields"])]
    title, body = GRANT_NOTICE
    values = {"department": request.department.name, "purpose": request.purpose,
              "types": "、".join(c.certificate_type.name for c in certificates),
              "fields": "、".join(dict.fromkeys(fields)),
              "expires": china_clock(grant.expires_at)}
    session.add(Notification(
        public_id=new_public_id(), holder_index=holder.id_index,
        certificate_id=certificates[0].id if len(certificates) == 1 else None, kind="grant_created",
        title=title.format(**values), body=body.format(**values),
        data={"grant_id": grant.public_id, "access_request_id": request.public_id}, created_at=now))
    record_event(session, actor=actor, action="access_request.approved", now=now, object_type="access_request",
                 object_id=request.public_id,
                 details={"grant_id": grant.public_id, "consent_method": CONSENT_APP,
                          "certificates": [c.identifier for c in certificates],
                          "department": request.department.code})
    return request, grant


def decline_access_request(session: Session, holder: Holder, public_id: str, *, actor: Actor, now: datetime,
                           max_age: timedelta) -> AccessRequest:
    """The holder says no: the request is closed and the department learns it (poll or callback)."""
    try:
        request = find_holder_request(session, holder, public_id, now=now, max_age=max_age)
    except AccessRequestNotFound as error:
        raise _refusal_note(error, actor, "access_request.decline_refused", public_id) from None
    record_decision(session, request, status=REQUEST_DECLINED, holder=holder, consent_method=None, now=now)
    record_event(session, actor=actor, action="access_request.declined", now=now, object_type="access_request",
                 object_id=request.public_id, details={"department": request.department.code})
    return request


# -- the client's callback allow-list ------------------------------------------------------------------------------

def set_callback_allowlist(session: Session, client_id: str, entries: list[str], *, allow_http: bool, actor: Actor,
                           now: datetime) -> ApiClient:
    """Replace a client's callback allow-list (origins with an optional path prefix; https only in production)."""
    client = session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
    if client is None:
        raise NotFound("客户端不存在", code="client_not_found")
    normalised = []
    for position, entry in enumerate(entries):
        try:
            normalised.append(normalise_allowlist_entry(entry, allow_http=allow_http))
        except CallbackUrlRefused as refused:
            raise ValidationFailed(f"回调白名单条目无效：{entry[:100]}", code="invalid_callback_allowlist",
                                   details={"fields": [{"field": f"callback[{position}]", "reason": refused.reason}]}
                                   ) from None
    client.callback_allowlist = list(dict.fromkeys(normalised))
    session.flush()
    record_event(session, actor=actor, action="client.callbacks_set", now=now, object_type="api_client",
                 object_id=client.client_id, details={"callback_allowlist": client.callback_allowlist})
    return client
