"""Objections (异议, 第八条、第十四条): filing, the issuing department's queue and its answers, the citizen's view.

A citizen files about a certificate they hold or represent; a department client reports a data problem about a
certificate it has legitimately seen (`client_has_seen`). Either way the objection lands in the queue of the
department that issued the certificate, with deadlines in working days (`backend/objections/working_days.py`).
The department accepts it (受理, in progress), rejects it with a reason shown to the filer, or resolves it by
linking the corrected version made by a reissue. Every transition is a timeline row, an audit event and a
notification to the filer, in the caller's transaction; a department's report also tells the holder which department
reported a problem with which certificate. The deadline job lives in objection_deadlines.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, selectinload

from backend.audit.chain import record_event
from backend.core.paging import keyset_page
from backend.crypto.encryption import FieldCipher
from backend.errors import Conflict, NotFound, ValidationFailed
from backend.issuance.certificates import decrypt
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_clock
from backend.kernel.identifiers import parse_identifier
from backend.kernel.ids import new_public_id
from backend.models import (
    ApiClient,
    AuditEvent,
    Certificate,
    CertificateType,
    Department,
    Holder,
    Notification,
    UsageRecord,
)
from backend.models.certificates import REVOKED, SUPERSEDED
from backend.models.objections import (
    IN_PROGRESS,
    OPEN_STATES,
    REJECTED,
    RESOLVED,
    SUBMITTED,
    Objection,
    ObjectionEscalation,
    ObjectionEvent,
    ObjectionEvidence,
)
from backend.objections.evidence import (
    MAX_FILES,
    EvidenceNotFound,
    EvidenceStorage,
    SealedEvidenceStorage,
    check_count,
    clean_image,
    new_storage_key,
)
from backend.objections.working_days import WorkingCalendar
from backend.wallet import showcodes
from backend.wallet.queries import face_definition

DEFAULT_ACKNOWLEDGE_DAYS = 1
DEFAULT_RESOLVE_DAYS = 5
MAX_DISPUTED = 20
MAX_CLAIMED_LENGTH = 500
MAX_DESCRIPTION = 1000
MAX_ANSWER = 500
# How long after a department client verified a presentation, checked a show code or redeemed a grant it may
# still report a data problem about that certificate.
REPORT_WINDOW = timedelta(days=90)
HOLDER_NAME_FIELD = "holder.name"
NOT_SHOWN = "not_shown"  # a department disputes a field it was not shown

STATUS_LABELS = {SUBMITTED: "待受理", IN_PROGRESS: "处理中", REJECTED: "已驳回", RESOLVED: "已更正"}
EVENT_LABELS = {"filed": "提交异议", "accepted": "部门受理", "rejected": "部门驳回", "resolved": "已更正",
                "escalated": "超时督办"}
FILER_LABELS = {"citizen": "持证人", "department": "用证部门"}
# To the holder when a department reports a problem with their certificate (the filer is notified apart).
HOLDER_REPORTED = ("有部门反映您的{name}信息有误",
                   "{reporter}反映您的{name}中的信息可能有误，已转{issuer}核实；如需更正，{issuer}将换发新版本并通知您。")


# -- errors -----------------------------------------------------------------------------------------------

class ObjectionNotFound(NotFound):
    """Someone else's objection, or another department's queue: not there at all (no existence oracle)."""

    code = "objection_not_found"
    message = "异议不存在"


class ObjectionTransitionConflict(Conflict):
    code = "objection_invalid_transition"
    message = "异议当前状态不允许此操作"


# -- input ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DisputedField:
    """A field the filer says is wrong, and the value they say it should have."""

    field: str
    claimed_value: str


@dataclass(frozen=True)
class DeadlinePolicy:
    acknowledge_days: int = DEFAULT_ACKNOWLEDGE_DAYS
    resolve_days: int = DEFAULT_RESOLVE_DAYS


def deadline_policy(certificate_type: CertificateType) -> DeadlinePolicy:
    """The type's time limits (catalog `objections.acknowledge_working_days` / `resolve_working_days`), else 1 / 5."""
    policy = certificate_type.definition.get("objections") or {}
    return DeadlinePolicy(int(policy.get("acknowledge_working_days") or DEFAULT_ACKNOWLEDGE_DAYS),
                          int(policy.get("resolve_working_days") or DEFAULT_RESOLVE_DAYS))


