"""Objections (异议): citizens file about certificates they hold or represent; the issuing department works its own
queue (accept, reject, resolve with a reissued version); the citizen follows the timeline. Nobody sees anyone
else's objections."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from backend.audit.chain import record_event
from backend.extensions import db
from backend.kernel.actors import Actor
from backend.kernel.identifiers import build_identifier, parse_identifier
from backend.models import ApiClient, AuditEvent, Certificate, Department, Notification, Objection, ObjectionEvent
from backend.objections.answers import accept_objection
from backend.objections.errors import ObjectionTransitionConflict
from backend.objections.filing import client_has_seen
from backend.objections.queue import get_for_department
from tests.conftest import CIVIL_AFFAIRS, DISABILITY_FEDERATION, SAMR
from tests.factories import company_code
from tests.objections.objection_support import (
    GOV_OBJECTIONS,
    OBJECTIONS,
    Queue,
    citizen_get,
    file_response,
    filed,
    jpeg_with_gps,
)
from tests.support import (
    assert_documented,
    disability_of,
    error_of,
    field_errors,
    marriage_of,
    minted,
    run_together,
    wallet_ids,
)


@pytest.fixture
def samr_queue(make_dept_client: Any) -> Queue:
    """市场监督管理局's business system: another department, with the same scopes."""
    return Queue.of(make_dept_client(SAMR, scopes=("issue", "objections")))


def audit_actions(app: Any, objection_id: str) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(sa.select(AuditEvent.action).where(AuditEvent.object_id == objection_id)
                                       .order_by(AuditEvent.seq)))


def reissued(civil: Queue, identifier: str, **fields: str) -> str:
    return str(civil.api.change(identifier, "reissue", {"fields": fields, "reason": "依异议更正"})["identifier"])


# -- filing -------------------------------------------------------------------------------------------------------

def test_citizen_files_an_objection_that_lands_in_the_issuing_departments_queue(app, client, citizen, held,
                                                                                civil_queue):
    response = file_response(citizen, held.id)
    assert response.status_code == 201, response.get_json()
    assert_documented(client, "post", OBJECTIONS, response)
    body = response.get_json()
    assert body["status"] == "submitted" and body["status_label"] == "待受理"
    assert body["department"] == {"code": CIVIL_AFFAIRS, "name": "信阳市民政局"}
    assert body["certificate"]["identifier"] == held.identifier
    assert body["disputed"] == [{"field": "party_b_name", "label": "姓名（另一方）", "current_value": "李娜",
                                 "claimed_value": "李娜娜"}]
    # START is Thursday 17:00 in China: accept by the end of Friday, answer within 5 working days (next Thursday).
    assert body["deadlines"]["acknowledge_by"] == "2026-11-27T16:00:00+00:00"
    assert body["deadlines"]["resolve_by"] == "2026-12-03T16:00:00+00:00"
    assert [t["event"] for t in body["timeline"]] == ["filed"]

    assert civil_queue.ids() == [body["id"]]
    assert audit_actions(app, body["id"]) == ["objection.filed"]
    with app.app_context():
        kinds = dict(db.session.execute(sa.select(Notification.kind, Notification.department_id)
                                        .where(Notification.kind.like("objection%"))).all())
    assert set(kinds) == {"objection_filed", "objection_received"}


def test_the_filers_statement_is_encrypted_at_rest(app, citizen, held):
    objection = filed(citizen, held.id, description="对方姓名应为李娜娜，见结婚登记档案")
    with app.app_context():
        row = db.session.scalar(sa.select(Objection).where(Objection.public_id == objection["id"]))
        assert row is not None
        assert "李娜娜".encode() not in row.disputed_enc and "结婚登记档案".encode() not in row.description_enc


def test_a_citizen_cannot_file_about_someone_elses_certificate(login, citizen, held):
    other = login("李强")
    error_of(file_response(other, held.id), 404, "certificate_not_found")


