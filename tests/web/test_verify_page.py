"""The scan-to-verify page GET /v/{token}: verdicts, data minimisation, usage history, and real rendering."""

from __future__ import annotations

import base64
import json
import logging
import os
import secrets
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image, ImageChops
from sqlalchemy import func, select

from backend.catalog.loader import load_catalog
from backend.core.context import current_definitions, field_cipher, keystore
from backend.extensions import db
from backend.kernel.actors import Actor
from backend.models import AuditEvent, AuditHead, Holder, ShowCodeUse, UsageRecord
from backend.wallet.showcodes import PUBLIC_VERIFIER, check_show_code
from tests.conftest import DEMO_CATALOG, DISABILITY_FEDERATION, SAMR, START
from tests.factories import BUSINESS_LICENCE, company_code
from tests.support import (
    PARTNER_ID,
    change,
    disability_of,
    issue,
    minted,
    page,
    public_id_of,
    tampered,
    verdict,
)

NOTICE = "截图、照片、打印件无效，请以现场扫码核验结果为准"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
VALID_GREEN = (0x0F, 0x7B, 0x3A)
EXPIRED_GREY = (0x4B, 0x55, 0x63)


def personal_values(citizen: Any, held: Any) -> list[str]:
    """Everything on the certificate that must never appear on a page that shows no data."""
    fields = held.body["fields"]
    return [citizen.name, "张*", citizen.id_number, PARTNER_ID, "李娜", "李*", "结婚证", "民政局",
            fields["registration_office"], fields["registered_on"], fields["certificate_no"]]


def usage(app: Any) -> list[UsageRecord]:
    with app.app_context():
        return list(db.session.scalars(select(UsageRecord).order_by(UsageRecord.id)))


def audit(app: Any, action: str) -> list[AuditEvent]:
    with app.app_context():
        return list(db.session.scalars(select(AuditEvent).where(AuditEvent.action == action)
                                       .order_by(AuditEvent.seq)))


# -- verdicts -------------------------------------------------------------------------------------------------------

def test_a_fresh_basic_code_shows_valid_with_the_public_fields_masked(client, citizen, held):
    token = minted(citizen, held.id)["token"]
    html = page(client, token)
    assert "有效" in html and "verdict--valid" in html
    assert "结婚证" in html and "信阳市民政局" in html
    assert "张*" in html and citizen.name not in html
    assert held.body["fields"]["registration_office"] in html and "2025-05-20" in html
    # basic = the type's public fields only: no ID numbers, no partner, no certificate number
    for hidden in (citizen.id_number, citizen.id_number[:3] + "*", PARTNER_ID[:3] + "*", "李*", "结婚证字号",
                   held.body["fields"]["certificate_no"]):
        assert hidden not in html
    assert NOTICE in html
    assert "2026-11-26 17:00:00" in html  # generated at, China time (START is 09:00 UTC)


def test_the_page_carries_no_store_no_referrer_and_works_under_the_csp(client, citizen, held):
    token = minted(citizen, held.id)["token"]
    response = client.get(f"/v/{token}")
    assert response.headers["Cache-Control"].startswith("no-store")
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert "default-src 'self'" in response.headers["Content-Security-Policy"]
    assert "Accept" in response.headers["Vary"]
    html = response.get_data(as_text=True)
    assert "<script" not in html and "style=" not in html and "<style" not in html  # nothing the CSP would block
    stylesheet = client.get("/static/ecert.css")
    assert stylesheet.status_code == 200 and stylesheet.mimetype == "text/css"
    assert 'lang="zh-CN"' in html and 'name="viewport"' in html


def test_json_answers_the_same_verdict(client, citizen, held):
    token = minted(citizen, held.id)["token"]
    body = verdict(client, token)
    assert set(body) == {"state", "state_label", "explanation", "certificate", "generated_at", "expires_at",
                         "server_time", "notice"}
    assert (body["state"], body["state_label"]) == ("valid", "有效")
    assert body["generated_at"] == START.isoformat()
    assert body["server_time"] == START.isoformat()
    certificate = body["certificate"]
    assert certificate["name"] == "结婚证" and certificate["issuer"]["name"] == "信阳市民政局"
    assert certificate["holder_name"] == "张*" and certificate["valid_until"] == "长期"
    assert {f["name"] for f in certificate["fields"]} == {"registered_on", "registration_office"}


