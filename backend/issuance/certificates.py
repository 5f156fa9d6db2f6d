"""Department verbs on certificates: issue, sync, read, reissue, revoke, suspend, resume."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import jwt
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from backend.audit.chain import record_event
from backend.catalog.face import EARLIEST_DATE, LATEST_DATE, DateOutOfRange, FieldProblems, check_date_range
from backend.core.db.once import updated_rows
from backend.crypto.canonical import canonical_json
from backend.crypto.encryption import FieldCipher
from backend.crypto.jwk import SUPPORTED_ALGS, JWKError
from backend.crypto.sdjwt import SdJwtFormatError, parse, reconstruct
from backend.errors import Conflict, DomainError, Forbidden, NotFound, ValidationFailed
from backend.imports.batches import number_staged
from backend.issuance.issuer import (
    CertificateInput,
    Issuer,
    certificate_event,
    holder_notification,
    record_issued,
)
from backend.kernel.actors import Actor
from backend.kernel.china_time import CHINA
from backend.kernel.identifiers import parse_identifier
from backend.keys.keystore import PURPOSE_CERTIFICATE
from backend.keys.status_lists import bump_revision
from backend.models import ApiClient, Certificate, CertificateEvent, CertificateType, Department, IdempotencyRecord
from backend.models.issuance import REVOKED, SUPERSEDED, SUSPENDED, VALID

REVOCATION_REASONS = ("注销", "吊销")


class CertificateNotFound(NotFound):
    code = "certificate_not_found"
    message = "证照不存在"


@dataclass(frozen=True)
class CertificateContent:
    """The decrypted personal data of one certificate version."""

    holder_name: str
    holder_code: str
    number: str
    fields: dict[str, Any]
    sd_jwt: str


def decrypt(cipher: FieldCipher, certificate: Certificate) -> CertificateContent:
    context = f"certificate:{certificate.public_id}"
    return CertificateContent(
        holder_name=cipher.decrypt(certificate.holder_name_enc, f"{context}:holder_name"),
        holder_code=cipher.decrypt(certificate.holder_code_enc, f"{context}:holder_code"),
        number=cipher.decrypt(certificate.number_enc, f"{context}:number"),
        fields=json.loads(cipher.decrypt(certificate.face_enc, f"{context}:face")),
        sd_jwt=cipher.decrypt(certificate.sd_jwt_enc, f"{context}:sd_jwt"),
    )


def request_hash(body: Any) -> str:
    return hashlib.sha256(canonical_json(body)).hexdigest()


def _idempotent(session: Session, client: ApiClient, scope: str, key: str | None, digest: str) -> int | None:
    if key is None:
        return None
    record = session.scalar(select(IdempotencyRecord).where(
        IdempotencyRecord.api_client_id == client.id, IdempotencyRecord.scope == scope, IdempotencyRecord.key == key))
    if record is None:
        return None
    if record.request_hash != digest:
        raise Conflict("同一 Idempotency-Key 已用于不同的请求内容", code="idempotency_key_reused")
    return record.resource_id


def _remember(session: Session, client: ApiClient, scope: str, key: str | None, digest: str, resource_id: int,
              now: datetime) -> None:
    if key is not None:
        session.add(IdempotencyRecord(api_client_id=client.id, scope=scope, key=key, request_hash=digest,
                                      resource_id=resource_id, created_at=now))


def _store_new(session: Session, issuer: Issuer, data: CertificateInput, *, origin: str,
               sd_jwt: str | None = None, serial: str | None = None, version: int = 1) -> Certificate:
    problems = FieldProblems()
    prepared = issuer.prepare(data, problems)
    problems.raise_if_any()
    assert prepared is not None
    # Built first: taking its status-list slot takes the department's turn (PostgreSQL) or the database's write
    # lock (SQLite), so no batch decides to publish the same number between the check and the commit.
    certificate = issuer.build(prepared, origin=origin, sd_jwt=sd_jwt, serial=serial, version=version)
    type_id, number_index = prepared.certificate_type.id, issuer.number_index(prepared)
    taken = session.scalar(select(Certificate.id).where(
        Certificate.certificate_type_id == type_id, Certificate.issuer_department_id == issuer.department.id,
        Certificate.number_index == number_index))
    if taken is not None or number_staged(session, type_id, issuer.department.id, number_index):
        raise Conflict("该证照编号已签发过；变更请使用换发（reissue）", code="certificate_number_taken",
                       details={"field": "certificate_number"})
    session.add(certificate)
    issuer.slots.flush()
    session.flush()
    record_issued(session, certificate, issuer)
    return certificate


def issue_direct(session: Session, issuer: Issuer, data: CertificateInput) -> Certificate:
    """Issue without an API client (operator tools, demo data): same validation, signing, events and audit."""
    return _store_new(session, issuer, data, origin="issued")


def issue_certificate(session: Session, issuer: Issuer, client: ApiClient, data: CertificateInput, *,
                      idempotency_key: str | None, body_hash: str) -> tuple[Certificate, bool]:
    """Issue one certificate signed with the department's key. Returns (certificate, created)."""
    existing = _idempotent(session, client, "certificate", idempotency_key, body_hash)
    if existing is not None:
        return session.get_one(Certificate, existing), False
    certificate = _store_new(session, issuer, data, origin="issued")
    _remember(session, client, "certificate", idempotency_key, body_hash, certificate.id, issuer.now)
    return certificate, True


