"""The objection deadline job (`flask --app wsgi jobs objections`): overdue objections are escalated to the city
administrators (牵头单位) and the handling department, once per objection and level."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, selectinload

from backend.audit.chain import record_event
from backend.core.db.once import conflict_insert
from backend.errors import NotFound
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_clock
from backend.kernel.ids import new_public_id
from backend.models import Certificate, Department, Notification
from backend.models.objections import IN_PROGRESS, OPEN_STATES, SUBMITTED, Objection, ObjectionEscalation
from backend.objections.answers import STATUS_LABELS, timeline_event

ACKNOWLEDGE, RESOLVE = "acknowledge", "resolve"
LEVEL_LABELS = {ACKNOWLEDGE: "受理", RESOLVE: "办结"}
BATCH_SIZE = 500


@dataclass(frozen=True)
class EscalationReport:
    acknowledge: int
    resolve: int

    @property
    def total(self) -> int:
        return self.acknowledge + self.resolve


def _due_levels(objection: Objection, now: datetime) -> list[tuple[str, datetime]]:
    levels = []
    if objection.status == SUBMITTED and now >= objection.acknowledge_due_at:
        levels.append((ACKNOWLEDGE, objection.acknowledge_due_at))
    if objection.status in OPEN_STATES and now >= objection.resolve_due_at:
        levels.append((RESOLVE, objection.resolve_due_at))
    return levels


def _insert_escalations(session: Session, rows: list[dict[str, Any]]) -> set[tuple[int, str]]:
    """INSERT … ON CONFLICT DO NOTHING; the (objection id, level) pairs this call inserted."""
    insert = conflict_insert(session.get_bind().dialect.name)
    stmt = (insert(ObjectionEscalation).values(rows)
            .on_conflict_do_nothing(index_elements=["objection_id", "level"])
            .returning(ObjectionEscalation.objection_id, ObjectionEscalation.level))
    return {(objection_id, level) for objection_id, level in session.execute(stmt)}


def _notification(objection: Objection, level: str, due_at: datetime, department_id: int, *, now: datetime,
                  lead: bool) -> Notification:
    certificate = objection.certificate
    step = LEVEL_LABELS[level]
    due = china_clock(due_at)
    if lead:
        title = f"异议超时未{step}：{objection.department.name}"
        body = (f"{objection.department.name}对{certificate.certificate_type.name}（{certificate.identifier}）的异议"
                f"未在时限（{due}）内{step}，当前状态：{STATUS_LABELS[objection.status]}。请督办。")
    else:
        title = f"异议已超时未{step}"
        body = (f"关于{certificate.certificate_type.name}（{certificate.identifier}）的异议未在时限（{due}）内{step}，"
                "已报市牵头单位督办，请尽快处理。")
    return Notification(public_id=new_public_id(), department_id=department_id, certificate_id=certificate.id,
                        kind=f"objection_overdue_{level}", title=title, body=body,
                        data={"objection_id": objection.public_id, "identifier": certificate.identifier,
                              "level": level, "due_at": due_at.isoformat(), "department": objection.department.code},
                        created_at=now)


def escalate_overdue_objections(session: Session, *, lead_department_code: str, actor: Actor, now: datetime,
                                batch_size: int = BATCH_SIZE) -> EscalationReport:
    """Escalate every open objection past a deadline that has not been escalated at that level yet.

    Per escalation: a timeline row, a notification to the city administrators' department and one to the handling
    department, and an audit event. Returns how many escalations this call made (0 on a repeated run).
    """
    lead = session.scalar(select(Department).where(Department.code == lead_department_code))
    if lead is None:
        raise NotFound(f"牵头单位 {lead_department_code} 不在部门目录中（ECERT_OBJECTION_LEAD_DEPARTMENT）",
                       code="lead_department_not_found")
    counts = {ACKNOWLEDGE: 0, RESOLVE: 0}
    overdue = or_(and_(Objection.status == SUBMITTED, Objection.acknowledge_due_at <= now),
                  and_(Objection.status.in_((SUBMITTED, IN_PROGRESS)), Objection.resolve_due_at <= now))
    after_id = 0
    while True:
        batch = list(session.scalars(
            select(Objection).where(overdue, Objection.id > after_id).order_by(Objection.id).limit(batch_size)
            .with_for_update(skip_locked=True, of=Objection)
            .options(selectinload(Objection.certificate).selectinload(Certificate.certificate_type),
                     selectinload(Objection.department))
            .execution_options(populate_existing=True)))
        if not batch:
            break
        after_id = batch[-1].id
        due = [(objection, level, due_at) for objection in batch for level, due_at in _due_levels(objection, now)]
        if not due:
            continue
        inserted = _insert_escalations(session, [{"objection_id": o.id, "level": level, "due_at": due_at,
                                                  "created_at": now} for o, level, due_at in due])
        for objection, level, due_at in due:
            if (objection.id, level) not in inserted:
                continue  # escalated before, or by another node just now
            counts[level] += 1
            session.add(timeline_event(objection, "escalated", objection.status, actor=actor, now=now,
                               note=f"超过{LEVEL_LABELS[level]}时限，已报市牵头单位督办"))
            session.add(_notification(objection, level, due_at, lead.id, now=now, lead=True))
            session.add(_notification(objection, level, due_at, objection.department_id, now=now, lead=False))
            record_event(session, actor=actor, action="objection.escalated", now=now, object_type="objection",
                         object_id=objection.public_id,
                         details={"level": level, "due_at": due_at.isoformat(), "status": objection.status,
                                  "department": objection.department.code, "lead": lead.code})
        session.flush()
    return EscalationReport(counts[ACKNOWLEDGE], counts[RESOLVE])