def _field_labels(session: Session, certificate: Certificate) -> dict[str, str]:
    labels = {spec["name"]: spec["label"] for spec in face_definition(session, certificate)["fields"]}
    return {HOLDER_NAME_FIELD: "持证主体名称", **labels}


def _current_values(cipher: FieldCipher, certificate: Certificate) -> dict[str, Any]:
    content = decrypt(cipher, certificate)
    return {HOLDER_NAME_FIELD: content.holder_name, **content.fields}


def _refused_disputed(problems: list[dict[str, str]]) -> ValidationFailed:
    message = "异议字段无效：" + "、".join(p["field"] for p in problems[:5])
    if any(p["reason"] == NOT_SHOWN for p in problems):
        message += "（只能对本系统核验、扫码或用证时看到的字段提出异议）"
    return ValidationFailed(message, code="objection_disputed_invalid", details={"fields": problems})


def _check_disputed(session: Session, certificate: Certificate, disputed: Sequence[DisputedField], *,
                    shown: Collection[str] | None = None) -> list[dict[str, str]]:
    """The disputed fields as stored, checked by their names and the claims' form only, never against the
    certificate's values (see `_check_changed`). With `shown`, a field outside it is refused as `not_shown`."""
    if not disputed:
        raise ValidationFailed.for_field("disputed", "empty", "请至少指出一个有误的字段")
    if len(disputed) > MAX_DISPUTED:
        raise ValidationFailed.for_field("disputed", "too_many", f"有误的字段最多 {MAX_DISPUTED} 个")
    labels = _field_labels(session, certificate)
    named: set[str] = set()
    problems = []
    for n, item in enumerate(disputed):
        where = f"disputed[{n}]"
        claimed = item.claimed_value.strip()
        if item.field not in labels:
            problems.append({"field": f"{where}.field", "reason": "unknown_field"})
        elif item.field in named:
            problems.append({"field": f"{where}.field", "reason": "duplicate"})
        elif shown is not None and item.field not in shown:
            problems.append({"field": f"{where}.field", "reason": NOT_SHOWN})
        elif not claimed or len(claimed) > MAX_CLAIMED_LENGTH or any(ord(c) < 32 for c in claimed):
            problems.append({"field": f"{where}.claimed_value", "reason": "invalid"})
        named.add(item.field)
    if problems:
        raise _refused_disputed(problems)
    return [{"field": item.field, "claimed_value": item.claimed_value.strip()} for item in disputed]


def _check_changed(cipher: FieldCipher, certificate: Certificate, checked: list[dict[str, str]], *,
                   known: Collection[str] | None = None) -> None:
    """A claim equal to the value on the certificate is refused (`unchanged`), but only for the fields the filer
    knows in full (`known`; None: all, the holder's own): for any other field the answer would tell a right guess
    from a wrong one. Runs after every other check, so that no earlier refusal depends on a value either."""
    fields = [item["field"] for item in checked]
    if known is not None:
        fields = [name for name in fields if name in known]
    if not fields:
        return
    current = _current_values(cipher, certificate)
    problems = [{"field": f"disputed[{n}].claimed_value", "reason": "unchanged"} for n, item in enumerate(checked)
                if item["field"] in fields and str(current.get(item["field"], "")) == item["claimed_value"]]
    if problems:
        raise _refused_disputed(problems)


_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def plain_text(value: str) -> str:
    """A person's text as stored: line breaks and tabs kept, other control characters (NUL above all, which
    PostgreSQL refuses) and lone surrogates dropped, surrounding blanks trimmed."""
    text = value.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8", "replace").decode("utf-8")
    return _CONTROL_BUT_LINES.sub("", text).strip()


def _check_description(description: str) -> str:
    text = plain_text(description)
    if not text or len(text) > MAX_DESCRIPTION:
        raise ValidationFailed.for_field("description", "invalid", f"异议说明应为 1–{MAX_DESCRIPTION} 个字符")
    return text


def _check_correctable(certificate: Certificate) -> None:
    if certificate.status == SUPERSEDED:
        raise Conflict("该证照已有更新版本，请对最新版本提出异议", code="objection_certificate_superseded")
    if certificate.status == REVOKED:
        raise Conflict("该证照已注销，不能再更正", code="objection_certificate_revoked")


# -- filing -----------------------------------------------------------------------------------------------

def _context(objection: Objection, column: str) -> str:
    return f"objection:{objection.public_id}:{column}"


