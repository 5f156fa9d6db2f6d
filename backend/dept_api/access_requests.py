"""A department asks (用证请求): POST /gov/v1/access-requests creates a request (JSON, or its QR with Accept: image/png
or image/svg+xml); GET /gov/v1/access-requests/{id} polls its outcome. Scope `request`."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from flask import Response, current_app, g, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field, model_validator

from backend.auth.clients import BEARER_SECURITY, require_scope
from backend.core import qr
from backend.core.context import field_cipher, now
from backend.errors import DomainError
from backend.extensions import db
from backend.models import AccessRequest
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, StrictModel, error_responses
from backend.sharing import access_requests as service

bp = APIBlueprint("gov_access_requests", __name__, url_prefix="/gov/v1/access-requests",
                  abp_tags=[Tag(name="gov-access-requests", description="用证请求（部门发起）")],
                  abp_security=BEARER_SECURITY)

JSON, PNG, SVG = "application/json", "image/png", "image/svg+xml"
TYPE_CODE_PATTERN = r"^[0-9A-Z]{18}[0-9]{3}$"
FieldName = Annotated[str, Field(min_length=1, max_length=64)]


class WantedIn(StrictModel):
    type_code: str = Field(pattern=TYPE_CODE_PATTERN, description="证照类型代码 (21 chars)")
    fields: list[FieldName] = Field(min_length=1, max_length=50,
                                    description="field names: face fields in the type's sharing.disclosable_fields, "
                                                "or holder.name, holder.code, document.number")


class AssistedHolderIn(StrictModel):
    code_type: str = Field(max_length=3, description="持证主体代码类型: 001 111 414 516 511 999")
    code: str = Field(min_length=1, max_length=64, description="持证主体代码 (stored only as a keyed blind index)")


class AccessRequestIn(StrictModel):
    wanted: list[WantedIn] = Field(min_length=1, max_length=service.MAX_WANTED_TYPES,
                                   description="the certificate types wanted and, per type, the fields needed")
    purpose: str = Field(min_length=1, max_length=200, description="用证事由, shown to the holder")
    matter_code: str = Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z._-]{0,63}$", description="事项编码 of the service matter")
    consent_seconds: int | None = Field(default=None, ge=60, le=10 * 365 * 86400,
                                        description="how long the holder's consent (the grant) may last; capped by "
                                                    "the strictest type policy; omitted: the cap")
    callback_url: str | None = Field(default=None, min_length=1, max_length=500,
                                     description="where to POST the decision; must be within the client's "
                                                 "registered allow-list (same origin, path prefix)")
    assisted: bool = Field(default=False, description="counter service (第十一条): the holder is present at the "
                                                      "window and named by `holder`")
    holder: AssistedHolderIn | None = Field(default=None, description="with assisted: the holder's code")

    @model_validator(mode="after")
    def _assisted_names_holder(self) -> AccessRequestIn:
        if self.assisted and self.holder is None:
            raise ValueError("assisted requests name the holder: holder is required")
        if not self.assisted and self.holder is not None:
            raise ValueError("holder is only accepted with assisted: true")
        return self


class WantedOut(BaseModel):
    type_code: str
    fields: list[str]


class AccessRequestOut(BaseModel):
    """A request as its department sees it: the outcome, never anything about the holder."""

    id: str = Field(description="the request id (32 hex), also in the URL the QR code holds")
    url: str = Field(description="what the QR code encodes: the mini-app opens it")
    status: Literal["pending", "approved", "declined", "expired"]
    wanted: list[WantedOut]
    purpose: str
    matter_code: str
    consent_seconds: int = Field(description="the consent lifetime granted (after the type policy's cap)")
    assisted: bool
    created_at: str
    expires_at: str = Field(description="the holder must answer before this")
    decided_at: str | None
    grant_id: str | None = Field(description="when approved: redeem with POST /gov/v1/grants/redeem {request_id}")
    callback_url: str | None
    callback_delivered_at: str | None


class CreatedAccessRequest(AccessRequestOut):
    """The created request; with Accept: image/png or image/svg+xml the response is its QR code instead."""

    model_config = ConfigDict(openapi_extra={  # type: ignore[typeddict-unknown-key]
        "headers": {"X-Access-Request-Id": {"description": "the request id", "schema": {"type": "string"}},
                    "X-Access-Request-Expires-At": {"description": "ISO 8601", "schema": {"type": "string"}}},
        "content": {PNG: {"schema": {"type": "string", "format": "binary"}}, SVG: {"schema": {"type": "string"}}},
    })

    requested_consent_seconds: int | None = Field(description="what was asked for (null: the cap)")


class AccessRequestPath(BaseModel):
    id: str = Field(max_length=64, description="the request id")


def request_url(access_request: AccessRequest) -> str:
    return f"{current_app.config['ECERT_PUBLIC_URL']}/api/v1/access-requests/{access_request.public_id}"


def request_out(access_request: AccessRequest) -> dict[str, Any]:
    moment = now()
    return AccessRequestOut(
        id=access_request.public_id, url=request_url(access_request),
        status=service.effective_status(access_request, moment),  # type: ignore[arg-type]
        wanted=[WantedOut(**item) for item in access_request.wanted], purpose=access_request.purpose,
        matter_code=access_request.matter_code, consent_seconds=access_request.consent_seconds,
        assisted=access_request.assisted, created_at=access_request.created_at.isoformat(),
        expires_at=access_request.expires_at.isoformat(),
        decided_at=access_request.decided_at.isoformat() if access_request.decided_at else None,
        grant_id=service.grant_public_id(db.session(), access_request), callback_url=access_request.callback_url,
        callback_delivered_at=access_request.callback_delivered_at.isoformat()
        if access_request.callback_delivered_at else None,
    ).model_dump()


@bp.post("", responses={201: CreatedAccessRequest,
                        **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 406, 422)})
@require_scope("request")
def create(body: AccessRequestIn) -> Response:
    """Ask a holder for certificates: which types, which fields of each, why (用证事由), for which matter (事项编码)."""
    wanted = request.accept_mimetypes.best_match([JSON, PNG, SVG]) if request.accept_mimetypes else JSON
    if wanted is None:
        raise DomainError("只能返回 JSON、PNG 或 SVG", code="not_acceptable").with_status(406)
    config = current_app.config
    asked = service.AccessRequestInput(
        wanted=[service.WantedInput(item.type_code, item.fields) for item in body.wanted],
        purpose=body.purpose, matter_code=body.matter_code, consent_seconds=body.consent_seconds,
        callback_url=body.callback_url,
        assisted_holder=service.AssistedHolder(body.holder.code_type, body.holder.code) if body.holder else None)
    created = service.create_access_request(
        db.session(), field_cipher(), g.client, asked, allow_http_callbacks=config["ECERT_ENV"] != "production",
        answer_within=config["ECERT_ACCESS_REQUEST_TTL"], actor=g.actor, now=now())
    headers = {"X-Access-Request-Id": created.public_id, "X-Access-Request-Expires-At": created.expires_at.isoformat(),
               "Vary": "Accept"}
    if wanted == JSON:
        response = jsonify({**request_out(created), "requested_consent_seconds": body.consent_seconds})
        response.status_code = 201
        response.headers.update(headers)
        return response
    code = qr.make_qr(request_url(created))
    if wanted == PNG:
        return Response(qr.png(code), status=201, mimetype=PNG, headers=headers)
    return Response(qr.svg(code), status=201, mimetype=SVG, headers=headers)


@bp.get("/<id>", responses={200: AccessRequestOut, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 422)})
@require_scope("request")
def read(path: AccessRequestPath) -> Response:
    """Poll one of this client's requests: status, decision time and, when approved, the grant id."""
    return jsonify(request_out(service.get_client_request(db.session(), g.client, path.id)))
