"""Show codes (亮证码): POST /api/v1/wallet/certificates/{id}/show-codes answers a code, or its QR image."""

from __future__ import annotations

from typing import Literal

from flask import Response, current_app, g, jsonify, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from backend.auth.citizens import CITIZEN_SECURITY, require_citizen
from backend.core import qr
from backend.core.context import keystore, now, representation_max_age
from backend.errors import DomainError
from backend.extensions import db
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, StrictModel, error_responses
from backend.wallet.queries import find_held_certificate
from backend.wallet.showcode_minting import mint_show_code

bp = APIBlueprint("citizen_show_codes", __name__, url_prefix="/api/v1",
                  abp_tags=[Tag(name="citizen-show-codes", description="亮证")])

JSON, PNG, SVG = "application/json", "image/png", "image/svg+xml"
_IMAGE_HEADERS = {
    "X-Show-Code-Expires-At": {"description": "when the code stops verifying (ISO 8601)", "schema": {"type": "string"}},
    "X-Show-Code-Refresh-After": {"description": "seconds after which the app should fetch a new code",
                                  "schema": {"type": "integer"}},
}


class CertificatePath(BaseModel):
    id: str = Field(max_length=64, description="the certificate's opaque id in the wallet")


class ShowCodeRequest(StrictModel):
    profile: Literal["basic", "full"] = Field(
        default="basic", description="basic: what the type lets anyone see; full: the face fields allowed for "
                                     "showing, sensitive values masked")


class ShowCode(BaseModel):
    """A show code; with Accept: image/png or image/svg+xml the response is its QR image instead."""

    # flask-openapi3 reads `openapi_extra`: the image alternatives of the same response.
    model_config = ConfigDict(openapi_extra={  # type: ignore[typeddict-unknown-key]
        "headers": _IMAGE_HEADERS,
        "content": {PNG: {"schema": {"type": "string", "format": "binary"}},
                    SVG: {"schema": {"type": "string"}}},
    })

    token: str = Field(description="132-character base64url token, signed by the platform key")
    url: str = Field(description="the scan-to-verify page; this is what the QR code encodes")
    profile: str
    issued_at: str
    expires_at: str = Field(description="ISO 8601; the code is refused from this moment on")
    refresh_after: int = Field(description="seconds: fetch a new code after this long (before expires_at)")


@bp.post("/wallet/certificates/<id>/show-codes",
         responses={200: ShowCode, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 406, 409, 410, 422)},
         security=CITIZEN_SECURITY)
@require_citizen
def create_show_code(path: CertificatePath, body: ShowCodeRequest) -> Response:
    """Mint a show code (valid 60 s, refresh after 30 s) for a certificate the holder holds or represents."""
    wanted = request.accept_mimetypes.best_match([JSON, PNG, SVG]) \
        if request.accept_mimetypes else JSON
    if wanted is None:
        raise DomainError("只能返回 JSON、PNG 或 SVG", code="not_acceptable").with_status(406)
    session, moment = db.session(), now()
    certificate = find_held_certificate(session, g.holder, path.id, now=moment, max_age=representation_max_age())
    config = current_app.config
    minted = mint_show_code(session, keystore(), certificate, profile=body.profile,
                            lifetime=config["ECERT_SHOW_CODE_TTL"], public_url=config["ECERT_PUBLIC_URL"],
                            actor=g.actor, now=moment)
    refresh_after = config["ECERT_SHOW_CODE_REFRESH"]
    expires_at = minted.claims.expires_at.isoformat()
    if wanted == JSON:
        response = jsonify(ShowCode(token=minted.token, url=minted.url, profile=body.profile,
                                    issued_at=minted.claims.issued_at_datetime.isoformat(), expires_at=expires_at,
                                    refresh_after=refresh_after).model_dump())
        response.vary.add("Accept")
        return response
    code = qr.make_qr(minted.url)
    headers = {"X-Show-Code-Expires-At": expires_at, "X-Show-Code-Refresh-After": str(refresh_after), "Vary": "Accept"}
    if wanted == PNG:
        return Response(qr.png(code), mimetype=PNG, headers=headers)
    return Response(qr.svg(code), mimetype=SVG, headers=headers)