def _new_objection(session: Session, cipher: FieldCipher, certificate: Certificate, *, disputed: list[dict[str, str]],
                   description: str, now: datetime, calendar: WorkingCalendar, filer_kind: str) -> Objection:
    policy = deadline_policy(certificate.certificate_type)
    objection = Objection(
        public_id=new_public_id(), certificate_id=certificate.id, department_id=certificate.issuer_department_id,
        filer_kind=filer_kind, status=SUBMITTED, evidence_count=0,
        acknowledge_due_at=calendar.deadline(now, policy.acknowledge_days),
        resolve_due_at=calendar.deadline(now, policy.resolve_days), created_at=now, updated_at=now,
    )
    objection.disputed_enc = cipher.encrypt(json.dumps(disputed, ensure_ascii=False), _context(objection, "disputed"))
    objection.description_enc = cipher.encrypt(description, _context(objection, "description"))
    objection.certificate = certificate
    return objection


def _filed(session: Session, objection: Objection, certificate: Certificate, *, actor: Actor, now: datetime,
           disputed: list[dict[str, str]]) -> None:
    session.add(timeline_event(objection, "filed", None, actor=actor, now=now))
    session.add(Notification(
        public_id=new_public_id(), department_id=objection.department_id, certificate_id=certificate.id,
        kind="objection_filed", title=f"新的异议：{certificate.certificate_type.name}",
        body=f"收到关于{certificate.certificate_type.name}（{certificate.identifier}）的异议，"
             f"请于 {china_clock(objection.acknowledge_due_at)} 前受理。",
        data={"objection_id": objection.public_id, "identifier": certificate.identifier}, created_at=now))
    record_event(session, actor=actor, action="objection.filed", now=now, object_type="objection",
                 object_id=objection.public_id,
                 details={"certificate": certificate.identifier, "filer": objection.filer_kind,
                          "fields": [d["field"] for d in disputed], "evidence": objection.evidence_count})


def _open_duplicate(session: Session, certificate: Certificate, **filer: Any) -> None:
    duplicate = session.scalar(select(Objection.public_id).filter_by(certificate_id=certificate.id, **filer)
                               .where(Objection.status.in_(OPEN_STATES)))
    if duplicate is not None:
        raise Conflict("您对该证照的异议仍在处理中，请勿重复提交", code="objection_already_open",
                       details={"objection_id": duplicate})


def file_objection(session: Session, cipher: FieldCipher, storage: EvidenceStorage, *, certificate: Certificate,
                   filer: Actor, holder: Holder, disputed: Sequence[DisputedField], description: str,
                   evidence: Sequence[bytes], now: datetime, calendar: WorkingCalendar,
                   max_files: int = MAX_FILES) -> Objection:
    """A citizen's objection about a certificate they hold or represent (the caller found it through the
    holder's wallet: anyone else's is a 404 there). Evidence images are cleaned before anything is written."""
    _check_correctable(certificate)
    check_count(len(evidence), max_files)
    cleaned = [clean_image(data, position=n) for n, data in enumerate(evidence, 1)]
    checked = _check_disputed(session, certificate, disputed)
    text = _check_description(description)
    _open_duplicate(session, certificate, filer_holder_id=holder.id)
    _check_changed(cipher, certificate, checked)
    objection = _new_objection(session, cipher, certificate, disputed=checked, description=text, now=now,
                               calendar=calendar, filer_kind="citizen")
    objection.filer_holder_id = holder.id
    session.add(objection)
    session.flush()
    for position, image in enumerate(cleaned, 1):
        key = new_storage_key(objection.public_id)
        # Written before the commit (never a row without its file); a caller whose transaction then fails removes
        # what it wrote (miniapp_api/objections.py does, after the request).
        storage.put(key, image.data)
        session.add(ObjectionEvidence(objection_id=objection.id, position=position, storage_key=key,
                                      media_type=image.media_type, width=image.width, height=image.height,
                                      size=len(image.data), digest=cipher.keyed_digest(image.data, "evidence"),
                                      created_at=now))
    objection.evidence_count = len(cleaned)
    _filed(session, objection, certificate, actor=filer, now=now, disputed=checked)
    session.add(_filer_notification(objection, holder.id_index, None, "objection_received", now=now))
    session.flush()
    return objection


