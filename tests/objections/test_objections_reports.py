"""Department reports (异议 by a using department, POST /gov/v1/objections): a reporter disputes only what it was
shown, learns nothing it did not see (no current values, no answer that tells a right guess from a wrong one) and is
rate-limited per client and certificate; the issuing department's queue still shows the values it needs."""

from __future__ import annotations

import os
from typing import Any

import pytest
import sqlalchemy as sa

from backend.audit.chain import record_event
from backend.extensions import db
from backend.kernel.actors import Actor
from backend.models import ApiClient, Certificate
from backend.objections.filing import SeenFields, fields_seen_by
from tests.conftest import DISABILITY_FEDERATION, SAMR, DeptClient
from tests.objections.objection_support import GOV_OBJECTIONS, Queue
from tests.sharing.grant_support import offered, redeem
from tests.support import PARTNER_ID, Held, assert_documented, error_of, field_errors, marriage_of, minted

DESCRIPTION = "现场核对发现与档案不一致"
UNSHOWN_BY_A_BASIC_CODE = ("party_a_id_number", "party_b_id_number", "party_b_name", "holder_name")


@pytest.fixture
def scanner(make_dept_client: Any) -> DeptClient:
    """市场监督管理局's counter scanner: it checks show codes and may report what it finds."""
    return make_dept_client(SAMR, scopes=("verify",))


def scans(scanner: DeptClient, citizen: Any, held: Held, profile: str = "basic") -> None:
    """The scanner checks the holder's show code of `profile` (basic: masked name, 登记日期 and 登记机关)."""
    url = minted(citizen, held.id, profile)["url"]
    response = scanner.http.post("/gov/v1/verify", json={"show_code": url}, headers=scanner.headers())
    assert response.status_code == 200 and response.get_json()["valid"], response.get_json()


def report(reporter: DeptClient, held: Held, *disputed: tuple[str, str], headers: dict[str, str] | None = None) -> Any:
    return reporter.http.post(GOV_OBJECTIONS, headers=headers or reporter.headers(), json={
        "certificate_identifier": held.identifier, "description": DESCRIPTION,
        "disputed": [{"field": name, "claimed_value": value} for name, value in disputed]})


# -- only what was shown ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("field", UNSHOWN_BY_A_BASIC_CODE)
def test_a_reporter_may_not_dispute_a_field_its_show_code_did_not_show(citizen, held, scanner, field):
    scans(scanner, citizen, held, "basic")
    response = report(scanner, held, (field, "张三"))
    assert field_errors(response) == {"disputed[0].field": "not_shown"}
    assert response.get_json()["error"]["code"] == "objection_disputed_invalid"


def test_a_reporter_may_dispute_what_its_show_code_showed(citizen, held, scanner):
    scans(scanner, citizen, held, "basic")
    response = report(scanner, held, ("registration_office", "信阳市平桥区民政局婚姻登记处"), ("holder.name", "张卫"))
    assert response.status_code == 201, response.get_json()


@pytest.mark.parametrize("already_open", [False, True], ids=["first report", "report already open"])
@pytest.mark.parametrize("field", ["party_a_id_number", "party_b_id_number", "party_b_name"])
def test_a_right_guess_and_a_wrong_guess_of_an_unshown_field_get_the_same_answer(citizen, held, scanner, field,
                                                                                already_open):
    scans(scanner, citizen, held, "basic")
    if already_open:
        assert report(scanner, held, ("registration_office", "信阳市平桥区民政局")).status_code == 201
    right = {"party_a_id_number": citizen.id_number, "party_b_id_number": PARTNER_ID, "party_b_name": "李娜"}[field]
    headers = scanner.headers()

    answers = [report(scanner, held, (field, guess), headers=headers) for guess in (right, "411502199901010000")]

    assert [a.status_code for a in answers] == [422, 422]
    assert answers[0].get_json() == answers[1].get_json()
    assert right not in answers[0].get_data(as_text=True)


def test_a_masked_value_is_not_compared_with_the_claim(make_dept_client, citizen, held):
    # A basic code shows the name masked (张*): were a claim equal to the real name refused as `unchanged`, the
    # answer would confirm the guess. Two departments, since a department has one open report per certificate.
    right, wrong = make_dept_client(SAMR, scopes=("verify",)), make_dept_client(DISABILITY_FEDERATION,
                                                                              scopes=("verify",))
    for reporter in (right, wrong):
        scans(reporter, citizen, held, "basic")

    assert report(right, held, ("holder.name", citizen.name)).status_code == 201
    assert report(wrong, held, ("holder.name", "张三丰")).status_code == 201


def test_a_redeemed_grant_lets_the_reporter_dispute_exactly_the_granted_fields(make_dept_client, citizen, held):
    system = make_dept_client(SAMR, scopes=("redeem",))
    grant = offered(citizen, held.id, system.client_id, ["holder.name", "party_b_name"], purpose="核对婚姻状况")
    assert redeem(system, code=grant["code"]).status_code == 200
    headers = system.headers()

    assert field_errors(report(system, held, ("party_b_id_number", PARTNER_ID), headers=headers)) == \
        {"disputed[0].field": "not_shown"}
    # It saw party_b_name in full, so telling it that its claim is the value on record tells it nothing new.
    assert field_errors(report(system, held, ("party_b_name", "李娜"), headers=headers)) == \
        {"disputed[0].claimed_value": "unchanged"}
    assert report(system, held, ("party_b_name", "李娜娜"), headers=headers).status_code == 201


