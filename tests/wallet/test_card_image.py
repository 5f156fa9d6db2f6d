"""The certificate card image (GET /api/v1/wallet/certificates/{id}/card.png): face, masking, watermark, CJK font."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image, ImageChops, ImageDraw, ImageFont

from backend.config import find_cjk_font
from backend.core.context import field_cipher
from backend.extensions import db
from backend.issuance.certificates import decrypt
from backend.kernel.china_time import CHINA
from backend.models import AuditEvent, Certificate
from backend.wallet.card_drawing import FontUnavailable, card_fonts, draws_chinese, glyph, wrap
from backend.wallet.card_image import card_face, status_stamp, watermark_text
from tests.factories import DISABILITY, MARRIAGE, company_code
from tests.support import WALLET, error_code, public_id_of

DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"  # Latin only: draws Chinese as boxes


def card(citizen: Any, wallet_id: str, **query: Any) -> Any:
    return citizen.http.get(f"{WALLET}/{wallet_id}/card.png", query_string=query, headers=citizen.headers)


def card_image(citizen: Any, wallet_id: str, purpose: str = "办理入学") -> Image.Image:
    response = card(citizen, wallet_id, purpose=purpose)
    assert response.status_code == 200, response.get_data(as_text=True)
    image = Image.open(io.BytesIO(response.data))
    image.load()
    return image


def configured_font(app: Any) -> ImageFont.FreeTypeFont:
    return card_fonts(app.config["ECERT_CJK_FONT"]).regular(32)


# -- the image -------------------------------------------------------------------------------------------

def test_the_card_is_a_png_of_a_sensible_size_and_is_not_cached(app, civil_affairs, login):
    citizen = login()
    wallet_id = public_id_of(app, civil_affairs.issue_to(citizen))

    response = card(citizen, wallet_id, purpose="办理入学")

    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "image/png"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.data.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(response.data))
    image.verify()
    assert image.format == "PNG"
    assert image.width == 750  # a mini-app page's design width
    assert 800 <= image.height <= 3000


def test_rendering_is_audited_with_the_purpose(app, civil_affairs, login):
    citizen = login()
    identifier = civil_affairs.issue_to(citizen)
    card_image(citizen, public_id_of(app, identifier), purpose="办理入学")

    with app.app_context():
        event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "wallet.card_rendered"))
    assert event is not None
    assert (event.actor_type, event.object_id) == ("citizen", identifier)
    assert event.details["purpose"] == "办理入学"
    assert citizen.id_number not in str(event.details)


def test_the_card_needs_a_login(app, civil_affairs, login, client):
    wallet_id = public_id_of(app, civil_affairs.issue_to(login()))
    response = client.get(f"{WALLET}/{wallet_id}/card.png", query_string={"purpose": "办理入学"})
    assert error_code(response, 401) == "unauthorized"


# -- whose card ---------------------------------------------------------------------------------------------

def test_another_holders_certificate_is_not_found(app, civil_affairs, login):
    owner, other = login(name="张伟"), login(name="李娜")
    wallet_id = public_id_of(app, civil_affairs.issue_to(owner))

    response = card(other, wallet_id, purpose="办理入学")

    assert error_code(response, 404) == "certificate_not_found"
    assert error_code(card(other, "0" * 32, purpose="办理入学"), 404) == "certificate_not_found"
    with app.app_context():
        assert db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "wallet.card_rendered")) is None


def test_a_company_card_is_for_its_representative_only(app, samr, login):
    code = company_code()
    representative = login(name="王建国", companies=[{"code": code, "name": "信阳毛尖茶业有限公司"}])
    stranger = login(name="李娜")
    wallet_id = public_id_of(app, samr.issue_to_company(code))

    assert card_image(representative, wallet_id).format == "PNG"
    assert error_code(card(stranger, wallet_id, purpose="办理入学"), 404) == "certificate_not_found"


# -- the purpose ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("query", [
    {},
    {"purpose": ""},
    {"purpose": "   "},
    {"purpose": "办" * 51},
    {"purpose": "办理入学", "size": "large"},
    {"purpose": "办理\n入学"},
    {"purpose": "办理入学😀"},
], ids=["missing", "empty", "blank", "too-long", "unknown-parameter", "control-character", "emoji"])
def test_a_missing_or_unprintable_purpose_is_422(app, civil_affairs, login, query):
    citizen = login()
    wallet_id = public_id_of(app, civil_affairs.issue_to(citizen))
    assert error_code(card(citizen, wallet_id, **query), 422) == "validation_failed"


def test_a_purpose_with_characters_the_font_cannot_draw_is_422(app, civil_affairs, login):
    citizen = login()
    wallet_id = public_id_of(app, civil_affairs.issue_to(citizen))
    response = card(citizen, wallet_id, purpose="办理\U00030000入学")  # CJK Extension G: beyond Noto Sans CJK
    assert error_code(response, 422) == "validation_failed"
    assert response.get_json()["error"]["details"]["fields"][0]["reason"] == "undrawable_characters"


def test_a_fifty_character_purpose_is_accepted(app, civil_affairs, login):
    citizen = login()
    wallet_id = public_id_of(app, civil_affairs.issue_to(citizen))
    assert card_image(citizen, wallet_id, purpose="办" * 50).format == "PNG"


# -- the watermark (加注) ---------------------------------------------------------------------------------------

def test_the_watermark_names_the_purpose_and_the_china_time():
    moment = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    assert watermark_text("办理入学", moment) == "仅供办理入学使用 2026-11-26 17:30"
    assert watermark_text("办理入学", moment.astimezone(CHINA)) == "仅供办理入学使用 2026-11-26 17:30"


def test_the_watermark_covers_the_whole_card_and_changes_with_the_purpose(app, civil_affairs, login):
    citizen = login()
    wallet_id = public_id_of(app, civil_affairs.issue_to(citizen))

    first, again = card_image(citizen, wallet_id, "办理入学"), card_image(citizen, wallet_id, "办理入学")
    other = card_image(citizen, wallet_id, "申请贷款")

    assert ImageChops.difference(first, again).getbbox() is None  # same purpose, same moment: same picture
    assert first.size == other.size
    left, top, right, bottom = ImageChops.difference(first, other).getbbox() or (0, 0, 0, 0)
    # Repeated diagonally over the whole card: the difference spans it, not one corner that could be cropped.
    assert right - left > 0.9 * first.width
    assert bottom - top > 0.9 * first.height


def test_the_watermark_changes_with_the_time(app, civil_affairs, login, clock):
    citizen = login()
    wallet_id = public_id_of(app, civil_affairs.issue_to(citizen))
    before = card_image(citizen, wallet_id)
    clock.advance(minutes=1)
    assert ImageChops.difference(before, card_image(citizen, wallet_id)).getbbox() is not None


# -- Chinese, never tofu -------------------------------------------------------------------------------------

def test_the_configured_font_draws_real_chinese_glyphs(app):
    font = configured_font(app)
    glyphs = {character: glyph(font, character) for character in "营业执照电子证照"}
    assert glyphs["营"] != glyphs["业"]  # a font without Chinese draws both as the same box
    assert len(set(glyphs.values())) == len(set(glyphs))  # each different character, a different glyph
    assert all(any(bitmap) for _, bitmap in glyphs.values())
    family = font.getname()[0] or ""
    assert "CJK" not in family or family.endswith("SC")  # a collection's Simplified Chinese face, not its Japanese


def test_the_tofu_check_recognises_a_font_without_chinese():
    latin = ImageFont.load_default(32)  # Pillow's own Latin-only TrueType font
    assert glyph(latin, "营") == glyph(latin, "业")
    assert not draws_chinese(latin)


def test_the_default_font_is_found_on_this_machine():
    path = find_cjk_font()
    assert path is not None, "install fonts-noto-cjk (make run does it as root)"
    assert draws_chinese(card_fonts(path).regular(24))


def test_a_rendered_title_is_not_a_row_of_boxes(app):
    """The card's title as drawn: boxes would make every character's column identical."""
    font = card_fonts(app.config["ECERT_CJK_FONT"]).bold(46)
    cells = []
    for character in "营业执照":
        tile = Image.new("L", (60, 60), 0)
        ImageDraw.Draw(tile).text((4, 0), character, font=font, fill=255)
        cells.append(tile.tobytes())
    assert len(set(cells)) == 4


@pytest.mark.parametrize("app_settings", [
    {"ECERT_CJK_FONT": "/nonexistent/NotoSansCJK-Regular.ttc"},
    pytest.param({"ECERT_CJK_FONT": DEJAVU}, marks=pytest.mark.skipif(not Path(DEJAVU).is_file(), reason="no DejaVu")),
], ids=["missing-file", "font-without-chinese"])
def test_without_a_cjk_font_the_card_is_503_naming_the_package(app, civil_affairs, login, app_settings):
    citizen = login()
    wallet_id = public_id_of(app, civil_affairs.issue_to(citizen))

    response = card(citizen, wallet_id, purpose="办理入学")

    assert error_code(response, 503) == "font_unavailable"
    error = response.get_json()["error"]
    assert "fonts-noto-cjk" in error["message"]
    assert error["details"]["package"] == "fonts-noto-cjk"
    assert app_settings["ECERT_CJK_FONT"] not in response.get_data(as_text=True)  # no server paths to clients
    with app.app_context():
        assert db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "wallet.card_rendered")) is None


def test_an_unset_font_is_unavailable():
    with pytest.raises(FontUnavailable):
        card_fonts(None)


# -- what the card shows ----------------------------------------------------------------------------------------

def _face(app: Any, identifier: str, today: date = date(2026, 11, 26)) -> Any:
    with app.app_context():
        certificate = db.session.scalar(sa.select(Certificate).where(Certificate.identifier == identifier))
        assert certificate is not None
        definition = certificate.certificate_type.definition
        return card_face(certificate, decrypt(field_cipher(), certificate), definition, today)


def test_the_face_shows_showable_fields_with_labels_and_masks_personal_data(app, disability_federation, login):
    citizen = login(name="刘芳")
    identifier = disability_federation.issue_to(citizen, DISABILITY, fields={"contact_phone": "13812345678"})

    face = _face(app, identifier)

    assert face.title == "残疾人证"
    assert face.issuer == "信阳市残疾人联合会"
    rows, fields = dict(face.rows), dict(face.fields)
    assert rows["持证主体"] == "刘*"
    assert rows["公民身份号码"] == citizen.id_number[:3] + "*" * 13 + citizen.id_number[-2:]
    assert rows["有效期"].startswith("2024年6月1日 至 ")
    assert fields["姓名"] == "刘*"
    assert fields["身份证号"] != citizen.id_number and fields["身份证号"].startswith(citizen.id_number[:3])
    assert fields["出生日期"] == "1985年7月15日"
    assert fields["户籍地址"].endswith("****") and "中山路" not in fields["户籍地址"]
    assert "联系电话" not in fields  # not in sharing.showable_fields
    printed = " ".join(value for _, value in [*face.rows, *face.fields])
    assert citizen.id_number not in printed and "13812345678" not in printed


def test_a_company_card_shows_the_company_name_and_code_in_full(app, samr, login):
    code = company_code()
    login(name="王建国", companies=[{"code": code, "name": "信阳毛尖茶业有限公司"}])
    face = _face(app, samr.issue_to_company(code))
    rows, fields = dict(face.rows), dict(face.fields)
    assert rows["持证主体"] == "信阳毛尖茶业有限公司"
    assert rows["统一社会信用代码"] == code
    assert rows["有效期"].endswith("至 长期")
    assert fields["法定代表人"] == "王**"  # names on the face are masked by the catalog's rule


def test_a_revoked_certificate_is_stamped(app, civil_affairs, login):
    citizen = login()
    identifier = civil_affairs.issue_to(citizen)
    valid_card = card_image(citizen, public_id_of(app, identifier))
    civil_affairs.change(identifier, "revoke", {"reason": "注销"})

    revoked_card = card_image(citizen, public_id_of(app, identifier))

    assert _face(app, identifier).stamp == "已注销"
    assert ImageChops.difference(valid_card, revoked_card).getbbox() is not None
    with app.app_context():
        events = db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "wallet.card_rendered")
                                    .order_by(AuditEvent.seq)).all()
    assert [e.details["stamp"] for e in events] == [None, "已注销"]


@pytest.mark.parametrize(("status", "reason", "valid_until", "stamp"), [
    ("valid", None, None, None),
    ("valid", None, date(2026, 11, 25), "已过期"),
    ("revoked", "注销", None, "已注销"),
    ("revoked", "吊销：违法经营", None, "已吊销"),
    ("suspended", "调查中", None, "已中止"),
    ("superseded", None, None, "已更新"),
    ("expired", "有效期届满", date(2026, 1, 1), "已过期"),
])
def test_a_certificate_not_valid_today_gets_a_stamp(status, reason, valid_until, stamp):
    certificate = Certificate(status=status, status_reason=reason, valid_from=date(2020, 1, 1),
                              valid_until=valid_until)
    assert status_stamp(certificate, date(2026, 11, 26)) == stamp
    assert status_stamp(Certificate(status="valid", valid_from=date(2026, 11, 27)), date(2026, 11, 26)) == "未生效"


def test_long_values_wrap_within_the_column_and_end_with_an_ellipsis(app):
    font = configured_font(app)
    lines = wrap("茶叶种植、加工、销售，" * 40, font, 400, max_lines=3)
    assert len(lines) == 3
    assert all(font.getlength(line) <= 400 + font.getlength("，") for line in lines)
    assert lines[-1].endswith("…")
    assert not any(line.startswith(("，", "、")) for line in lines)  # no line opens with closing punctuation


def test_a_card_with_many_fields_grows_to_hold_them(app, civil_affairs, login):
    """A marriage certificate has fifteen showable fields: the card gets taller instead of cutting them off."""
    citizen = login()
    image = card_image(citizen, public_id_of(app, civil_affairs.issue_to(citizen, MARRIAGE)))
    assert image.height > 1000


# -- in a real browser -----------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium; "
                                             ".ci/run installs it)")
def test_chromium_shows_the_card_with_its_chinese_text(app, civil_affairs, login, tmp_path):
    citizen = login()
    response = card(citizen, public_id_of(app, civil_affairs.issue_to(citizen)), purpose="办理入学")
    assert response.status_code == 200
    (tmp_path / "card.png").write_bytes(response.data)
    (tmp_path / "card.html").write_text('<!doctype html><meta charset="utf-8"><body style="margin:0">'
                                        '<img src="card.png" width="750"></body>', encoding="utf-8")
    shot = tmp_path / "shot.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=750,900", (tmp_path / "card.html").as_uri()],
                   check=True, timeout=120, capture_output=True)
    if os.environ.get("ECERT_SCREENSHOT_DIR"):  # to look at it: ECERT_SCREENSHOT_DIR=/tmp/shots pytest …
        Path(os.environ["ECERT_SCREENSHOT_DIR"]).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(os.environ["ECERT_SCREENSHOT_DIR"]) / "card-in-chromium.png")
    seen = Image.open(shot).convert("RGB")
    rendered = Image.open(io.BytesIO(response.data)).convert("RGB").crop((0, 0, 750, 900))
    # The browser shows the card as drawn: the title band with its Chinese glyphs is the same, pixel for pixel.
    band = (0, 0, 750, 120)
    difference = ImageChops.difference(seen.crop(band), rendered.crop(band))
    assert difference.getbbox() is None or max(difference.convert("L").getdata()) < 40
    title = [seen.crop((x, 20, x + 40, 100)) for x in range(40, 400, 40)]
    assert len({t.tobytes() for t in title}) > 3, "the title looks like repeated boxes, not Chinese glyphs"
