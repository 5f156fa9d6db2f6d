"""The certificate card image (证照卡面): GET /api/v1/wallet/certificates/{id}/card.png?purpose=…"""

from __future__ import annotations

import unicodedata

from flask import Response, current_app, g
from flask_openapi3 import APIBlueprint, Tag
from pydantic import BaseModel, Field, field_validator

from backend.auth.citizens import CITIZEN_SECURITY, require_citizen
from backend.core.context import field_cipher, now, representation_max_age
from backend.extensions import db
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, StrictModel, error_responses
from backend.wallet.card_image import PURPOSE_MAX_LENGTH, render_certificate_card
from backend.wallet.queries import find_holder_certificate

bp = APIBlueprint("wallet_cards", __name__, url_prefix="/api/v1/wallet",
                  abp_tags=[Tag(name="wallet", description="电子证照卡包")], abp_security=CITIZEN_SECURITY)

# Control, format, private-use, unassigned and surrogate characters, and symbols (emoji) cannot be printed.
_UNPRINTABLE_CATEGORIES = {"Cc", "Cf", "Co", "Cn", "Cs", "So", "Zl", "Zp"}

PNG_RESPONSE = {"description": "证照卡面 PNG 图片，带用途与时间水印（加注）",
                "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}


class CardPath(BaseModel):
    certificate_id: str = Field(max_length=64, description="the certificate's opaque id from the wallet")


class CardQuery(StrictModel):
    purpose: str = Field(min_length=1, max_length=PURPOSE_MAX_LENGTH,
                         description="what the copy is for, printed in the watermark, e.g. 办理入学")

    @field_validator("purpose")
    @classmethod
    def _printable(cls, value: str) -> str:
        text = unicodedata.normalize("NFC", value).strip()
        if not text:
            raise ValueError("用途不能为空")
        if any(unicodedata.category(c) in _UNPRINTABLE_CATEGORIES for c in text):
            raise ValueError("用途只能包含文字、字母、数字和常用标点")
        return text


@bp.get("/certificates/<certificate_id>/card.png",
        responses={200: PNG_RESPONSE, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 422, 503)})
@require_citizen
def card_image(path: CardPath, query: CardQuery) -> Response:
    """The certificate's face as a PNG for one purpose, watermarked "仅供{purpose}使用 {time}"; not a valid copy."""
    session, moment = db.session(), now()
    certificate = find_holder_certificate(session, g.holder, path.certificate_id, now=moment,
                                          max_age=representation_max_age())
    png = render_certificate_card(session, field_cipher(), certificate, purpose=query.purpose,
                                  font_path=current_app.config["ECERT_CJK_FONT"], actor=g.actor, now=moment)
    response = Response(png, mimetype="image/png")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Disposition"] = 'inline; filename="card.png"'
    return response
