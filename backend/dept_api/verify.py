"""Verification for departments (核验, 第十一条): POST /gov/v1/verify with a presentation or an identifier."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask import Response, g, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field, model_validator

from backend.auth.clients import BEARER_SECURITY, require_scope
from backend.core.context import current_definitions, deps, field_cipher, keystore, now
from backend.extensions import db
from backend.issuance import verification as service
from backend.issuance.verification import VerificationResult
from backend.keys import showcode
from backend.models import ApiClient
from backend.models.issuance import EXPIRED, VALID
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, StrictModel, error_responses
from backend.wallet import showcodes

bp = APIBlueprint("gov_verify", __name__, url_prefix="/gov/v1",
                  abp_tags=[Tag(name="gov-verify", description="证照核验")], abp_security=BEARER_SECURITY)


class VerifyRequest(StrictModel):
    """Exactly one subject to verify; each subject is one optional field, so new kinds only add a field."""

    presentation: str | None = Field(
        default=None, min_length=1, max_length=65536,
        description="SD-JWT VC presentation: issuer JWT~disclosures~KB-JWT. The KB-JWT (signed by the holder key "
                    "in `cnf`, aud = the calling client_id, iat within 5 minutes, sd_hash) is required for every "
                    "certificate bound to a holder key, and each KB-JWT is accepted only once")
    identifier: str | None = Field(default=None, min_length=1, max_length=256, description="证照标识 (GB/T 36904)")
    nonce: str | None = Field(default=None, min_length=1, max_length=256,
                              description="with `presentation`: the nonce the KB-JWT must carry (a KB-JWT is "
                                          "then required even for a certificate without a holder key)")
    show_code: str | None = Field(default=None, min_length=1, max_length=512,
                                  description="亮证码: the token, or the URL its QR code holds")

    @model_validator(mode="after")
    def _exactly_one_subject(self) -> VerifyRequest:
        subjects = [name for name in SUBJECTS if getattr(self, name) is not None]
        if len(subjects) != 1:
            raise ValueError(f"give exactly one of: {', '.join(SUBJECTS)}")
        if self.nonce is not None and self.presentation is None:
            raise ValueError("nonce is only used with presentation")
        return self


SUBJECTS = ("presentation", "identifier", "show_code")


class IssuerOut(BaseModel):
    code: str = Field(description="统一社会信用代码")
    name: str


class VerifiedCertificate(BaseModel):
    identifier: str
    type_code: str
    type_name: str
    issuer: IssuerOut
    version: int
    valid_from: str | None
    valid_until: str | None = Field(description="null = 长期")
    status: str = Field(description="valid | suspended | revoked | expired | superseded | unknown")
    disclosed: dict[str, dict[str, Any]] = Field(
        description="holder / document / face with only the disclosed claims; always empty for an identifier")


class VerifyResponse(BaseModel):
    valid: bool = Field(description="true only when every check passed")
    status: str = Field(description="the certificate's status: valid | suspended | revoked | expired | superseded "
                                    "| unknown (untrusted token or not a certificate of this platform)")
    reasons: list[str] = Field(description="stable codes of the failed checks, e.g. bad_signature, revoked, "
                                           "kb_missing, kb_wrong_audience, kb_replayed; empty when valid")
    certificate: VerifiedCertificate | None = Field(
        description="null when the token cannot be trusted; `disclosed` is empty unless the verdict is valid")


def _iso(day: date | None) -> str | None:
    return day.isoformat() if day else None


def verdict_body(result: VerificationResult) -> dict[str, Any]:
    """A verification in the answer's shape: {valid, status, reasons, certificate}."""
    certificate = result.certificate
    return {"valid": result.valid, "status": result.status, "reasons": list(result.reasons),
            "certificate": None if certificate is None else {
                "identifier": certificate.identifier, "type_code": certificate.type_code,
                "type_name": certificate.type_name,
                "issuer": {"code": certificate.issuer_code, "name": certificate.issuer_name},
                "version": certificate.version, "valid_from": _iso(certificate.valid_from),
                "valid_until": _iso(certificate.valid_until), "status": certificate.status,
                "disclosed": certificate.disclosed}}


# A show code's states that are not a certificate status: the certificate's validity ended, or has not begun.
_SHOW_CODE_STATUS = {showcodes.STATE_CERTIFICATE_EXPIRED: EXPIRED, showcodes.STATE_NOT_YET_VALID: VALID}


def show_code_body(check: showcodes.ShowCodeCheck) -> dict[str, Any]:
    """A show-code check in the same shape as a verification.

    `disclosed` carries what the holder chose to show, masked as on the public page: a code shows, it does not
    authorise (full values need the holder's grant, 授权用证).
    """
    if check.record is None or check.certificate is None:
        reason = f"show_code_{check.reason}" if check.reason in (showcode.EXPIRED, showcode.NOT_YET_VALID) \
            else (check.reason or showcode.MALFORMED)
        return {"valid": False, "status": "unknown", "reasons": [reason], "certificate": None}
    certificate, view = check.record, check.certificate
    status = _SHOW_CODE_STATUS.get(check.state, check.state)
    reasons = [] if check.state == showcodes.STATE_VALID else [check.state]
    disclosed: dict[str, dict[str, Any]] = {}
    if check.state == showcodes.STATE_VALID:
        disclosed = {"holder": {"name": view["holder_name"]},
                     "face": {item["name"]: item["value"] for item in view["fields"]}}
    return {"valid": not reasons, "status": status, "reasons": reasons, "certificate": {
        "identifier": certificate.identifier, "type_code": view["type_code"], "type_name": view["name"],
        "issuer": view["issuer"], "version": certificate.version,
        "valid_from": certificate.valid_from.isoformat(),
        "valid_until": certificate.valid_until.isoformat() if certificate.valid_until else None,
        "status": status, "disclosed": disclosed}}


@bp.post("/verify", responses={200: VerifyResponse, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 422)})
@require_scope("verify")
def verify(body: VerifyRequest) -> Response:
    """Verify a presented SD-JWT VC (signature, issuer, validity, status, disclosures, key binding) or an identifier."""
    client: ApiClient = g.client
    if body.presentation is not None:
        # The presentation must have been made to this client (KB-JWT aud); a caller that gave the holder a nonce
        # expects a KB-JWT carrying it.
        result = service.verify_presentation(deps(), body.presentation, client=client, actor=g.actor, now=now(),
                                             nonce=body.nonce)
    elif body.show_code is not None:
        check = showcodes.check_for_department(db.session(), keystore(), field_cipher(), body.show_code,
                                               definitions=current_definitions(), client=client, actor=g.actor,
                                               now=now())
        return jsonify(VerifyResponse.model_validate(show_code_body(check)).model_dump())
    else:
        assert body.identifier is not None
        result = service.verify_identifier(deps(), body.identifier, actor=g.actor, now=now())
    return jsonify(VerifyResponse.model_validate(verdict_body(result)).model_dump())
