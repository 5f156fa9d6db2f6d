"""Verification for departments (核验, 第十一条): POST /gov/v1/verify with a presentation or an identifier."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, g, jsonify
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field, model_validator

from backend.auth.clients import BEARER_SECURITY, require_scope
from backend.core.context import current_definitions, field_cipher, keystore, now
from backend.extensions import db
from backend.issuance import verification as service
from backend.models import ApiClient
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


@bp.post("/verify", responses={200: VerifyResponse, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 422)})
@require_scope("verify")
def verify(body: VerifyRequest) -> Response:
    """Verify a presented SD-JWT VC (signature, issuer, validity, status, disclosures, key binding) or an identifier."""
    client: ApiClient = g.client
    public_url = current_app.config["ECERT_PUBLIC_URL"]
    if body.presentation is not None:
        # The presentation must have been made to this client (KB-JWT aud); a caller that gave the holder a nonce
        # expects a KB-JWT carrying it.
        result = service.verify_presentation(db.session(), keystore(), body.presentation, client=client,
                                             actor=g.actor, now=now(), public_url=public_url, nonce=body.nonce)
    elif body.show_code is not None:
        return jsonify(VerifyResponse.model_validate(showcodes.check_for_department(
            db.session(), keystore(), field_cipher(), body.show_code, definitions=current_definitions(), client=client,
            actor=g.actor, now=now()))
            .model_dump())
    else:
        assert body.identifier is not None
        result = service.verify_identifier(db.session(), keystore(), field_cipher(), body.identifier, actor=g.actor,
                                           now=now(), public_url=public_url)
    return jsonify(VerifyResponse.model_validate(result.to_dict()).model_dump())
