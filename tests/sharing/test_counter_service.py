"""Counter service without a smartphone (第十一条): consent to an assisted request by SMS code or staff attestation."""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from backend.adapters.sms import FakeSmsGateway
from backend.core.context import field_cipher
from backend.extensions import db
from backend.kernel.ids import holder_index
from backend.models import AuditEvent, CertificateType, Grant, Holder, Notification
from backend.sharing import consent_policy, counter_service
from tests.conftest import CIVIL_AFFAIRS, SAMR, Citizen, DeptClient
from tests.factories import BUSINESS_LICENCE, MARRIAGE, company_code, resident_id
from tests.sharing.access_request_support import stored_request
from tests.support import (
    Department,
    after_first_read,
    database_is_shared,
    detached_all,
    error_of,
    finish_meanwhile,
    run_together,
    wallet_ids,
)

ACCESS_REQUESTS = "/gov/v1/access-requests"
PHONE = "13812345678"
PURPOSE = "办理低保资格审核"
WANTED = [{"type_code": MARRIAGE, "fields": ["holder.name", "registered_on", "registration_office"]}]
ATTESTATION = {"method": "staff_attested", "staff_id": "MZ-0217", "staff_name": "王丽", "reason": "持证人无智能手机",
               "id_document_checked": True, "id_document_type": "resident_id_card"}


class Window:
    """A department's counter system (客户端 with scopes request and redeem) serving a citizen at the window."""

    def __init__(self, dept: DeptClient) -> None:
        self.dept = dept
        self.http = dept.http
        self.headers = dept.headers()

    def ask(self, holder_code: str, *, code_type: str = "111", wanted: list[dict[str, Any]] | None = None,
            assisted: bool = True, purpose: str = PURPOSE) -> str:
        body: dict[str, Any] = {"wanted": wanted or WANTED, "purpose": purpose, "matter_code": "411500-MZ-DB-001"}
        if assisted:
            body.update(assisted=True, holder={"code_type": code_type, "code": holder_code})
        response = self.http.post(ACCESS_REQUESTS, json=body, headers=self.headers)
        assert response.status_code == 201, response.get_json()
        return str(response.get_json()["id"])

    def send_code(self, request_id: str) -> Any:
        return self.http.post(f"{ACCESS_REQUESTS}/{request_id}/sms-code", headers=self.headers)

    def consent(self, request_id: str, body: dict[str, Any]) -> Any:
        return self.http.post(f"{ACCESS_REQUESTS}/{request_id}/consent", json=body, headers=self.headers)

    def code_consent(self, request_id: str, code: str, **extra: Any) -> Any:
        return self.consent(request_id, {"method": "sms_code", "code": code, **extra})

    def attest(self, request_id: str, **overrides: Any) -> Any:
        return self.consent(request_id, {**ATTESTATION, **overrides})

    def poll(self, request_id: str) -> dict[str, Any]:
        response = self.http.get(f"{ACCESS_REQUESTS}/{request_id}", headers=self.headers)
        assert response.status_code == 200, response.get_json()
        return dict(response.get_json())


@pytest.fixture
def sms(app: Any) -> FakeSmsGateway:
    fake = FakeSmsGateway()
    app.extensions["ecert.sms"] = fake
    return fake


@pytest.fixture
def window(make_dept_client: Any) -> Window:
    """信阳市民政局's counter system."""
    return Window(make_dept_client(CIVIL_AFFAIRS, scopes=("request", "redeem")))


@pytest.fixture
def citizen_login(client: Any, catalog: None) -> Any:
    """Factory: a dev login registering (or not) a mobile number, as a real-name IdP's phone_number claim does."""

    def factory(phone: str | None = PHONE, name: str = "张伟", id_number: str | None = None) -> Citizen:
        number = id_number or resident_id()
        body = {"provider": "dev", "name": name, "id_type": "111", "id_number": number,
                **({"phone": phone} if phone else {})}
        response = client.post("/api/v1/auth/login", json=body)
        assert response.status_code == 200, response.get_json()
        answer = response.get_json()
        return Citizen(client, name, number, answer["access_token"], answer["refresh_token"])

    return factory