def test_the_fields_seen_are_those_of_the_clients_own_contacts(app, clock, make_dept_client, citizen, held):
    seer, other = make_dept_client(SAMR, scopes=("verify",)), make_dept_client(SAMR, scopes=("verify",))
    scans(seer, citizen, held, "basic")
    with app.app_context():
        clients = {c.client_id: c for c in db.session.scalars(sa.select(ApiClient))}
        certificate = db.session.scalar(sa.select(Certificate).where(Certificate.identifier == held.identifier))
        assert certificate is not None
        masked = {"holder.name", "registered_on", "registration_office"}
        assert fields_seen_by(db.session, clients[seer.client_id], certificate, now=clock()) == \
            SeenFields(frozenset(masked), frozenset())
        record_event(db.session, actor=Actor(kind="client", id=seer.client_id, department_code=SAMR),
                     action="certificate.verified", now=clock(), object_type="certificate", object_id=held.identifier,
                     details={"mode": "presentation", "disclosed": ["document.number", "face.party_b_name",
                                                                    "holder.code"]})
        assert fields_seen_by(db.session, clients[seer.client_id], certificate, now=clock()) == \
            SeenFields(frozenset(masked | {"party_b_name"}), frozenset({"party_b_name"}))
        assert fields_seen_by(db.session, clients[other.client_id], certificate, now=clock()) is None
        db.session.rollback()


def test_a_department_that_never_saw_the_certificate_learns_nothing_by_guessing(citizen, held, scanner):
    # Right and wrong guesses, and a certificate that does not exist, all look the same to a stranger.
    answers = [report(scanner, held, ("party_a_id_number", guess)) for guess in (citizen.id_number, "x")]
    for response in answers:
        error_of(response, 404, "certificate_not_seen")
    assert answers[0].get_json() == answers[1].get_json()


# -- nothing echoed -------------------------------------------------------------------------------------------------

def test_a_reporter_other_than_the_issuer_learns_no_value_but_the_issuers_queue_shows_it(client, citizen, held,
                                                                                        scanner, civil_queue):
    scans(scanner, citizen, held, "full")  # party_b_name shown masked (李*)
    response = report(scanner, held, ("party_b_name", "李娜娜"))
    assert response.status_code == 201, response.get_json()
    assert_documented(client, "post", GOV_OBJECTIONS, response)

    body = response.get_json()
    assert body["disputed"] == [{"field": "party_b_name", "label": body["disputed"][0]["label"],
                                 "claimed_value": "李娜娜"}]
    text = response.get_data(as_text=True)
    assert "current_value" not in text and '"李娜"' not in text

    issuer_view = civil_queue.get(body["id"])
    assert issuer_view.status_code == 200
    [disputed] = issuer_view.get_json()["disputed"]
    assert disputed["current_value"] == "李娜" and disputed["claimed_value"] == "李娜娜"


def test_the_reporting_department_cannot_read_its_report_from_the_issuers_queue(make_dept_client, citizen, held):
    reporter = make_dept_client(SAMR, scopes=("verify", "objections"))
    scans(reporter, citizen, held, "full")
    objection = report(reporter, held, ("party_b_name", "李娜娜")).get_json()
    error_of(Queue.of(reporter).get(objection["id"]), 404, "objection_not_found")


# -- rate limit -----------------------------------------------------------------------------------------------------

LIMITED = {"RATELIMIT_ENABLED": True, "ECERT_RATELIMIT_OBJECTION_REPORT": "3 per hour",
           "ECERT_RATELIMIT_DEFAULT": "1000 per minute", "ECERT_RATELIMIT_TOKEN": "1000 per minute"}
REDIS_URL = os.environ.get("ECERT_TEST_REDIS_URL")


@pytest.mark.parametrize("app_settings", [
    pytest.param(LIMITED, id="in-process"),
    # The counters production shares between app servers (client ids are fresh per test, so keys never collide).
    pytest.param({**LIMITED, "ECERT_REDIS_URL": REDIS_URL}, id="redis",
                 marks=pytest.mark.skipif(not REDIS_URL, reason="ECERT_TEST_REDIS_URL not set"))])
def test_report_attempts_are_limited_per_client_and_certificate(client, app, make_dept_client, citizen, held,
                                                                civil_queue, scanner):
    other_certificate = marriage_of(citizen, app, civil_queue.api.dept)
    colleague = make_dept_client(SAMR, scopes=("verify",))
    for reporter, certificate in ((scanner, held), (scanner, other_certificate), (colleague, held)):
        scans(reporter, citizen, certificate, "basic")
    headers = scanner.headers()
    padded = f"  {held.identifier} "  # the same certificate spelt otherwise is the same key

    for _ in range(3):
        assert report(scanner, held, ("party_b_name", "王五"), headers=headers).status_code == 422
    response = scanner.http.post(GOV_OBJECTIONS, headers=headers, json={
        "certificate_identifier": padded, "description": DESCRIPTION,
        "disputed": [{"field": "registration_office", "claimed_value": "信阳市平桥区民政局"}]})

    error_of(response, 429, "rate_limited")
    assert 0 < int(response.headers["Retry-After"]) <= 3600
    assert_documented(client, "post", GOV_OBJECTIONS, response)
    # Another certificate of the same client, and the same certificate for another client, are counted apart.
    assert report(scanner, other_certificate, ("registration_office", "信阳市平桥区民政局"),
                  headers=headers).status_code == 201
    assert report(colleague, held, ("registration_office", "信阳市平桥区民政局")).status_code == 201


def test_the_report_documents_its_rate_limit(client):
    operation = client.get("/openapi.json").get_json()["paths"][GOV_OBJECTIONS]["post"]
    assert "Retry-After" in operation["responses"]["429"]["headers"]
