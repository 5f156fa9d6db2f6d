"""Show codes (亮证码): minting, the compact signed token, its QR image, and checks by department scanners."""

from __future__ import annotations

import base64
import functools
import io
import json
import struct
import xml.etree.ElementTree as ET
from datetime import timedelta
from typing import Any

import jwt
import pytest
import zxingcpp
from PIL import Image
from sqlalchemy import select

from backend.config import MAX_PUBLIC_URL_BYTES, ConfigError, load_settings
from backend.core import qr
from backend.core.context import keystore
from backend.crypto.masking import mask_value
from backend.extensions import db
from backend.keys import showcode
from backend.keys.keystore import PURPOSE_PLATFORM, KeyCache
from backend.models import AuditEvent, SigningKey, UsageRecord
from tests.conftest import CIVIL_AFFAIRS, DISABILITY_FEDERATION, SAMR, START, TEST_SECRETS, DeptClient
from tests.factories import BUSINESS_LICENCE, certificate_body, company_code
from tests.support import (
    change,
    disability_of,
    issue,
    marriage_of,
    mint,
    minted,
    public_id_of,
    tampered,
)

REAL_PUBLIC_URL = "https://ecert.xinyang.gov.cn"


@pytest.fixture
def civil_verifier(make_dept_client: Any) -> Any:
    """信阳市民政局's system: issues marriage certificates and scans show codes."""
    return make_dept_client(CIVIL_AFFAIRS, scopes=("issue", "verify"))


@pytest.fixture
def held(app: Any, citizen: Any, civil_verifier: Any) -> Any:
    return marriage_of(citizen, app, civil_verifier)


def raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token)


def decoded_qr(png: bytes) -> Any:
    results = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert len(results) == 1, "exactly one QR code in the image"
    return results[0]


# -- minting ------------------------------------------------------------------------------------------------------

def test_holder_mints_a_code_that_lives_60_seconds_and_refreshes_after_30(app, citizen, held):
    response = mint(citizen, held.id)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert set(body) == {"token", "url", "profile", "issued_at", "expires_at", "refresh_after"}
    assert body["url"] == f"http://localhost/v/{body['token']}"
    assert body["profile"] == "basic"
    assert body["issued_at"] == START.isoformat()
    assert body["expires_at"] == (START + timedelta(seconds=60)).isoformat()
    assert body["refresh_after"] == 30
    assert response.headers["Cache-Control"] == "no-store"


def test_minting_is_audited_without_the_token(app, citizen, held):
    token = minted(citizen, held.id, "full")["token"]
    with app.app_context():
        events = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "showcode.minted")).all()
        assert [(e.object_id, e.details["profile"], e.actor_type) for e in events] == [(held.identifier, "full",
                                                                                           "citizen")]
        everything = json.dumps([e.details for e in db.session.scalars(select(AuditEvent))])
    assert token not in everything and token[:40] not in everything


def test_every_code_is_new(citizen, held):
    tokens = {minted(citizen, held.id)["token"] for _ in range(5)}
    assert len(tokens) == 5  # fresh nonce each time, even within the same second


def test_token_is_99_bytes_in_132_characters_with_the_documented_layout(app, citizen, held):
    token = minted(citizen, held.id, "full")["token"]
    assert len(token) == showcode.TOKEN_CHARS == 132
    data = raw(token)
    assert len(data) == 99
    version, certificate, profile, _nonce, issued_at, lifetime, kid_prefix = struct.unpack(">B16sB8sIH3s", data[:35])
    with app.app_context():
        kid = keystore().active_key(PURPOSE_PLATFORM).kid
    assert (version, certificate.hex(), profile, issued_at, lifetime) == (1, held.id, 1, int(START.timestamp()), 60)
    assert kid_prefix == base64.urlsafe_b64decode(kid[:4])


def test_signature_verifies_with_the_published_platform_key_alone(client, citizen, held):
    """Anyone can check a code offline with /.well-known/jwks.json: ES256 (r||s) over the domain tag + header."""
    token = minted(citizen, held.id)["token"]
    data = raw(token)
    keys = client.get("/.well-known/jwks.json").get_json()["keys"]
    key = next(k for k in keys if k["kid"].startswith(base64.urlsafe_b64encode(data[32:35]).decode()))
    public = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(key))
    algorithm = jwt.get_algorithm_by_name("ES256")
    assert algorithm.verify(b"ecert:show-code:v1\x00" + data[:35], public, data[35:])
    assert not algorithm.verify(data[:35], public, data[35:])  # the domain tag is part of what is signed