def test_a_representative_files_about_the_companys_certificate(login, samr_queue):
    company = company_code()
    boss = login("王建国", companies=[{"code": company, "name": "信阳毛尖茶业有限公司"}])
    identifier = samr_queue.api.issue_to_company(company)
    [certificate_id] = wallet_ids(boss)
    body = filed(boss, certificate_id,
                 disputed=[{"field": "address", "claimed_value": "河南省信阳市浉河区茶韵路 20 号"}])
    assert body["certificate"]["identifier"] == identifier
    assert samr_queue.ids() == [body["id"]]


@pytest.mark.parametrize(("disputed", "reason"), [
    ([{"field": "no_such_field", "claimed_value": "x"}], "unknown_field"),
    ([{"field": "party_b_name", "claimed_value": "李娜"}], "unchanged"),
    ([{"field": "party_b_name", "claimed_value": "甲"}, {"field": "party_b_name", "claimed_value": "乙"}], "duplicate"),
])
def test_disputed_fields_must_exist_differ_and_not_repeat(citizen, held, disputed, reason):
    response = file_response(citizen, held.id, disputed=disputed)
    assert reason in field_errors(response).values()


@pytest.mark.parametrize("disputed", ["not json", "[]", '{"field": "x"}', '[{"field": "a", "extra": 1}]'])
def test_malformed_disputed_json_is_a_422_naming_it(citizen, held, disputed):
    assert "disputed" in field_errors(file_response(citizen, held.id, disputed=disputed))


def test_numeric_looking_text_is_taken_as_text(citizen, held):
    body = filed(citizen, held.id, description="123", disputed=[{"field": "party_b_name", "claimed_value": "2"}])
    assert body["description"] == "123" and body["disputed"][0]["claimed_value"] == "2"


def test_unknown_form_fields_are_refused(citizen, held):
    assert "surprise" in field_errors(file_response(citizen, held.id, surprise="1"))


def test_a_second_open_objection_on_the_same_certificate_is_a_conflict(citizen, held):
    first = filed(citizen, held.id)
    error = error_of(file_response(citizen, held.id), 409, "objection_already_open")
    assert error["details"]["objection_id"] == first["id"]


def test_an_objection_about_a_superseded_version_is_refused(citizen, held, civil_queue):
    reissued(civil_queue, held.identifier, party_b_name="李娜娜")
    error_of(file_response(citizen, held.id), 409, "objection_certificate_superseded")


# -- who sees what --------------------------------------------------------------------------------------------------

def test_citizen_a_cannot_see_citizen_bs_objections(login, citizen, held):
    objection = filed(citizen, held.id)
    other = login("李强")
    error_of(citizen_get(other, objection["id"]), 404, "objection_not_found")
    listed = other.http.get(OBJECTIONS, headers=other.headers)
    assert listed.status_code == 200 and listed.get_json()["items"] == []
    mine = citizen.http.get(OBJECTIONS, headers=citizen.headers).get_json()
    assert [item["id"] for item in mine["items"]] == [objection["id"]]
    assert citizen_get(citizen, objection["id"]).status_code == 200


def test_department_a_cannot_see_or_act_on_department_bs_queue(app, citizen, held, civil_queue, samr_queue):
    objection = filed(citizen, held.id, files=[(_tiny_jpeg(), "a.jpg")])
    oid = objection["id"]
    assert samr_queue.ids() == []
    error_of(samr_queue.get(oid), 404, "objection_not_found")
    error_of(samr_queue.evidence(oid, 1), 404, "objection_not_found")
    error_of(samr_queue.act(oid, "accept"), 404, "objection_not_found")
    error_of(samr_queue.act(oid, "reject", {"reason": "不是我们的"}), 404, "objection_not_found")
    error_of(samr_queue.act(oid, "resolve", {"corrected_identifier": held.identifier}), 404, "objection_not_found")
    assert citizen_get(citizen, oid).get_json()["status"] == "submitted"
    assert audit_actions(app, oid) == ["objection.filed"]


def test_the_queue_needs_the_objections_scope(make_dept_client, citizen, held):
    verifier = make_dept_client(CIVIL_AFFAIRS, scopes=("verify",))
    response = verifier.http.get(GOV_OBJECTIONS, headers=verifier.headers())
    error_of(response, 403, "insufficient_scope")