def test_a_full_code_shows_the_showable_fields_each_masked_by_policy(app, client, citizen, make_dept_client):
    federation = make_dept_client(DISABILITY_FEDERATION, scopes=("issue",))
    held = disability_of(citizen, app, federation)
    token = minted(citizen, held.id, "full")["token"]
    fields = {f["name"]: f["value"] for f in verdict(client, token)["certificate"]["fields"]}
    assert fields["id_number"] == citizen.id_number[:3] + "*" * 13 + citizen.id_number[-2:]
    assert fields["guardian_name"] == "刘**"
    assert fields["address"] == "河南省信阳****"
    assert fields["disability_category"] == "肢体" and fields["disability_grade"] == "三级"
    assert "contact_phone" not in fields  # not in the type's showable fields
    html = page(client, token)
    for secret in (citizen.id_number, "13912345678", "刘建军", "平桥区中山路", citizen.name):
        assert secret not in html
    assert "完整信息" in html


def test_a_changed_sharing_policy_applies_from_the_next_scan(app, client, clock, citizen, held, tmp_path):
    """Definitions are kept by content hash between requests: a catalog change (a new hash) is seen at once."""
    assert {f["name"] for f in verdict(client, minted(citizen, held.id)["token"])["certificate"]["fields"]} \
        == {"registered_on", "registration_office"}
    catalog = tmp_path / "catalog"
    shutil.copytree(DEMO_CATALOG, catalog)
    path = catalog / "types" / "marriage_certificate.yaml"
    document = yaml.safe_load(path.read_text(encoding="utf-8"))
    document["sharing"]["public_fields"] = ["holder_name", "registered_on"]
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    with app.app_context():
        load_catalog(db.session, catalog, keystore(), actor=Actor.operator("test"), now=clock())
        db.session.commit()
    assert {f["name"] for f in verdict(client, minted(citizen, held.id)["token"])["certificate"]["fields"]} \
        == {"registered_on"}


def test_basic_code_of_the_same_certificate_shows_less(app, client, citizen, make_dept_client):
    federation = make_dept_client(DISABILITY_FEDERATION, scopes=("issue",))
    held = disability_of(citizen, app, federation)
    body = verdict(client, minted(citizen, held.id, "basic")["token"])
    assert body["certificate"]["holder_name"] == "张*"
    assert body["certificate"]["fields"] == []  # public_fields = [holder_name], shown as 持证人


def test_a_company_is_named_in_full_but_its_legal_representative_is_masked(app, client, login, make_dept_client):
    samr = make_dept_client(SAMR, scopes=("issue",))
    code = company_code()
    identifier = issue(samr, BUSINESS_LICENCE, holder={"code": code}, fields={"uscc": code})["identifier"]
    representative = login("王建国", companies=[{"code": code, "name": "信阳毛尖茶业有限公司"}])
    body = verdict(client, minted(representative, public_id_of(app, identifier), "full")["token"])
    certificate = body["certificate"]
    assert certificate["holder_name"] == "信阳毛尖茶业有限公司"  # 企业信息公示: a company's name is public
    fields = {f["name"]: f["value"] for f in certificate["fields"]}
    assert fields["legal_representative"] == "王**" and fields["uscc"] == code


def test_a_code_past_its_60_seconds_shows_expired_and_no_data(client, clock, citizen, held):
    token = minted(citizen, held.id)["token"]
    clock.advance(seconds=59)
    assert verdict(client, token)["state"] == "valid"
    clock.advance(seconds=2)
    html = page(client, token)
    assert "已过期" in html and "verdict--expired" in html and NOTICE in html
    for value in personal_values(citizen, held):
        assert value not in html, value
    body = verdict(client, token)
    assert (body["state"], body["state_label"], body["certificate"]) == ("expired", "已过期", None)
    assert body["generated_at"] == START.isoformat()  # when it was made: tells a screenshot apart


