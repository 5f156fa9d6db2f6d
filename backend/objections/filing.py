"""Filing an objection: a holder about a certificate they hold or represent, a department client about one it
has seen (`fields_seen_by`); both land in the issuing department's queue."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from backend.audit.chain import record_event
from backend.core.storage import EvidenceStorage, new_storage_key
from backend.crypto.encryption import FieldCipher
from backend.errors import Conflict, NotFound
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_clock
from backend.kernel.identifiers import parse_identifier
from backend.kernel.ids import new_public_id
from backend.kernel.working_days import WorkingCalendar
from backend.models import ApiClient, AuditEvent, Certificate, Department, Holder, Notification, UsageRecord
from backend.models.objections import OPEN_STATES, SUBMITTED, Objection, ObjectionEvidence
from backend.objections.answers import filer_notification, timeline_event
from backend.objections.checks import (
    HOLDER_NAME_FIELD,
    DisputedField,
    check_changed,
    check_correctable,
    check_description,
    check_disputed,
    deadline_policy,
)
from backend.objections.evidence import check_count, clean_image
from backend.wallet import showcodes

# How long after a department client verified a presentation, checked a show code or redeemed a grant it may
# still report a data problem about that certificate.
REPORT_WINDOW = timedelta(days=90)
# To the holder when a department reports a problem with their certificate (the filer is notified apart).
HOLDER_REPORTED = ("有部门反映您的{name}信息有误",
                   "{reporter}反映您的{name}中的信息可能有误，已转{issuer}核实；如需更正，{issuer}将换发新版本并通知您。")


@dataclass(frozen=True)
class ObjectionInput:
    """What the filer says: the fields it disputes with the values it claims, why (说明), and (a holder only) evidence
    images as uploaded."""

    disputed: Sequence[DisputedField]
    description: str
    evidence: Sequence[bytes] = ()


def encryption_context(objection: Objection, column: str) -> str:
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
    objection.disputed_enc = cipher.encrypt(json.dumps(disputed, ensure_ascii=False),
                                            encryption_context(objection, "disputed"))
    objection.description_enc = cipher.encrypt(description, encryption_context(objection, "description"))
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
                   holder: Holder, filing: ObjectionInput, actor: Actor, now: datetime,
                   calendar: WorkingCalendar) -> Objection:
    """A citizen's objection about a certificate they hold or represent (the caller found it through the
    holder's wallet: anyone else's is a 404 there). Evidence images are cleaned before anything is written."""
    check_correctable(certificate)
    check_count(len(filing.evidence))
    cleaned = [clean_image(data, position=n) for n, data in enumerate(filing.evidence, 1)]
    checked = check_disputed(session, certificate, filing.disputed)
    text = check_description(filing.description)
    _open_duplicate(session, certificate, filer_holder_id=holder.id)
    check_changed(cipher, certificate, checked)
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
    _filed(session, objection, certificate, actor=actor, now=now, disputed=checked)
    session.add(filer_notification(objection, holder.id_index, None, "objection_received", now=now))
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
                     filing: ObjectionInput, actor: Actor, now: datetime, calendar: WorkingCalendar,
                     window: timedelta = REPORT_WINDOW) -> Objection:
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
    check_correctable(certificate)
    checked = check_disputed(session, certificate, filing.disputed, shown=seen.shown)
    text = check_description(filing.description)
    _open_duplicate(session, certificate, filer_department_id=client.department_id)
    check_changed(cipher, certificate, checked, known=seen.in_full)
    objection = _new_objection(session, cipher, certificate, disputed=checked, description=text, now=now,
                               calendar=calendar, filer_kind="department")
    objection.filer_department_id = client.department_id
    objection.filer_client_id = client.client_id
    session.add(objection)
    session.flush()
    _filed(session, objection, certificate, actor=actor, now=now, disputed=checked)
    session.add(filer_notification(objection, None, client.department_id, "objection_received", now=now))
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