# -- handling -------------------------------------------------------------------------------------------------------

def test_department_accepts_then_resolves_with_the_reissued_version(app, client, citizen, held, civil_queue):
    oid = filed(citizen, held.id)["id"]
    detail = civil_queue.get(oid)
    assert detail.status_code == 200
    assert_documented(client, "get", "/gov/v1/objections/{id}", detail)
    assert detail.get_json()["disputed"][0]["claimed_value"] == "李娜娜"

    accepted = civil_queue.done(oid, "accept")
    assert accepted["status"] == "in_progress" and accepted["acknowledged_at"] is not None
    corrected = reissued(civil_queue, held.identifier, party_b_name="李娜娜")
    resolved = civil_queue.act(oid, "resolve", {"corrected_identifier": corrected, "note": "已按档案更正"})
    assert resolved.status_code == 200, resolved.get_json()
    assert_documented(client, "post", "/gov/v1/objections/{id}/resolve", resolved)
    assert resolved.get_json()["corrected_certificate"]["identifier"] == corrected

    view = citizen_get(citizen, oid).get_json()
    assert view["status"] == "resolved" and view["status_label"] == "已更正"
    assert view["answer"] == "已按档案更正"
    assert [t["event"] for t in view["timeline"]] == ["filed", "accepted", "resolved"]
    new_id = view["corrected_certificate"]["id"]
    assert new_id in wallet_ids(citizen) and held.id not in wallet_ids(citizen)
    assert citizen.http.get(f"/api/v1/wallet/certificates/{new_id}", headers=citizen.headers) \
        .get_json()["fields"][8]["value"] == "李娜娜"
    assert audit_actions(app, oid) == ["objection.filed", "objection.viewed", "objection.accepted",
                                       "objection.resolved"]
    inbox = citizen.http.get("/api/v1/notifications", headers=citizen.headers).get_json()["items"]
    assert {"objection_received", "objection_accepted", "objection_resolved"} <= {n["kind"] for n in inbox}


def test_rejection_needs_a_reason_which_the_citizen_sees(citizen, held, civil_queue):
    oid = filed(citizen, held.id)["id"]
    assert "reason" in field_errors(civil_queue.act(oid, "reject", {}))
    civil_queue.done(oid, "reject", {"reason": "经核对婚姻登记档案，登记信息无误"})
    view = citizen_get(citizen, oid).get_json()
    assert view["status"] == "rejected" and view["answer"] == "经核对婚姻登记档案，登记信息无误"
    assert view["timeline"][-1]["note"] == "经核对婚姻登记档案，登记信息无误"
    inbox = citizen.http.get("/api/v1/notifications", headers=citizen.headers).get_json()["items"]
    assert any(n["kind"] == "objection_rejected" and "登记信息无误" in n["body"] for n in inbox)


@pytest.mark.parametrize(("first", "then"), [
    (("reject", {"reason": "无误"}), ("resolve", None)),
    (("reject", {"reason": "无误"}), ("accept", {})),
    (("reject", {"reason": "无误"}), ("reject", {"reason": "再次"})),
    (("accept", {}), ("accept", {})),
])
def test_a_wrong_transition_is_a_409_with_its_own_code(app, citizen, held, civil_queue, first, then):
    oid = filed(citizen, held.id)["id"]
    civil_queue.done(oid, first[0], first[1])
    body = then[1] if then[1] is not None else {"corrected_identifier": reissued(civil_queue, held.identifier,
                                                                                 party_b_name="李娜娜")}
    error = error_of(civil_queue.act(oid, then[0], body), 409, "objection_invalid_transition")
    assert error["details"]["event"] in {"resolved", "accepted", "rejected"}
    with app.app_context():
        events = db.session.scalars(sa.select(ObjectionEvent.event).join(Objection)
                                    .where(Objection.public_id == oid).order_by(ObjectionEvent.id)).all()
    assert events == ["filed", {"reject": "rejected", "accept": "accepted"}[first[0]]]