def _sync_refused(reason: str, message: str, claim: str | None = None) -> ValidationFailed:
    details: dict[str, Any] = {"reason": reason}
    if claim is not None:
        details["fields"] = [{"field": f"sd_jwt.{claim}", "reason": reason}]
    return ValidationFailed(f"同步的证照无效：{message}", code="invalid_sd_jwt", details=details)


def sync_certificate(session: Session, issuer: Issuer, client: ApiClient, token: str, *,
                     idempotency_key: str | None, body_hash: str) -> tuple[Certificate, bool]:
    """Store a certificate the department signed in its own system, after verifying it completely."""
    existing = _idempotent(session, client, "certificate", idempotency_key, body_hash)
    if existing is not None:
        return session.get_one(Certificate, existing), False
    try:
        parsed = parse(token)
        header = jwt.get_unverified_header(parsed.issuer_jwt)
    except (SdJwtFormatError, jwt.PyJWTError) as exc:
        raise _sync_refused("malformed", "不是有效的 SD-JWT") from exc
    if parsed.kb_jwt is not None:
        raise _sync_refused("unexpected_key_binding", "签发的证照不应带有持有者绑定 JWT")
    if header.get("typ") != "dc+sd-jwt" or header.get("alg") not in SUPPORTED_ALGS:
        raise _sync_refused("bad_header", "typ 必须是 dc+sd-jwt，算法必须是 ES256 或 EdDSA")
    try:
        signing_key, public = issuer.keys.public_key(str(header.get("kid")))
    except DomainError as exc:
        raise _sync_refused("unknown_key", "签名密钥未在平台登记") from exc
    if signing_key.department_id != issuer.department.id or signing_key.purpose != PURPOSE_CERTIFICATE:
        raise _sync_refused("foreign_key", "签名密钥不属于本部门")
    try:
        payload = jwt.decode(parsed.issuer_jwt, public, algorithms=[signing_key.alg],
                             options={"verify_exp": False, "verify_nbf": False, "verify_iat": False,
                                      "verify_aud": False})
    except (jwt.PyJWTError, JWKError) as exc:
        raise _sync_refused("bad_signature", "签名验证失败") from exc
    try:
        claims = reconstruct(payload, parsed.disclosures)
    except SdJwtFormatError as exc:
        raise _sync_refused(exc.reason, str(exc)) from exc
    if claims.get("iss") != issuer.iss:
        raise _sync_refused("wrong_issuer", f"iss 必须是 {issuer.iss}")
    type_code = str(claims.get("vct", "")).removeprefix("urn:ecert:")
    ctype = issuer.certificate_type(type_code)
    assert ctype is not None
    if claims.get("type_code", type_code) != type_code:
        raise _sync_refused("type_mismatch", "type_code 与 vct 不一致")
    ident = parse_identifier(str(claims.get("identifier", "")), field="identifier")
    if ident.type_code != type_code or ident.issuer_code != issuer.department.code or claims.get("version") != \
            ident.version:
        raise _sync_refused("identifier_mismatch", "证照标识与类型、签发部门或版本不一致")
    if session.scalar(select(Certificate.id).where(Certificate.identifier == ident.value)) is not None:
        raise Conflict("该证照标识已存在", code="certificate_exists")
    holder, face, document = claims.get("holder"), claims.get("face"), claims.get("document")
    # Undisclosed claims simply vanish from the reconstructed objects, so check what must be there.
    if not isinstance(holder, dict) or not isinstance(face, dict) or not isinstance(document, dict) \
            or not {"name", "code_type", "code"} <= holder.keys() or "number" not in document or not face:
        raise _sync_refused("missing_disclosures", "同步时须附带 holder、document、face 的全部披露项")

    def day(claim: str) -> date | None:
        """The day of a time claim (nbf: the first valid day, exp: the last, iat: only checked); each an integer
        timestamp within the accepted date range, like every date a department gives."""
        value = claims.get(claim)
        if value is None:
            return None
        try:
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(claim)
            moment = datetime.fromtimestamp(value, CHINA)
            check_date_range(moment.date())
        except (TypeError, ValueError, OverflowError, OSError) as exc:
            reason = "date_out_of_range" if isinstance(exc, DateOutOfRange) else "invalid_time_claims"
            raise _sync_refused(reason, f"{claim} 必须是 {EARLIEST_DATE.isoformat()} 至 {LATEST_DATE.isoformat()} "
                                        "之间的整数时间戳", claim) from exc
        return moment.date() if claim == "nbf" else (moment - timedelta(days=1)).date()

    day("iat")

    data = CertificateInput(
        type_code=type_code, certificate_number=document.get("number"), holder_name=holder.get("name"),
        holder_code_type=holder.get("code_type"), holder_code=holder.get("code"),
        issued_on=claims.get("issued_on"), valid_from=day("nbf"), fields=face,
        valid_until=day("exp") if "exp" in claims else None,
    )
    if data.valid_from is None:
        raise _sync_refused("missing_nbf", "缺少 nbf（有效期起始）")
    certificate = _store_new(session, issuer, data, origin="synced", sd_jwt=token, serial=ident.serial,
                             version=ident.version)
    certificate.signing_kid = signing_key.kid
    _remember(session, client, "certificate", idempotency_key, body_hash, certificate.id, issuer.now)
    return certificate, True