def test_a_code_with_one_character_changed_is_invalid_and_shows_no_data(client, citizen, held):
    token = minted(citizen, held.id)["token"]
    for position in (0, 5, 30, 60, 131):
        html = page(client, tampered(token, position))
        assert "无效" in html and "verdict--invalid" in html
        for value in personal_values(citizen, held):
            assert value not in html, value
        body = verdict(client, tampered(token, position))
        assert (body["state"], body["certificate"], body["generated_at"]) == ("invalid", None, None)


@pytest.mark.parametrize("junk", ["x", "A" * 131, "A" * 2000, "%E6%9C%89%E6%95%88"])
def test_anything_else_under_v_is_invalid(client, junk):
    body = verdict(client, junk)
    assert (body["state"], body["certificate"]) == ("invalid", None)


@pytest.mark.parametrize(("action", "body", "state", "label"), [
    ("revoke", {"reason": "注销"}, "revoked", "已注销"),
    ("suspend", {"reason": "核查"}, "suspended", "已中止"),
    ("reissue", {"reason": "信息变更"}, "superseded", "已更新"),
])
def test_a_certificate_changed_after_minting_shows_its_new_state(client, citizen, civil_issuer, held, action, body,
                                                                 state, label):
    token = minted(citizen, held.id)["token"]
    change(civil_issuer, held.identifier, action, body)
    html = page(client, token)
    assert label in html and f"verdict--{state}" in html
    assert "结婚证" in html and "信阳市民政局" in html  # what it is and who issued it, nothing more
    for value in (citizen.name, "张*", citizen.id_number, held.body["fields"]["registration_office"], "有效期"):
        assert value not in html, value
    result = verdict(client, token)
    assert (result["state"], result["state_label"]) == (state, label)
    assert result["certificate"]["holder_name"] is None and result["certificate"]["fields"] == []


def test_resumed_certificate_is_valid_again(client, citizen, civil_issuer, held):
    token = minted(citizen, held.id)["token"]
    change(civil_issuer, held.identifier, "suspend", {"reason": "核查"})
    change(civil_issuer, held.identifier, "resume")
    assert verdict(client, token)["state"] == "valid"


# -- usage history and audit ----------------------------------------------------------------------------------------

def test_the_first_check_of_a_code_is_one_usage_record_and_one_audit_event(app, client, citizen, held):
    token = minted(citizen, held.id)["token"]
    page(client, token)
    records = usage(app)
    assert [(r.kind, r.verifier_kind, r.verifier_id) for r in records] == [("show_code_checked", "public", None)]
    assert records[0].fields == ["holder.name", "face.registered_on", "face.registration_office"]
    with app.app_context():
        holder_index = db.session.scalar(select(UsageRecord.holder_index))
        assert holder_index == db.session.scalar(select(Holder.id_index))  # in this holder's history
    checks = audit(app, "showcode.checked")
    assert [(e.outcome, e.object_id, e.details["state"]) for e in checks] == [("success", held.identifier, "valid")]


def test_refreshing_the_page_records_nothing_more_but_a_new_code_or_state_does(app, client, clock, citizen,
                                                                               civil_issuer, held):
    token = minted(citizen, held.id)["token"]
    for _ in range(3):
        page(client, token)
        verdict(client, token)
        clock.advance(seconds=5)
    assert len(usage(app)) == 1 and len(audit(app, "showcode.checked")) == 1
    # The holder's next code is a new use.
    assert verdict(client, minted(citizen, held.id)["token"])["state"] == "valid"
    assert len(usage(app)) == 2
    # A revoked certificate's check is a use too, with nothing shown; once.
    change(civil_issuer, held.identifier, "revoke", {"reason": "注销"})
    for _ in range(2):
        assert verdict(client, token)["state"] == "revoked"
    assert [r.fields for r in usage(app)][2:] == [[]]
    assert [e.details["state"] for e in audit(app, "showcode.checked")] == ["valid", "valid", "revoked"]


