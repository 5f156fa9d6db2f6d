"""Objections (异议) from the citizen's side: file one about a certificate they hold or represent, with evidence
photos; follow its status timeline, the department's answer and the corrected certificate (/api/v1/objections)."""

from __future__ import annotations

import logging
from typing import Any, Literal

from flask import Response, g, jsonify, request
from flask_openapi3 import APIBlueprint, FileStorage, Tag
from pydantic import BaseModel, Field, TypeAdapter, ValidationError, field_validator, model_validator
from sqlalchemy import select

from backend.auth.citizens import CITIZEN_SECURITY, require_citizen
from backend.core.context import evidence_storage, field_cipher, now, representation_max_age, working_calendar
from backend.core.storage import EvidenceStorage
from backend.extensions import db
from backend.models.objections import Objection, ObjectionEvidence
from backend.objections import answers as objection_answers
from backend.objections import checks as objection_checks
from backend.objections import evidence as objection_evidence
from backend.objections import filing as objection_filing
from backend.objections import queue as objection_queue
from backend.objections import views as objection_views
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, CURSOR_FIELD, LIMIT_FIELD, StrictModel, error_responses
from backend.wallet.queries import find_holder_certificate

log = logging.getLogger("ecert.objections")

bp = APIBlueprint("citizen_objections", __name__, url_prefix="/api/v1/objections",
                  abp_tags=[Tag(name="objections", description="异议申请")], abp_security=CITIZEN_SECURITY)

ObjectionStatus = Literal["submitted", "in_progress", "rejected", "resolved"]
FaceValue = str | int | float | bool | None
# The multipart body: every evidence file at its cap, and room for the text fields.
MAX_UPLOAD_BYTES = objection_evidence.MAX_FILES * objection_evidence.MAX_FILE_BYTES + 512 * 1024
_TEXT_FIELDS = ("certificate_id", "disputed", "description")


class CitizenDisputedIn(StrictModel):
    field: str = Field(min_length=1, max_length=64, description="the face field's name, or holder.name")
    claimed_value: str = Field(min_length=1, max_length=objection_checks.MAX_CLAIMED_LENGTH,
                               description="what the value should be")


_DISPUTED = TypeAdapter(list[CitizenDisputedIn])


class CitizenObjectionForm(StrictModel):
    """multipart/form-data: the certificate, what is wrong, and up to 5 evidence photos (JPEG or PNG, ≤ 5 MB each)."""

    certificate_id: str = Field(min_length=1, max_length=64, description="the certificate's wallet id")
    disputed: str = Field(min_length=2, max_length=20_000,
                          description='JSON: [{"field": "address", "claimed_value": "…"}], 1–20 fields')
    description: str = Field(min_length=1, max_length=objection_checks.MAX_DESCRIPTION, description="异议说明")
    evidence: list[FileStorage] = Field(default_factory=list,
                                        description="up to 5 JPEG or PNG images, ≤ 5 MB each; metadata is removed")

    @model_validator(mode="before")
    @classmethod
    def _raw_text(cls, data: Any) -> Any:
        """flask-openapi3 JSON-decodes every form value ("123" becomes 123): take the text fields as sent."""
        if isinstance(data, dict) and request:
            return {**data, **{name: request.form[name] for name in _TEXT_FIELDS if name in request.form}}
        return data

    @field_validator("disputed")
    @classmethod
    def _disputed_json(cls, value: str) -> str:
        try:
            items = _DISPUTED.validate_json(value)
        except ValidationError as exc:
            raise ValueError('disputed must be a JSON list like [{"field": …, "claimed_value": …}]') from exc
        if not 1 <= len(items) <= objection_checks.MAX_DISPUTED:
            raise ValueError(f"disputed must list 1–{objection_checks.MAX_DISPUTED} fields")
        return value

    def disputed_fields(self) -> list[objection_checks.DisputedField]:
        items = _DISPUTED.validate_json(self.disputed)
        return [objection_checks.DisputedField(item.field, item.claimed_value) for item in items]