@dataclass(frozen=True)
class SeenFields:
    """What a department client was shown of a certificate within the report window, by disputable field name
    (`holder.name`, face fields): `shown` it may dispute; `in_full` of those it saw unmasked (granted to it or
    presented to it, not a show code's masked view)."""

    shown: frozenset[str]
    in_full: frozenset[str]


def _disputable(claim: str) -> str | None:
    """The disputable field a shown claim (`holder.name`, `face.x`) stands for; None for the others
    (holder code, certificate number: not disputable)."""
    if claim == HOLDER_NAME_FIELD:
        return claim
    return claim.removeprefix("face.") if claim.startswith("face.") else None


def fields_seen_by(session: Session, client: ApiClient, certificate: Certificate, *, now: datetime,
                   window: timedelta = REPORT_WINDOW) -> SeenFields | None:
    """The fields this client (not merely its department) was shown of the certificate within `window`; None when
    it had no contact that showed data at all.

    A contact is a check of a show code of it that showed fields (masked), a grant redeemed for it (the usage
    records list the fields) or a presentation of it verified with a valid verdict (audit `certificate.verified`,
    mode presentation, with the disclosed claims). Verifying by identifier alone shows no data and does not count,
    so knowing an identifier is not enough to put work into another department's queue.
    """
    since = now - window
    shown: set[str] = set()
    in_full: set[str] = set()
    contact = False
    for kind, fields in session.execute(select(UsageRecord.kind, UsageRecord.fields).where(
            UsageRecord.certificate_id == certificate.id, UsageRecord.verifier_kind == "client",
            UsageRecord.verifier_id == client.client_id, UsageRecord.occurred_at >= since)):
        if not fields:
            continue  # a code of a certificate that was not valid shows nothing
        contact = True
        names = {name for name in map(_disputable, fields) if name}
        shown |= names
        if kind != showcodes.USAGE_KIND:
            in_full |= names
    verified = session.scalars(select(AuditEvent.details).where(
        AuditEvent.object_id == certificate.identifier, AuditEvent.action == "certificate.verified",
        AuditEvent.actor_type == "client", AuditEvent.actor_id == client.client_id,
        AuditEvent.outcome == "success", AuditEvent.occurred_at >= since))
    for details in verified:
        if details.get("mode") == "presentation":
            contact = True
            names = {name for name in map(_disputable, details.get("disclosed") or []) if name}
            shown |= names
            in_full |= names
    return SeenFields(frozenset(shown), frozenset(in_full)) if contact else None


def client_has_seen(session: Session, client: ApiClient, certificate: Certificate, *, now: datetime,
                    window: timedelta = REPORT_WINDOW) -> bool:
    """Has this client legitimately seen the certificate's data within `window` (`fields_seen_by`)?"""
    return fields_seen_by(session, client, certificate, now=now, window=window) is not None


def report_objection(session: Session, cipher: FieldCipher, *, certificate_identifier: str, client: ApiClient,
                     actor: Actor, disputed: Sequence[DisputedField], description: str, now: datetime,
                     calendar: WorkingCalendar, window: timedelta = REPORT_WINDOW) -> Objection:
    """A department client reports a data problem about a certificate it has seen (`fields_seen_by`); a
    certificate it has not seen is a 404, as if it did not exist.

    It may dispute only the fields it was shown (else 422 `not_shown`, whatever the claimed value), and no answer
    depends on a value it did not see: the checks run by names first, then the duplicate check, and a claim is
    compared with the certificate only for a field the client saw in full. The answer echoes no current value.
    """
    ident = parse_identifier(certificate_identifier, field="certificate_identifier")
    certificate = session.scalar(select(Certificate).where(Certificate.identifier == ident.value)
                                 .options(selectinload(Certificate.certificate_type)))
    seen = None if certificate is None else fields_seen_by(session, client, certificate, now=now, window=window)
    if certificate is None or seen is None:
        raise NotFound("证照不存在，或本系统近期未核验过该证照", code="certificate_not_seen",
                       details={"window_days": window.days})
    _check_correctable(certificate)
    checked = _check_disputed(session, certificate, disputed, shown=seen.shown)
    text = _check_description(description)
    _open_duplicate(session, certificate, filer_department_id=client.department_id)
    _check_changed(cipher, certificate, checked, known=seen.in_full)
    objection = _new_objection(session, cipher, certificate, disputed=checked, description=text, now=now,
                               calendar=calendar, filer_kind="department")
    objection.filer_department_id = client.department_id
    objection.filer_client_id = client.client_id
    session.add(objection)
    session.flush()
    _filed(session, objection, certificate, actor=actor, now=now, disputed=checked)
    session.add(_filer_notification(objection, None, client.department_id, "objection_received", now=now))
    session.add(_holder_reported_notification(certificate, client.department, now=now))
    session.flush()
    return objection


