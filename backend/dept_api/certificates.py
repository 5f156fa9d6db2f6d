"""Certificates as the issuing department's business system sees them: issue or sync, read, change status."""

from __future__ import annotations

from typing import Any, Literal

from flask import Response, g, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field, model_validator

from backend.auth.clients import BEARER_SECURITY, require_scope
from backend.core.context import deps, field_cipher, now
from backend.errors import BadRequest
from backend.extensions import db
from backend.issuance import certificates as service
from backend.issuance.issuer import UNSET, CertificateInput, Issuer
from backend.models import ApiClient, Certificate
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, DATE_RANGE, InputDate, StrictModel, error_responses

bp = APIBlueprint("gov_certificates", __name__, url_prefix="/gov/v1/certificates",
                  abp_tags=[Tag(name="gov-certificates", description="证照签发与变更")], abp_security=BEARER_SECURITY)

IDEMPOTENCY_KEY = "Idempotency-Key"
FaceFields = dict[str, str | int | float | bool | None]


class HolderIn(StrictModel):
    name: str = Field(min_length=1, max_length=100, description="持证主体名称")
    code_type: str = Field(description="持证主体代码类型: 001 111 414 516 511 999")
    code: str = Field(min_length=1, max_length=64, description="持证主体代码")


class CertificateSubmission(StrictModel):
    """Either the certificate's data (the platform signs it) or `sd_jwt` signed by the department's own system."""

    type_code: str | None = Field(default=None, description="证照类型代码 (21 chars)")
    certificate_number: str | None = Field(default=None, max_length=64, description="证照编号 as printed")
    holder: HolderIn | None = None
    issued_on: InputDate | None = None
    valid_from: InputDate | None = None
    valid_until: InputDate | None = Field(default=None, description=f"{DATE_RANGE}; null = 长期; omitted = the type's "
                                                                     "default validity")
    fields: FaceFields | None = Field(default=None, description="face fields (照面) by the type's schema")
    sd_jwt: str | None = Field(default=None, max_length=65536, description="SD-JWT VC signed by a registered key")

    @model_validator(mode="after")
    def _one_mode(self) -> CertificateSubmission:
        data_fields = ("type_code", "certificate_number", "holder", "issued_on", "valid_from", "fields")
        if self.sd_jwt is not None:
            extra = [name for name in (*data_fields, "valid_until") if name in self.model_fields_set]
            if extra:
                raise ValueError(f"with sd_jwt no other field may be given: {', '.join(extra)}")
        else:
            missing = [name for name in data_fields if getattr(self, name) is None]
            if missing:
                raise ValueError(f"missing required fields: {', '.join(missing)}")
        return self


class IssuedCertificate(BaseModel):
    identifier: str
    version: int
    status: str
    sd_jwt: str


class IdentifierPath(BaseModel):
    identifier: str = Field(max_length=200, description="证照标识 (GB/T 36904)")


class ReissueBody(StrictModel):
    fields: FaceFields | None = Field(default=None, description="changed face fields; the rest are kept")
    holder_name: str | None = Field(default=None, min_length=1, max_length=100)
    issued_on: InputDate | None = None
    valid_from: InputDate | None = None
    valid_until: InputDate | None = Field(default=None, description=f"{DATE_RANGE}; null = 长期; omitted = unchanged")
    reason: str | None = Field(default=None, max_length=200, description="换发原因")


class RevokeBody(StrictModel):
    reason: Literal["注销", "吊销"]
    note: str | None = Field(default=None, max_length=150)


class SuspendBody(StrictModel):
    reason: str = Field(min_length=1, max_length=200)


class GovHolderOut(BaseModel):
    name: str
    code_type: str
    code: str


class GovVersionOut(BaseModel):
    identifier: str
    version: int
    status: str
    created_at: str


class GovEventOut(BaseModel):
    event: str
    from_status: str | None
    to_status: str
    reason: str | None
    occurred_at: str


class GovCertificateDetail(BaseModel):
    identifier: str
    type_code: str
    type_name: str
    version: int
    status: str
    status_reason: str | None
    certificate_number: str
    holder: GovHolderOut
    issued_on: str
    valid_from: str
    valid_until: str | None
    fields: dict[str, Any]
    origin: str
    status_list: dict[str, Any]
    versions: list[GovVersionOut]
    events: list[GovEventOut]
    sd_jwt: str


def idempotency_key() -> str | None:
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is not None and not (8 <= len(key) <= 128 and key.isascii() and key.isprintable()):
        raise BadRequest("Idempotency-Key 必须是 8–128 个可打印 ASCII 字符", code="invalid_idempotency_key")
    return key