@pytest.fixture
def married_citizen(citizen_login: Any, civil_affairs: Department) -> Citizen:
    """A married citizen with a registered phone, whose 结婚证 the civil affairs bureau issued."""
    citizen = citizen_login()
    civil_affairs.issue_to(citizen)
    return citizen


def texted_code(sms: FakeSmsGateway, phone: str = PHONE) -> str:
    texts = sms.sent_to(f"+86{phone}")
    assert texts, "no text message was sent"
    match = re.search(r"验证码为(\d{6})", texts[-1])
    assert match, texts[-1]
    return match.group(1)


def audit_of(app: Any, request_id: str) -> list[AuditEvent]:
    return detached_all(app, sa.select(AuditEvent).where(AuditEvent.object_id == request_id).order_by(AuditEvent.seq))


def a_wrong_code(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


# -- SMS code --------------------------------------------------------------------------------------------------------

def test_sms_code_is_texted_to_the_registered_phone_naming_department_and_purpose(app, window, married_citizen, sms):
    request_id = window.ask(married_citizen.id_number)

    response = window.send_code(request_id)

    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["sent_to"] == "138****5678"
    assert answer["resend_after"] == 60 and answer["sends_left"] == counter_service.MAX_SENDS - 1
    [message] = sms.messages
    assert message.phone == "+8613812345678"
    assert "信阳市民政局" in message.text and PURPOSE in message.text
    code = texted_code(sms)
    stored = stored_request(app, request_id)
    assert stored.otp_hash is not None and code not in stored.otp_hash  # only a keyed digest is kept
    [sent] = [e for e in audit_of(app, request_id) if e.action == "access_request.sms_code_sent"]
    assert sent.details["phone"] == "138****5678" and code not in str(sent.details)


def test_a_long_purpose_is_shortened_in_the_text_message(window, married_citizen, sms):
    purpose = "办理" + "城乡居民最低生活保障资格年度复核" * 10

    window.send_code(window.ask(married_citizen.id_number, purpose=purpose))

    [message] = sms.messages
    assert purpose[:counter_service.SMS_PURPOSE_CHARS - 1] + "…" in message.text
    assert len(message.text) < 150


def test_the_right_code_creates_a_grant_the_requesting_client_redeems(app, window, married_citizen, sms):
    request_id = window.ask(married_citizen.id_number)
    window.send_code(request_id)

    response = window.code_consent(request_id, texted_code(sms))

    assert response.status_code == 201, response.get_json()
    answer = response.get_json()
    assert answer["status"] == "approved" and answer["consent_method"] == "sms_code"
    [certificate] = answer["certificates"]
    assert certificate["type_code"] == MARRIAGE
    assert certificate["fields"] == ["holder.name", "registered_on", "registration_office"]
    polled = window.poll(request_id)
    assert polled["status"] == "approved" and polled["grant_id"] == answer["grant_id"]
    with app.app_context():
        grant = db.session.scalar(sa.select(Grant).where(Grant.public_id == answer["grant_id"]))
        assert grant is not None and grant.consent_method == "sms_code"
        assert grant.api_client.client_id == window.dept.client_id
    assert "access_request.consented_by_sms" in [e.action for e in audit_of(app, request_id)]

    redeemed = window.http.post("/gov/v1/grants/redeem", json={"request_id": request_id}, headers=window.headers)

    assert redeemed.status_code == 200, redeemed.get_json()
    assert redeemed.get_json()["grant_id"] == answer["grant_id"]
    assert len(redeemed.get_json()["presentations"]) == 1
    again = window.http.post("/gov/v1/grants/redeem", json={"request_id": request_id}, headers=window.headers)
    error_of(again, 409, "grant_already_used")


def test_the_holder_is_notified_of_a_consent_given_at_the_counter(app, window, married_citizen, sms):
    request_id = window.ask(married_citizen.id_number)
    window.send_code(request_id)
    window.code_consent(request_id, texted_code(sms))

    inbox = married_citizen.http.get("/api/v1/notifications", headers=married_citizen.headers).get_json()["items"]

    [notice] = [item for item in inbox if item["kind"] == "counter_consent"]
    assert "信阳市民政局" in notice["title"] and PURPOSE in notice["body"] and "短信验证码" in notice["body"]


def test_a_wrong_code_is_refused_and_the_attempt_counts(app, window, married_citizen, sms):
    request_id = window.ask(married_citizen.id_number)
    window.send_code(request_id)

    error = error_of(window.code_consent(request_id, a_wrong_code(texted_code(sms))), 422, "sms_code_invalid")

    assert error["details"]["attempts_left"] == counter_service.MAX_ATTEMPTS - 1
    assert stored_request(app, request_id).otp_attempts == 1  # kept although the request was refused
    assert stored_request(app, request_id).status == "pending"
    refused = [e for e in audit_of(app, request_id) if e.action == "access_request.sms_code_refused"]
    assert [e.outcome for e in refused] == ["failure"] and refused[0].details["attempts"] == 1


def test_five_wrong_codes_lock_the_request_even_for_the_right_code(app, window, married_citizen, sms):
    request_id = window.ask(married_citizen.id_number)
    window.send_code(request_id)
    code = texted_code(sms)
    for _ in range(counter_service.MAX_ATTEMPTS - 1):
        error_of(window.code_consent(request_id, a_wrong_code(code)), 422, "sms_code_invalid")

    error_of(window.code_consent(request_id, a_wrong_code(code)), 409, "request_locked")

    error_of(window.code_consent(request_id, code), 409, "request_locked")
    error_of(window.send_code(request_id), 409, "request_locked")
    error_of(window.attest(request_id), 409, "request_locked")
    assert stored_request(app, request_id).status == "pending"
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Grant)) == 0


