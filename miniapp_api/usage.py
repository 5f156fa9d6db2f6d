"""The citizen's usage history (用证记录): who checked or used their certificates, when, why, and which fields."""

from __future__ import annotations

from typing import Literal

from flask import Response, g, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from backend.auth.citizens import CITIZEN_SECURITY, require_citizen
from backend.core.context import now, representation_max_age
from backend.extensions import db
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, CURSOR_FIELD, LIMIT_FIELD, StrictModel, error_responses
from backend.wallet import usage as service
from miniapp_api.wallet import OwnerOut, owner_out

bp = APIBlueprint("usage", __name__, url_prefix="/api/v1/usage",
                  abp_tags=[Tag(name="usage", description="用证记录")], abp_security=CITIZEN_SECURITY)

KIND_LABELS = {"show_code_checked": "亮证核验", "verified": "部门核验", "redeemed": "授权用证"}


class UsageQuery(StrictModel):
    limit: int = LIMIT_FIELD
    cursor: str | None = CURSOR_FIELD


class VerifierOut(BaseModel):
    kind: Literal["public", "client"] = Field(description="public: anyone scanning a show code; client: a department")
    name: str = Field(description="the department's name, or 公众扫码")


class UsedCertificateOut(BaseModel):
    id: str = Field(description="the certificate's wallet id")
    type_code: str
    type_name: str


class UsedFieldOut(BaseModel):
    name: str
    label: str


class UsageOut(BaseModel):
    id: str
    kind: str = Field(description="show_code_checked | verified | redeemed")
    kind_label: str
    verifier: VerifierOut
    purpose: str | None
    fields: list[UsedFieldOut] = Field(description="the fields that were shown or disclosed")
    occurred_at: str
    certificate: UsedCertificateOut
    owner: OwnerOut


class UsageList(BaseModel):
    items: list[UsageOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


def usage_out(entry: service.UsageEntry) -> UsageOut:
    record, certificate = entry.record, entry.certificate
    return UsageOut(
        id=record.public_id, kind=record.kind, kind_label=KIND_LABELS.get(record.kind, record.kind),
        verifier=VerifierOut(kind="public" if record.verifier_kind == "public" else "client",
                             name=entry.verifier_name),
        purpose=record.purpose, fields=[UsedFieldOut(name=name, label=label) for name, label in entry.fields],
        occurred_at=record.occurred_at.isoformat(),
        certificate=UsedCertificateOut(id=certificate.public_id, type_code=certificate.certificate_type.type_code,
                                       type_name=certificate.certificate_type.name),
        owner=owner_out(entry.owner))


@bp.get("", responses={200: UsageList, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 422)})
@require_citizen
def list_usage(query: UsageQuery) -> Response:
    """Uses of the holder's (and represented companies') certificates, newest first, paginated by cursor."""
    page = service.list_usage(db.session(), g.holder, now=now(), max_age=representation_max_age(), limit=query.limit,
                              cursor=query.cursor)
    return jsonify(UsageList(items=[usage_out(entry) for entry in page.items], next_cursor=page.next_cursor)
                   .model_dump())