def test_another_holders_certificate_is_404(app, login, citizen, held):
    other = login("李娜")
    response = mint(other, held.id)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "certificate_not_found"
    assert mint(citizen, "0" * 32).status_code == 404
    with app.app_context():
        assert db.session.scalars(select(AuditEvent).where(AuditEvent.action == "showcode.minted")).all() == []


def test_company_certificate_only_for_its_representative(app, login, make_dept_client):
    samr = make_dept_client(SAMR, scopes=("issue",))
    code = company_code()
    identifier = issue(samr, BUSINESS_LICENCE, holder={"code": code}, fields={"uscc": code})["identifier"]
    certificate_id = public_id_of(app, identifier)
    outsider = login("王强")
    representative = login("王建国", companies=[{"code": code, "name": "信阳毛尖茶业有限公司"}])
    assert mint(outsider, certificate_id).status_code == 404
    assert mint(representative, certificate_id).status_code == 200


@pytest.mark.parametrize(("action", "body", "status", "code"), [
    ("revoke", {"reason": "注销"}, 409, "certificate_revoked"),
    ("suspend", {"reason": "核查"}, 409, "certificate_suspended"),
    ("reissue", {"reason": "信息变更"}, 409, "certificate_superseded"),
])
def test_a_certificate_that_is_not_valid_cannot_be_shown(app, citizen, civil_verifier, held, action, body, status,
                                                         code):
    change(civil_verifier, held.identifier, action, body)
    response = mint(citizen, held.id)
    assert response.status_code == status
    error = response.get_json()["error"]
    assert error["code"] == code
    if action == "reissue":  # the holder is pointed to the current version
        assert error["details"]["current_id"] not in (None, held.id)
        assert mint(citizen, error["details"]["current_id"]).status_code == 200


def test_an_expired_certificate_cannot_be_shown(app, citizen, civil_verifier):
    body = certificate_body("114115000059925712001", holder={"name": citizen.name, "code": citizen.id_number},
                            valid_from="2020-01-01", valid_until="2026-11-25")
    certificate_id = public_id_of(app, issue(civil_verifier, body=body)["identifier"])
    response = mint(citizen, certificate_id)
    assert response.status_code == 410
    assert response.get_json()["error"]["code"] == "certificate_expired"


@pytest.mark.parametrize("body", [{"profile": "everything"}, {"profile": "basic", "ttl": 3600}, {"profile": None}])
def test_unknown_profiles_and_fields_are_422(citizen, held, body):
    response = citizen.http.post(f"/api/v1/wallet/certificates/{held.id}/show-codes", json=body,
                                 headers=citizen.headers)
    assert response.status_code == 422


def test_profile_defaults_to_basic(citizen, held):
    response = mint(citizen, held.id, profile=None)
    assert response.status_code == 200
    assert response.get_json()["profile"] == "basic"


def test_minting_needs_a_citizen_login(client, held):
    response = client.post(f"/api/v1/wallet/certificates/{held.id}/show-codes", json={"profile": "basic"})
    assert response.status_code == 401


def test_an_unservable_accept_header_is_406_and_mints_nothing(app, citizen, held):
    assert mint(citizen, held.id, accept="text/html").status_code == 406
    with app.app_context():
        assert db.session.scalars(select(AuditEvent).where(AuditEvent.action == "showcode.minted")).all() == []


# -- the QR image ---------------------------------------------------------------------------------------------------

def test_qr_png_decodes_to_exactly_the_url_at_level_m_and_version_at_most_10(citizen, held):
    response = mint(citizen, held.id, accept="image/png")
    assert response.status_code == 200
    assert response.mimetype == "image/png"
    expires_at = response.headers["X-Show-Code-Expires-At"]
    assert expires_at == (START + timedelta(seconds=60)).isoformat()
    assert response.headers["X-Show-Code-Refresh-After"] == "30"
    found = decoded_qr(response.data)
    assert found.text.startswith("http://localhost/v/")
    token = found.text.removeprefix("http://localhost/v/")
    assert len(token) == 132
    assert found.ec_level == "M"
    assert int(found.extra["Version"]) <= 10
    # The decoded URL is a live code: the page calls it valid.
    assert citizen.http.get(f"/v/{token}", headers={"Accept": "application/json"}).get_json()["state"] == "valid"


