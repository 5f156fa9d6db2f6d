"""Catalog (证照目录) as the departments' systems read it."""

from __future__ import annotations

from typing import Any

from flask import Response, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel

from backend.auth.clients import BEARER_SECURITY, require_scope
from backend.catalog.loader import list_types
from backend.extensions import db
from backend.models import CertificateType
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, error_responses

bp = APIBlueprint(
    "gov_catalog",
    __name__,
    url_prefix="/gov/v1/catalog",
    abp_tags=[Tag(name="gov-catalog", description="证照目录")],
    abp_security=BEARER_SECURITY,
)


class FieldOut(BaseModel):
    name: str
    label: str
    type: str
    required: bool
    sensitivity: int
    max_length: int | None = None
    choices: list[str] | None = None
    mask: str


class DepartmentRef(BaseModel):
    code: str
    name: str


class SharingOut(BaseModel):
    public_fields: list[str]
    showable_fields: list[str]
    disclosable_fields: list[str]
    max_grant_seconds: int
    step_up_required: bool


class ValidityOut(BaseModel):
    default_years: int | None
    long_term_allowed: bool


class CertificateTypeOut(BaseModel):
    type_code: str
    name: str
    description: str
    catalog_version: int
    defining_authority: DepartmentRef
    issuers: list[DepartmentRef]
    holder_category: str
    classification_level: int
    validity: ValidityOut
    fields: list[FieldOut]
    sharing: SharingOut


class CatalogTypesResponse(BaseModel):
    items: list[CertificateTypeOut]


def type_out(ctype: CertificateType) -> dict[str, Any]:
    definition = ctype.definition
    return CertificateTypeOut(
        type_code=ctype.type_code,
        name=ctype.name,
        description=definition.get("description", ""),
        catalog_version=ctype.catalog_version,
        defining_authority=DepartmentRef(code=ctype.defining_department.code, name=ctype.defining_department.name),
        issuers=[DepartmentRef(code=d.code, name=d.name) for d in ctype.issuers],
        holder_category=ctype.holder_category,
        classification_level=ctype.classification_level,
        validity=ValidityOut(**definition["validity"]),
        fields=[FieldOut(**f) for f in definition["fields"]],
        sharing=SharingOut(**definition["sharing"]),
    ).model_dump()


@bp.get("/types", responses={200: CatalogTypesResponse, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS)})
@require_scope("catalog")
def list_catalog_types() -> Response:
    """List every certificate type in the catalog with its fields, issuers and sharing policy."""
    return jsonify({"items": [type_out(t) for t in list_types(db.session())]})