def test_a_department_scanning_a_code_already_seen_on_the_page_is_its_own_use(app, client, make_dept_client,
                                                                              citizen, held):
    token = minted(citizen, held.id)["token"]
    page(client, token)
    scanner = make_dept_client(SAMR, scopes=("verify",))
    for _ in range(2):
        response = scanner.http.post("/gov/v1/verify", json={"show_code": token}, headers=scanner.headers())
        assert response.get_json()["valid"] is True
    assert [(r.verifier_kind, r.verifier_id) for r in usage(app)] == [("public", None), ("client", scanner.client_id)]


def test_head_requests_answer_but_record_nothing(app, client, clock, citizen, held):
    token = minted(citizen, held.id)["token"]
    response = client.head(f"/v/{token}")
    assert response.status_code == 200 and response.headers["Cache-Control"].startswith("no-store")
    clock.advance(seconds=61)
    assert client.head(f"/v/{token}").status_code == 200
    assert usage(app) == [] and audit(app, "showcode.checked") == []


def test_an_expired_code_is_audited_once_without_the_token_and_is_no_usage(app, client, clock, citizen, held):
    token = minted(citizen, held.id)["token"]
    clock.advance(seconds=61)
    for _ in range(3):
        assert verdict(client, token)["state"] == "expired"
    clock.advance(days=1)
    assert verdict(client, token)["state"] == "expired"
    assert usage(app) == []
    [failure] = audit(app, "showcode.checked")
    assert (failure.outcome, failure.details["state"], failure.details["reason"]) == ("failure", "expired", "expired")
    assert failure.object_id == held.identifier
    everything = json.dumps(failure.details)
    assert token[:40] not in everything and token[-40:] not in everything


def forged(token: str, *, kid_prefix: bytes | None = None) -> str:
    """The token's header (real certificate, real short key id unless replaced) with a junk signature."""
    data = bytearray(base64.urlsafe_b64decode(token))
    if kid_prefix is not None:
        data[32:35] = kid_prefix
    data[35:] = secrets.token_bytes(64)
    return base64.urlsafe_b64encode(bytes(data)).decode()


def audit_head_seq(app: Any) -> int:
    with app.app_context():
        return int(db.session.scalar(select(AuditHead.seq)) or 0)


def test_codes_that_are_not_ours_write_nothing_and_are_counted_in_the_log(app, client, citizen, held, caplog):
    token = minted(citizen, held.id)["token"]
    before = audit_head_seq(app)
    junk = [forged(token) for _ in range(20)] + [forged(token, kid_prefix=b"\xff\xff\xff"), tampered(token), "junk"]
    with caplog.at_level(logging.INFO, logger="ecert.showcodes"):
        for text in junk:
            assert verdict(client, text)["state"] == "invalid"
    assert audit_head_seq(app) == before  # not one audit row, however many requests
    assert usage(app) == []
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(ShowCodeUse)) == 0
    counted = [record.fields for record in caplog.records if record.getMessage() == "show code refused"]
    assert [line["reason"] for line in counted] == ["bad_signature"] * 20 + ["unknown_key", "bad_signature",
                                                                               "malformed"]
    assert counted[-2]["refused_total"] > counted[0]["refused_total"]
    logged = json.dumps(counted)
    assert token[:40] not in logged and not any(text[:40] in logged for text in junk[:-1])


def test_simultaneous_checks_of_one_code_record_it_once(app, clock, citizen, held):
    token = minted(citizen, held.id)["token"]
    racers = 6
    start = threading.Barrier(racers)
    states: list[str] = []
    failures: list[BaseException] = []

    def scan() -> None:
        try:
            with app.app_context():
                start.wait(timeout=30)
                check = check_show_code(db.session(), keystore(), field_cipher(), token,
                                        definitions=current_definitions(), verifier=PUBLIC_VERIFIER,
                                        actor=Actor(kind="public", id="scan"), now=clock())
                db.session.commit()
                states.append(check.state)
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    threads = [threading.Thread(target=scan) for _ in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert failures == []
    assert states == ["valid"] * racers
    assert len(usage(app)) == 1 and len(audit(app, "showcode.checked")) == 1


# -- real rendering in headless Chromium --------------------------------------------------------------------------

def screenshot(url: str, path: Path, profile: Path) -> Image.Image:
    assert CHROMIUM is not None
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--hide-scrollbars", f"--user-data-dir={profile}", f"--screenshot={path}", "--window-size=390,844",
                    url], check=True, timeout=120, capture_output=True)
    keep = os.environ.get("ECERT_SCREENSHOT_DIR")  # to look at them: ECERT_SCREENSHOT_DIR=/tmp/shots pytest …
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(keep) / path.name)
    image = Image.open(path).convert("RGB")
    image.load()
    return image