class CitizenObjectionQuery(StrictModel):
    status: ObjectionStatus | None = Field(default=None, description="only objections in this state")
    limit: int = LIMIT_FIELD
    cursor: str | None = CURSOR_FIELD


class CitizenObjectionPath(BaseModel):
    objection_id: str = Field(max_length=64, description="the objection's id")


class CitizenCertificateRefOut(BaseModel):
    id: str = Field(description="wallet id of this version (GET /api/v1/wallet/certificates/{id})")
    identifier: str = Field(description="证照标识")
    version: int
    status: str


class CitizenDepartmentOut(BaseModel):
    code: str = Field(description="统一社会信用代码 of the issuing department handling the objection")
    name: str


class CitizenDeadlinesOut(BaseModel):
    acknowledge_by: str = Field(description="the department must accept (受理) by then (ISO 8601)")
    resolve_by: str = Field(description="the department must answer by then (ISO 8601)")
    acknowledge_overdue: bool
    resolve_overdue: bool


class CitizenDisputedOut(BaseModel):
    field: str
    label: str = Field(description="Chinese label from the catalog")
    current_value: FaceValue = Field(description="the value on the disputed version")
    claimed_value: str


class CitizenTimelineOut(BaseModel):
    event: str = Field(description="filed | accepted | rejected | resolved | escalated")
    label: str
    from_status: str | None
    to_status: str
    note: str | None = Field(description="the rejection reason or a note from the department")
    occurred_at: str


class CitizenObjectionSummary(BaseModel):
    id: str
    status: ObjectionStatus
    status_label: str = Field(description="待受理 / 处理中 / 已驳回 / 已更正")
    type_name: str
    certificate: CitizenCertificateRefOut
    department: CitizenDepartmentOut
    deadlines: CitizenDeadlinesOut
    created_at: str


class CitizenObjectionDetail(CitizenObjectionSummary):
    disputed: list[CitizenDisputedOut]
    description: str
    answer: str | None = Field(description="the department's answer: the rejection reason, or its note on resolving")
    acknowledged_at: str | None
    closed_at: str | None
    evidence_count: int
    timeline: list[CitizenTimelineOut] = Field(description="every status change, oldest first")
    corrected_certificate: CitizenCertificateRefOut | None = Field(
        description="the corrected version once resolved; open it in the wallet")