def test_resolve_refuses_anything_but_a_newer_version_of_the_disputed_certificate(login, citizen, held, civil_queue):
    oid = filed(citizen, held.id)["id"]
    other = marriage_of(login("李强"), civil_queue.http.application, civil_queue.api.dept)
    ident = parse_identifier(held.identifier)
    cases = {
        held.identifier: "not_newer",  # the disputed version itself
        other.identifier: "other_certificate",
        build_identifier(ident.type_code, ident.issuer_code, ident.serial, 2): "not_found",  # not reissued yet
        held.identifier[:-1] + ("0" if held.identifier[-1] != "0" else "1"): None,  # bad check character
    }
    for identifier, reason in cases.items():
        response = civil_queue.act(oid, "resolve", {"corrected_identifier": identifier})
        errors = field_errors(response)
        assert "corrected_identifier" in errors
        if reason:
            assert errors["corrected_identifier"] == reason
    corrected = reissued(civil_queue, held.identifier, party_b_name="李娜娜")
    civil_queue.done(oid, "resolve", {"corrected_identifier": corrected})


def test_a_department_may_resolve_without_accepting_first(citizen, held, civil_queue):
    oid = filed(citizen, held.id)["id"]
    body = civil_queue.done(oid, "resolve", {"corrected_identifier": reissued(civil_queue, held.identifier,
                                                                        party_b_name="李娜娜")})
    assert body["status"] == "resolved" and body["acknowledged_at"] is not None


def test_queue_filters_by_status_and_pages(citizen, login, app, civil_queue):
    ids = [filed(person, marriage_of(person, app, civil_queue.api.dept).id)["id"]
           for person in (citizen, login("李强"), login("王芳"))]
    civil_queue.done(ids[0], "accept")
    assert civil_queue.ids(status="in_progress") == [ids[0]]
    assert set(civil_queue.ids(status="submitted")) == set(ids[1:])
    first = civil_queue.list(limit=2).get_json()
    second = civil_queue.list(limit=2, cursor=first["next_cursor"]).get_json()
    assert len(first["items"]) == 2 and len(second["items"]) == 1 and second["next_cursor"] is None


# -- department reports ---------------------------------------------------------------------------------------------

def test_a_department_reports_a_problem_with_a_certificate_its_scanner_checked(app, make_dept_client, citizen,
                                                                               civil_queue):
    federation = make_dept_client(DISABILITY_FEDERATION, scopes=("issue",))
    held = disability_of(citizen, app, federation)
    scanner = make_dept_client(CIVIL_AFFAIRS, scopes=("verify",))
    report = {"certificate_identifier": held.identifier, "description": "现场核对发现住址与户籍不一致",
              "disputed": [{"field": "address", "claimed_value": "河南省信阳市平桥区中山路 19 号"}]}

    error_of(scanner.http.post(GOV_OBJECTIONS, json=report, headers=scanner.headers()), 404, "certificate_not_seen")
    verified = scanner.http.post("/gov/v1/verify", json={"identifier": held.identifier}, headers=scanner.headers())
    assert verified.status_code == 200  # an identifier check shows no data: still not seen
    error_of(scanner.http.post(GOV_OBJECTIONS, json=report, headers=scanner.headers()), 404, "certificate_not_seen")

    url = minted(citizen, held.id, "full")["url"]
    assert scanner.http.post("/gov/v1/verify", json={"show_code": url}, headers=scanner.headers()).status_code == 200
    response = scanner.http.post(GOV_OBJECTIONS, json=report, headers=scanner.headers())
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["filer"] == {"kind": "department", "department_name": "信阳市民政局"}

    federation_queue = Queue.of(make_dept_client(DISABILITY_FEDERATION, scopes=("objections",)))
    assert federation_queue.ids() == [body["id"]]
    federation_queue.done(body["id"], "reject", {"reason": "住址以户籍登记为准"})
    with app.app_context():
        notified = db.session.execute(sa.select(Notification.kind, Department.code).join(
            Department, Department.id == Notification.department_id)
            .where(Notification.kind.in_(("objection_received", "objection_rejected")))).all()
    assert sorted(notified) == [("objection_received", CIVIL_AFFAIRS), ("objection_rejected", CIVIL_AFFAIRS)]