def _holder_reported_notification(certificate: Certificate, reporter: Department, *, now: datetime) -> Notification:
    """The holder learns that a department reported a problem with their certificate: who reported it and which
    certificate, nothing of what was claimed (the report's values and statement are the reporter's)."""
    title, body = HOLDER_REPORTED
    values = {"name": certificate.certificate_type.name, "reporter": reporter.name, "issuer": certificate.issuer.name}
    return Notification(public_id=new_public_id(), holder_index=certificate.holder_index,
                        certificate_id=certificate.id, kind="objection_reported", title=title.format(**values),
                        body=body.format(**values),
                        data={"identifier": certificate.identifier, "department": reporter.code}, created_at=now)


# -- finding ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ObjectionPage:
    items: list[Objection]
    next_cursor: str | None


_WITH_CERTIFICATE = (selectinload(Objection.certificate).selectinload(Certificate.certificate_type),
                     selectinload(Objection.department))


def department_queue(session: Session, *, department: Department | None, status: str | None = None,
                     limit: int = 20, cursor: str | None = None, now: datetime | None = None) -> ObjectionPage:
    """The objections in a department's queue (None: every department's, for city administrators), newest first.
    `now` is accepted for symmetry with the views; overdue flags come from `overdue(objection, now)`."""
    stmt = select(Objection).options(*_WITH_CERTIFICATE)
    if department is not None:
        stmt = stmt.where(Objection.department_id == department.id)
    if status is not None:
        stmt = stmt.where(Objection.status == status)
    items, next_cursor = keyset_page(session, stmt, Objection.created_at, Objection.public_id, limit=limit,
                                     cursor=cursor)
    return ObjectionPage(items, next_cursor)


def get_for_department(session: Session, public_id: str, *, department: Department | None) -> Objection:
    """One objection of the department's queue (None: any, for city administrators); others are 404."""
    objection = session.scalar(select(Objection).where(Objection.public_id == public_id).options(*_WITH_CERTIFICATE))
    if objection is None or (department is not None and objection.department_id != department.id):
        raise ObjectionNotFound()
    return objection


def holder_objections(session: Session, *, holder: Holder, status: str | None = None, limit: int = 20,
                      cursor: str | None = None) -> ObjectionPage:
    """The objections the holder filed, newest first."""
    stmt = select(Objection).where(Objection.filer_holder_id == holder.id).options(*_WITH_CERTIFICATE)
    if status is not None:
        stmt = stmt.where(Objection.status == status)
    items, next_cursor = keyset_page(session, stmt, Objection.created_at, Objection.public_id, limit=limit,
                                     cursor=cursor)
    return ObjectionPage(items, next_cursor)


def get_for_holder(session: Session, public_id: str, *, holder: Holder) -> Objection:
    """One of the objections the holder filed; anyone else's is a 404."""
    objection = session.scalar(select(Objection).where(Objection.public_id == public_id).options(*_WITH_CERTIFICATE))
    if objection is None or objection.filer_holder_id != holder.id:
        raise ObjectionNotFound()
    return objection


def escalated_ids(session: Session, objections: Sequence[Objection]) -> set[int]:
    """Ids of the objections among these that were escalated for a missed deadline (for a queue's badges)."""
    ids = [o.id for o in objections]
    if not ids:
        return set()
    return set(session.scalars(select(ObjectionEscalation.objection_id)
                               .where(ObjectionEscalation.objection_id.in_(ids))))


# -- transitions ------------------------------------------------------------------------------------------

def timeline_event(objection: Objection, event: str, from_status: str | None, *, actor: Actor, now: datetime,
           note: str | None = None) -> ObjectionEvent:
    return ObjectionEvent(objection_id=objection.id, event=event, from_status=from_status, to_status=objection.status,
                          note=note, actor=f"{actor.kind}:{actor.id}"[:80], occurred_at=now)


