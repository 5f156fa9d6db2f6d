"""A holder's certificate card (证照卡面): what it shows, masked, and the audited verb that draws it for a purpose
(加注: watermarked with purpose and moment)."""

from __future__ import annotations

import logging
import re
import unicodedata
from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session

from backend.audit.chain import record_event
from backend.catalog.definitions import definition_as_issued
from backend.crypto.encryption import FieldCipher
from backend.crypto.masking import mask_holder_code, mask_name, mask_value
from backend.errors import ValidationFailed
from backend.issuance.certificates import CertificateContent, decrypt
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_clock, china_today
from backend.kernel.identifiers import HOLDER_CODE_TYPE_LABELS, HolderCodeType
from backend.models import Certificate
from backend.models.issuance import EXPIRED, REVOKED, SUPERSEDED, SUSPENDED
from backend.wallet.card_drawing import CardFace, CardFonts, card_fonts, render_card

log = logging.getLogger("ecert.card")

PURPOSE_MAX_LENGTH = 50
STATUS_STAMPS = {REVOKED: "已注销", SUSPENDED: "已中止", EXPIRED: "已过期", SUPERSEDED: "已更新"}


# -- what the card shows -----------------------------------------------------------------------------

def watermark_text(purpose: str, moment: datetime) -> str:
    """The 加注 repeated across the card: what this copy may be used for, and when it was made (China time)."""
    return f"仅供{purpose}使用 {china_clock(moment)}"


def check_purpose(purpose: str, fonts: CardFonts) -> str:
    """The purpose is drawn on the card: refuse characters the font cannot draw (they would become boxes)."""
    missing = fonts.missing(purpose)
    if missing:
        raise ValidationFailed.for_field("purpose", "undrawable_characters",
                                         "用途中含有无法显示的字符，请改用常用汉字、字母或数字")
    return purpose


def _day(value: date) -> str:
    return f"{value.year}年{value.month}月{value.day}日"


def display_value(spec: dict[str, Any], value: Any) -> str:
    """A face value as printed: dates in Chinese, booleans as 是/否, then masked by the field's rule.

    The masking is the show codes' (`mask_value`), so the card never shows more than the scan-to-verify page.
    """
    if spec.get("type") == "boolean":
        text = "是" if value else "否"
    elif spec.get("type") == "date" and isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        text = _day(date.fromisoformat(value))
    else:
        text = str(value)
    return mask_value(str(spec.get("mask", "none")), text)


def status_stamp(certificate: Certificate, today: date) -> str | None:
    """The stamp over a card that is not valid today; None for a valid one."""
    if certificate.status == REVOKED and (certificate.status_reason or "").startswith("吊销"):
        return "已吊销"
    if certificate.status in STATUS_STAMPS:
        return STATUS_STAMPS[certificate.status]
    if certificate.valid_until is not None and certificate.valid_until < today:
        return "已过期"  # the nightly expiry sweep has not run yet
    if certificate.valid_from > today:
        return "未生效"
    return None


def card_face(certificate: Certificate, content: CertificateContent, definition: dict[str, Any],
              today: date) -> CardFace:
    """The card's content: the type's showable fields (sharing.showable_fields) with their labels, masked."""
    personal = certificate.holder_code_type != HolderCodeType.USCC.value
    try:
        code_label = HOLDER_CODE_TYPE_LABELS[HolderCodeType(certificate.holder_code_type)]
    except ValueError:
        code_label = "持证主体代码"
    until = _day(certificate.valid_until) if certificate.valid_until else "长期"
    rows = [
        ("持证主体", mask_name(content.holder_name) if personal else content.holder_name),
        (code_label, mask_holder_code(certificate.holder_code_type, content.holder_code)),
        ("证照编号", content.number),
        ("有效期", f"{_day(certificate.valid_from)} 至 {until}"),
        ("签发日期", _day(certificate.issued_on)),
        ("签发机构", certificate.issuer.name),
    ]
    showable = set(definition.get("sharing", {}).get("showable_fields", []))
    fields = [(spec["label"], display_value(spec, content.fields[spec["name"]]))
              for spec in definition.get("fields", [])
              if spec["name"] in showable and content.fields.get(spec["name"]) not in (None, "")]
    return CardFace(title=certificate.certificate_type.name, issuer=certificate.issuer.name, rows=rows,
                    fields=fields, stamp=status_stamp(certificate, today), identifier=certificate.identifier)


# -- the verb ---------------------------------------------------------------------------------------------

def render_certificate_card(session: Session, cipher: FieldCipher, certificate: Certificate, *, purpose: str,
                            font_path: str | None, actor: Actor, now: datetime) -> bytes:
    """The holder's card of one certificate for one purpose; audited as wallet.card_rendered."""
    fonts = card_fonts(font_path)
    purpose = check_purpose(unicodedata.normalize("NFC", purpose.strip()), fonts)
    face = card_face(certificate, decrypt(cipher, certificate), definition_as_issued(session, certificate),
                     china_today(now))
    undrawable = fonts.missing("".join(f"{label}{value}" for label, value in [*face.rows, *face.fields]))
    if undrawable:  # rare characters beyond the font: counted, never logged (they are personal data)
        log.warning("card characters without glyphs", extra={"fields": {"count": len(undrawable)}})
    png = render_card(face, watermark_text(purpose, now), fonts)
    record_event(session, actor=actor, action="wallet.card_rendered", now=now, object_type="certificate",
                 object_id=certificate.identifier, details={"purpose": purpose, "status": certificate.status,
                                                            "stamp": face.stamp})
    return png
