"""Objections (异议) for the departments' business systems (/gov/v1/objections): a using department reports a data
problem; the issuing department works its own queue (scope `objections`): read, accept, reject, resolve."""

from __future__ import annotations

from typing import Any, Literal

from flask import Response, current_app, g, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from backend.auth.clients import BEARER_SECURITY, require_any_scope, require_scope
from backend.core.context import evidence_storage, field_cipher, now, working_calendar
from backend.errors import DomainError
from backend.extensions import db, limiter
from backend.kernel.identifiers import parse_identifier
from backend.models.objections import Objection
from backend.objections import answers as objection_answers
from backend.objections import checks as objection_checks
from backend.objections import evidence as objection_evidence
from backend.objections import filing as objection_filing
from backend.objections import queue as objection_queue
from backend.objections import views as objection_views
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, CURSOR_FIELD, LIMIT_FIELD, StrictModel, error_responses

bp = APIBlueprint("gov_objections", __name__, url_prefix="/gov/v1/objections",
                  abp_tags=[Tag(name="gov-objections", description="异议处理")], abp_security=BEARER_SECURITY)

ObjectionStatus = Literal["submitted", "in_progress", "rejected", "resolved"]
FaceValue = str | int | float | bool | None
IMAGE_RESPONSE = {"description": "the cleaned evidence image (JPEG or PNG, metadata removed)",
                  "content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                              "image/png": {"schema": {"type": "string", "format": "binary"}}}}


class GovDisputedIn(StrictModel):
    field: str = Field(min_length=1, max_length=64, description="the face field's name, or holder.name")
    claimed_value: str = Field(min_length=1, max_length=objection_checks.MAX_CLAIMED_LENGTH)


class GovReportBody(StrictModel):
    """A data problem found while using a certificate this client verified, scanned or redeemed (within 90 days)."""

    certificate_identifier: str = Field(min_length=1, max_length=200, description="证照标识 (GB/T 36904)")
    disputed: list[GovDisputedIn] = Field(min_length=1, max_length=objection_checks.MAX_DISPUTED)
    description: str = Field(min_length=1, max_length=objection_checks.MAX_DESCRIPTION)


class GovQueueQuery(StrictModel):
    status: ObjectionStatus | None = Field(default=None, description="only objections in this state")
    limit: int = LIMIT_FIELD
    cursor: str | None = CURSOR_FIELD


class GovObjectionPath(BaseModel):
    id: str = Field(max_length=64, description="the objection's id")


class GovEvidencePath(BaseModel):
    id: str = Field(max_length=64, description="the objection's id")
    n: int = Field(ge=1, le=5, description="evidence position, 1-based")


class GovRejectBody(StrictModel):
    reason: str = Field(min_length=1, max_length=objection_checks.MAX_ANSWER,
                        description="驳回原因, shown to the filer")


class GovResolveBody(StrictModel):
    corrected_identifier: str = Field(
        min_length=1, max_length=200,
        description="证照标识 of the corrected version made by POST /gov/v1/certificates/{identifier}/reissue")
    note: str | None = Field(default=None, max_length=objection_checks.MAX_ANSWER, description="a note for the filer")


class GovCertificateRefOut(BaseModel):
    identifier: str
    version: int
    status: str


class GovDeadlinesOut(BaseModel):
    acknowledge_by: str
    resolve_by: str
    acknowledge_overdue: bool
    resolve_overdue: bool


class GovFilerOut(BaseModel):
    kind: Literal["citizen", "department"]
    department_name: str | None = Field(description="the reporting department, for a department's report")


class GovClaimOut(BaseModel):
    """A disputed field as the reporting department sees it: what it claimed, not what the certificate says."""

    field: str
    label: str
    claimed_value: str


class GovDisputedOut(GovClaimOut):
    """A disputed field as the issuing department sees it, with the value on the disputed version."""

    current_value: FaceValue


class GovTimelineOut(BaseModel):
    event: str
    label: str
    from_status: str | None
    to_status: str
    note: str | None
    actor_kind: str = Field(description="citizen | client | staff | system")
    occurred_at: str


class GovEvidenceOut(BaseModel):
    n: int = Field(description="position for GET /gov/v1/objections/{id}/evidence/{n}")
    media_type: str
    width: int
    height: int
    size: int


class GovObjectionSummary(BaseModel):
    id: str
    status: ObjectionStatus
    status_label: str
    type_code: str
    type_name: str
    certificate: GovCertificateRefOut
    filer: GovFilerOut
    deadlines: GovDeadlinesOut
    escalated: bool = Field(description="reported to the city administrators for a missed deadline")
    created_at: str


class _GovObjectionBody(GovObjectionSummary):
    description: str
    answer: str | None
    acknowledged_at: str | None
    closed_at: str | None
    evidence: list[GovEvidenceOut]
    timeline: list[GovTimelineOut]
    escalations: list[str] = Field(description="levels escalated: acknowledge, resolve")
    corrected_certificate: GovCertificateRefOut | None


class GovObjectionDetail(_GovObjectionBody):
    """An objection in the issuing department's queue."""

    disputed: list[GovDisputedOut]


class GovReportedObjection(_GovObjectionBody):
    """A department's report as filed: its own claims, no value of the certificate (it may not have seen them)."""

    disputed: list[GovClaimOut]


class GovObjectionQueue(BaseModel):
    items: list[GovObjectionSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


def _ref(certificate: Any) -> GovCertificateRefOut:
    return GovCertificateRefOut(identifier=certificate.identifier, version=certificate.version,
                                status=certificate.status)


def _summary(objection: Objection, escalated: bool) -> dict[str, Any]:
    certificate = objection.certificate
    late = objection_views.overdue(objection, now())
    return {
        "id": objection.public_id, "status": objection.status,
        "status_label": objection_answers.STATUS_LABELS[objection.status],
        "type_code": certificate.certificate_type.type_code, "type_name": certificate.certificate_type.name,
        "certificate": _ref(certificate),
        "filer": GovFilerOut(kind=objection.filer_kind,  # type: ignore[arg-type]
                          department_name=objection.filer_department.name if objection.filer_department else None),
        "deadlines": GovDeadlinesOut(acknowledge_by=objection.acknowledge_due_at.isoformat(),
                                  resolve_by=objection.resolve_due_at.isoformat(),
                                  acknowledge_overdue=late.acknowledge, resolve_overdue=late.resolve),
        "escalated": escalated, "created_at": objection.created_at.isoformat(),
    }


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _body(objection: Objection, view: objection_views.ObjectionView) -> dict[str, Any]:
    return {
        **_summary(objection, bool(view.escalations)),
        "description": view.description, "answer": view.answer, "acknowledged_at": _iso(view.acknowledged_at),
        "closed_at": _iso(view.closed_at),
        "evidence": [GovEvidenceOut(n=e.position, media_type=e.media_type, width=e.width, height=e.height,
                                    size=e.size) for e in view.evidence],
        "timeline": [GovTimelineOut(event=t.event, label=t.label, from_status=t.from_status, to_status=t.to_status,
                                    note=t.note, actor_kind=t.actor_kind, occurred_at=t.occurred_at.isoformat())
                     for t in view.timeline],
        "escalations": view.escalations,
        "corrected_certificate": _ref(objection.corrected_certificate) if objection.corrected_certificate else None,
    }


def detail(objection: Objection, *, audited: bool = True) -> dict[str, Any]:
    """The objection decrypted for the issuing department; reading the filer's statement is audited
    (objection.viewed) unless `audited` is False (the answer to a change the same request made, already audited)."""
    view = objection_views.objection_view(db.session(), field_cipher(), objection, now=now(),
                                          actor=g.actor if audited else None)
    return GovObjectionDetail(
        **_body(objection, view),
        disputed=[GovDisputedOut(field=d.field, label=d.label, current_value=d.current_value,
                                 claimed_value=d.claimed_value) for d in view.disputed],
    ).model_dump()


def _answer(objection: Objection, status: int = 200) -> Response:
    response = jsonify(detail(objection, audited=False))
    response.status_code = status
    return response


def _reporter_and_certificate() -> str:
    """The rate-limit key of a report: the calling client and the certificate it names (as the service reads it,
    so spelling one identifier differently does not make a new key)."""
    body = request.get_json(silent=True)
    named = body.get("certificate_identifier") if isinstance(body, dict) else None
    try:
        identifier = parse_identifier(str(named), field="certificate_identifier").value
    except DomainError:
        identifier = str(named)[:200]
    return f"{g.client.client_id}:{identifier}"


@bp.post("", responses={201: GovReportedObjection,
                        **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 409, 422)})
@require_any_scope("verify", "redeem")
@limiter.limit(lambda: current_app.config["ECERT_RATELIMIT_OBJECTION_REPORT"], key_func=_reporter_and_certificate,
               override_defaults=False)
def report(body: GovReportBody) -> Response:
    """Report a data problem (异议) about a certificate this client legitimately saw: it verified a presentation of
    it with a valid verdict, checked its show code or redeemed a grant for it within the last 90 days (else 404).
    Only the fields shown to this client then may be disputed (a masked value counts as shown); any other is 422
    objection_disputed_invalid with reason `not_shown`, whatever the claimed value. A claim equal to the
    certificate's value is refused (`unchanged`) only for a field this client saw unmasked. The answer holds the
    report as filed, without the certificate's values. Attempts are limited per client and certificate
    (429 rate_limited with Retry-After). The report goes to the issuing department's queue; the holder's inbox is
    told which department reported a problem with which certificate (objection_reported), nothing of its content."""
    filing = objection_filing.ObjectionInput(
        [objection_checks.DisputedField(d.field, d.claimed_value) for d in body.disputed], body.description)
    objection = objection_filing.report_objection(
        db.session(), field_cipher(), certificate_identifier=body.certificate_identifier, client=g.client,
        filing=filing, actor=g.actor, now=now(), calendar=working_calendar())
    view = objection_views.objection_view(db.session(), field_cipher(), objection, now=now(), current_values=False)
    response = jsonify(GovReportedObjection(
        **_body(objection, view),
        disputed=[GovClaimOut(field=d.field, label=d.label, claimed_value=d.claimed_value) for d in view.disputed],
    ).model_dump())
    response.status_code = 201
    return response


@bp.get("", responses={200: GovObjectionQueue, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 422)})
@require_scope("objections")
def queue(query: GovQueueQuery) -> Response:
    """The department's own queue: objections about certificates it issued, newest first, paginated by cursor."""
    session = db.session()
    page = objection_queue.department_queue(session, department=g.client.department, status=query.status,
                                            limit=query.limit, cursor=query.cursor, now=now())
    escalated = objection_queue.escalated_ids(session, page.items)
    return jsonify(GovObjectionQueue(items=[GovObjectionSummary(**_summary(o, o.id in escalated)) for o in page.items],
                                  next_cursor=page.next_cursor).model_dump())


