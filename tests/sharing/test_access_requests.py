"""A department asks (用证请求): creation, the holder's consent screen, approval and decline, who may see what."""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy as sa
import zxingcpp
from PIL import Image

from backend.extensions import db
from backend.models import AccessRequest, AuditEvent, Grant, GrantCertificate, Notification
from backend.sharing import access_requests
from tests.conftest import CIVIL_AFFAIRS, SAMR, Citizen
from tests.factories import BUSINESS_LICENCE, DISABILITY, FOOD_LICENCE, MARRIAGE, company_code, resident_id
from tests.sharing.access_request_support import (
    API,
    LICENCE_FIELDS,
    MARRIAGE_FIELDS,
    Asker,
    answer,
    ask_body,
    stored_request,
    view,
)
from tests.support import Department, error_of, public_id_of, run_together


@dataclass
class Holder:
    """A logged-in citizen with a marriage certificate of their own and a business licence of their company."""

    citizen: Citizen
    company: str
    marriage_id: str
    licence_id: str


@pytest.fixture
def asker(make_dept_client: Any) -> Asker:
    return Asker(make_dept_client(SAMR, scopes=("request", "redeem")))


@pytest.fixture
def make_holder(app: Any, login: Any, samr: Department, civil_affairs: Department) -> Any:
    def factory(name: str = "张伟") -> Holder:
        company = company_code()
        citizen = login(name=name, companies=[{"code": company, "name": "信阳毛尖茶业有限公司"}])
        marriage = civil_affairs.issue_to(citizen)
        licence = samr.issue_to_company(company)
        return Holder(citizen, company, public_id_of(app, marriage), public_id_of(app, licence))

    return factory


@pytest.fixture
def holder(make_holder: Any) -> Holder:
    return make_holder()


def approved(holder: Holder, request_id: str, *ids: str) -> dict[str, Any]:
    response = answer(holder.citizen, request_id, "approve", list(ids) or [holder.marriage_id, holder.licence_id])
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


# -- creation -------------------------------------------------------------------------------------------------------

def test_a_request_answers_id_url_and_expiry_and_the_granted_lifetime(asker, clock):
    response = asker.post(ask_body(consent_seconds=10 * 365 * 86400))
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["url"].endswith(f"{API}/{body['id']}") and len(body["id"]) == 32
    assert body["status"] == "pending" and body["expires_at"] == clock.advance(minutes=10).isoformat()
    # The marriage certificate's policy (1 day) is stricter than the licence's (30 days): the request gets 1 day.
    assert body["requested_consent_seconds"] == 10 * 365 * 86400
    assert body["consent_seconds"] == 86400
    assert body["grant_id"] is None and body["decided_at"] is None


def test_a_request_within_the_cap_keeps_its_lifetime(asker):
    assert asker.ask(consent_seconds=3600)["consent_seconds"] == 3600


def test_an_over_broad_request_is_refused_naming_every_field(asker, app):
    response = asker.post(ask_body(wanted=[
        {"type_code": DISABILITY, "fields": ["holder.name", "disability_grade", "address", "disability_category"]},
        {"type_code": BUSINESS_LICENCE, "fields": ["company_name", "no_such_field"]}]))
    error = error_of(response, 422, "fields_not_shareable")
    refused = {(item["type_code"], tuple(item["fields"])) for item in error["details"]["types"]}
    assert refused == {(DISABILITY, ("disability_grade", "disability_category")),
                       (BUSINESS_LICENCE, ("no_such_field",))}
    assert {entry["name"] for entry in error["details"]["fields"]} == {"disability_grade", "disability_category",
                                                                       "no_such_field"}
    assert "disability_grade" in error["message"] and "no_such_field" in error["message"]
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AccessRequest)) == 0


def test_an_unknown_certificate_type_is_refused(asker):
    response = asker.post(ask_body(wanted=[{"type_code": "11411500MB1C629765999", "fields": ["holder.name"]}]))
    error = error_of(response, 422, "unknown_certificate_type")
    assert error["details"]["fields"][0]["field"] == "wanted[0].type_code"


