"""The department's answers (accept, reject, resolve): each a guarded transition, a timeline row, an audit event
and a notification to the filer, in the caller's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from backend.audit.chain import record_event
from backend.errors import ValidationFailed
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_clock
from backend.kernel.identifiers import parse_identifier
from backend.kernel.ids import new_public_id
from backend.models import Certificate, Holder, Notification
from backend.models.issuance import SUPERSEDED
from backend.models.objections import IN_PROGRESS, OPEN_STATES, REJECTED, RESOLVED, SUBMITTED, Objection, ObjectionEvent
from backend.objections.checks import MAX_ANSWER, plain_text
from backend.objections.errors import CorrectionRefused, ObjectionTransitionConflict

STATUS_LABELS = {SUBMITTED: "待受理", IN_PROGRESS: "处理中", REJECTED: "已驳回", RESOLVED: "已更正"}
EVENT_LABELS = {"filed": "提交异议", "accepted": "部门受理", "rejected": "部门驳回", "resolved": "已更正",
                "escalated": "超时督办"}


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


def filer_notification(objection: Objection, holder_index: str | None, department_id: int | None, kind: str, *,
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
        session.add(filer_notification(objection, holder.id_index, None, kind, now=now, note=note, version=version))
    elif objection.filer_department_id is not None:
        session.add(filer_notification(objection, None, objection.filer_department_id, kind, now=now, note=note,
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
