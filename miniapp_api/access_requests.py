"""A department's request as the holder sees it (用证请求): GET /api/v1/access-requests/{id}, then approve with
certificates the holder holds or represents, or decline."""

from __future__ import annotations

from typing import Annotated

from flask import Response, g, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from backend.auth.citizens import CITIZEN_SECURITY, require_citizen, require_recent_login
from backend.core.context import field_cipher, now, representation_max_age
from backend.core.launcher import job_launcher
from backend.extensions import db
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, StrictModel, error_responses
from backend.sharing import access_requests as service
from miniapp_api.wallet import OwnerOut, owner_out

bp = APIBlueprint("citizen_access_requests", __name__, url_prefix="/api/v1/access-requests",
                  abp_tags=[Tag(name="citizen-access-requests", description="用证请求（授权确认）")],
                  abp_security=CITIZEN_SECURITY)


class AccessRequestPath(BaseModel):
    id: str = Field(max_length=64, description="the request id from the scanned QR code")


class DepartmentOut(BaseModel):
    code: str = Field(description="the requesting department's 统一社会信用代码")
    name: str


class ConsentFieldOut(BaseModel):
    name: str
    label: str = Field(description="Chinese label shown on the consent screen")


class WantedTypeOut(BaseModel):
    type_code: str
    type_name: str
    classification_level: int = Field(description="1 public … 4 highly sensitive")
    step_up_required: bool = Field(description="approving with this type needs a login within the last 5 minutes")
    fields: list[ConsentFieldOut]


class MatchingCertificateOut(BaseModel):
    id: str = Field(description="wallet id: pass it in certificate_ids to approve")
    type_code: str
    type_name: str
    owner: OwnerOut
    certificate_number_masked: str
    valid_until: str | None = Field(description="last valid day; null = 长期")


class HolderAccessRequestOut(BaseModel):
    id: str
    department: DepartmentOut
    purpose: str = Field(description="用证事由")
    matter_code: str = Field(description="事项编码")
    wanted: list[WantedTypeOut]
    consent_seconds: int = Field(description="how long the consent (the grant) lasts once given")
    status: str = Field(description="pending | approved | declined | expired")
    status_label: str
    assisted: bool = Field(description="started for the holder at a department's counter (窗口)")
    created_at: str
    expires_at: str = Field(description="answer before this")
    decided_at: str | None
    grant_id: str | None = Field(description="the grant created by approving (the decider sees it)")
    matching_certificates: list[MatchingCertificateOut] = Field(
        description="while pending: the holder's own and represented companies' valid certificates of wanted types")


CertificateId = Annotated[str, Field(min_length=1, max_length=64)]


class ApproveBody(StrictModel):
    certificate_ids: list[CertificateId] = Field(min_length=1, max_length=service.MAX_WANTED_TYPES,
                                                 description="wallet ids of the certificates to share, one per "
                                                             "wanted type")


class ApprovedOut(BaseModel):
    id: str = Field(description="the request id")
    status: str
    grant_id: str
    grant_expires_at: str
    decided_at: str


class DeclinedOut(BaseModel):
    id: str
    status: str
    decided_at: str


def _view(access_request_id: str) -> HolderAccessRequestOut:
    view = service.view_for_holder(db.session(), field_cipher(), g.holder, access_request_id, now=now(),
                                   max_age=representation_max_age())
    request = view.request
    return HolderAccessRequestOut(
        id=request.public_id, department=DepartmentOut(code=request.department.code, name=request.department.name),
        purpose=request.purpose, matter_code=request.matter_code,
        wanted=[WantedTypeOut(type_code=w.certificate_type.type_code, type_name=w.certificate_type.name,
                              classification_level=w.certificate_type.classification_level,
                              step_up_required=w.step_up_required,
                              fields=[ConsentFieldOut(name=f.name, label=f.label) for f in w.fields])
                for w in view.wanted],
        consent_seconds=request.consent_seconds, status=view.status, status_label=service.STATUS_LABELS[view.status],
        assisted=request.assisted, created_at=request.created_at.isoformat(),
        expires_at=request.expires_at.isoformat(),
        decided_at=request.decided_at.isoformat() if request.decided_at else None, grant_id=view.grant_id,
        matching_certificates=[MatchingCertificateOut(
            id=m.certificate.public_id, type_code=m.certificate.certificate_type.type_code,
            type_name=m.certificate.certificate_type.name, owner=owner_out(m.owner),
            certificate_number_masked=m.number_masked,
            valid_until=m.certificate.valid_until.isoformat() if m.certificate.valid_until else None)
            for m in view.matching])


def _with_callback(response: Response, access_request_id: int, has_callback: bool) -> Response:
    """The department's callback goes out after this response (and so after the request's commit)."""
    if has_callback:
        job_launcher().after_response(response, "callbacks", access_request_id=access_request_id)
    return response


@bp.get("/<id>", responses={200: HolderAccessRequestOut, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 422)})
@require_citizen
def read(path: AccessRequestPath) -> Response:
    """The consent screen: who asks, why, each field by its Chinese label, and which certificates can answer it."""
    return jsonify(_view(path.id).model_dump())


@bp.post("/<id>/approve",
         responses={200: ApprovedOut, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 409, 410, 422)})
@require_citizen
def approve(path: AccessRequestPath, body: ApproveBody) -> Response:
    """Consent: the chosen certificates become a one-time grant for the requesting department (step-up for
    classification level ≥ 3: 401 reauth_required when the last login is older than 5 minutes)."""
    request, grant = service.approve_access_request(db.session(), field_cipher(), g.holder, path.id,
                                           certificate_ids=body.certificate_ids, step_up=require_recent_login,
                                           actor=g.actor, now=now(), max_age=representation_max_age())
    assert request.decided_at is not None
    response = jsonify(ApprovedOut(id=request.public_id, status=request.status, grant_id=grant.public_id,
                                   grant_expires_at=grant.expires_at.isoformat(),
                                   decided_at=request.decided_at.isoformat()).model_dump())
    return _with_callback(response, request.id, request.callback_url is not None)


@bp.post("/<id>/decline",
         responses={200: DeclinedOut, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 409, 410, 422)})
@require_citizen
def decline(path: AccessRequestPath) -> Response:
    """Refuse the request; the department learns it by polling or by its callback."""
    request = service.decline_access_request(db.session(), g.holder, path.id, actor=g.actor, now=now(),
                                             max_age=representation_max_age())
    assert request.decided_at is not None
    response = jsonify(DeclinedOut(id=request.public_id, status=request.status,
                                   decided_at=request.decided_at.isoformat()).model_dump())
    return _with_callback(response, request.id, request.callback_url is not None)