def get_own_certificate(session: Session, department: Department, identifier: str) -> Certificate:
    """A department reads or changes only its own certificates."""
    ident = parse_identifier(identifier, field="identifier")
    certificate = session.scalar(select(Certificate).where(Certificate.identifier == ident.value))
    if certificate is None:
        raise CertificateNotFound()
    if certificate.issuer_department_id != department.id:
        raise Forbidden("只能查看或变更本部门签发的证照", code="not_certificate_issuer")
    return certificate


def version_history(session: Session, certificate: Certificate) -> list[Certificate]:
    return list(session.scalars(select(Certificate).where(
        Certificate.certificate_type_id == certificate.certificate_type_id,
        Certificate.issuer_department_id == certificate.issuer_department_id,
        Certificate.serial == certificate.serial).order_by(Certificate.version)))


def events_of(session: Session, certificate: Certificate) -> list[CertificateEvent]:
    return list(session.scalars(select(CertificateEvent).where(CertificateEvent.certificate_id == certificate.id)
                                .order_by(CertificateEvent.id)))


def _refused(status: str, event: str) -> Conflict:
    return Conflict(f"证照当前状态为「{STATUS_LABELS[status]}」，不能{EVENT_LABELS[event]}",
                    code="invalid_status_transition", details={"status": status, "event": event})


def _move_status(session: Session, certificate: Certificate, new_status: str, event: str, *,
                 allowed_from: tuple[str, ...], reason: str | None, now: datetime) -> str:
    """Move the certificate to `new_status` if its status is one of `allowed_from`; answer the status it left.

    Decided by one conditional UPDATE on the status last read, never by a read and then a write (SQLite ignores
    FOR UPDATE and takes its writers' lock only at the first write): of concurrent changes one moves the status,
    the others re-read it and decide again on what the winner left.
    """
    for _ in range(_MOVE_ATTEMPTS):
        previous = certificate.status
        if previous not in allowed_from:
            raise _refused(previous, event)
        values = {"status": new_status, "status_reason": reason, "status_changed_at": now, "updated_at": now}
        if updated_rows(session, update(Certificate)
                        .where(Certificate.id == certificate.id, Certificate.status == previous).values(**values)):
            for name, value in values.items():
                set_committed_value(certificate, name, value)
            return previous
        session.refresh(certificate)
    raise Conflict("证照状态正被同时修改，请稍后重试", code="concurrent_conflict")


_MOVE_ATTEMPTS = 3