def test_an_expired_code_is_refused(app, window, married_citizen, sms, clock):
    request_id = window.ask(married_citizen.id_number)
    window.send_code(request_id)
    code = texted_code(sms)
    clock.advance(minutes=5, seconds=1)

    error_of(window.code_consent(request_id, code), 410, "sms_code_expired")


def test_a_code_is_used_once(app, window, married_citizen, sms):
    request_id = window.ask(married_citizen.id_number)
    window.send_code(request_id)
    code = texted_code(sms)
    assert window.code_consent(request_id, code).status_code == 201

    error_of(window.code_consent(request_id, code), 409, "access_request_decided")

    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Grant)) == 1


def test_consent_before_any_code_was_sent_is_refused(window, married_citizen, sms):
    request_id = window.ask(married_citizen.id_number)

    error_of(window.code_consent(request_id, "123456"), 409, "sms_code_not_sent")


def test_a_new_code_replaces_the_last_one_no_sooner_than_a_minute_later(app, window, married_citizen, sms, clock):
    request_id = window.ask(married_citizen.id_number)
    window.send_code(request_id)
    first = texted_code(sms)

    throttled = window.send_code(request_id)

    error_of(throttled, 429, "sms_code_throttled")
    assert throttled.headers["Retry-After"] == "60"
    clock.advance(seconds=61)
    assert window.send_code(request_id).status_code == 200
    second = texted_code(sms)
    if first != second:  # one in a million they coincide
        error_of(window.code_consent(request_id, first), 422, "sms_code_invalid")
    assert window.code_consent(request_id, second).status_code == 201


def test_codes_per_request_are_limited(window, married_citizen, sms, clock):
    request_id = window.ask(married_citizen.id_number)
    for _ in range(counter_service.MAX_SENDS):
        assert window.send_code(request_id).status_code == 200
        clock.advance(seconds=61)

    error_of(window.send_code(request_id), 409, "sms_send_limit")

    assert len(sms.messages) == counter_service.MAX_SENDS


def test_requests_from_any_department_cannot_flood_one_holders_phone(window, married_citizen, sms, make_dept_client,
                                                                     clock):
    other = Window(make_dept_client(SAMR, scopes=("request",)))
    for n in range(counter_service.MAX_REQUESTS_TEXTING_HOLDER):
        counter = window if n % 2 else other
        assert counter.send_code(counter.ask(married_citizen.id_number)).status_code == 200

    throttled = window.send_code(window.ask(married_citizen.id_number))

    error_of(throttled, 429, "sms_code_throttled")
    assert throttled.headers["Retry-After"] == "3600"
    assert len(sms.messages) == counter_service.MAX_REQUESTS_TEXTING_HOLDER
    clock.advance(minutes=61)  # the codes were all sent more than an hour ago
    window.headers = window.dept.headers()
    assert window.send_code(window.ask(married_citizen.id_number)).status_code == 200