def test_reporting_needs_verify_or_redeem_scope(make_dept_client, held):
    queue_only = make_dept_client(CIVIL_AFFAIRS, scopes=("objections",))
    response = queue_only.http.post(GOV_OBJECTIONS, json={"certificate_identifier": held.identifier,
                                                          "description": "x",
                                                          "disputed": [{"field": "a", "claimed_value": "b"}]},
                                    headers=queue_only.headers())
    error_of(response, 403, "insufficient_scope")


NOTIFICATIONS = "/api/v1/notifications"
SCANNER_REPORT = {"description": "现场核对发现另一方姓名与婚姻登记档案不一致",
                  "disputed": [{"field": "party_b_name", "claimed_value": "李娜娜"}]}


def reported_notices(citizen: Any) -> list[dict[str, Any]]:
    items = citizen.http.get(NOTIFICATIONS, headers=citizen.headers).get_json()["items"]
    return [item for item in items if item["kind"] == "objection_reported"]


def report_after_scanning(make_dept_client: Any, citizen: Any, certificate_id: str, identifier: str) -> Any:
    """市场监督管理局's scanner checks the holder's full show code, then reports a problem with the certificate."""
    scanner = make_dept_client(SAMR, scopes=("verify",))
    url = minted(citizen, certificate_id, "full")["url"]
    assert scanner.http.post("/gov/v1/verify", json={"show_code": url}, headers=scanner.headers()).status_code == 200
    response = scanner.http.post(GOV_OBJECTIONS, json={"certificate_identifier": identifier, **SCANNER_REPORT},
                                 headers=scanner.headers())
    assert response.status_code == 201, response.get_json()
    return response


def test_the_holder_is_told_which_department_reported_a_problem_with_which_certificate(app, client, make_dept_client,
                                                                                       citizen, held):
    objection = report_after_scanning(make_dept_client, citizen, held.id, held.identifier).get_json()

    response = client.get(NOTIFICATIONS, headers=citizen.headers)
    assert_documented(client, "get", NOTIFICATIONS, response)
    [notice] = reported_notices(citizen)
    assert notice["certificate_id"] == held.id and notice["owner"] == {"kind": "self", "code": None, "name": None}
    assert notice["title"] == "有部门反映您的结婚证信息有误"
    assert notice["body"] == ("信阳市市场监督管理局反映您的结婚证中的信息可能有误，已转信阳市民政局核实；"
                              "如需更正，信阳市民政局将换发新版本并通知您。")
    # Who and which certificate only: nothing the department claimed or wrote, no personal data.
    for private in ("李娜", "婚姻登记档案", citizen.name, citizen.id_number, objection["id"]):
        assert private not in notice["title"] + notice["body"]
    with app.app_context():
        data = db.session.scalar(sa.select(Notification.data).where(Notification.kind == "objection_reported"))
    assert data == {"identifier": held.identifier, "department": SAMR}


def test_a_refused_report_and_a_citizens_own_objection_tell_the_holder_nothing_new(make_dept_client, citizen,
                                                                                  held):
    stranger = make_dept_client(SAMR, scopes=("verify",))  # never saw the certificate
    response = stranger.http.post(GOV_OBJECTIONS, json={"certificate_identifier": held.identifier, **SCANNER_REPORT},
                                  headers=stranger.headers())
    error_of(response, 404, "certificate_not_seen")
    filed(citizen, held.id)

    assert reported_notices(citizen) == []


def test_a_report_about_a_companys_certificate_reaches_its_representative(login, make_dept_client, samr_queue):
    company = company_code()
    boss = login("王建国", companies=[{"code": company, "name": "信阳毛尖茶业有限公司"}])
    identifier = samr_queue.api.issue_to_company(company)
    [certificate_id] = wallet_ids(boss)
    scanner = make_dept_client(CIVIL_AFFAIRS, scopes=("verify",))
    url = minted(boss, certificate_id, "full")["url"]
    assert scanner.http.post("/gov/v1/verify", json={"show_code": url}, headers=scanner.headers()).status_code == 200
    report = {"certificate_identifier": identifier, "description": "住所与现场不一致",
              "disputed": [{"field": "address", "claimed_value": "河南省信阳市浉河区茶韵路 20 号"}]}
    assert scanner.http.post(GOV_OBJECTIONS, json=report, headers=scanner.headers()).status_code == 201

    [notice] = reported_notices(boss)
    assert notice["certificate_id"] == certificate_id
    assert notice["owner"] == {"kind": "company", "code": company, "name": "信阳毛尖茶业有限公司"}
    assert notice["body"].startswith("信阳市民政局反映您的营业执照")
    assert reported_notices(login("李强")) == []


