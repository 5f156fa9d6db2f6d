"""The citizen's certificate wallet (卡包): their own certificates and their represented companies' (/api/v1/wallet)."""

from __future__ import annotations

from typing import Any, Literal

from flask import Response, g, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field

from backend.auth.citizens import CITIZEN_SECURITY, require_citizen
from backend.core.context import field_cipher, now, representation_max_age
from backend.crypto.masking import mask_certificate_number
from backend.extensions import db
from backend.identity.citizens import current_representations
from backend.kernel.china_time import china_today
from backend.models import Certificate
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, CURSOR_FIELD, LIMIT_FIELD, StrictModel, error_responses
from backend.wallet import queries as service

bp = APIBlueprint("wallet", __name__, url_prefix="/api/v1/wallet",
                  abp_tags=[Tag(name="wallet", description="电子证照卡包")], abp_security=CITIZEN_SECURITY)

Status = Literal["valid", "suspended", "revoked", "expired", "superseded"]


class WalletQuery(StrictModel):
    owner: Literal["self", "company"] | None = Field(
        default=None, description="self: the holder's own; company: those of represented companies; omitted: both")
    company: str | None = Field(default=None, pattern=r"^[0-9A-Z]{18}$",
                                description="统一社会信用代码 of one represented company (implies owner=company)")
    type_code: str | None = Field(default=None, pattern=r"^[0-9A-Z]{18}[0-9]{3}$", description="证照类型代码")
    status: Status | None = Field(
        default=None, description="effective status; omitted: every current version (superseded ones hidden)")
    limit: int = LIMIT_FIELD
    cursor: str | None = CURSOR_FIELD


class CertificatePath(BaseModel):
    certificate_id: str = Field(max_length=64, description="the certificate's opaque id (`id` in the wallet list)")


class OwnerOut(BaseModel):
    """Whose certificate it is: the holder's own (code and name null) or a represented company's."""

    kind: Literal["self", "company"]
    code: str | None = Field(description="the company's 统一社会信用代码; null for the holder's own")
    name: str | None = Field(description="the company's name; null for the holder's own")


class IssuerOut(BaseModel):
    code: str = Field(description="issuing department's 统一社会信用代码")
    name: str


class CompanyOut(BaseModel):
    code: str
    name: str
    role: str = Field(description="legal_representative | authorised_agent")


class CertificateSummary(BaseModel):
    id: str = Field(description="opaque id (32 hex) for the URLs below")
    type_code: str
    type_name: str = Field(description="证照名称, e.g. 营业执照")
    title: str = Field(description="one line for the card: type name and whose it is, e.g. 营业执照（某某有限公司）")
    owner: OwnerOut
    issuer: IssuerOut
    certificate_number_masked: str
    status: Status = Field(description="effective status: a certificate past its last day is expired")
    status_label: str = Field(description="有效 / 中止 / 已注销 / 已过期 / 已更新")
    valid_from: str
    valid_until: str | None = Field(description="last valid day; null = 长期 (long-term)")
    valid_until_label: str = Field(description="the date, or 长期")
    version: int


class WalletList(BaseModel):
    """One flat, newest-first list; each item says whose it is (`owner`), so pages never split a group."""

    items: list[CertificateSummary]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")
    companies: list[CompanyOut] = Field(description="the companies the holder currently represents (for owner/company "
                                                    "filters; a lapsed representation is listed in /me only)")


class FaceFieldOut(BaseModel):
    name: str
    label: str = Field(description="Chinese label from the catalog")
    value: str | int | float | bool
    sensitivity: int = Field(description="1 public … 4 highly sensitive")


class HolderOut(BaseModel):
    name: str = Field(description="持证主体名称")
    code_type: str = Field(description="持证主体代码类型")
    code_masked: str = Field(description="持证主体代码, masked (a company's USCC is shown in full)")


class VersionOut(BaseModel):
    id: str
    version: int
    status: str
    status_label: str
    created_at: str


class CertificateDetail(CertificateSummary):
    identifier: str = Field(description="证照标识 (GB/T 36904), e.g. to quote in an objection")
    certificate_number: str = Field(description="证照编号 as printed")
    holder: HolderOut
    issued_on: str
    status_reason: str | None
    notice: str | None = Field(description="for a certificate that is not valid: what happened and what to do")
    is_current: bool = Field(description="false when a newer version of the same certificate exists")
    current_version_id: str | None = Field(description="id of the newest version when this one is not it, else null")
    fields: list[FaceFieldOut] = Field(description="face fields (照面) in catalog order")
    versions: list[VersionOut] = Field(description="every version of this certificate, oldest first")