def test_a_holder_without_a_registered_phone_is_sent_to_staff_attestation(window, citizen_login, civil_affairs, sms):
    citizen = citizen_login(phone=None)
    civil_affairs.issue_to(citizen)
    request_id = window.ask(citizen.id_number)

    error = error_of(window.send_code(request_id), 409, "phone_not_registered")

    assert "staff_attested" in error["message"]
    assert sms.messages == []


def test_a_citizen_who_never_logged_in_cannot_get_a_code(window, civil_affairs, sms):
    number = resident_id()
    civil_affairs.issue_to(number)
    request_id = window.ask(number)

    error = error_of(window.send_code(request_id), 409, "holder_not_registered")

    assert "staff_attested" in error["message"]


def test_an_unreachable_sms_gateway_answers_503_and_keeps_no_code(app, window, married_citizen, sms):
    request_id = window.ask(married_citizen.id_number)
    sms.failing = True

    error_of(window.send_code(request_id), 503, "sms_unavailable")

    stored = stored_request(app, request_id)
    assert stored.otp_hash is None and stored.otp_expires_at is None
    assert "access_request.sms_code_sent" not in [e.action for e in audit_of(app, request_id)]


def test_a_request_the_holder_answers_in_the_app_has_no_counter_consent(window, married_citizen, sms):
    request_id = window.ask(married_citizen.id_number, assisted=False)

    error_of(window.send_code(request_id), 409, "request_not_assisted")
    error_of(window.attest(request_id), 409, "request_not_assisted")


def test_an_expired_request_cannot_be_consented_to(window, married_citizen, sms, clock):
    request_id = window.ask(married_citizen.id_number)
    clock.advance(seconds=601)
    window.headers = window.dept.headers()

    error_of(window.send_code(request_id), 410, "access_request_expired")
    error_of(window.attest(request_id), 410, "access_request_expired")


# -- only the requesting client --------------------------------------------------------------------------------------

@pytest.mark.parametrize("other_code", [SAMR, CIVIL_AFFAIRS], ids=["other department", "same department"])
def test_another_client_can_neither_send_codes_nor_consent(app, window, married_citizen, sms, make_dept_client,
                                                           other_code):
    request_id = window.ask(married_citizen.id_number)
    window.send_code(request_id)
    code = texted_code(sms)
    other = Window(make_dept_client(other_code, scopes=("request", "redeem"), name="另一业务系统"))

    error_of(other.send_code(request_id), 404, "access_request_not_found")
    error_of(other.code_consent(request_id, code), 404, "access_request_not_found")
    error_of(other.attest(request_id), 404, "access_request_not_found")

    assert len(sms.messages) == 1
    assert stored_request(app, request_id).status == "pending"
    refused = [e for e in audit_of(app, request_id) if e.outcome == "failure"]
    assert {e.actor_id for e in refused} == {other.dept.client_id} and len(refused) == 3
    assert window.code_consent(request_id, code).status_code == 201  # the requesting client still can


def test_a_client_without_the_request_scope_is_refused(window, married_citizen, sms, make_dept_client):
    request_id = window.ask(married_citizen.id_number)
    verifier = Window(make_dept_client(CIVIL_AFFAIRS, scopes=("verify",)))

    error_of(verifier.send_code(request_id), 403, "insufficient_scope")


# -- staff attestation -----------------------------------------------------------------------------------------------

