"""Drawing a certificate card (证照卡面) with Pillow: the checked CJK font, line breaks, watermark and stamp; no
database (backend/wallet/README.md: why a font without Chinese is refused)."""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from PIL import Image, ImageDraw, ImageFont

from backend.errors import ServiceUnavailable

log = logging.getLogger("ecert.card")

FONT_PACKAGE = "fonts-noto-cjk"
# Two different ideographs: a font without Chinese draws both as the same .notdef box.
TOFU_PROBE = ("营", "业")
_NOTDEF_PROBE = "\U000f0000"  # a private-use plane code point no font maps: always the .notdef glyph


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


@dataclass(frozen=True)
class CardFace:
    """Everything the card prints, already masked."""

    title: str
    issuer: str
    rows: list[tuple[str, str]]
    fields: list[tuple[str, str]]
    stamp: str | None
    identifier: str


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