def _change_status(session: Session, certificate: Certificate, new_status: str, event: str, kind: str, *,
                   actor: Actor, now: datetime, reason: str | None, allowed_from: tuple[str, ...]) -> Certificate:
    previous = _move_status(session, certificate, new_status, event, allowed_from=allowed_from, reason=reason,
                            now=now)
    bump_revision(session, {certificate.status_list_id})
    ctype = session.get_one(CertificateType, certificate.certificate_type_id)
    session.add(certificate_event(certificate, event, from_status=previous, actor=actor, now=now, reason=reason))
    session.add(holder_notification(certificate, kind, now=now, type_name=ctype.name,
                                    issuer_name=certificate.issuer.name, reason=reason or ""))
    record_event(session, actor=actor, action=f"certificate.{event}", now=now, object_type="certificate",
                 object_id=certificate.identifier, details={"from": previous, "to": new_status, "reason": reason})
    session.flush()
    return certificate


STATUS_LABELS = {VALID: "有效", SUSPENDED: "中止", REVOKED: "已注销", "expired": "已过期", SUPERSEDED: "已更新"}
EVENT_LABELS = {"revoked": "注销", "suspended": "中止", "resumed": "恢复", "reissued": "换发", "expired": "置为过期"}


def revoke_certificate(session: Session, certificate: Certificate, *, reason: str, note: str | None, actor: Actor,
                       now: datetime) -> Certificate:
    if reason not in REVOCATION_REASONS:
        raise ValidationFailed.for_field("reason", "invalid", "注销原因必须是「注销」或「吊销」")
    text = reason if not note else f"{reason}：{note}"
    return _change_status(session, certificate, REVOKED, "revoked", "certificate_revoked", actor=actor, now=now,
                          reason=text, allowed_from=(VALID, SUSPENDED))


def suspend_certificate(session: Session, certificate: Certificate, *, reason: str, actor: Actor,
                        now: datetime) -> Certificate:
    return _change_status(session, certificate, SUSPENDED, "suspended", "certificate_suspended", actor=actor, now=now,
                          reason=reason, allowed_from=(VALID,))


def resume_certificate(session: Session, certificate: Certificate, *, actor: Actor, now: datetime) -> Certificate:
    return _change_status(session, certificate, VALID, "resumed", "certificate_resumed", actor=actor, now=now,
                          reason=None, allowed_from=(SUSPENDED,))


REISSUABLE = (VALID, SUSPENDED, "expired")


def reissue_certificate(session: Session, issuer: Issuer, certificate: Certificate, *, changes: dict[str, Any],
                        reason: str | None) -> Certificate:
    """A new version (same serial, version + 1, new check character); the old one becomes superseded."""
    if certificate.status not in REISSUABLE:
        raise _refused(certificate.status, "reissued")
    if certificate.version >= 999:
        raise Conflict("证照版本号已达上限 999", code="version_exhausted")
    content = decrypt(issuer.cipher, certificate)
    ctype = session.get_one(CertificateType, certificate.certificate_type_id)
    fields = {**content.fields, **(changes.get("fields") or {})}
    data = CertificateInput(
        type_code=ctype.type_code, certificate_number=content.number,
        holder_name=changes.get("holder_name") or content.holder_name,
        holder_code_type=certificate.holder_code_type, holder_code=content.holder_code,
        issued_on=changes.get("issued_on") or issuer.today.isoformat(),
        valid_from=changes.get("valid_from") or certificate.valid_from.isoformat(),
        valid_until=changes["valid_until"] if "valid_until" in changes else
        (certificate.valid_until.isoformat() if certificate.valid_until else None),
        fields={k: v for k, v in fields.items() if v is not None},
    )
    problems = FieldProblems()
    prepared = issuer.prepare(data, problems)
    problems.raise_if_any()
    assert prepared is not None
    previous_status = _move_status(session, certificate, SUPERSEDED, "reissued", allowed_from=REISSUABLE,
                                   reason=reason, now=issuer.now)
    bump_revision(session, {certificate.status_list_id})
    session.add(certificate_event(certificate, "superseded", from_status=previous_status, actor=issuer.actor,
                                  now=issuer.now, reason=reason))
    session.flush()
    successor = issuer.build(prepared, origin=certificate.origin if certificate.origin != "synced" else "issued",
                             serial=certificate.serial, version=certificate.version + 1, previous=certificate)
    session.add(successor)
    issuer.slots.flush()
    session.flush()
    record_issued(session, successor, issuer, event="reissued", reason=reason)
    return successor