def test_staff_attestation_records_staff_reason_and_id_check(app, window, married_citizen, sms):
    request_id = window.ask(married_citizen.id_number)

    response = window.attest(request_id)

    assert response.status_code == 201, response.get_json()
    assert response.get_json()["consent_method"] == "staff_attested"
    stored = stored_request(app, request_id)
    assert (stored.status, stored.consent_method) == ("approved", "staff_attested")
    assert (stored.attested_by, stored.attestation_reason, stored.id_document_checked) == \
        ("MZ-0217", "持证人无智能手机", True)
    [event] = [e for e in audit_of(app, request_id) if e.action == "access_request.attested_by_staff"]
    assert event.actor_id == window.dept.client_id and event.department_code == CIVIL_AFFAIRS
    assert {key: event.details[key] for key in ("staff_id", "staff_name", "reason", "id_document_checked",
                                                 "id_document_type")} == \
        {"staff_id": "MZ-0217", "staff_name": "王丽", "reason": "持证人无智能手机", "id_document_checked": True,
         "id_document_type": "resident_id_card"}
    assert "access_request.consented_by_sms" not in [e.action for e in audit_of(app, request_id)]
    with app.app_context():
        grant = db.session.scalar(sa.select(Grant).where(Grant.public_id == response.get_json()["grant_id"]))
        assert grant is not None and grant.consent_method == "staff_attested"
    assert sms.messages == []


def test_staff_attested_consents_are_counted_apart_per_department(app, window, married_citizen, citizen_login,
                                                                  civil_affairs, sms, runner):
    window.attest(window.ask(married_citizen.id_number))
    other = citizen_login(phone="13987654321")
    civil_affairs.issue_to(other)
    by_sms = window.ask(other.id_number)
    window.send_code(by_sms)
    assert window.code_consent(by_sms, texted_code(sms, "13987654321")).status_code == 201
    third = citizen_login(phone=None)
    civil_affairs.issue_to(third)
    window.attest(window.ask(third.id_number), staff_id="MZ-0301", reason="老年人不会使用手机")

    with app.app_context():
        counts = counter_service.count_counter_consents(db.session())

    assert counts == [counter_service.CounterConsentCount(CIVIL_AFFAIRS, sms_code=1, staff_attested=2)]
    result = runner.invoke(args=["audit", "counter-consents", "--json"])
    assert result.exit_code == 0, result.output
    assert '"staff_attested": 2' in result.output and '"sms_code": 1' in result.output


def test_staff_must_have_checked_the_id_document(window, married_citizen, sms):
    request_id = window.ask(married_citizen.id_number)

    response = window.attest(request_id, id_document_checked=False)

    error_of(response, 422, "validation_failed")
    assert response.get_json()["error"]["details"]["fields"][0]["field"].startswith("staff_attested.id_document")


def test_staff_attestation_serves_a_citizen_who_never_logged_in(app, window, civil_affairs, citizen_login, sms):
    number = resident_id()
    civil_affairs.issue_to(number)

    response = window.attest(window.ask(number))

    assert response.status_code == 201, response.get_json()
    with app.app_context():
        holder = db.session.scalar(sa.select(Holder).where(Holder.id_index == holder_index(field_cipher(), "111",
                                                                                          number)))
        assert holder is not None and holder.assurance_level == "counter_id_check" and holder.last_login_at is None
        known = holder.public_id
    later = citizen_login(id_number=number)  # a later real-name login is the same holder, with the grant
    me = later.http.get("/api/v1/me", headers=later.headers).get_json()
    assert me["id"] == known


def test_staff_chosen_certificates_must_be_the_named_holders(window, married_citizen, citizen_login, civil_affairs,
                                                             sms):
    stranger = citizen_login(phone=None)
    theirs = civil_affairs.issue_to(stranger)
    request_id = window.ask(married_citizen.id_number)

    response = window.attest(request_id, identifiers=[theirs])

    error = error_of(response, 422, "certificates_not_eligible")
    assert error["details"]["fields"] == [{"field": "identifiers[0]", "reason": "not_eligible"}]


def test_staff_may_choose_the_holders_certificate_by_identifier(window, citizen_login, civil_affairs, sms):
    citizen = citizen_login(phone=None)
    shown = civil_affairs.issue_to(citizen)
    newer = civil_affairs.issue_to(citizen)  # without a choice, the newest certificate of the type is used
    request_id = window.ask(citizen.id_number)

    response = window.attest(request_id, identifiers=[shown])

    assert response.status_code == 201, response.get_json()
    assert [c["identifier"] for c in response.get_json()["certificates"]] == [shown]
    other = window.attest(window.ask(citizen.id_number))
    assert [c["identifier"] for c in other.get_json()["certificates"]] == [newer]