def _tiny_jpeg() -> bytes:
    return jpeg_with_gps((8, 8))


def test_a_verified_presentation_counts_as_seen_but_only_for_that_client_and_for_90_days(app, clock, make_dept_client,
                                                                                        citizen, held):
    seer, other = (make_dept_client(SAMR, scopes=("verify",)) for _ in range(2))
    with app.app_context():
        clients = {c.client_id: c for c in db.session.scalars(sa.select(ApiClient))}
        certificate = db.session.scalar(sa.select(Certificate).where(Certificate.identifier == held.identifier))
        assert certificate is not None
        seen_by = Actor(kind="client", id=seer.client_id, department_code=SAMR)
        record_event(db.session, actor=seen_by, action="certificate.verified", now=clock(), object_type="certificate",
                     object_id=held.identifier, details={"mode": "identifier"})
        assert not client_has_seen(db.session, clients[seer.client_id], certificate, now=clock())
        record_event(db.session, actor=seen_by, action="certificate.verified", now=clock(), object_type="certificate",
                     object_id=held.identifier, outcome="failure", details={"mode": "presentation"})
        assert not client_has_seen(db.session, clients[seer.client_id], certificate, now=clock())
        record_event(db.session, actor=seen_by, action="certificate.verified", now=clock(), object_type="certificate",
                     object_id=held.identifier, details={"mode": "presentation"})
        assert client_has_seen(db.session, clients[seer.client_id], certificate, now=clock())
        assert not client_has_seen(db.session, clients[other.client_id], certificate, now=clock())
        assert not client_has_seen(db.session, clients[seer.client_id], certificate,
                                   now=clock() + timedelta(days=91))
        db.session.rollback()


def test_two_acceptances_at_once_one_wins_the_other_is_a_conflict(app, citizen, held, civil_queue):
    oid = filed(citizen, held.id)["id"]

    def accept(n: int) -> str:
        with app.app_context():
            session = db.session()
            try:
                found = get_for_department(session, oid, department=None)
                accept_objection(session, found, actor=Actor(kind="client", id=f"node-{n}"),
                                 now=app.config["ECERT_CLOCK"]())
                session.commit()
                return "accepted"
            except ObjectionTransitionConflict:
                session.rollback()
                return "conflict"

    assert sorted(run_together(accept, 2)) == ["accepted", "conflict"]
    with app.app_context():
        events = db.session.scalars(sa.select(ObjectionEvent.event).join(Objection)
                                    .where(Objection.public_id == oid).order_by(ObjectionEvent.id)).all()
    assert events == ["filed", "accepted"]


def test_a_double_tap_files_one_objection(app, citizen, held, civil_queue):
    def tap(_: int) -> int:
        http = app.test_client()
        response = http.post(OBJECTIONS, headers=citizen.headers, content_type="multipart/form-data", data={
            "certificate_id": held.id, "description": "对方姓名有误",
            "disputed": '[{"field": "party_b_name", "claimed_value": "李娜娜"}]'})
        return int(response.status_code)

    assert sorted(run_together(tap, 2)) == [201, 409]
    assert len(civil_queue.ids()) == 1


def test_line_breaks_in_the_statement_are_kept_and_nul_characters_dropped(citizen, held, civil_queue):
    body = filed(citizen, held.id, description="第一行\r\n第二行\x00\t完")
    assert body["description"] == "第一行\n第二行\t完"
    answer = civil_queue.done(body["id"], "reject", {"reason": "经核对：\n登记无误"})
    assert answer["answer"] == "经核对：\n登记无误"