class CitizenObjectionList(BaseModel):
    items: list[CitizenObjectionSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _summary(objection: Objection) -> dict[str, Any]:
    certificate, moment = objection.certificate, now()
    late = objection_views.overdue(objection, moment)
    return {
        "id": objection.public_id, "status": objection.status,
        "status_label": objection_answers.STATUS_LABELS[objection.status],
        "type_name": certificate.certificate_type.name,
        "certificate": CitizenCertificateRefOut(id=certificate.public_id, identifier=certificate.identifier,
                                         version=certificate.version, status=certificate.status),
        "department": CitizenDepartmentOut(code=objection.department.code, name=objection.department.name),
        "deadlines": CitizenDeadlinesOut(acknowledge_by=objection.acknowledge_due_at.isoformat(),
                                  resolve_by=objection.resolve_due_at.isoformat(),
                                  acknowledge_overdue=late.acknowledge, resolve_overdue=late.resolve),
        "created_at": objection.created_at.isoformat(),
    }


def _detail(objection: Objection) -> dict[str, Any]:
    view = objection_views.objection_view(db.session(), field_cipher(), objection, now=now())
    corrected = view.corrected
    return CitizenObjectionDetail(
        **_summary(objection),
        disputed=[CitizenDisputedOut(field=d.field, label=d.label, current_value=d.current_value,
                              claimed_value=d.claimed_value) for d in view.disputed],
        description=view.description, answer=view.answer, acknowledged_at=_iso(view.acknowledged_at),
        closed_at=_iso(view.closed_at), evidence_count=view.evidence_count,
        timeline=[CitizenTimelineOut(event=t.event, label=t.label, from_status=t.from_status, to_status=t.to_status,
                              note=t.note, occurred_at=t.occurred_at.isoformat()) for t in view.timeline],
        corrected_certificate=CitizenCertificateRefOut(id=corrected.public_id, identifier=corrected.identifier,
                                                version=corrected.version, status=corrected.status)
        if corrected else None,
    ).model_dump()


def _read_file(upload: Any) -> bytes:
    """At most one byte past the cap: enough to refuse a larger file without reading it all."""
    data: bytes = upload.stream.read(objection_evidence.MAX_FILE_BYTES + 1)
    return data


class _TrackedStorage:
    """The evidence storage, remembering what this request wrote (see `_forget_unfiled`)."""

    def __init__(self, inner: EvidenceStorage) -> None:
        self.inner = inner
        self.written: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        self.written.append(key)
        self.inner.put(key, data)

    def get(self, key: str) -> bytes:
        return self.inner.get(key)

    def delete(self, key: str) -> None:
        self.inner.delete(key)


@bp.teardown_request
def _forget_unfiled(_: BaseException | None) -> None:
    """Files are written before the request's one commit: if the objection did not make it into the database
    (an error, a failed commit), its files go too, so no sealed image lingers without a row."""
    written: list[str] = g.pop("evidence_written", [])
    if not written:
        return
    try:
        kept = set(db.session.scalars(select(ObjectionEvidence.storage_key)
                                      .where(ObjectionEvidence.storage_key.in_(written))))
        db.session.rollback()
        storage = evidence_storage()
        for key in set(written) - kept:
            storage.delete(key)
    except Exception:  # a teardown must not fail the response; the files are sealed and unreferenced
        log.exception("could not remove evidence files of a failed filing")


@bp.before_request
def _upload_cap() -> None:
    """Filing carries photos: its body may be larger than the 1 MiB of ordinary requests (still capped)."""
    if request.method == "POST":
        request.max_content_length = MAX_UPLOAD_BYTES


@bp.post("", responses={201: CitizenObjectionDetail, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 409, 422)})
@require_citizen
def file_objection(form: CitizenObjectionForm) -> Response:
    """File an objection (异议) about a certificate the holder holds or represents; it goes to the issuing
    department's queue. Evidence: JPEG or PNG by content, ≤ 5 MB each, at most 5; EXIF/GPS and all other metadata
    are removed. Answers the objection with its deadlines."""
    session, moment = db.session(), now()
    certificate = find_holder_certificate(session, g.holder, form.certificate_id, now=moment,
                                          max_age=representation_max_age())
    objection_evidence.check_count(len(form.evidence))
    files = [_read_file(upload) for upload in form.evidence]
    storage = _TrackedStorage(evidence_storage())
    g.evidence_written = storage.written
    filing = objection_filing.ObjectionInput(form.disputed_fields(), form.description, files)
    objection = objection_filing.file_objection(
        session, field_cipher(), storage, certificate=certificate, holder=g.holder, filing=filing, actor=g.actor,
        now=moment, calendar=working_calendar())
    response = jsonify(_detail(objection))
    response.status_code = 201
    return response


@bp.get("", responses={200: CitizenObjectionList, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 422)})
@require_citizen
def list_objections(query: CitizenObjectionQuery) -> Response:
    """The objections the holder filed, newest first, paginated by cursor."""
    page = objection_queue.holder_objections(db.session(), holder=g.holder, status=query.status, limit=query.limit,
                                             cursor=query.cursor)
    return jsonify(CitizenObjectionList(items=[CitizenObjectionSummary(**_summary(o)) for o in page.items],
                                 next_cursor=page.next_cursor).model_dump())


@bp.get("/<objection_id>",
        responses={200: CitizenObjectionDetail, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 422)})
@require_citizen
def read_objection(path: CitizenObjectionPath) -> Response:
    """One of the holder's objections: status timeline, the department's answer, the corrected certificate."""
    objection = objection_queue.get_for_holder(db.session(), path.objection_id, holder=g.holder)
    return jsonify(_detail(objection))