def test_a_holder_without_a_certificate_of_the_wanted_type_is_refused(window, citizen_login, sms):
    citizen = citizen_login()

    error_of(window.attest(window.ask(citizen.id_number)), 409, "no_matching_certificates")


def test_counter_consent_stands_in_for_the_apps_step_up(app, window, married_citizen, sms, clock):
    with app.app_context():
        marriage = db.session.scalar(sa.select(CertificateType).where(CertificateType.type_code == MARRIAGE))
        assert marriage is not None and consent_policy.needs_step_up([marriage])  # in the app: a login within 5 min
    clock.advance(days=1)  # the holder last logged in a day ago
    window.headers = window.dept.headers()

    by_code = window.ask(married_citizen.id_number)
    window.send_code(by_code)
    assert window.code_consent(by_code, texted_code(sms)).status_code == 201
    assert window.attest(window.ask(married_citizen.id_number)).status_code == 201


# -- a company (法人) holder ------------------------------------------------------------------------------------------

LICENCE_WANTED = [{"type_code": BUSINESS_LICENCE, "fields": ["company_name", "uscc", "legal_representative"]}]
COMPANY_NAME = "信阳毛尖茶业有限公司"
TO_THE_APP = {"holder_kind": "legal_person", "consent_in": "app",
              "consented_by": ["legal_representative", "authorised_agent"]}


def assert_sent_to_the_app(error: dict[str, Any]) -> None:
    """The guidance names who consents for a company and where, and no longer offers a counter path."""
    assert error["details"] == TO_THE_APP
    assert "法定代表人或授权代理人" in error["message"] and "小程序" in error["message"]
    assert "staff_attested" not in error["message"]


def test_a_companys_request_is_sent_to_its_representative_in_the_app_by_both_counter_paths(app, window, samr, login,
                                                                                           sms):
    company = company_code()
    samr.issue_to_company(company, COMPANY_NAME)
    request_id = window.ask(company, code_type="001", wanted=LICENCE_WANTED)

    assert_sent_to_the_app(error_of(window.send_code(request_id), 422, "holder_not_a_person"))
    assert_sent_to_the_app(error_of(window.attest(request_id), 422, "holder_not_a_person"))
    assert sms.messages == [] and window.poll(request_id)["status"] == "pending"

    # What the guidance says works: the legal representative opens the request in the app and approves it.
    boss = login("王建国", companies=[{"code": company, "name": COMPANY_NAME}])
    [licence] = wallet_ids(boss)
    approved = boss.http.post(f"/api/v1/access-requests/{request_id}/approve", json={"certificate_ids": [licence]},
                              headers=boss.headers)
    assert approved.status_code == 200, approved.get_json()
    assert window.poll(request_id)["status"] == "approved"


def test_a_company_known_only_from_its_representatives_login_gets_the_same_guidance(window, login, sms):
    company = company_code()  # no certificate yet: the representative's login is what names it a company
    login("王建国", companies=[{"code": company, "name": COMPANY_NAME}])
    request_id = window.ask(company, code_type="001", wanted=LICENCE_WANTED)

    assert_sent_to_the_app(error_of(window.send_code(request_id), 422, "holder_not_a_person"))


def test_a_decided_request_cannot_be_attested_again(app, window, married_citizen, sms):
    request_id = window.ask(married_citizen.id_number)
    assert window.attest(request_id).status_code == 201

    error_of(window.attest(request_id), 409, "access_request_decided")
    error_of(window.send_code(request_id), 409, "access_request_decided")


def test_no_consent_notification_without_a_consent(app, window, married_citizen, sms):
    request_id = window.ask(married_citizen.id_number)
    window.send_code(request_id)
    window.code_consent(request_id, a_wrong_code(texted_code(sms)))

    with app.app_context():
        kinds = list(db.session.scalars(sa.select(Notification.kind)))
    assert "counter_consent" not in kinds