def detail(certificate: Certificate) -> dict[str, Any]:
    session = db.session()
    content = service.decrypt(field_cipher(), certificate)
    ctype = certificate.certificate_type
    return GovCertificateDetail(
        identifier=certificate.identifier, type_code=ctype.type_code, type_name=ctype.name,
        version=certificate.version, status=certificate.status, status_reason=certificate.status_reason,
        certificate_number=content.number,
        holder=GovHolderOut(name=content.holder_name, code_type=certificate.holder_code_type, code=content.holder_code),
        issued_on=certificate.issued_on.isoformat(), valid_from=certificate.valid_from.isoformat(),
        valid_until=certificate.valid_until.isoformat() if certificate.valid_until else None,
        fields=content.fields, origin=certificate.origin,
        status_list={"list": certificate.status_list.list_number, "idx": certificate.status_index},
        versions=[GovVersionOut(identifier=v.identifier, version=v.version, status=v.status,
                                created_at=v.created_at.isoformat())
                  for v in service.version_history(session, certificate)],
        events=[GovEventOut(event=e.event, from_status=e.from_status, to_status=e.to_status, reason=e.reason,
                            occurred_at=e.occurred_at.isoformat()) for e in service.events_of(session, certificate)],
        sd_jwt=content.sd_jwt,
    ).model_dump()


def issued(certificate: Certificate, status: int) -> Response:
    content = service.decrypt(field_cipher(), certificate)
    response = jsonify(IssuedCertificate(identifier=certificate.identifier, version=certificate.version,
                                         status=certificate.status, sd_jwt=content.sd_jwt).model_dump())
    response.status_code = status
    return response


@bp.post("", responses={201: IssuedCertificate, 200: IssuedCertificate,
                        **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 409, 422)},
         openapi_extensions={"x-idempotency-key": True})
@require_scope("issue")
def issue(body: CertificateSubmission) -> Response:
    """Issue a certificate (the platform signs it with the department's key) or sync one signed elsewhere."""
    client: ApiClient = g.client
    key = idempotency_key()
    digest = service.request_hash(request.get_json(silent=True))
    issuer = Issuer.for_client(deps(), client, actor=g.actor, now=now())
    if body.sd_jwt is not None:
        certificate, created = service.sync_certificate(db.session(), issuer, client, body.sd_jwt,
                                                        idempotency_key=key, body_hash=digest)
    else:
        assert body.holder is not None
        data = CertificateInput(
            type_code=body.type_code, certificate_number=body.certificate_number, holder_name=body.holder.name,
            holder_code_type=body.holder.code_type, holder_code=body.holder.code,
            issued_on=body.issued_on, valid_from=body.valid_from, fields=body.fields,
            valid_until=body.valid_until if "valid_until" in body.model_fields_set else UNSET,
        )
        certificate, created = service.issue_certificate(db.session(), issuer, client, data,
                                                         idempotency_key=key, body_hash=digest)
    return issued(certificate, 201 if created else 200)


@bp.get("/<identifier>",
        responses={200: GovCertificateDetail, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 422)})
@require_scope("issue")
def read(path: IdentifierPath) -> Response:
    """One of the department's own certificates, decrypted, with its version history and status events."""
    certificate = service.get_own_certificate(db.session(), g.client.department, path.identifier)
    return jsonify(detail(certificate))


@bp.post("/<identifier>/reissue",
         responses={201: GovCertificateDetail, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 409, 422)})
@require_scope("issue")
def reissue(path: IdentifierPath, body: ReissueBody) -> Response:
    """New version (same serial, version + 1); the old version becomes superseded (已更新)."""
    certificate = service.get_own_certificate(db.session(), g.client.department, path.identifier)
    changes = body.model_dump(exclude_unset=True, mode="json")
    reason = changes.pop("reason", None)
    issuer = Issuer.for_client(deps(), g.client, actor=g.actor, now=now())
    successor = service.reissue_certificate(db.session(), issuer, certificate, changes=changes, reason=reason)
    response = jsonify(detail(successor))
    response.status_code = 201
    return response


@bp.post("/<identifier>/revoke", responses={200: GovCertificateDetail,
                                            **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 409, 422)})
@require_scope("issue")
def revoke(path: IdentifierPath, body: RevokeBody) -> Response:
    """Cancel (注销) or revoke (吊销) a certificate; final."""
    certificate = service.get_own_certificate(db.session(), g.client.department, path.identifier)
    service.revoke_certificate(db.session(), certificate, reason=body.reason, note=body.note, actor=g.actor, now=now())
    return jsonify(detail(certificate))


@bp.post("/<identifier>/suspend", responses={200: GovCertificateDetail,
                                             **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 409, 422)})
@require_scope("issue")
def suspend(path: IdentifierPath, body: SuspendBody) -> Response:
    """Suspend (中止) a valid certificate until it is resumed."""
    certificate = service.get_own_certificate(db.session(), g.client.department, path.identifier)
    service.suspend_certificate(db.session(), certificate, reason=body.reason, actor=g.actor, now=now())
    return jsonify(detail(certificate))


@bp.post("/<identifier>/resume", responses={200: GovCertificateDetail,
                                            **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 409, 422)})
@require_scope("issue")
def resume(path: IdentifierPath) -> Response:
    """Resume a suspended certificate."""
    certificate = service.get_own_certificate(db.session(), g.client.department, path.identifier)
    service.resume_certificate(db.session(), certificate, actor=g.actor, now=now())
    return jsonify(detail(certificate))
