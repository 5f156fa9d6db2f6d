"""Certificate card image (证照卡面): the face drawn with Pillow, watermarked with purpose and moment (加注)."""

from __future__ import annotations

import io
import logging
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.audit.chain import record_event
from backend.crypto.encryption import FieldCipher
from backend.crypto.masking import mask_holder_code, mask_name, mask_value
from backend.errors import ServiceUnavailable, ValidationFailed
from backend.issuance.certificates import CertificateContent, decrypt
from backend.kernel.actors import Actor
from backend.kernel.china_time import china_clock, china_today
from backend.kernel.identifiers import HOLDER_CODE_TYPE_LABELS, HolderCodeType
from backend.models import Certificate, CertificateTypeVersion
from backend.models.certificates import EXPIRED, REVOKED, SUPERSEDED, SUSPENDED

log = logging.getLogger("ecert.card")

FONT_PACKAGE = "fonts-noto-cjk"
PURPOSE_MAX_LENGTH = 50
# Two different ideographs: a font without Chinese draws both as the same .notdef box.
TOFU_PROBE = ("营", "业")
_NOTDEF_PROBE = "\U000f0000"  # a private-use plane code point no font maps: always the .notdef glyph

STATUS_STAMPS = {REVOKED: "已注销", SUSPENDED: "已中止", EXPIRED: "已过期", SUPERSEDED: "已更新"}


class FontUnavailable(ServiceUnavailable):
    code = "font_unavailable"
    message = f"服务器未安装中文字体，暂时无法生成证照图片；请管理员安装 {FONT_PACKAGE}（或配置 ECERT_CJK_FONT）"

    def __init__(self) -> None:
        super().__init__(details={"package": FONT_PACKAGE, "setting": "ECERT_CJK_FONT"})


# -- fonts ----------------------------------------------------------------------------------------------

def _load(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    # BASIC layout: Chinese needs no shaping, and it is faster and identical with or without libraqm.
    return ImageFont.truetype(path, size, index=index, layout_engine=ImageFont.Layout.BASIC)


def _face_index(path: str) -> int:
    """In a collection (.ttc) pick the Simplified Chinese face (Noto's index 0 is Japanese: other glyph forms)."""
    names: list[str] = []
    for index in range(32):
        try:
            names.append(_load(path, index, 16).getname()[0] or "")
        except OSError:
            break
    for wanted in (re.compile(r"\bSC$"), re.compile(r"\b(SC|GB|Hans)\b")):
        for index, name in enumerate(names):
            if wanted.search(name) and "Mono" not in name:
                return index
    return 0


def glyph(font: ImageFont.FreeTypeFont, character: str) -> tuple[tuple[int, int], bytes]:
    """The bitmap of one character: equal bitmaps for different characters mean the font has neither (tofu)."""
    mask = font.getmask(character)
    return mask.size, bytes(mask)


def draws_chinese(font: ImageFont.FreeTypeFont) -> bool:
    first, second = (glyph(font, c) for c in TOFU_PROBE)
    return first != second and glyph(font, _NOTDEF_PROBE) not in (first, second)


@dataclass(frozen=True)
class CardFonts:
    """A CJK font file, its Chinese face and a bold sibling when one exists (NotoSansCJK-Bold.ttc)."""

    path: str
    index: int
    bold_path: str
    bold_index: int

    def regular(self, size: int) -> ImageFont.FreeTypeFont:
        return _sized(self.path, self.index, size)

    def bold(self, size: int) -> ImageFont.FreeTypeFont:
        return _sized(self.bold_path, self.bold_index, size)

    def missing(self, text: str) -> set[str]:
        """Characters of `text` this font would draw as boxes."""
        return {c for c in set(text) if not c.isspace() and _is_notdef(self.path, self.index, c)}


@lru_cache(maxsize=64)
def _sized(path: str, index: int, size: int) -> ImageFont.FreeTypeFont:
    return _load(path, index, size)


@lru_cache(maxsize=4096)
def _is_notdef(path: str, index: int, character: str) -> bool:
    font = _sized(path, index, 24)
    return glyph(font, character) == glyph(font, _NOTDEF_PROBE)


@lru_cache(maxsize=8)
def _checked_fonts(path: str, modified: float) -> CardFonts:
    """Open and check a font file once (per modification time); errors are not cached, so a later install works."""
    index = _face_index(path)
    if not draws_chinese(_sized(path, index, 24)):
        raise ValueError("font has no Chinese glyphs")
    bold_path = path.replace("Regular", "Bold")
    if bold_path == path or not os.path.isfile(bold_path):
        return CardFonts(path, index, path, index)
    bold_index = _face_index(bold_path)
    if not draws_chinese(_sized(bold_path, bold_index, 24)):
        return CardFonts(path, index, path, index)
    return CardFonts(path, index, bold_path, bold_index)


def card_fonts(path: str | None) -> CardFonts:
    """The configured CJK font, checked; FontUnavailable (503) when it is missing or has no Chinese glyphs."""
    try:
        if not path:
            raise FileNotFoundError("ECERT_CJK_FONT is not set and no CJK font was found")
        return _checked_fonts(path, os.stat(path).st_mtime)
    except (OSError, ValueError) as exc:
        log.warning("cjk font unavailable", extra={"fields": {"font": path, "reason": str(exc),
                                                                "install": FONT_PACKAGE}})
        raise FontUnavailable() from exc


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


@dataclass(frozen=True)
class CardFace:
    """Everything the card prints, already masked."""

    title: str
    issuer: str
    rows: list[tuple[str, str]]
    fields: list[tuple[str, str]]
    stamp: str | None
    identifier: str


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


# -- drawing ----------------------------------------------------------------------------------------------

# 750 px: the design width of a mini-app page (750rpx), so the card fills a phone screen at its natural size.
WIDTH = 750
MARGIN = 36
HEADER = 132
ROW_GAP = 14
LINE_GAP = 6
MAX_VALUE_LINES = 5
INK = (33, 33, 33)
MUTED = (105, 105, 105)
RED = (170, 28, 36)
PAPER = (255, 252, 245)
RULE = (226, 214, 196)
WATERMARK_INK, WATERMARK_OPACITY = (96, 96, 96), 0.30
STAMP_INK, STAMP_OPACITY = (205, 18, 28), 0.72
NOTE = "本图片仅供展示，不作为有效凭证；证照真伪与状态请以扫码实时核验为准"
# Closing punctuation never starts a line (避头点): it stays at the end of the previous one.
_NO_LINE_START = set("，。、；：！？）》」』”’,.;:!?)…%")


@lru_cache(maxsize=8192)
def _advance(font: ImageFont.FreeTypeFont, character: str) -> float:
    return font.getlength(character)


def wrap(text: str, font: ImageFont.FreeTypeFont, width: int, max_lines: int = MAX_VALUE_LINES) -> list[str]:
    """Break text into lines of at most `width` pixels (any character may break in Chinese); ellipsis past max.

    Widths are sums of cached per-character advances: the basic layout applies no kerning to CJK text.
    """
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line, used = "", 0.0
        for character in paragraph:
            advance = _advance(font, character)
            if line and character not in _NO_LINE_START and used + advance > width:
                lines.append(line)
                line, used = character, advance
                if len(lines) > max_lines:
                    break
            else:
                line, used = line + character, used + advance
        lines.append(line)
        if len(lines) > max_lines:
            break
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1][:-1] + "…"
    return lines