def test_concurrent_consents_to_one_request_decide_once(app, window, married_citizen, sms):
    request_id = window.ask(married_citizen.id_number)
    window.send_code(request_id)
    code = texted_code(sms)

    def consent(n: int) -> tuple[int, dict[str, Any]]:
        body = {"method": "sms_code", "code": code} if n % 2 == 0 else ATTESTATION
        response = app.test_client().post(f"{ACCESS_REQUESTS}/{request_id}/consent", json=body,
                                          headers=window.headers)
        return response.status_code, response.get_json()

    results = run_together(consent, 6)

    assert sorted(status for status, _ in results) == [201, 409, 409, 409, 409, 409], results
    assert {body["error"]["code"] for status, body in results if status == 409} <= {"access_request_decided",
                                                                                    "concurrent_conflict"}
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Grant)) == 1
    stored = stored_request(app, request_id)
    [winner] = [body for status, body in results if status == 201]
    assert stored.status == "approved" and stored.consent_method == winner["consent_method"]


# -- races: what a request read is no lock; only the database's answer to the write decides -------------------------

GUESSERS = 8


def test_a_code_that_read_the_count_before_the_fifth_wrong_code_locked_the_request_is_not_checked(app, window,
                                                                                                  married_citizen, sms):
    database_is_shared(app)
    request_id = window.ask(married_citizen.id_number)
    window.send_code(request_id)
    code = texted_code(sms)
    for _ in range(counter_service.MAX_ATTEMPTS - 1):
        error_of(window.code_consent(request_id, a_wrong_code(code)), 422, "sms_code_invalid")
    fifth, fifth_answer = finish_meanwhile(
        lambda: app.test_client().post(f"{ACCESS_REQUESTS}/{request_id}/consent", headers=window.headers,
                                       json={"method": "sms_code", "code": a_wrong_code(code)}))

    # The right code read the request while one attempt was left; the fifth wrong code used it up meanwhile.
    with after_first_read(app, "access_request", fifth, thread=threading.get_ident()):
        late = window.code_consent(request_id, code)

    error_of(fifth_answer(), 409, "request_locked")
    error_of(late, 409, "request_locked")
    assert stored_request(app, request_id).status == "pending"
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Grant)) == 0


@pytest.mark.parametrize("overlap", [False, True], ids=["released-together", "all-past-the-read"])
def test_concurrent_wrong_codes_get_five_checks_and_lock_the_request(app, window, married_citizen, sms, overlap):
    database_is_shared(app)
    request_id = window.ask(married_citizen.id_number)
    window.send_code(request_id)
    code = texted_code(sms)
    read = threading.Barrier(GUESSERS)

    def guess(n: int) -> tuple[int, str]:
        response = app.test_client().post(f"{ACCESS_REQUESTS}/{request_id}/consent", headers=window.headers,
                                          json={"method": "sms_code", "code": f"{(int(code) + n + 1) % 10**6:06d}"})
        return response.status_code, response.get_json()["error"]["code"]

    with after_first_read(app, "access_request", lambda: read.wait(timeout=30) if overlap else None):
        results = run_together(guess, GUESSERS)

    checked = counter_service.MAX_ATTEMPTS - 1
    assert sorted(results) == [(409, "request_locked")] * (GUESSERS - checked) + [(422, "sms_code_invalid")] * checked
    assert stored_request(app, request_id).otp_attempts == counter_service.MAX_ATTEMPTS
    error_of(window.code_consent(request_id, code), 409, "request_locked")


@pytest.mark.parametrize("overlap", [False, True], ids=["released-together", "all-past-the-read"])
def test_concurrent_sends_text_one_code(app, window, married_citizen, sms, overlap):
    database_is_shared(app)
    request_id = window.ask(married_citizen.id_number)
    senders = 4
    read = threading.Barrier(senders)

    def send(_: int) -> int:
        return int(app.test_client().post(f"{ACCESS_REQUESTS}/{request_id}/sms-code",
                                          headers=window.headers).status_code)

    with after_first_read(app, "access_request", lambda: read.wait(timeout=30) if overlap else None):
        statuses = run_together(send, senders)

    assert sorted(statuses) == [200] + [429] * (senders - 1)
    assert len(sms.sent_to(f"+86{PHONE}")) == 1
    assert window.code_consent(request_id, texted_code(sms)).status_code == 201