def test_a_type_may_be_asked_for_once(asker):
    wanted = [{"type_code": MARRIAGE, "fields": ["holder.name"]}] * 2
    error_of(asker.post(ask_body(wanted=wanted)), 422, "duplicate_certificate_type")


def test_unknown_body_fields_and_a_missing_purpose_are_refused(asker):
    error_of(asker.post({**ask_body(), "extra": 1}), 422, "validation_failed")
    body = ask_body()
    del body["purpose"]
    error_of(asker.post(body), 422, "validation_failed")


def test_creating_a_request_needs_the_request_scope(make_dept_client):
    issuer = Asker(make_dept_client(SAMR, scopes=("issue",)))
    error_of(issuer.post(), 403, "insufficient_scope")


def test_the_request_qr_holds_its_url(asker):
    response = asker.post(accept="image/png")
    assert response.status_code == 201 and response.mimetype == "image/png"
    request_id = response.headers["X-Access-Request-Id"]
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(response.data)))
    assert [result.text for result in decoded] == [f"http://localhost{API}/{request_id}"]
    assert asker.poll(request_id).get_json()["status"] == "pending"


def test_creation_is_audited(asker, app):
    request_id = asker.ask()["id"]
    with app.app_context():
        event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.object_id == request_id))
        assert event is not None and event.action == "access_request.created"
        assert event.actor_id == asker.dept.client_id


# -- polling --------------------------------------------------------------------------------------------------------

def test_a_client_of_another_department_cannot_poll_the_request(asker, make_dept_client):
    request_id = asker.ask()["id"]
    other_department = Asker(make_dept_client(CIVIL_AFFAIRS, scopes=("request",)))
    error_of(other_department.poll(request_id), 404, "access_request_not_found")
    same_department = Asker(make_dept_client(SAMR, scopes=("request",)))
    error_of(same_department.poll(request_id), 404, "access_request_not_found")
    assert asker.poll(request_id).status_code == 200


def test_polling_tells_the_outcome_and_nothing_about_the_holder(asker, holder, app):
    request_id = asker.ask()["id"]
    decision = approved(holder, request_id)
    body = asker.poll(request_id).get_json()
    assert body["status"] == "approved" and body["grant_id"] == decision["grant_id"]
    assert body["decided_at"] == decision["decided_at"]
    text = str(body)
    assert holder.citizen.id_number not in text and holder.citizen.name not in text and holder.company not in text


def test_an_unanswered_request_expires(asker, clock):
    request_id = asker.ask()["id"]
    clock.advance(minutes=10)
    assert asker.refresh().poll(request_id).get_json()["status"] == "expired"


# -- the holder's consent screen ------------------------------------------------------------------------------------

def test_the_holder_sees_who_asks_why_each_field_by_its_label_and_their_matching_certificates(asker, holder):
    request_id = asker.ask()["id"]
    response = view(holder.citizen, request_id)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["department"] == {"code": SAMR, "name": "信阳市市场监督管理局"}
    assert body["purpose"] == "办理企业变更登记" and body["matter_code"] == "11411500MB1C629765-XK-001"
    assert body["consent_seconds"] == 3600 and body["status"] == "pending"
    marriage, licence = body["wanted"]
    assert [f["label"] for f in marriage["fields"]] == ["持证主体名称", "登记日期", "姓名（一方）", "姓名（另一方）"]
    assert [f["name"] for f in marriage["fields"]] == MARRIAGE_FIELDS
    assert marriage["step_up_required"] is True and licence["step_up_required"] is False
    assert [f["name"] for f in licence["fields"]] == LICENCE_FIELDS
    matching = {item["id"]: item for item in body["matching_certificates"]}
    assert set(matching) == {holder.marriage_id, holder.licence_id}
    assert matching[holder.licence_id]["owner"] == {"kind": "company", "code": holder.company,
                                                    "name": "信阳毛尖茶业有限公司"}
    assert holder.citizen.id_number not in str(body)


def test_other_peoples_certificates_are_not_offered(asker, holder, make_holder):
    request_id = asker.ask()["id"]
    other = make_holder("李娜")
    offered = {item["id"] for item in view(other.citizen, request_id).get_json()["matching_certificates"]}
    assert offered == {other.marriage_id, other.licence_id}