@pytest.mark.parametrize("app_settings", [{"ECERT_PUBLIC_URL": REAL_PUBLIC_URL}])
def test_qr_for_the_real_public_url_is_version_9(app, login, make_dept_client, app_settings):
    civil = make_dept_client(CIVIL_AFFAIRS, scopes=("issue",))
    civil.assertion = functools.partial(DeptClient.assertion, civil, aud=f"{REAL_PUBLIC_URL}/gov/v1/oauth/token")
    citizen = login("张伟")
    held = marriage_of(citizen, app, civil)
    response = mint(citizen, held.id, accept="image/png")
    found = decoded_qr(response.data)
    assert found.text.startswith(f"{REAL_PUBLIC_URL}/v/")
    assert len(found.text) == len(REAL_PUBLIC_URL) + 3 + 132
    assert found.extra["Version"] == "9"
    width, height = Image.open(io.BytesIO(response.data)).size
    assert width == height == (53 + 2 * qr.BORDER) * qr.BOX_SIZE  # version 9 = 53 modules, 8 px each


def test_the_longest_allowed_public_url_still_fits_version_10():
    longest = "https://" + "e" * (MAX_PUBLIC_URL_BYTES - len("https://"))
    url = showcode.url_for_token(longest, "A" * showcode.TOKEN_CHARS)
    code = qr.make_qr(url)
    assert code.version == 10
    assert decoded_qr(qr.png(code)).text == url
    with pytest.raises(Exception, match="亮证码过长"):
        qr.make_qr(url + "x")


def test_a_public_url_too_long_for_the_qr_is_refused_at_startup(tmp_path):
    settings = {**TEST_SECRETS, "ECERT_ENV": "testing", "ECERT_INSTANCE_PATH": str(tmp_path)}
    load_settings(env={**settings, "ECERT_PUBLIC_URL": "https://" + "e" * (MAX_PUBLIC_URL_BYTES - 8)})
    with pytest.raises(ConfigError, match="ECERT_PUBLIC_URL"):
        load_settings(env={**settings, "ECERT_PUBLIC_URL": "https://" + "e" * (MAX_PUBLIC_URL_BYTES - 7)})


@pytest.mark.parametrize(("ttl", "refresh"), [("5", "2"), ("301", "30"), ("60", "60"), ("60", "0")])
def test_show_code_lifetimes_are_bounded(tmp_path, ttl, refresh):
    settings = {**TEST_SECRETS, "ECERT_ENV": "testing", "ECERT_INSTANCE_PATH": str(tmp_path),
                "ECERT_SHOW_CODE_TTL": ttl, "ECERT_SHOW_CODE_REFRESH": refresh}
    with pytest.raises(ConfigError, match="ECERT_SHOW_CODE"):
        load_settings(env=settings)


def test_qr_svg_is_well_formed_and_draws_the_same_code(citizen, held):
    response = mint(citizen, held.id, accept="image/svg+xml")
    assert response.status_code == 200
    assert response.mimetype == "image/svg+xml"
    root = ET.fromstring(response.data)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    modules = int(root.get("viewBox", "").split()[2]) - 2 * qr.BORDER
    assert (modules - 17) % 4 == 0 and (modules - 17) // 4 <= 10  # version v has 4v + 17 modules a side
    assert root.find("{http://www.w3.org/2000/svg}path") is not None


# -- the token: tampering, keys, time -------------------------------------------------------------------------------

def test_changing_any_single_character_or_byte_is_refused(app, citizen, held):
    token = minted(citizen, held.id)["token"]
    data = raw(token)
    with app.app_context():
        session = db.session()
        assert showcode.decode(session, token, now=START).certificate_id == held.id
        for position in range(len(token)):
            with pytest.raises(showcode.ShowCodeRefused):
                showcode.decode(session, tampered(token, position), now=START)
        for position in range(len(data)):
            changed = bytearray(data)
            changed[position] ^= 0x01
            with pytest.raises(showcode.ShowCodeRefused):
                showcode.decode(session, base64.urlsafe_b64encode(bytes(changed)).decode(), now=START)
        for junk in ("", "A" * 131, token + "A", token[:-1] + "=", token.replace(token[5], "+", 1), "%" * 132):
            with pytest.raises(showcode.ShowCodeRefused, match="malformed"):
                showcode.decode(session, junk, now=START)