@bp.get("/<id>", responses={200: GovObjectionDetail, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 422)})
@require_scope("objections")
def read(path: GovObjectionPath) -> Response:
    """One objection of the department's queue, decrypted (the reading is audited); others' are 404."""
    objection = objection_queue.get_for_department(db.session(), path.id, department=g.client.department)
    return jsonify(detail(objection))


@bp.get("/<id>/evidence/<n>",  # not <int:n>: `n` is validated after authentication, not by routing
        responses={200: IMAGE_RESPONSE, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 422)})
@require_scope("objections")
def evidence(path: GovEvidencePath) -> Response:
    """The n-th evidence image as stored: cleaned at upload, without EXIF, GPS or any other metadata."""
    objection = objection_queue.get_for_department(db.session(), path.id, department=g.client.department)
    image = objection_evidence.evidence_file(evidence_storage(), objection, path.n)
    objection_evidence.record_evidence_viewed(db.session(), objection, path.n, actor=g.actor, now=now())
    response = Response(image.data, mimetype=image.media_type)
    response.headers["Content-Disposition"] = f'inline; filename="evidence-{path.n}"'
    return response


@bp.post("/<id>/accept",
         responses={200: GovObjectionDetail, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 409, 422)})
@require_scope("objections")
def accept(path: GovObjectionPath) -> Response:
    """受理: take the objection up (submitted → in_progress); the filer is notified."""
    objection = objection_queue.get_for_department(db.session(), path.id, department=g.client.department)
    objection_answers.accept_objection(db.session(), objection, actor=g.actor, now=now())
    return _answer(objection)


@bp.post("/<id>/reject",
         responses={200: GovObjectionDetail, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 409, 422)})
@require_scope("objections")
def reject(path: GovObjectionPath, body: GovRejectBody) -> Response:
    """驳回: the data is right; the reason is shown to the filer. From submitted or in_progress."""
    objection = objection_queue.get_for_department(db.session(), path.id, department=g.client.department)
    objection_answers.reject_objection(db.session(), objection, reason=body.reason, actor=g.actor, now=now())
    return _answer(objection)


@bp.post("/<id>/resolve",
         responses={200: GovObjectionDetail, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 409, 422)})
@require_scope("objections")
def resolve(path: GovObjectionPath, body: GovResolveBody) -> Response:
    """办结: link the corrected version made by the reissue endpoint (a newer version of the disputed
    certificate; anything else is 422). From submitted or in_progress; the filer is notified."""
    objection = objection_queue.get_for_department(db.session(), path.id, department=g.client.department)
    objection_answers.resolve_objection(db.session(), objection, corrected_identifier=body.corrected_identifier,
                                        actor=g.actor, now=now(), note=body.note)
    return _answer(objection)
