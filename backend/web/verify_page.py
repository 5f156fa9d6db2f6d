"""The scan-to-verify page (亮证核验): GET /v/{token}, HTML for a phone camera, JSON for scanner apps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Response, jsonify, render_template, request
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, ConfigDict, Field

from backend.auth.access import public
from backend.core.context import current_definitions, field_cipher, keystore, now, request_actor_context
from backend.extensions import db
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_clock
from backend.schemas import COMMON_ERRORS, error_responses
from backend.wallet.showcodes import PUBLIC_VERIFIER, ShowCodeCheck, check_show_code

bp = APIBlueprint("verify_page", __name__, abp_tags=[Tag(name="public", description="公开接口")])

HTML, JSON = "text/html", "application/json"
_MAX_TOKEN_CHARS = 512  # longer paths are not ours; don't spend anything on them
NOTICE = "截图、照片、打印件无效，请以现场扫码核验结果为准。"
PROFILE_LABELS = {"basic": "基本信息", "full": "完整信息（敏感信息已脱敏）"}
# A symbol next to the word, so the verdict never rests on colour alone; all are in Noto Sans CJK (no tofu).
STATE_SYMBOLS = {"valid": "✓", "expired": "⊘", "invalid": "×", "revoked": "×", "suspended": "‖",
                 "superseded": "!", "certificate_expired": "⊘", "not_yet_valid": "…"}
_NO_STORE = {"Cache-Control": "no-store, max-age=0", "Pragma": "no-cache", "Referrer-Policy": "no-referrer",
             "X-Robots-Tag": "noindex, nofollow", "Vary": "Accept"}


class TokenPath(BaseModel):
    token: str = Field(description="the show-code token (132 base64url characters)")


class IssuerOut(BaseModel):
    code: str
    name: str


class ShownField(BaseModel):
    name: str
    label: str
    value: str = Field(description="masked as the certificate type's policy says")


class ShownCertificate(BaseModel):
    name: str = Field(description="certificate type name, e.g. 营业执照")
    type_code: str
    issuer: IssuerOut
    status: str
    profile: str = Field(description="basic | full")
    holder_name: str | None = Field(description="masked holder name; null unless the certificate is valid")
    valid_from: str | None
    valid_until: str | None = Field(description="a date or 长期; null unless valid")
    fields: list[ShownField]


class ShowCodeVerdict(BaseModel):
    """The verdict on a scanned show code; without Accept: application/json the same as a page."""

    # flask-openapi3 reads `openapi_extra` to document the HTML alternative of the same response.
    model_config = ConfigDict(openapi_extra={"content": {HTML: {"schema": {"type": "string"}}}})  # type: ignore[typeddict-unknown-key]

    state: str = Field(description="valid | expired (the code) | invalid | revoked | suspended | superseded | "
                                   "certificate_expired | not_yet_valid")
    state_label: str = Field(description="有效 / 已过期 / 无效 / 已注销 / 已中止 / 已更新 / 未生效")
    explanation: str
    certificate: ShownCertificate | None = Field(description="null for an expired or invalid code")
    generated_at: str | None = Field(description="when the code was generated; null when the code is not ours")
    expires_at: str | None
    server_time: str
    notice: str


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _china(moment: datetime | None) -> str | None:
    """The page shows the China time to the second, and nothing for a time it does not have."""
    return china_clock(moment, seconds=True) if moment else None


def verdict(check: ShowCodeCheck, moment: datetime) -> dict[str, Any]:
    claims = check.claims
    return ShowCodeVerdict(
        state=check.state, state_label=check.label, explanation=check.explanation,
        certificate=ShownCertificate.model_validate(check.certificate) if check.certificate else None,
        generated_at=_iso(claims.issued_at_datetime) if claims else None,
        expires_at=_iso(claims.expires_at) if claims else None,
        server_time=moment.isoformat(), notice=NOTICE).model_dump()


@bp.get("/v/<token>", responses={200: ShowCodeVerdict, **error_responses(*COMMON_ERRORS)}, security=[])
@public
def verify_show_code(path: TokenPath) -> Response:
    """Check a show code live: a Chinese page (或 JSON) with the verdict; no data for expired or invalid codes."""
    moment = now()
    actor = Actor(kind="public", id="scan", **request_actor_context())
    token = path.token if len(path.token) <= _MAX_TOKEN_CHARS else ""
    # HEAD (link checkers, some preview fetchers) answers like GET but is no use of the certificate.
    check = check_show_code(db.session(), keystore(), field_cipher(), token, definitions=current_definitions(),
                            verifier=PUBLIC_VERIFIER, actor=actor, now=moment, record=request.method != "HEAD")
    body = verdict(check, moment)
    wanted = request.accept_mimetypes.best_match([HTML, JSON], default=HTML)
    if wanted == JSON:
        response = jsonify(body)
    else:
        claims = check.claims
        response = Response(render_template(
            "verify.html", verdict=body, symbol=STATE_SYMBOLS[check.state],
            profile_label=PROFILE_LABELS.get(claims.profile, "") if claims else "",
            generated_at=_china(claims.issued_at_datetime if claims else None), server_time=_china(moment),
            expires_at=_china(claims.expires_at if claims else None), notice=NOTICE), mimetype=HTML)
    response.headers.update(_NO_STORE)
    return response