def _signed(app: Any, certificate_id: str, *, issued_at: int, lifetime: int) -> str:
    """A correctly signed token with chosen times, as a faulty or malicious minting server might make."""
    with app.app_context():
        store = keystore()
        key = store.active_key(PURPOSE_PLATFORM)
        header = struct.pack(">B16sB8sIH3s", 1, bytes.fromhex(certificate_id), 0, b"\x00" * 8, issued_at, lifetime,
                             showcode.short_kid(key.kid))
        return base64.urlsafe_b64encode(header + store.sign_bytes(key, showcode.DOMAIN + header)).decode()


def test_time_checks_allow_only_a_few_seconds_of_clock_skew(app, held):
    now = int(START.timestamp())
    with app.app_context():
        session = db.session()
        assert showcode.decode(session, _signed(app, held.id, issued_at=now + 5, lifetime=60), now=START)
        with pytest.raises(showcode.ShowCodeRefused, match="not_yet_valid"):
            showcode.decode(session, _signed(app, held.id, issued_at=now + 6, lifetime=60), now=START)
        with pytest.raises(showcode.ShowCodeRefused, match="malformed"):  # never longer than 5 minutes
            showcode.decode(session, _signed(app, held.id, issued_at=now, lifetime=301), now=START)
        with pytest.raises(showcode.ShowCodeRefused, match="expired"):
            showcode.decode(session, _signed(app, held.id, issued_at=now - 60, lifetime=60), now=START)
        assert showcode.decode(session, _signed(app, held.id, issued_at=now - 59, lifetime=60), now=START)


def test_codes_signed_before_a_key_rotation_verify_until_they_expire(app, client, clock, citizen, held):
    old = minted(citizen, held.id)["token"]
    with app.app_context():
        keystore().rotate(PURPOSE_PLATFORM, None, "ES256", clock())
        db.session.commit()
    new = minted(citizen, held.id)["token"]
    assert raw(old)[32:35] != raw(new)[32:35]
    for token in (old, new):
        assert client.get(f"/v/{token}", headers={"Accept": "application/json"}).get_json()["state"] == "valid"
    clock.advance(seconds=60)
    assert client.get(f"/v/{old}", headers={"Accept": "application/json"}).get_json()["state"] == "expired"


def test_a_key_that_is_not_a_platform_key_is_never_used(app, citizen, held):
    """Same layout and a valid signature, but by a department's key: refused (only platform keys sign codes)."""
    with app.app_context():
        store = keystore()
        key = db.session.scalars(select(SigningKey).where(SigningKey.purpose == "certificate")).first()
        header = struct.pack(">B16sB8sIH3s", 1, bytes.fromhex(held.id), 0, b"\x01" * 8, int(START.timestamp()), 60,
                             showcode.short_kid(key.kid))
        token = base64.urlsafe_b64encode(header + store.sign_bytes(key, showcode.DOMAIN + header)).decode()
        with pytest.raises(showcode.ShowCodeRefused, match="unknown_key"):
            showcode.decode(db.session(), token, now=START)


def test_candidate_keys_are_those_whose_kid_starts_with_the_short_id_and_no_others(app, catalog, clock):
    """The short key id is base64url, whose "_" is a LIKE wildcard: it must match only itself."""
    with app.app_context():
        public = db.session.scalars(select(SigningKey).where(SigningKey.purpose == PURPOSE_PLATFORM)).first().public_jwk
        for kid in ("AB_Dkid-one", "ABxDkid-two", "AB_Ekid-three"):
            db.session.add(SigningKey(kid=kid, purpose=PURPOSE_PLATFORM, alg="ES256", origin="local", status="retired",
                                      public_jwk={**public, "kid": kid}, created_at=clock()))
        db.session.flush()
        cache = KeyCache()
        assert len(showcode._candidate_keys(db.session(), base64.urlsafe_b64decode("AB_D"), cache)) == 1
        assert len(showcode._candidate_keys(db.session(), base64.urlsafe_b64decode("ABxD"), cache)) == 1
        assert showcode._candidate_keys(db.session(), base64.urlsafe_b64decode("AB_F"), cache) == []
        db.session.rollback()