FILER_MESSAGES = {
    "objection_received": ("异议已提交", "您对{name}的异议已提交{department}，将于 {due} 前受理。"),
    "objection_accepted": ("异议已受理", "{department}已受理您对{name}的异议，将于 {due} 前处理完毕。"),
    "objection_rejected": ("异议未被采纳", "{department}未采纳您对{name}的异议。原因：{note}"),
    "objection_resolved": ("异议已更正", "{department}已更正您的{name}（第 {version} 版），请在卡包中查看新版本。"),
}


def _filer_notification(objection: Objection, holder_index: str | None, department_id: int | None, kind: str, *,
                        now: datetime, note: str = "", version: int | None = None) -> Notification:
    certificate = objection.certificate
    title, body = FILER_MESSAGES[kind]
    due = objection.acknowledge_due_at if kind == "objection_received" else objection.resolve_due_at
    text = body.format(name=certificate.certificate_type.name, department=objection.department.name,
                       due=china_clock(due), note=note, version=version or certificate.version)
    data: dict[str, Any] = {"objection_id": objection.public_id, "identifier": certificate.identifier,
                            "status": objection.status}
    if objection.corrected_certificate is not None:
        data["corrected_identifier"] = objection.corrected_certificate.identifier
    return Notification(public_id=new_public_id(), holder_index=holder_index, department_id=department_id,
                        certificate_id=certificate.id, kind=kind, title=title, body=text, data=data, created_at=now)


def _notify_filer(session: Session, objection: Objection, kind: str, *, now: datetime, note: str = "",
                  version: int | None = None) -> None:
    if objection.filer_holder_id is not None:
        holder = session.get_one(Holder, objection.filer_holder_id)
        session.add(_filer_notification(objection, holder.id_index, None, kind, now=now, note=note, version=version))
    elif objection.filer_department_id is not None:
        session.add(_filer_notification(objection, None, objection.filer_department_id, kind, now=now, note=note,
                                        version=version))


def _transition(session: Session, objection: Objection, *, to: str, event: str, allowed: tuple[str, ...],
                actor: Actor, now: datetime, note: str | None = None, details: dict[str, Any] | None = None) -> str:
    session.refresh(objection, with_for_update=True)  # concurrent answers serialise on the row (PostgreSQL)
    if objection.status not in allowed:
        raise ObjectionTransitionConflict(
            f"异议当前状态为「{STATUS_LABELS[objection.status]}」，不能{EVENT_LABELS[event]}",
            details={"status": objection.status, "event": event})
    previous = objection.status
    # Conditional on the state just read: on SQLite (no row locks) a concurrent answer may have committed since.
    changed = session.execute(
        update(Objection).where(Objection.id == objection.id, Objection.status == previous)
        .values(status=to, updated_at=now, acknowledged_at=objection.acknowledged_at or now,
                closed_at=now if to in (REJECTED, RESOLVED) else None)
        .returning(Objection.id), execution_options={"synchronize_session": "fetch"}).first()
    if changed is None:
        raise ObjectionTransitionConflict("异议状态已被同时处理，请刷新后重试",
                                          details={"status": "changed", "event": event})
    session.refresh(objection)
    session.add(timeline_event(objection, event, previous, actor=actor, now=now, note=note))
    record_event(session, actor=actor, action=f"objection.{event}", now=now, object_type="objection",
                 object_id=objection.public_id,
                 details={"from": previous, "to": to, "certificate": objection.certificate.identifier,
                          **(details or {})})
    return previous


def accept_objection(session: Session, objection: Objection, *, actor: Actor, now: datetime) -> Objection:
    """受理: the department takes the objection up (submitted → in progress)."""
    _transition(session, objection, to=IN_PROGRESS, event="accepted", allowed=(SUBMITTED,), actor=actor, now=now)
    _notify_filer(session, objection, "objection_accepted", now=now)
    session.flush()
    return objection


def reject_objection(session: Session, objection: Objection, *, reason: str, actor: Actor,
                     now: datetime) -> Objection:
    """驳回: the data is right; `reason` is shown to the filer. Possible before or after accepting."""
    text = plain_text(reason)
    if not text or len(text) > MAX_ANSWER:
        raise ValidationFailed.for_field("reason", "invalid", f"驳回原因应为 1–{MAX_ANSWER} 个字符")
    _transition(session, objection, to=REJECTED, event="rejected", allowed=OPEN_STATES, actor=actor, now=now,
                note=text)
    objection.answer = text
    _notify_filer(session, objection, "objection_rejected", now=now, note=text)
    session.flush()
    return objection


class CorrectionRefused(ValidationFailed):
    code = "objection_correction_invalid"
    message = "更正后的证照不是所异议证照的新版本"