def test_an_unknown_request_is_not_found(holder):
    error_of(view(holder.citizen, "0" * 32), 404, "access_request_not_found")


# -- approval -------------------------------------------------------------------------------------------------------

def test_approval_creates_the_grant_notifies_the_holder_and_is_audited(asker, holder, app):
    request_id = asker.ask()["id"]
    decision = approved(holder, request_id)
    assert decision["status"] == "approved" and decision["id"] == request_id
    with app.app_context():
        grant = db.session.scalar(sa.select(Grant).where(Grant.public_id == decision["grant_id"]))
        assert grant is not None and grant.consent_method == "app" and grant.purpose == "办理企业变更登记"
        covered = db.session.scalars(sa.select(GrantCertificate.fields).where(GrantCertificate.grant_id == grant.id))
        assert sorted(map(tuple, covered)) == sorted([tuple(MARRIAGE_FIELDS), tuple(LICENCE_FIELDS)])
        actions = set(db.session.scalars(sa.select(AuditEvent.action).where(
            AuditEvent.object_id.in_([request_id, decision["grant_id"]]))))
        assert {"access_request.created", "access_request.approved", "grant.created"} <= actions
        notice = db.session.scalar(sa.select(Notification).where(Notification.kind == "grant_created"))
        assert notice is not None and notice.data["grant_id"] == decision["grant_id"]
        assert "信阳市市场监督管理局" in notice.title
    inbox = holder.citizen.http.get("/api/v1/notifications", headers=holder.citizen.headers).get_json()
    assert "grant_created" in [item["kind"] for item in inbox["items"]]
    after = view(holder.citizen, request_id).get_json()
    assert after["status"] == "approved" and after["grant_id"] == decision["grant_id"]
    assert after["matching_certificates"] == []


def test_the_requesting_client_redeems_an_approved_request_by_its_id(asker, holder, make_dept_client):
    request_id = asker.ask()["id"]
    grant_id = approved(holder, request_id)["grant_id"]
    other = make_dept_client(SAMR, scopes=("redeem",))
    refused = other.http.post("/gov/v1/grants/redeem", json={"request_id": request_id}, headers=other.headers())
    assert refused.status_code in (403, 404), refused.get_json()
    response = asker.http.post("/gov/v1/grants/redeem", json={"request_id": request_id}, headers=asker.headers)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["grant_id"] == grant_id and len(body["presentations"]) == 2


def test_approval_with_only_some_wanted_types_covers_those(asker, holder, app):
    request_id = asker.ask()["id"]
    decision = approved(holder, request_id, holder.licence_id)
    with app.app_context():
        grant = db.session.scalar(sa.select(Grant).where(Grant.public_id == decision["grant_id"]))
        assert grant is not None and len(grant.certificates) == 1


def test_only_certificates_the_holder_holds_or_represents_can_be_given(asker, holder, make_holder):
    request_id = asker.ask()["id"]
    other = make_holder("李娜")
    error_of(answer(holder.citizen, request_id, "approve", [other.licence_id]), 404, "certificate_not_found")
    assert view(holder.citizen, request_id).get_json()["status"] == "pending"


def test_only_certificates_of_wanted_types_can_be_given(asker, holder, app, samr):
    request_id = asker.ask(wanted=[{"type_code": MARRIAGE, "fields": ["holder.name"]}])["id"]
    error_of(answer(holder.citizen, request_id, "approve", [holder.licence_id]), 422,
             "certificate_type_not_requested")
    food = public_id_of(app, samr.issue_to_company(holder.company, type_code=FOOD_LICENCE))
    request_id = asker.refresh().ask()["id"]
    error_of(answer(holder.citizen, request_id, "approve", [food]), 422, "certificate_type_not_requested")


def test_a_revoked_certificate_cannot_be_given(asker, holder, app, samr):
    request_id = asker.ask()["id"]
    with app.app_context():
        from backend.models import Certificate

        identifier = db.session.scalar(sa.select(Certificate.identifier)
                                       .where(Certificate.public_id == holder.licence_id))
    samr.change(identifier, "revoke", {"reason": "吊销"})
    error_of(answer(holder.citizen, request_id, "approve", [holder.licence_id]), 409, "certificate_revoked")