def _line_height(font: ImageFont.FreeTypeFont) -> int:
    ascent, descent = font.getmetrics()
    return ascent + descent


def _ink(card: Image.Image, coverage: Image.Image, colour: tuple[int, int, int], opacity: float) -> None:
    """Lay `colour` over the card where `coverage` (an L mask of the card's size) is set, semi-transparently."""
    alpha = coverage.point([round(v * opacity) for v in range(256)])
    card.paste(colour, (0, 0, *card.size), alpha)


def _rotated_text(text: str, font: ImageFont.FreeTypeFont, angle: float, *, pad: int = 12,
                  frame: bool = False) -> Image.Image:
    """Text (optionally framed like a seal) as an L coverage mask, rotated counter-clockwise by `angle` degrees."""
    left, top, right, bottom = (int(v) for v in font.getbbox(text))
    tile = Image.new("L", (right - left + 2 * pad, bottom - top + 2 * pad), 0)
    draw = ImageDraw.Draw(tile)
    if frame:
        draw.rounded_rectangle((3, 3, tile.width - 4, tile.height - 4), radius=12, outline=255, width=6)
    draw.text((pad - left, pad - top), text, font=font, fill=255)
    return tile.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)


def _watermark(card: Image.Image, text: str, font: ImageFont.FreeTypeFont) -> None:
    """Repeat `text` diagonally over the whole card in staggered rows, so no crop of the face escapes it."""
    tile = _rotated_text(text, font, 30)
    coverage = Image.new("L", card.size, 0)
    step_x, step_y = tile.width + 24, tile.height // 2 + 36
    for row, y in enumerate(range(-tile.height // 2, card.height, step_y)):
        for x in range(-tile.width + (row % 2) * (step_x // 2), card.width, step_x):
            coverage.paste(tile, (x, y), tile)
    _ink(card, coverage, WATERMARK_INK, WATERMARK_OPACITY)


def _stamp(card: Image.Image, text: str, font: ImageFont.FreeTypeFont, centre: tuple[int, int]) -> None:
    """A red seal-like stamp (已注销 …) across the face, tilted like a hand stamp."""
    seal = _rotated_text(text, font, -15, pad=20, frame=True)
    coverage = Image.new("L", card.size, 0)
    coverage.paste(seal, (centre[0] - seal.width // 2, centre[1] - seal.height // 2))
    _ink(card, coverage, STAMP_INK, STAMP_OPACITY)


def _png(card: Image.Image) -> bytes:
    # A 64-colour palette keeps anti-aliased text smooth; the PNG is a third of the RGB one and encodes faster.
    out = io.BytesIO()
    card.quantize(64, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE).save(out, format="PNG")
    return out.getvalue()


def render_card(face: CardFace, watermark: str, fonts: CardFonts) -> bytes:
    """Draw the card and return PNG bytes. Deterministic for the same face, watermark and font."""
    title_font, subtitle_font = fonts.bold(40), fonts.regular(21)
    label_font, value_font, small_font = fonts.regular(23), fonts.regular(26), fonts.regular(16)
    label_width = min(270, max(int(label_font.getlength(label)) for label, _ in [*face.rows, *face.fields]))
    value_x = MARGIN + label_width + 24
    value_width = WIDTH - MARGIN - value_x
    value_line = _line_height(value_font) + LINE_GAP
    small_line = _line_height(small_font) + 4

    def layout(rows: Sequence[tuple[str, str]]) -> list[tuple[list[str], list[str]]]:
        return [(wrap(label, label_font, label_width, 2), wrap(value, value_font, value_width))
                for label, value in rows]

    blocks = [layout(face.rows), layout(face.fields)]
    # The identifier on a line of its own: broken anywhere else, its dotted segments are hard to read.
    footer = ["证照标识", *wrap(face.identifier, small_font, WIDTH - 2 * MARGIN, 2),
              *wrap(NOTE, small_font, WIDTH - 2 * MARGIN, 2)]
    body = sum(max(len(labels), len(values)) * value_line + ROW_GAP for block in blocks for labels, values in block)
    height = HEADER + 28 + body + (28 if face.fields else 0) + 28 + len(footer) * small_line + 28

    card = Image.new("RGB", (WIDTH, height), PAPER)
    draw = ImageDraw.Draw(card)
    draw.rectangle((0, 0, WIDTH, HEADER), fill=RED)
    draw.text((WIDTH // 2, 52), face.title, font=title_font, fill="white", anchor="mm")
    draw.text((WIDTH // 2, 100), f"电子证照 · {face.issuer}", font=subtitle_font, fill=(255, 226, 220), anchor="mm")
    y = HEADER + 28
    for number, block in enumerate(blocks):
        if number and block:
            draw.line((MARGIN, y - ROW_GAP // 2, WIDTH - MARGIN, y - ROW_GAP // 2), fill=RULE, width=2)
            y += 28 - ROW_GAP // 2
        for labels, values in block:
            for i, line in enumerate(labels):
                draw.text((MARGIN, y + i * value_line + 2), line, font=label_font, fill=MUTED)
            for i, line in enumerate(values):
                draw.text((value_x, y + i * value_line), line, font=value_font, fill=INK)
            y += max(len(labels), len(values)) * value_line + ROW_GAP
    y += 14
    draw.line((MARGIN, y, WIDTH - MARGIN, y), fill=RULE, width=2)
    y += 14
    for line in footer:
        draw.text((MARGIN, y), line, font=small_font, fill=MUTED)
        y += small_line
    draw.rectangle((0, height - 5, WIDTH, height), fill=RED)
    if face.stamp:
        _stamp(card, face.stamp, fonts.bold(52), (WIDTH - MARGIN - 120, HEADER + 118))
    _watermark(card, watermark, fonts.regular(22))
    return _png(card)


# -- the verb ---------------------------------------------------------------------------------------------

def _definition(session: Session, certificate: Certificate) -> dict[str, Any]:
    """The catalog version the certificate was issued under (labels and policy as they were then)."""
    definition = session.scalar(select(CertificateTypeVersion.definition).where(
        CertificateTypeVersion.certificate_type_id == certificate.certificate_type_id,
        CertificateTypeVersion.version == certificate.catalog_version))
    return definition if definition is not None else certificate.certificate_type.definition


def render_certificate_card(session: Session, cipher: FieldCipher, certificate: Certificate, *, purpose: str,
                            font_path: str | None, actor: Actor, now: datetime) -> bytes:
    """The holder's card of one certificate for one purpose; audited as wallet.card_rendered."""
    fonts = card_fonts(font_path)
    purpose = check_purpose(unicodedata.normalize("NFC", purpose.strip()), fonts)
    face = card_face(certificate, decrypt(cipher, certificate), _definition(session, certificate),
                     china_today(now))
    undrawable = fonts.missing("".join(f"{label}{value}" for label, value in [*face.rows, *face.fields]))
    if undrawable:  # rare characters beyond the font: counted, never logged (they are personal data)
        log.warning("card characters without glyphs", extra={"fields": {"count": len(undrawable)}})
    png = render_card(face, watermark_text(purpose, now), fonts)
    record_event(session, actor=actor, action="wallet.card_rendered", now=now, object_type="certificate",
                 object_id=certificate.identifier, details={"purpose": purpose, "status": certificate.status,
                                                            "stamp": face.stamp})
    return png