def corrected_version(session: Session, objection: Objection, identifier: str) -> Certificate:
    """The version `identifier` names, which must be a newer version (same type, issuer and serial) of the disputed
    certificate, made by a reissue; anything else is a 422 on `corrected_identifier`."""
    ident = parse_identifier(identifier, field="corrected_identifier")
    disputed = objection.certificate
    corrected = session.scalar(select(Certificate).where(Certificate.identifier == ident.value))

    def refused(reason: str, message: str) -> CorrectionRefused:
        return CorrectionRefused(message, details={"fields": [{"field": "corrected_identifier", "reason": reason}]})

    if corrected is None:
        raise refused("not_found", "更正后的证照不存在：请先换发（reissue）证照，再以新版本的证照标识办结异议")
    if (corrected.certificate_type_id, corrected.issuer_department_id, corrected.serial) != \
            (disputed.certificate_type_id, disputed.issuer_department_id, disputed.serial):
        raise refused("other_certificate", "更正后的证照与所异议的证照不是同一证照")
    if corrected.version <= disputed.version:
        raise refused("not_newer", f"更正后的证照须是第 {disputed.version} 版之后的新版本")
    if corrected.status == SUPERSEDED:
        raise refused("superseded", "更正后的证照已被更新，请使用最新版本的证照标识")
    return corrected


def resolve_objection(session: Session, objection: Objection, *, corrected_identifier: str, actor: Actor,
                      now: datetime, note: str | None = None) -> Objection:
    """办结: link the corrected version made by the reissue endpoint (the disputed one is superseded by then)."""
    corrected = corrected_version(session, objection, corrected_identifier)
    text = plain_text(note)[:MAX_ANSWER] if note else None
    text = text or None
    _transition(session, objection, to=RESOLVED, event="resolved", allowed=OPEN_STATES, actor=actor, now=now,
                note=text, details={"corrected": corrected.identifier})
    objection.corrected_certificate = corrected
    objection.corrected_certificate_id = corrected.id
    objection.answer = text
    _notify_filer(session, objection, "objection_resolved", now=now, version=corrected.version)
    session.flush()
    return objection


# -- reading ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Overdue:
    acknowledge: bool
    resolve: bool

    @property
    def any(self) -> bool:
        return self.acknowledge or self.resolve


def overdue(objection: Objection, now: datetime) -> Overdue:
    """Past a deadline and still waiting for that step: not yet accepted, or not yet closed."""
    return Overdue(acknowledge=objection.status == SUBMITTED and now >= objection.acknowledge_due_at,
                   resolve=objection.status in OPEN_STATES and now >= objection.resolve_due_at)


@dataclass(frozen=True)
class DisputedEntry:
    field: str
    label: str  # Chinese label from the catalog
    current_value: Any
    claimed_value: str


@dataclass(frozen=True)
class TimelineEntry:
    event: str
    label: str
    from_status: str | None
    to_status: str
    note: str | None
    actor_kind: str  # citizen | client | staff | system …
    occurred_at: datetime


@dataclass(frozen=True)
class EvidenceEntry:
    position: int
    media_type: str
    width: int
    height: int
    size: int


@dataclass(frozen=True)
class CertificateRef:
    public_id: str
    identifier: str
    version: int
    status: str


@dataclass(frozen=True)
class ObjectionView:
    """Everything a page or an API answer shows about one objection (decrypted)."""

    objection: Objection
    public_id: str
    status: str
    status_label: str
    type_code: str
    type_name: str
    certificate: CertificateRef
    department_code: str
    department_name: str
    filer_kind: str
    filer_label: str
    filer_department_name: str | None
    disputed: list[DisputedEntry]
    description: str
    answer: str | None
    acknowledge_due_at: datetime
    resolve_due_at: datetime
    acknowledged_at: datetime | None
    closed_at: datetime | None
    overdue: Overdue
    timeline: list[TimelineEntry]
    evidence: list[EvidenceEntry]
    evidence_count: int
    corrected: CertificateRef | None
    escalations: list[str] = field(default_factory=list)
    created_at: datetime | None = None


def _ref(certificate: Certificate) -> CertificateRef:
    return CertificateRef(certificate.public_id, certificate.identifier, certificate.version, certificate.status)


