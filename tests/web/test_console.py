"""Staff console (工作台): accounts and passwords, login and lock-out, session cookies and timeouts, CSRF on every
form, department isolation, read-only city administrators, audited reads, and resolving an objection by correction."""

from __future__ import annotations

import re
from typing import Any

import pytest
import sqlalchemy as sa

from backend.extensions import db
from backend.models import Certificate, StaffSession
from tests.conftest import CIVIL_AFFAIRS, DISABILITY_FEDERATION, SAMR
from tests.support import disability_of, wallet
from tests.web.console_support import (
    FAST_HASHER,
    PASSWORD,
    Console,
    account,
    audit_events,
    file_about,
    jpeg,
    make_staff,
    objection_row,
)

QUEUE = "/console/objections"


@pytest.fixture
def app_settings() -> dict[str, Any]:
    return {"STAFF_PASSWORD_HASHER": FAST_HASHER}


@pytest.fixture
def filed(app: Any, clock: Any, citizen: Any, held: Any) -> str:
    """An objection in the civil affairs bureau's queue: the spouse's name on the marriage certificate."""
    return file_about(app, clock, citizen, held.identifier)


@pytest.fixture
def browser(app: Any) -> Console:
    return Console(app)


def objection_page(public_id: str) -> str:
    return f"{QUEUE}/{public_id}"


# -- accounts ---------------------------------------------------------------------------------------------------

def test_staff_add_takes_the_password_from_stdin_and_stores_only_an_argon2id_hash(app, runner, catalog):
    result = runner.invoke(args=["staff", "add", "--dept", CIVIL_AFFAIRS, "--username", "wang.fang", "--name", "王芳",
                                 "--password-stdin"], input=PASSWORD + "\n")
    assert result.exit_code == 0, result.output
    stored = account(app, "wang.fang")
    assert stored.public_id in result.output and stored.role == "department"
    assert stored.password_hash.startswith("$argon2id$") and PASSWORD not in stored.password_hash
    assert [e.details["username"] for e in audit_events(app, "staff.created")] == ["wang.fang"]


def test_staff_add_has_no_password_argument_and_prompts_twice_without_echo(app, runner, catalog):
    refused = runner.invoke(args=["staff", "add", "--dept", CIVIL_AFFAIRS, "--username", "wang.fang",
                                  "--password", PASSWORD])
    assert refused.exit_code == 2 and "No such option" in refused.output
    prompted = runner.invoke(args=["staff", "add", "--city-admin", "--username", "city.admin"],
                             input=f"{PASSWORD}\n{PASSWORD}\n")
    assert prompted.exit_code == 0, prompted.output
    assert PASSWORD not in prompted.output
    stored = account(app, "city.admin")
    assert stored.role == "city_admin" and stored.department_id is None


@pytest.mark.parametrize(("args", "message"), [
    (["--dept", CIVIL_AFFAIRS, "--city-admin"], "exactly one of --dept or --city-admin"),
    ([], "exactly one of --dept or --city-admin"),
])
def test_staff_add_needs_a_department_or_the_city_admin_role(runner, catalog, args, message):
    result = runner.invoke(args=["staff", "add", "--username", "zhao.qiang", *args, "--password-stdin"],
                           input=PASSWORD + "\n")
    assert result.exit_code == 2 and message in result.output


@pytest.mark.parametrize(("password", "reason"), [
    ("short-1", "length"), ("onlyletterspassword", "too_simple"), ("zhao.qiang-2026-x", "contains_username")])
def test_weak_passwords_are_refused(runner, catalog, password, reason):
    result = runner.invoke(args=["staff", "add", "--dept", CIVIL_AFFAIRS, "--username", "zhao.qiang",
                                 "--password-stdin"], input=password + "\n")
    assert result.exit_code == 1 and reason in result.output


def test_a_username_is_taken_once(runner, app, clock, clerk):
    result = runner.invoke(args=["staff", "add", "--dept", SAMR, "--username", clerk.username, "--password-stdin"],
                           input=PASSWORD + "\n")
    assert result.exit_code == 1 and "staff_username_taken" in result.output


# -- login, lock-out, sessions ------------------------------------------------------------------------------------