def owner_out(owner: service.Owner) -> OwnerOut:
    return OwnerOut(kind=owner.kind, code=owner.code, name=owner.name)


def _summary_fields(certificate: Certificate, owner: service.Owner, status: str) -> dict[str, Any]:
    ctype = certificate.certificate_type
    return {
        "id": certificate.public_id, "type_code": ctype.type_code, "type_name": ctype.name,
        "title": f"{ctype.name}（{owner.name or '本人'}）", "owner": owner_out(owner),
        "issuer": IssuerOut(code=certificate.issuer.code, name=certificate.issuer.name),
        "status": status, "status_label": service.status_label(status),
        "valid_from": certificate.valid_from.isoformat(),
        "valid_until": certificate.valid_until.isoformat() if certificate.valid_until else None,
        "valid_until_label": certificate.valid_until.isoformat() if certificate.valid_until else service.LONG_TERM,
        "version": certificate.version,
    }


def _listed(item: service.WalletItem) -> dict[str, Any]:
    """One CertificateSummary, as its model_dump() would give it."""
    certificate, owner, status = item.certificate, item.owner, item.status
    valid_until = certificate.valid_until.isoformat() if certificate.valid_until else None
    return {
        "id": certificate.public_id, "type_code": certificate.type_code, "type_name": certificate.type_name,
        "title": f"{certificate.type_name}（{owner.name or '本人'}）",
        "owner": {"kind": owner.kind, "code": owner.code, "name": owner.name},
        "issuer": {"code": certificate.issuer_code, "name": certificate.issuer_name},
        "certificate_number_masked": item.number_masked,
        "status": status, "status_label": service.status_label(status),
        "valid_from": certificate.valid_from.isoformat(), "valid_until": valid_until,
        "valid_until_label": valid_until or service.LONG_TERM, "version": certificate.version,
    }


def _version(certificate: Certificate, status: str) -> VersionOut:
    return VersionOut(id=certificate.public_id, version=certificate.version, status=status,
                      status_label=service.status_label(status), created_at=certificate.created_at.isoformat())


@bp.get("/certificates", responses={200: WalletList, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 422)})
@require_citizen
def list_certificates(query: WalletQuery) -> Response:
    """The holder's certificates and those of companies they represent, newest first, paginated by cursor."""
    moment, max_age = now(), representation_max_age()
    page = service.list_wallet_certificates(
        db.session(), field_cipher(), g.holder, now=moment, max_age=max_age, today=china_today(moment),
        owner=query.owner, company=query.company, type_code=query.type_code, status=query.status, limit=query.limit,
        cursor=query.cursor)
    # Plain dicts in WalletList's shape (its fields, documented above): building and dumping a model per item and
    # per nested object cost a tenth of the request.
    companies = [{"code": r.company_code, "name": r.company_name, "role": r.role}
                 for r in current_representations(g.holder, now=moment, max_age=max_age)]
    return jsonify({"items": [_listed(item) for item in page.items], "next_cursor": page.next_cursor,
                    "companies": companies})


@bp.get("/certificates/<certificate_id>",
        responses={200: CertificateDetail, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 422)})
@require_citizen
def read_certificate(path: CertificatePath) -> Response:
    """One certificate, decrypted: face with labels, validity, status, issuer, versions (the reading is audited)."""
    moment = now()
    today = china_today(moment)
    view = service.view_certificate(db.session(), field_cipher(), g.holder, path.certificate_id, actor=g.actor,
                                    now=moment, max_age=representation_max_age(), today=today)
    certificate = view.certificate
    return jsonify(CertificateDetail(
        **_summary_fields(certificate, view.owner, view.status),
        certificate_number_masked=mask_certificate_number(view.number),
        identifier=certificate.identifier, certificate_number=view.number,
        holder=HolderOut(name=view.holder_name, code_type=certificate.holder_code_type,
                         code_masked=view.holder_code_masked),
        issued_on=certificate.issued_on.isoformat(), status_reason=certificate.status_reason, notice=view.notice,
        is_current=view.current_version is None,
        current_version_id=view.current_version.public_id if view.current_version else None,
        fields=[FaceFieldOut(name=f.name, label=f.label, value=f.value, sensitivity=f.sensitivity)
                for f in view.fields],
        versions=[_version(v, service.effective_status(v, today)) for v in view.versions],
    ).model_dump())