def disputed_fields(cipher: FieldCipher, objection: Objection) -> list[dict[str, str]]:
    loaded: list[dict[str, str]] = json.loads(cipher.decrypt(objection.disputed_enc, _context(objection, "disputed")))
    return loaded


def objection_view(session: Session, cipher: FieldCipher, objection: Objection, *, now: datetime,
                   actor: Actor | None = None, current_values: bool = True) -> ObjectionView:
    """Decrypt one objection for display. With `actor` (staff, a department client) the reading is audited
    (objection.viewed): the filer's statement and the certificate's values are personal data. Without
    `current_values` (for a reporting department, which may not have seen them) every `current_value` is None."""
    certificate = objection.certificate
    labels = _field_labels(session, certificate)
    current = _current_values(cipher, certificate) if current_values else {}
    disputed = [DisputedEntry(d["field"], labels.get(d["field"], d["field"]), current.get(d["field"]),
                              d["claimed_value"]) for d in disputed_fields(cipher, objection)]
    description = cipher.decrypt(objection.description_enc, _context(objection, "description"))
    timeline = [TimelineEntry(e.event, EVENT_LABELS.get(e.event, e.event), e.from_status, e.to_status, e.note,
                              e.actor.partition(":")[0], e.occurred_at) for e in objection.events]
    escalations = list(session.scalars(select(ObjectionEscalation.level).where(
        ObjectionEscalation.objection_id == objection.id).order_by(ObjectionEscalation.id)))
    if actor is not None:
        record_event(session, actor=actor, action="objection.viewed", now=now, object_type="objection",
                     object_id=objection.public_id, details={"certificate": certificate.identifier})
    return ObjectionView(
        objection=objection, public_id=objection.public_id, status=objection.status,
        status_label=STATUS_LABELS[objection.status], type_code=certificate.certificate_type.type_code,
        type_name=certificate.certificate_type.name, certificate=_ref(certificate),
        department_code=objection.department.code, department_name=objection.department.name,
        filer_kind=objection.filer_kind, filer_label=FILER_LABELS.get(objection.filer_kind, objection.filer_kind),
        filer_department_name=objection.filer_department.name if objection.filer_department else None,
        disputed=disputed, description=description, answer=objection.answer,
        acknowledge_due_at=objection.acknowledge_due_at, resolve_due_at=objection.resolve_due_at,
        acknowledged_at=objection.acknowledged_at, closed_at=objection.closed_at, overdue=overdue(objection, now),
        timeline=timeline,
        evidence=[EvidenceEntry(e.position, e.media_type, e.width, e.height, e.size) for e in objection.evidence],
        evidence_count=objection.evidence_count,
        corrected=_ref(objection.corrected_certificate) if objection.corrected_certificate else None,
        escalations=escalations, created_at=objection.created_at,
    )


@dataclass(frozen=True)
class EvidenceFile:
    data: bytes
    media_type: str


def evidence_file(storage: EvidenceStorage, objection: Objection, n: int) -> EvidenceFile:
    """The n-th (1-based) cleaned evidence image and its media type; a position without one is a 404."""
    item = next((e for e in objection.evidence if e.position == n), None)
    if item is None:
        raise EvidenceNotFound()
    return EvidenceFile(storage.get(item.storage_key), item.media_type)


def evidence_image(storage: EvidenceStorage, objection: Objection, n: int) -> bytes:
    """The n-th (1-based) cleaned evidence image as stored (metadata already stripped at upload)."""
    return evidence_file(storage, objection, n).data


def record_evidence_viewed(session: Session, objection: Objection, n: int, *, actor: Actor, now: datetime) -> None:
    """Audit a reading of an evidence image (personal data: the photos may show documents or faces)."""
    record_event(session, actor=actor, action="objection.evidence_viewed", now=now, object_type="objection",
                 object_id=objection.public_id, details={"n": n})


def reseal_evidence(session: Session, storage: SealedEvidenceStorage, *, batch_size: int = 500) -> int:
    """After a data key rotation: re-encrypt every evidence file still sealed under an older key (idempotent).
    Returns how many files were re-sealed."""
    resealed, last_id = 0, 0
    while keys := session.execute(select(ObjectionEvidence.id, ObjectionEvidence.storage_key)
                                  .where(ObjectionEvidence.id > last_id).order_by(ObjectionEvidence.id)
                                  .limit(batch_size)).all():
        last_id = keys[-1][0]
        resealed += sum(storage.reseal(key) for _, key in keys)
    return resealed
