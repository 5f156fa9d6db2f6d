"""Reading an objection: `ObjectionView` (decrypted, with labels, timeline, evidence and overdue flags)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.audit.chain import record_event
from backend.crypto.encryption import FieldCipher
from backend.kernel.actors import Actor
from backend.models import Certificate
from backend.models.objections import OPEN_STATES, SUBMITTED, Objection, ObjectionEscalation
from backend.objections.answers import EVENT_LABELS, STATUS_LABELS
from backend.objections.checks import certificate_values, field_labels
from backend.objections.filing import encryption_context

FILER_LABELS = {"citizen": "持证人", "department": "用证部门"}


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
    loaded: list[dict[str, str]] = json.loads(cipher.decrypt(objection.disputed_enc,
                                                             encryption_context(objection, "disputed")))
    return loaded


def objection_view(session: Session, cipher: FieldCipher, objection: Objection, *, now: datetime,
                   actor: Actor | None = None, current_values: bool = True) -> ObjectionView:
    """Decrypt one objection for display. With `actor` (staff, a department client) the reading is audited
    (objection.viewed): the filer's statement and the certificate's values are personal data. Without
    `current_values` (for a reporting department, which may not have seen them) every `current_value` is None."""
    certificate = objection.certificate
    labels = field_labels(session, certificate)
    current = certificate_values(cipher, certificate) if current_values else {}
    disputed = [DisputedEntry(d["field"], labels.get(d["field"], d["field"]), current.get(d["field"]),
                              d["claimed_value"]) for d in disputed_fields(cipher, objection)]
    description = cipher.decrypt(objection.description_enc, encryption_context(objection, "description"))
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