def test_level_3_types_need_a_recent_login_and_are_accepted_right_after_one(asker, holder, clock, login):
    request_id = asker.ask()["id"]
    clock.advance(minutes=6)  # the access token (10 min) still works; the login is too old for consent
    error = error_of(answer(holder.citizen, request_id, "approve", [holder.marriage_id]), 401, "reauth_required")
    assert error["details"]["max_age_seconds"] == 300
    # A level-1 type alone needs no step-up … but the request stays open for the marriage certificate.
    fresh = login(name=holder.citizen.name, id_number=holder.citizen.id_number,
                  companies=[{"code": holder.company, "name": "信阳毛尖茶业有限公司"}])
    response = answer(fresh, request_id, "approve", [holder.marriage_id])
    assert response.status_code == 200, response.get_json()


def test_a_level_1_type_needs_no_step_up(asker, holder, clock):
    request_id = asker.ask()["id"]
    clock.advance(minutes=6)
    assert answer(holder.citizen, request_id, "approve", [holder.licence_id]).status_code == 200


# -- decline, expiry, decided ---------------------------------------------------------------------------------------

def test_the_holder_may_decline(asker, holder, app):
    request_id = asker.ask()["id"]
    response = answer(holder.citizen, request_id, "decline")
    assert response.status_code == 200 and response.get_json()["status"] == "declined"
    polled = asker.poll(request_id).get_json()
    assert polled["status"] == "declined" and polled["grant_id"] is None and polled["decided_at"]
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Grant)) == 0
        assert "access_request.declined" in set(db.session.scalars(
            sa.select(AuditEvent.action).where(AuditEvent.object_id == request_id)))


def test_an_expired_request_cannot_be_answered(asker, holder, clock, login):
    request_id = asker.ask()["id"]
    clock.advance(minutes=10, seconds=1)
    holder.citizen = login(name=holder.citizen.name, id_number=holder.citizen.id_number,
                           companies=[{"code": holder.company, "name": "信阳毛尖茶业有限公司"}])
    error_of(answer(holder.citizen, request_id, "approve", [holder.licence_id]), 410, "access_request_expired")
    error_of(answer(holder.citizen, request_id, "decline"), 410, "access_request_expired")
    assert view(holder.citizen, request_id).get_json()["status"] == "expired"


def test_a_decided_request_cannot_be_answered_again(asker, holder):
    request_id = asker.ask()["id"]
    approved(holder, request_id, holder.licence_id)
    error_of(answer(holder.citizen, request_id, "approve", [holder.licence_id]), 409, "access_request_decided")
    error_of(answer(holder.citizen, request_id, "decline"), 409, "access_request_decided")
    declined = asker.ask()["id"]
    assert answer(holder.citizen, declined, "decline").status_code == 200
    error_of(answer(holder.citizen, declined, "approve", [holder.licence_id]), 409, "access_request_decided")


# -- another citizen ------------------------------------------------------------------------------------------------

def test_citizen_b_cannot_read_approve_or_decline_citizen_as_decided_request(asker, holder, make_holder, app):
    request_id = asker.ask()["id"]
    approved(holder, request_id, holder.licence_id)
    other = make_holder("李娜")
    error_of(view(other.citizen, request_id), 404, "access_request_not_found")
    error_of(answer(other.citizen, request_id, "approve", [other.licence_id]), 404, "access_request_not_found")
    error_of(answer(other.citizen, request_id, "decline"), 404, "access_request_not_found")
    with app.app_context():
        refused = list(db.session.scalars(sa.select(AuditEvent.action).where(
            AuditEvent.object_id == request_id, AuditEvent.outcome == "failure")))
        assert refused == ["access_request.approve_refused", "access_request.decline_refused"]
    assert stored_request(app, request_id).holder_id is not None
    assert asker.poll(request_id).get_json()["status"] == "approved"