def test_login_with_the_right_password_opens_the_departments_queue(app, browser, clerk):
    response = browser.login(clerk)
    assert response.status_code == 302 and response.headers["Location"].endswith(QUEUE)
    page = browser.text(QUEUE)
    assert "信阳市民政局 · 异议队列" in page and "退出登录" in page
    [event] = audit_events(app, "staff.login")
    assert (event.actor_type, event.actor_id, event.department_code, event.outcome) == \
        ("staff", clerk.public_id, CIVIL_AFFAIRS, "success")


def test_pages_need_a_login_and_come_back_after_it(browser, clerk, filed):
    response = browser.get(objection_page(filed))
    assert response.status_code == 302
    assert "/console/login?next=" in response.headers["Location"]
    login = browser.login(clerk, next=objection_page(filed))
    assert login.headers["Location"].endswith(objection_page(filed))


@pytest.mark.parametrize("target", ["https://evil.example/console/objections", "//evil.example/console/",
                                    "/api/v1/me", "/console/../api"])
def test_login_never_redirects_outside_the_console(browser, clerk, target):
    response = browser.login(clerk, next=target)
    assert response.status_code == 302 and response.headers["Location"] in (QUEUE, f"http://localhost{QUEUE}")


def test_a_wrong_password_is_refused_counted_and_audited(app, browser, clerk):
    response = browser.login(clerk, password="Wrong-password-1")
    assert response.status_code == 401
    assert "用户名或密码错误" in response.get_data(as_text=True)
    assert browser.get(QUEUE).status_code == 302  # still not logged in
    assert account(app, clerk.username).failed_attempts == 1
    [event] = audit_events(app, "staff.login")
    assert event.outcome == "failure" and event.details["reason"] == "bad_password"


def test_an_unknown_username_gets_the_same_answer(app, browser, clerk):
    response = browser.login(username="nobody", password=PASSWORD)
    assert response.status_code == 401 and "用户名或密码错误" in response.get_data(as_text=True)
    [event] = audit_events(app, "staff.login")
    assert event.details["reason"] == "unknown_user" and event.actor_id == "unknown"


@pytest.mark.parametrize("username", ["", "a" * 500, "li.clerk\x00", "李文", "li clerk", "../li.clerk"])
def test_odd_usernames_are_just_unknown(browser, clerk, username):
    response = browser.login(username=username, password=PASSWORD)
    assert response.status_code == 401 and "用户名或密码错误" in response.get_data(as_text=True)


def test_five_failures_lock_the_account_for_fifteen_minutes(app, browser, clerk, clock):
    for attempt in range(1, 5):
        assert browser.login(clerk, password=f"Wrong-password-{attempt}").status_code == 401
    fifth = browser.login(clerk, password="Wrong-password-5")
    assert fifth.status_code == 429 and "锁定" in fifth.get_data(as_text=True)
    assert fifth.headers["Retry-After"] == "900"
    # While locked even the right password is refused (and not checked).
    clock.advance(minutes=14, seconds=59)
    locked = browser.login(clerk)
    assert locked.status_code == 429 and locked.headers["Retry-After"] == "1"
    clock.advance(seconds=1)
    assert browser.login(clerk).status_code == 302
    assert account(app, clerk.username).failed_attempts == 0
    reasons = [e.details.get("reason") for e in audit_events(app, "staff.login")]
    assert reasons == ["bad_password"] * 5 + ["locked", None]


def test_the_count_starts_again_after_a_lock_expires(app, browser, clerk, clock):
    for attempt in range(5):
        browser.login(clerk, password=f"Wrong-password-{attempt}")
    clock.advance(minutes=16)
    assert browser.login(clerk, password="Wrong-again-1").status_code == 401  # one failure, not a new lock
    assert browser.login(clerk).status_code == 302


@pytest.mark.parametrize("app_settings", [{"STAFF_PASSWORD_HASHER": FAST_HASHER, "RATELIMIT_ENABLED": True,
                                            "ECERT_RATELIMIT_TOKEN": "3 per minute"}])
def test_login_attempts_are_rate_limited_per_address_whatever_the_username(browser, clerk):
    statuses = [browser.login(username=f"guess{n}", password=PASSWORD).status_code for n in range(4)]
    assert statuses == [401, 401, 401, 429]
    limited = browser.login(clerk)
    assert limited.status_code == 429 and limited.mimetype == "text/html"
    assert "过于频繁" in limited.get_data(as_text=True)
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert browser.get("/console/login").status_code == 200  # the form itself stays readable