def test_known_platform_keys_verify_without_a_query_and_anything_else_asks_the_database(app, citizen, held,
                                                                                      monkeypatch):
    first, second = minted(citizen, held.id)["token"], minted(citizen, held.id)["token"]
    prefix = raw(first)[32:35]
    with app.app_context():
        store, session = keystore(), db.session()
        showcode.decode(session, first, now=START, keys=store)  # meets the key
        assert store.cache.kids_by_prefix[prefix]
        asked = []
        real = showcode._candidate_keys
        monkeypatch.setattr(showcode, "_candidate_keys", lambda *args: asked.append(args) or real(*args))
        assert showcode.decode(session, second, now=START, keys=store).certificate_id == held.id
        assert asked == []
        # Only kids this database does not hold under that short id (another instance's, say): the database decides.
        monkeypatch.setitem(store.cache.kids_by_prefix, prefix, frozenset({"not-a-kid-of-this-database"}))
        assert showcode.decode(session, second, now=START, keys=store).certificate_id == held.id
        assert len(asked) == 1
        with pytest.raises(showcode.ShowCodeRefused, match="bad_signature"):
            showcode.decode(session, tampered(second, 100), now=START, keys=store)
        assert len(asked) == 2  # a forgery under a known short id is also checked against the database


def test_token_from_text_accepts_a_token_or_its_url():
    token = "A" * 132
    for text in (token, f"https://ecert.xinyang.gov.cn/v/{token}", f" http://localhost/v/{token}?from=scan#x "):
        assert showcode.token_from_text(text) == token


# -- masking rules --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("rule", "value", "shown"), [
    ("none", "中国", "中国"),
    ("name", "张伟", "张*"),
    ("name", "欧阳娜娜", "欧***"),
    ("id_number", "411502199001010012", "411*************12"),
    ("partial", "河南省信阳市平桥区中山路 9 号", "河南省信阳****"),
    ("partial", "ab", "**"),
    ("full", "佛教", "******"),
    ("full", "一个很长很长的值", "******"),
])
def test_mask_rules(rule, value, shown):
    assert mask_value(rule, value) == shown


# -- department scanners (POST /gov/v1/verify) -------------------------------------------------------------------

def scan_as_department(dept: Any, text: str) -> dict[str, Any]:
    response = dept.http.post("/gov/v1/verify", json={"show_code": text}, headers=dept.headers())
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def test_department_scanner_checks_a_show_code_and_is_recorded_as_verifier(app, make_dept_client, citizen):
    federation = make_dept_client(DISABILITY_FEDERATION, scopes=("issue",))
    held = disability_of(citizen, app, federation)
    scanner = make_dept_client(CIVIL_AFFAIRS, scopes=("verify",))
    url = minted(citizen, held.id, "full")["url"]
    result = scan_as_department(scanner, url)
    assert result["valid"] is True and result["status"] == "valid" and result["reasons"] == []
    certificate = result["certificate"]
    assert certificate["identifier"] == held.identifier
    assert certificate["type_name"] == "残疾人证"
    disclosed = certificate["disclosed"]
    assert disclosed["holder"] == {"name": "张*"}
    assert disclosed["face"]["id_number"] == citizen.id_number[:3] + "*" * 13 + citizen.id_number[-2:]
    assert "contact_phone" not in disclosed["face"]
    assert citizen.id_number not in json.dumps(result, ensure_ascii=False)
    with app.app_context():
        usage = db.session.scalars(select(UsageRecord)).all()
        assert [(u.kind, u.verifier_kind, u.verifier_id) for u in usage] == [
            ("show_code_checked", "client", scanner.client_id)]
        assert usage[0].verifier_department_id is not None
        assert "face.id_number" in usage[0].fields


def test_department_scanner_sees_expired_tampered_and_revoked_codes_refused(app, clock, civil_verifier, citizen, held):
    token = minted(citizen, held.id)["token"]
    assert scan_as_department(civil_verifier, tampered(token)) == {"valid": False, "status": "unknown",
                                                          "reasons": ["bad_signature"], "certificate": None}
    assert scan_as_department(civil_verifier, "not a code")["reasons"] == ["malformed"]
    change(civil_verifier, held.identifier, "revoke", {"reason": "吊销"})
    revoked = scan_as_department(civil_verifier, token)
    assert (revoked["valid"], revoked["status"], revoked["reasons"]) == (False, "revoked", ["revoked"])
    assert revoked["certificate"]["disclosed"] == {}
    clock.advance(seconds=61)
    assert scan_as_department(civil_verifier, token) == {"valid": False, "status": "unknown",
                                                 "reasons": ["show_code_expired"], "certificate": None}


def test_department_verify_still_takes_exactly_one_subject(civil_verifier, citizen, held):
    token = minted(citizen, held.id)["token"]
    response = civil_verifier.http.post("/gov/v1/verify", json={"show_code": token, "identifier": held.identifier},
                               headers=civil_verifier.headers())
    assert response.status_code == 422