def test_an_assisted_request_is_visible_only_to_the_named_holder(asker, holder, make_holder, app):
    body = ask_body(assisted=True, holder={"code_type": "111", "code": holder.citizen.id_number})
    response = asker.post(body)
    assert response.status_code == 201, response.get_json()
    request_id = response.get_json()["id"]
    assert response.get_json()["assisted"] is True
    other = make_holder("李娜")
    error_of(view(other.citizen, request_id), 404, "access_request_not_found")
    error_of(answer(other.citizen, request_id, "approve", [other.marriage_id]), 404, "access_request_not_found")
    error_of(answer(other.citizen, request_id, "decline"), 404, "access_request_not_found")
    mine = view(holder.citizen, request_id).get_json()
    assert mine["assisted"] is True
    # Only the named holder's own certificates answer it, not their company's.
    assert [item["id"] for item in mine["matching_certificates"]] == [holder.marriage_id]
    error_of(answer(holder.citizen, request_id, "approve", [holder.licence_id]), 404, "certificate_not_found")
    # The holder's code is kept only as a blind index.
    row = stored_request(app, request_id)
    assert row.assisted_holder_index and holder.citizen.id_number not in str(
        {c.name: getattr(row, c.name) for c in AccessRequest.__table__.columns})


def test_an_assisted_request_needs_a_valid_holder_code(asker):
    response = asker.post(ask_body(assisted=True, holder={"code_type": "111", "code": resident_id()[:-1] + "Z"}))
    error = error_of(response, 422, "validation_failed")
    assert error["details"]["fields"][0]["field"] == "holder.code"
    error_of(asker.post(ask_body(assisted=True)), 422, "validation_failed")
    error_of(asker.post(ask_body(holder={"code_type": "111", "code": resident_id()})), 422, "validation_failed")


def test_an_assisted_request_for_a_company_is_visible_to_its_representative(asker, holder, make_holder):
    request_id = asker.ask(assisted=True, holder={"code_type": "001", "code": holder.company})["id"]
    matching = view(holder.citizen, request_id).get_json()["matching_certificates"]
    assert [item["id"] for item in matching] == [holder.licence_id]
    error_of(view(make_holder("李娜").citizen, request_id), 404, "access_request_not_found")


# -- concurrent answers ---------------------------------------------------------------------------------------------

ANSWERS = 6


@pytest.mark.parametrize("overlap", [False, True], ids=["released-together", "all-past-the-checks"])
def test_of_concurrent_answers_exactly_one_decides(asker, holder, app, monkeypatch, overlap):
    with app.app_context():
        url = db.engine.url
        assert url.get_backend_name() == "postgresql" or (url.database or ":memory:") != ":memory:"
    request_id = asker.ask(wanted=[{"type_code": BUSINESS_LICENCE, "fields": LICENCE_FIELDS}])["id"]
    if overlap:
        checked, seen = threading.Barrier(ANSWERS), threading.local()
        original = access_requests._refuse_stale

        def check_then_wait(*args: Any, **kwargs: Any) -> None:
            original(*args, **kwargs)
            if not getattr(seen, "waited", False):
                seen.waited = True
                checked.wait(timeout=30)  # every answer has seen the request pending

        monkeypatch.setattr(access_requests, "_refuse_stale", check_then_wait)

    def act(n: int) -> tuple[str, int, Any]:
        action = "approve" if n % 2 == 0 else "decline"
        body = {"certificate_ids": [holder.licence_id]} if action == "approve" else None
        response = app.test_client().post(f"{API}/{request_id}/{action}", json=body, headers=holder.citizen.headers)
        return action, response.status_code, response.get_json()

    results = run_together(act, ANSWERS)
    winners = [(action, body) for action, status, body in results if status == 200]
    assert len(winners) == 1, results
    assert {body["error"]["code"] for _, status, body in results if status != 200} == {"access_request_decided"}
    action, body = winners[0]
    with app.app_context():
        grants = db.session.scalar(sa.select(sa.func.count()).select_from(Grant))
        decided = db.session.scalar(sa.select(AccessRequest.status).where(AccessRequest.public_id == request_id))
    assert grants == (1 if action == "approve" else 0)
    assert decided == ("approved" if action == "approve" else "declined") == body["status"]