def test_a_successful_login_resets_the_failure_count(app, browser, clerk):
    for attempt in range(4):
        browser.login(clerk, password=f"Wrong-password-{attempt}")
    assert browser.login(clerk).status_code == 302
    assert account(app, clerk.username).failed_attempts == 0


def test_the_session_cookie_is_httponly_samesite_and_scoped_to_the_console(browser, clerk):
    response = browser.login(clerk)
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("ecert_console=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/console" in cookie
    assert "Secure" not in cookie  # tests run over http://localhost


@pytest.mark.parametrize("app_settings", [{"STAFF_PASSWORD_HASHER": FAST_HASHER,
                                            "ECERT_PUBLIC_URL": "https://zhengzhao.xinyang.gov.cn"}])
def test_the_session_cookie_is_secure_when_the_platform_is_served_over_https(browser, clerk):
    cookie = browser.login(clerk).headers["Set-Cookie"]
    assert "Secure" in cookie and "HttpOnly" in cookie


def test_login_starts_a_new_session_id_and_a_new_csrf_secret(app, browser, clerk):
    browser.get("/console/login")
    before = browser.cookie()
    old_token = browser.token("/console/login")
    browser.login(clerk)
    after = browser.cookie()
    assert before and after and before != after
    # The form token of the anonymous page is no use in the logged-in session.
    assert browser.post("/console/logout", token=old_token).status_code == 400
    # Two logins are two sessions with different ids.
    Console(app).logged_in(clerk)
    with app.app_context():
        hashes = list(db.session.scalars(sa.select(StaffSession.token_hash)))
    assert len(hashes) == 2 and len(set(hashes)) == 2


def test_logout_ends_the_session_on_the_server(app, browser, clerk):
    browser.logged_in(clerk)
    stolen = browser.cookie()
    response = browser.post("/console/logout")
    assert response.status_code == 302 and response.headers["Location"].endswith("/console/login")
    assert browser.get(QUEUE).status_code == 302
    replay = Console(app)
    replay.http.set_cookie("ecert_console", stolen or "", path="/console")
    assert replay.get(QUEUE).status_code == 302, "a copied cookie outlived the logout"
    assert [e.actor_id for e in audit_events(app, "staff.logout")] == [clerk.public_id]


def test_an_idle_session_ends_after_thirty_minutes(browser, clerk, clock):
    browser.logged_in(clerk)
    clock.advance(minutes=29)
    assert browser.get(QUEUE).status_code == 200
    clock.advance(minutes=29)  # activity keeps it alive
    assert browser.get(QUEUE).status_code == 200
    clock.advance(minutes=30)
    assert browser.get(QUEUE).status_code == 302


def test_a_session_ends_after_eight_hours_whatever_the_activity(browser, clerk, clock):
    browser.logged_in(clerk)
    for _ in range(23):
        clock.advance(minutes=20)
        assert browser.get(QUEUE).status_code == 200
    clock.advance(minutes=20)  # 8 h after login
    assert browser.get(QUEUE).status_code == 302


def test_disabling_an_account_ends_its_sessions_at_once(app, runner, browser, clerk):
    browser.logged_in(clerk)
    result = runner.invoke(args=["staff", "disable", clerk.username])
    assert result.exit_code == 0, result.output
    assert browser.get(QUEUE).status_code == 302
    assert browser.login(clerk).status_code == 401


def test_a_password_reset_unlocks_the_account(app, runner, browser, clerk):
    for attempt in range(5):
        browser.login(clerk, password=f"Wrong-password-{attempt}")
    new = "Another-2026-secret"
    result = runner.invoke(args=["staff", "password", clerk.username, "--password-stdin"], input=new + "\n")
    assert result.exit_code == 0, result.output
    assert browser.login(clerk, password=new).status_code == 302


# -- CSRF ---------------------------------------------------------------------------------------------------------

def test_the_login_form_needs_its_csrf_token(browser, clerk):
    browser.get("/console/login")
    response = browser.http.post("/console/login", data={"username": clerk.username, "password": clerk.password})
    assert response.status_code == 400 and "安全令牌" in response.get_data(as_text=True)
    assert browser.get(QUEUE).status_code == 302


@pytest.mark.parametrize("action", ["accept", "reject", "resolve"])
def test_a_staff_session_cannot_act_without_its_csrf_token(app, clock, browser, clerk, filed, action):
    browser.logged_in(clerk)
    path = f"{objection_page(filed)}/{action}"
    form = {"reason": "数据无误", "field.party_b_name": "李 娜"}
    missing = browser.http.post(path, data=form)
    wrong = browser.post(path, form, token="IjEyMzQ1Ig.aaaaaa.bbbbbbbbbbbbbbbbbbbbbbbbbbb")
    other = Console(app).logged_in(make_staff(app, clock, CIVIL_AFFAIRS))
    borrowed = browser.post(path, form, token=other.token(QUEUE))  # another session's valid token
    for response in (missing, wrong, borrowed):
        assert response.status_code == 400, response.get_data(as_text=True)[:300]
    assert objection_row(app, filed).status == "submitted"


def test_console_pages_carry_no_store_and_send_referrers_only_to_themselves(browser, clerk):
    browser.logged_in(clerk)
    response = browser.get(QUEUE)
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["Referrer-Policy"] == "same-origin"
    assert response.headers["Content-Security-Policy"] == "default-src 'self'; frame-ancestors 'none'"


def test_pages_need_no_inline_script_or_style(browser, clerk, filed):
    browser.logged_in(clerk)
    for path in (QUEUE, objection_page(filed), f"{objection_page(filed)}/resolve", "/console/login"):
        html = browser.get(path).get_data(as_text=True)
        assert "<script" not in html and " style=" not in html and "<style" not in html, path


# -- departments, city administrators --------------------------------------------------------------------------------

@pytest.fixture
def other_departments_objection(app: Any, clock: Any, make_dept_client: Any, login: Any) -> str:
    """An objection in the 残疾人联合会's queue, about another citizen's disability certificate."""
    other = login("刘芳")
    held = disability_of(other, app, make_dept_client(DISABILITY_FEDERATION, scopes=("issue",)))
    return file_about(app, clock, other, held.identifier, disputed={"address": "河南省信阳市平桥区中山路 19 号"})


def test_a_department_sees_only_its_own_queue(browser, clerk, filed, other_departments_objection):
    page = browser.logged_in(clerk).text(QUEUE)
    assert filed in page and other_departments_objection not in page


@pytest.mark.parametrize(("method", "suffix"), [("get", ""), ("get", "/evidence/1"), ("get", "/resolve"),
                                                 ("post", "/accept"), ("post", "/reject"), ("post", "/resolve")])
def test_another_departments_objection_is_not_found(app, browser, clerk, other_departments_objection, method,
                                                    suffix):
    browser.logged_in(clerk)
    path = objection_page(other_departments_objection) + suffix
    response = browser.get(path) if method == "get" else browser.post(path, {"reason": "无误"})
    assert response.status_code == 404
    assert "异议不存在" in response.get_data(as_text=True)
    assert objection_row(app, other_departments_objection).status == "submitted"
    assert audit_events(app, "objection.viewed") == []


def test_a_city_administrator_reads_every_queue(app, clock, filed, other_departments_objection):
    admin = Console(app).logged_in(make_staff(app, clock, None, username="city.admin"))
    page = admin.text(QUEUE)
    assert filed in page and other_departments_objection in page
    assert "全市异议队列（只读）" in page and "信阳市残疾人联合会" in page
    detail = admin.text(objection_page(filed))
    assert "市级管理员只能查看" in detail and 'id="accept"' not in detail
    [viewed] = audit_events(app, "objection.viewed")
    assert viewed.actor_type == "staff" and viewed.department_code is None


def test_a_city_administrator_can_look_at_one_departments_queue(app, clock, filed, other_departments_objection):
    admin = Console(app).logged_in(make_staff(app, clock, None, username="city.admin"))
    page = admin.text(f"{QUEUE}?dept={DISABILITY_FEDERATION}")
    assert other_departments_objection in page and filed not in page
    assert admin.get(f"{QUEUE}?dept=000000000000000000").status_code == 422


def test_department_staff_cannot_pick_another_departments_queue(browser, clerk, filed, other_departments_objection):
    page = browser.logged_in(clerk).text(f"{QUEUE}?dept={DISABILITY_FEDERATION}")
    assert filed in page and other_departments_objection not in page


@pytest.mark.parametrize(("method", "suffix"), [("post", "/accept"), ("post", "/reject"), ("get", "/resolve"),
                                                 ("post", "/resolve")])
def test_a_city_administrator_cannot_act(app, clock, filed, method, suffix):
    admin = Console(app).logged_in(make_staff(app, clock, None, username="city.admin"))
    path = objection_page(filed) + suffix
    response = admin.get(path) if method == "get" else admin.post(path, {"reason": "无误",
                                                                          "field.party_b_name": "李 娜"})
    assert response.status_code == 403 and "只能查看" in response.get_data(as_text=True)
    assert objection_row(app, filed).status == "submitted"


# -- the queue and one objection ------------------------------------------------------------------------------------

def test_overdue_objections_are_highlighted(app, browser, clerk, filed, clock):
    browser.logged_in(clerk)
    assert "queue__row--overdue" not in browser.text(QUEUE)
    clock.advance(days=4)  # Thursday → Monday: past the one working day to acknowledge
    browser.logged_in(clerk)
    page = browser.text(QUEUE)
    assert "queue__row--overdue" in page and "已超期" in page


def test_the_queue_filters_by_status(app, browser, clerk, filed):
    browser.logged_in(clerk)
    assert filed in browser.text(f"{QUEUE}?status=submitted")
    assert filed not in browser.text(f"{QUEUE}?status=resolved")
    assert browser.get(f"{QUEUE}?status=bogus").status_code == 422


def test_staff_reading_an_objection_is_audited(app, browser, clerk, filed, held):
    page = browser.logged_in(clerk).text(objection_page(filed))
    assert "李娜" in page and "李 娜" in page and held.identifier in page  # current and claimed values
    assert "配偶姓名登记有误" in page and "提交异议" in page  # statement and timeline
    [event] = audit_events(app, "objection.viewed")
    assert (event.actor_type, event.actor_id, event.department_code, event.object_id) == \
        ("staff", clerk.public_id, CIVIL_AFFAIRS, filed)


def test_evidence_images_are_served_only_through_the_login_and_audited(app, browser, clerk, filed):
    anonymous = browser.get(f"{objection_page(filed)}/evidence/1")
    assert anonymous.status_code == 302
    browser.logged_in(clerk)
    page = browser.text(objection_page(filed))
    assert f'src="{objection_page(filed)}/evidence/1"' in page
    image = browser.get(f"{objection_page(filed)}/evidence/1")
    assert image.status_code == 200 and image.mimetype == "image/jpeg" and image.data.startswith(b"\xff\xd8")
    assert image.headers["Cache-Control"] == "no-store"
    assert browser.get(f"{objection_page(filed)}/evidence/2").status_code == 404
    [event] = audit_events(app, "objection.evidence_viewed")
    assert event.actor_id == clerk.public_id and event.details == {"position": 1}


def test_accepting_moves_the_objection_into_progress(app, browser, clerk, filed):
    browser.logged_in(clerk)
    response = browser.post(f"{objection_page(filed)}/accept", page=objection_page(filed))
    assert response.status_code == 302
    assert objection_row(app, filed).status == "in_progress"
    assert "部门受理" in browser.text(objection_page(filed))
    again = browser.post(f"{objection_page(filed)}/accept", page=objection_page(filed))
    assert again.status_code == 409


def test_rejecting_needs_a_reason_shown_to_the_filer(app, browser, clerk, filed, citizen):
    browser.logged_in(clerk)
    empty = browser.post(f"{objection_page(filed)}/reject", {"reason": "  "}, page=objection_page(filed))
    assert empty.status_code == 422 and objection_row(app, filed).status == "submitted"
    response = browser.post(f"{objection_page(filed)}/reject", {"reason": "经核对婚姻登记档案，姓名无误"},
                            page=objection_page(filed))
    assert response.status_code == 302
    row = objection_row(app, filed)
    assert row.status == "rejected" and row.answer == "经核对婚姻登记档案，姓名无误"


# -- resolve by correction -------------------------------------------------------------------------------------------

def test_the_correction_form_is_prefilled_with_the_current_face_and_its_reading_audited(app, browser, clerk, filed,
                                                                                       held):
    page = browser.logged_in(clerk).text(f"{objection_page(filed)}/resolve")
    [opened] = audit_events(app, "objection.correction_opened")
    assert (opened.actor_id, opened.object_id, opened.details) == (clerk.public_id, filed,
                                                                   {"certificate": held.identifier})
    assert 'name="field.party_b_name" id="field-party_b_name" value="李娜"' in page
    assert 'value="信阳市浉河区民政局婚姻登记处"' in page
    assert 'name="holder_name" value="张伟"' in page
    assert "提出方认为应为：李 娜" in page
    assert re.search(r'<option value="女" selected>女</option>', page)


def test_resolving_reissues_the_corrected_certificate_and_links_it_in_one_step(app, browser, clerk, filed, held,
                                                                            citizen):
    browser.logged_in(clerk)
    form_page = f"{objection_page(filed)}/resolve"
    response = browser.post(form_page, {"field.party_b_name": "李 娜", "field.registration_office":
                                        "信阳市浉河区民政局婚姻登记处", "reason": "核对档案后更正配偶姓名"},
                            page=form_page)
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    with app.app_context():
        versions = list(db.session.scalars(sa.select(Certificate).where(
            Certificate.serial == sa.select(Certificate.serial).where(
                Certificate.identifier == held.identifier).scalar_subquery()).order_by(Certificate.version)))
        assert [(v.version, v.status) for v in versions] == [(1, "superseded"), (2, "valid")]
        new_identifier = versions[1].identifier
    row = objection_row(app, filed)
    assert row.status == "resolved" and row.corrected_certificate_id == versions[1].id
    page = browser.text(objection_page(filed))
    assert new_identifier in page and "已更正" in page
    # The citizen's wallet holds the corrected version with the claimed name.
    items = wallet(citizen)["items"]
    assert [item["version"] for item in items] == [2]
    detail = citizen.http.get(f"/api/v1/wallet/certificates/{items[0]['id']}", headers=citizen.headers).get_json()
    assert "李 娜" in str(detail)
    events = [e.action for e in audit_events(app, "certificate.reissued") + audit_events(app, "objection.resolved")]
    assert events == ["certificate.reissued", "objection.resolved"]
    assert audit_events(app, "certificate.reissued")[0].actor_id == clerk.public_id


def test_a_correction_that_changes_nothing_is_refused_and_writes_nothing(app, browser, clerk, filed, held):
    browser.logged_in(clerk)
    form_page = f"{objection_page(filed)}/resolve"
    response = browser.post(form_page, {"field.party_b_name": "李娜"}, page=form_page)
    assert response.status_code == 422 and "没有修改任何字段" in response.get_data(as_text=True)
    assert objection_row(app, filed).status == "submitted"
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Certificate)) == 1