def banner_glyphs(image: Image.Image, colour: tuple[int, int, int]) -> list[Image.Image]:
    """The glyphs of the big state word: the tallest line of text inside the region painted `colour`."""
    width, height = image.size
    pixels = image.load()
    assert pixels is not None
    rows = [y for y in range(height) if sum(pixels[x, y] == colour for x in range(0, width, 3)) > width // 6]
    assert rows, f"no banner in the colour {colour}"
    top, bottom = rows[0], rows[-1]
    left = min(x for x in range(width) if pixels[x, (top + bottom) // 2] == colour)
    right = max(x for x in range(width) if pixels[x, (top + bottom) // 2] == colour)
    mask = Image.new("1", (right - left, bottom - top))
    for y in range(top, bottom):
        for x in range(left, right):
            r, g, b = pixels[x, y]
            if min(r, g, b) > 200:  # white text on the dark banner
                mask.putpixel((x - left, y - top), 1)
    inked = [y for y in range(mask.height) if any(mask.getpixel((x, y)) for x in range(mask.width))]
    lines: list[list[int]] = []
    for y in inked:
        if lines and y == lines[-1][-1] + 1:
            lines[-1].append(y)
        else:
            lines.append([y])
    label = max(lines, key=len)
    strip = mask.crop((0, label[0], mask.width, label[-1] + 1))
    columns = [x for x in range(strip.width) if any(strip.getpixel((x, y)) for y in range(strip.height))]
    pieces: list[list[int]] = []
    for x in columns:
        if pieces and x == pieces[-1][-1] + 1:
            pieces[-1].append(x)
        else:
            pieces.append([x])
    return [strip.crop((p[0], 0, p[-1] + 1, strip.height)) for p in pieces]


def assert_real_glyphs(glyphs: list[Image.Image]) -> None:
    """Missing fonts draw every CJK character as the same box (tofu); real glyphs all differ."""
    assert len(glyphs) >= 2, "the state word was not drawn"
    first = glyphs[0]
    identical = [g.size == first.size and ImageChops.difference(g, first).getbbox() is None for g in glyphs[1:]]
    assert not all(identical), "every character is the same box: no CJK font (install fonts-noto-cjk)"


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium "
                                             "fonts-noto-cjk; .ci/run installs both)")
def test_chromium_renders_the_valid_and_the_expired_page_in_chinese(live_server, tmp_path, clock, citizen, held):
    fonts = subprocess.run(["fc-list", ":lang=zh", "family"], capture_output=True, text=True, check=False).stdout
    assert fonts.strip(), "no Chinese font installed (Debian: fonts-noto-cjk)"
    token = minted(citizen, held.id)["token"]
    valid = screenshot(f"{live_server}/v/{token}", tmp_path / "verify-valid.png", tmp_path / "profile-valid")
    clock.advance(seconds=61)
    expired = screenshot(f"{live_server}/v/{token}", tmp_path / "verify-expired.png", tmp_path / "profile-expired")
    for image in (valid, expired):
        assert image.size == (390, 844)
        assert len(image.getcolors(maxcolors=1 << 16) or range(1 << 16)) > 50, "a blank screenshot"
    assert_real_glyphs(banner_glyphs(valid, VALID_GREEN))  # 有效
    assert_real_glyphs(banner_glyphs(expired, EXPIRED_GREY))  # 已过期
    assert ImageChops.difference(valid, expired).getbbox() is not None
