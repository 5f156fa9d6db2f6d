"""The holder's authorisations (授权用证, /api/v1/grants): offer a one-time code to a department, list, revoke."""

from __future__ import annotations

from typing import Annotated, Literal

from flask import Response, current_app, g, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from backend.auth.citizens import CITIZEN_SECURITY, require_citizen, require_recent_login
from backend.core import qr
from backend.core.context import field_cipher, now, representation_max_age
from backend.errors import DomainError
from backend.extensions import db
from backend.models.sharing import Grant
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, CURSOR_FIELD, LIMIT_FIELD, StrictModel, error_responses
from backend.sharing import consent_policy
from backend.sharing import grants as service
from backend.wallet.queries import find_holder_certificate

bp = APIBlueprint("citizen_grants", __name__, url_prefix="/api/v1/grants",
                  abp_tags=[Tag(name="citizen-grants", description="授权用证")], abp_security=CITIZEN_SECURITY)

JSON, PNG = "application/json", "image/png"
GrantStatus = Literal["active", "used", "expired", "revoked"]
FieldName = Annotated[str, Field(min_length=1, max_length=64)]


class OfferRequest(StrictModel):
    certificate_id: str = Field(max_length=64, description="the certificate's id in the wallet")
    client_id: str = Field(min_length=1, max_length=64, description="the department business system allowed to use "
                                                                     "the code (it needs the `redeem` scope)")
    fields: list[FieldName] = Field(min_length=1, max_length=64, description="field names the department may see: "
                                                                        "holder.name, holder.code, document.number "
                                                                        "or face fields the type lets be shared")
    purpose: str = Field(min_length=1, max_length=200, description="用证事由, shown in the usage history")
    expires_in: int = Field(default=consent_policy.CODE_MAX_SECONDS, ge=service.MIN_OFFER_SECONDS,
                            le=consent_policy.CODE_MAX_SECONDS,
                            description="seconds the code stays usable: at most 600 (and the type's policy)")


class OfferedGrantOut(BaseModel):
    """A one-time code; with Accept: image/png the response is its QR image instead (header X-Grant-Id)."""

    model_config = ConfigDict(openapi_extra={  # type: ignore[typeddict-unknown-key]
        "headers": {"X-Grant-Id": {"description": "the grant's id (with the PNG)", "schema": {"type": "string"}},
                    "X-Grant-Expires-At": {"description": "when the code stops working (ISO 8601)",
                                           "schema": {"type": "string"}}},
        "content": {PNG: {"schema": {"type": "string", "format": "binary"}}},
    })

    id: str = Field(description="the grant's id (also the nonce of its presentations)")
    code: str = Field(description="授权码: 128-bit, single use, only for the named client; shown once")
    url: str = Field(description="what the QR code encodes: the code in the URL's fragment")
    expires_at: str = Field(description="ISO 8601; the code is refused from this moment on")


class GrantPath(BaseModel):
    grant_id: str = Field(max_length=64, description="the grant's id")


class GrantQuery(StrictModel):
    status: GrantStatus | None = Field(default=None, description="only grants in this (effective) status")
    limit: int = LIMIT_FIELD
    cursor: str | None = CURSOR_FIELD


class DepartmentOut(BaseModel):
    code: str = Field(description="统一社会信用代码")
    name: str


class GrantedFieldOut(BaseModel):
    name: str
    label: str = Field(description="the field's Chinese label")


class GrantedCertificateOut(BaseModel):
    id: str = Field(description="the certificate's wallet id")
    type_code: str
    type_name: str
    fields: list[GrantedFieldOut]


class GrantOut(BaseModel):
    id: str
    status: GrantStatus = Field(description="active | used | expired | revoked")
    status_label: str = Field(description="有效 / 已使用 / 已过期 / 已撤销")
    source: Literal["offer", "request"] = Field(description="offer: the holder's code; request: a department asked")
    department: DepartmentOut
    client_name: str = Field(description="the department business system that may use it")
    purpose: str
    matter_code: str | None = Field(description="事项编码 of the department's request, if any")
    consent_method: str = Field(description="app | sms_code | staff_attested")
    certificates: list[GrantedCertificateOut]
    created_at: str
    expires_at: str = Field(description="when it can no longer be used (the code's expiry for offered grants)")
    used_at: str | None
    revoked_at: str | None