def test_an_invalid_correction_is_refused_with_the_field_named_and_nothing_written(app, browser, clerk, filed):
    browser.logged_in(clerk)
    form_page = f"{objection_page(filed)}/resolve"
    response = browser.post(form_page, {"field.party_b_name": "李 娜", "field.party_b_birth_date": "1992-13-45"},
                            page=form_page)
    assert response.status_code == 422 and "party_b_birth_date" in response.get_data(as_text=True)
    assert objection_row(app, filed).status == "submitted"
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Certificate)) == 1


@pytest.mark.parametrize("form", [{"holder_name": "张\x00伟"}, {"field.party_b_name": "李\x00娜"},
                                  {"field.party_b_gender": "未知"}, {"field.party_b_name": "李" * 5000}])
def test_hostile_correction_values_get_a_page_not_a_crash(app, browser, clerk, filed, form):
    browser.logged_in(clerk)
    form_page = f"{objection_page(filed)}/resolve"
    response = browser.post(form_page, form, page=form_page)
    assert response.status_code == 422 and response.mimetype == "text/html"
    assert objection_row(app, filed).status == "submitted"


def test_control_characters_in_the_correction_note_are_cleaned(app, browser, clerk, filed):
    browser.logged_in(clerk)
    form_page = f"{objection_page(filed)}/resolve"
    response = browser.post(form_page, {"field.party_b_name": "李 娜", "reason": "更正\x00姓名"}, page=form_page)
    assert response.status_code == 302
    assert objection_row(app, filed).answer == "更正?姓名"


def test_a_closed_objection_cannot_be_resolved(app, browser, clerk, filed):
    browser.logged_in(clerk)
    browser.post(f"{objection_page(filed)}/reject", {"reason": "数据无误"}, page=objection_page(filed))
    assert browser.get(f"{objection_page(filed)}/resolve").status_code == 409


def test_evidence_is_shown_for_every_image(app, clock, browser, clerk, citizen, held):
    public_id = file_about(app, clock, citizen, held.identifier, evidence=[jpeg(), jpeg(colour="blue")])
    page = browser.logged_in(clerk).text(objection_page(public_id))
    assert "证明材料（2）" in page and f"{objection_page(public_id)}/evidence/2" in page