class GrantList(BaseModel):
    items: list[GrantOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


def grant_out(grant: Grant) -> GrantOut:
    moment = now()
    status = service.effective_status(grant, moment)
    return GrantOut(
        id=grant.public_id, status=status, status_label=service.STATUS_LABELS[status],  # type: ignore[arg-type]
        source="request" if grant.access_request_id is not None else "offer",
        department=DepartmentOut(code=grant.department.code, name=grant.department.name),
        client_name=grant.api_client.name, purpose=grant.purpose, matter_code=grant.matter_code,
        consent_method=grant.consent_method,
        certificates=[GrantedCertificateOut(
            id=covered.certificate.public_id, type_code=covered.certificate.certificate_type.type_code,
            type_name=covered.certificate.certificate_type.name,
            fields=[GrantedFieldOut(name=item.name, label=item.label) for item in
                    consent_policy.field_labels(covered.certificate.certificate_type, covered.fields)])
            for covered in grant.certificates],
        created_at=grant.created_at.isoformat(), expires_at=service.usable_until(grant).isoformat(),
        used_at=grant.used_at.isoformat() if grant.used_at else None,
        revoked_at=grant.revoked_at.isoformat() if grant.revoked_at else None)


@bp.post("", responses={201: OfferedGrantOut, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 406, 409, 410,
                                                                   422)})
@require_citizen
def offer_grant(body: OfferRequest) -> Response:
    """Offer a one-time code (授权码) letting one department client use the chosen fields of a certificate once,
    within at most 10 minutes. Types of level 3 or more need a login within 5 minutes (401 reauth_required)."""
    wanted = request.accept_mimetypes.best_match([JSON, PNG]) if request.accept_mimetypes else JSON
    if wanted is None:
        raise DomainError("只能返回 JSON 或 PNG", code="not_acceptable").with_status(406)
    session, moment = db.session(), now()
    certificate = find_holder_certificate(session, g.holder, body.certificate_id, now=moment,
                                          max_age=representation_max_age())
    offered = service.offer_grant(session, field_cipher(), g.holder, certificate, client_id=body.client_id,
                                  fields=body.fields, purpose=body.purpose, expires_in=body.expires_in,
                                  step_up=require_recent_login, actor=g.actor, now=moment)
    grant = offered.grant
    url = f"{current_app.config['ECERT_PUBLIC_URL']}/grant#{offered.code}"
    expires_at = service.usable_until(grant).isoformat()
    if wanted == PNG:
        headers = {"X-Grant-Id": grant.public_id, "X-Grant-Expires-At": expires_at, "Vary": "Accept"}
        return Response(qr.png(qr.make_qr(url)), status=201, mimetype=PNG, headers=headers)
    response = jsonify(OfferedGrantOut(id=grant.public_id, code=offered.code, url=url, expires_at=expires_at)
                       .model_dump())
    response.status_code = 201
    response.vary.add("Accept")
    return response


@bp.get("", responses={200: GrantList, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 422)})
@require_citizen
def list_grants(query: GrantQuery) -> Response:
    """The holder's grants, newest first: to whom, for what, which fields, and whether used, expired or revoked."""
    page = service.list_holder_grants(db.session(), g.holder, now=now(), status=query.status, limit=query.limit,
                                      cursor=query.cursor)
    return jsonify(GrantList(items=[grant_out(grant) for grant in page.items], next_cursor=page.next_cursor)
                   .model_dump())


@bp.delete("/<grant_id>", responses={200: GrantOut, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 409)})
@require_citizen
def revoke_grant(path: GrantPath) -> Response:
    """Revoke a grant at once: its code stops working. A used grant cannot be revoked (409 grant_already_used)."""
    grant = service.revoke_grant(db.session(), g.holder, path.grant_id, actor=g.actor, now=now())
    return jsonify(grant_out(grant).model_dump())
