"""Grants offered by the holder (授权码): POST/GET/DELETE /api/v1/grants — codes, minimisation, step-up, control."""

from __future__ import annotations

import io
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
import zxingcpp
from PIL import Image

from backend.core.context import field_cipher
from backend.extensions import db
from backend.models import AuditEvent, Certificate, Grant
from backend.sharing.grants import code_digest
from tests.conftest import CIVIL_AFFAIRS, SAMR, START
from tests.sharing.grant_support import GRANTS, LICENCE_FIELDS, offer, offered, redeem, stored_grant
from tests.support import Department, disability_of, error_of, marriage_of


@pytest.fixture
def civil_system(make_dept_client: Any) -> Any:
    """信阳市民政局's system: issues marriage certificates, and redeems grants (as `samr_system` does licences)."""
    return make_dept_client(CIVIL_AFFAIRS, scopes=("issue", "verify", "redeem"))


# -- offering -------------------------------------------------------------------------------------------------

def test_offer_answers_a_one_time_code_for_at_most_ten_minutes(app, representative, licence, samr_system):
    body = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS, expires_in=600)
    assert set(body) == {"id", "code", "url", "expires_at"}
    assert len(body["code"]) == 22  # 128 bits, base64url
    assert body["url"] == f"http://localhost/grant#{body['code']}"
    assert body["expires_at"] == (START + timedelta(seconds=600)).isoformat()
    grant = stored_grant(app, body["id"])
    with app.app_context():
        assert grant.code_hash == code_digest(field_cipher(), body["code"])  # only its keyed hash is stored
    assert body["code"] not in (grant.code_hash or "")
    assert grant.code_expires_at == START + timedelta(seconds=600)


def test_code_lifetime_over_ten_minutes_is_refused(representative, licence, samr_system):
    response = offer(representative, licence, samr_system.client_id, LICENCE_FIELDS, expires_in=601)
    assert error_of(response, 422, "validation_failed")["details"]["fields"][0]["field"] == "expires_in"


def test_every_code_is_different(representative, licence, samr_system):
    codes = {offered(representative, licence, samr_system.client_id, ["holder.name"])["code"] for _ in range(5)}
    assert len(codes) == 5


def test_offer_as_a_qr_image_encodes_the_url(representative, licence, samr_system):
    response = offer(representative, licence, samr_system.client_id, LICENCE_FIELDS, accept="image/png")
    assert response.status_code == 201 and response.mimetype == "image/png"
    grant_id = response.headers["X-Grant-Id"]
    decoded = zxingcpp.read_barcodes(Image.open(io.BytesIO(response.get_data())))
    assert len(decoded) == 1 and decoded[0].text.startswith("http://localhost/grant#")
    # The scanned URL is what the department redeems.
    redeemed = redeem(samr_system, code=decoded[0].text)
    assert redeemed.status_code == 200, redeemed.get_json()
    assert redeemed.get_json()["grant_id"] == grant_id


def test_fields_outside_the_sharing_policy_are_refused_and_named(representative, licence, samr_system):
    response = offer(representative, licence, samr_system.client_id, ["company_name", "secret_field", "uscc_history"])
    error = error_of(response, 422, "fields_not_shareable")
    assert [item["name"] for item in error["details"]["fields"]] == ["secret_field", "uscc_history"]


def test_no_fields_is_refused(representative, licence, samr_system):
    assert offer(representative, licence, samr_system.client_id, []).status_code == 422


def test_a_level_4_field_is_never_offered(app, representative, disability_federation, samr_system):
    held = disability_of(representative, app, disability_federation.dept)
    response = offer(representative, held.id, samr_system.client_id, ["holder_name", "disability_grade"])
    assert error_of(response, 422, "fields_not_shareable")["details"]["fields"][0]["name"] == "disability_grade"


def test_unknown_client_and_a_client_that_cannot_redeem_are_refused(representative, licence, make_dept_client):
    error_of(offer(representative, licence, "dc_nosuchclient0000", LICENCE_FIELDS), 422, "unknown_client")
    verifier_only = make_dept_client(SAMR, scopes=("verify",))
    error_of(offer(representative, licence, verifier_only.client_id, LICENCE_FIELDS), 422, "client_cannot_redeem")


def test_someone_elses_certificate_cannot_be_offered(login, licence, samr_system):
    stranger = login("王芳")
    error_of(offer(stranger, licence, samr_system.client_id, LICENCE_FIELDS), 404, "certificate_not_found")


def test_a_revoked_or_suspended_certificate_cannot_be_offered(app, representative, licence, samr_system):
    identifier = stored_identifier(app, licence)
    Department(samr_system).change(identifier, "suspend", {"reason": "核查"})
    error_of(offer(representative, licence, samr_system.client_id, LICENCE_FIELDS), 409, "certificate_suspended")
    Department(samr_system).change(identifier, "revoke", {"reason": "注销"})
    error_of(offer(representative, licence, samr_system.client_id, LICENCE_FIELDS), 409, "certificate_revoked")


def stored_identifier(app: Any, public_id: str) -> str:
    with app.app_context():
        return str(db.session.scalar(sa.select(Certificate.identifier).where(Certificate.public_id == public_id)))


def test_a_level_3_certificate_needs_a_recent_login(app, representative, civil_system, clock):
    held = marriage_of(representative, app, civil_system)
    assert offer(representative, held.id, civil_system.client_id, ["holder.name"]).status_code == 201  # just logged in
    clock.advance(minutes=6)
    error_of(offer(representative, held.id, civil_system.client_id, ["holder.name"]), 401, "reauth_required")


def test_offering_is_audited_without_the_code(app, representative, licence, samr_system):
    body = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)
    with app.app_context():
        events = list(db.session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "grant.created")))
    assert [e.object_id for e in events] == [body["id"]]
    assert events[0].details["via"] == "offer" and events[0].details["client"] == samr_system.client_id
    assert body["code"] not in str(events[0].details)


# -- the holder's list ------------------------------------------------------------------------------------------

def listed(citizen: Any, **query: Any) -> list[dict[str, Any]]:
    response = citizen.http.get(GRANTS, query_string=query, headers=citizen.headers)
    assert response.status_code == 200, response.get_json()
    return list(response.get_json()["items"])


def test_the_list_shows_department_purpose_fields_with_labels_and_status(representative, licence, samr_system, clock):
    active = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS, purpose="企业年报核验")
    used = offered(representative, licence, samr_system.client_id, ["holder.name"])
    revoked = offered(representative, licence, samr_system.client_id, ["holder.name"])
    expiring = offered(representative, licence, samr_system.client_id, ["holder.name"], expires_in=30)
    assert redeem(samr_system, code=used["code"]).status_code == 200
    assert representative.http.delete(f"{GRANTS}/{revoked['id']}", headers=representative.headers).status_code == 200
    clock.advance(seconds=31)
    items = {item["id"]: item for item in listed(representative)}
    assert {i: items[i]["status"] for i in items} == {active["id"]: "active", used["id"]: "used",
                                                      revoked["id"]: "revoked", expiring["id"]: "expired"}
    first = items[active["id"]]
    assert first["department"] == {"code": SAMR, "name": "信阳市市场监督管理局"}
    assert first["purpose"] == "企业年报核验" and first["source"] == "offer" and first["status_label"] == "有效"
    assert first["certificates"][0]["fields"] == [
        {"name": "holder.name", "label": "持证主体名称"}, {"name": "company_name", "label": "名称"},
        {"name": "legal_representative", "label": "法定代表人"}]
    assert items[used["id"]]["used_at"] is not None
    assert "code" not in first  # shown once, never again
    assert [item["id"] for item in listed(representative, status="expired")] == [expiring["id"]]
    assert [item["id"] for item in listed(representative, status="active")] == [active["id"]]


def test_the_list_pages_with_a_cursor(representative, licence, samr_system):
    ids = {offered(representative, licence, samr_system.client_id, ["holder.name"])["id"] for _ in range(3)}
    first = representative.http.get(GRANTS, query_string={"limit": 2}, headers=representative.headers).get_json()
    second = representative.http.get(GRANTS, query_string={"limit": 2, "cursor": first["next_cursor"]},
                              headers=representative.headers).get_json()
    assert {i["id"] for i in first["items"] + second["items"]} == ids and second["next_cursor"] is None


# -- revoking -------------------------------------------------------------------------------------------------

def test_revoking_stops_the_code_at_once(app, representative, licence, samr_system):
    body = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)
    response = representative.http.delete(f"{GRANTS}/{body['id']}", headers=representative.headers)
    assert response.status_code == 200 and response.get_json()["status"] == "revoked"
    error_of(redeem(samr_system, code=body["code"]), 410, "grant_revoked")
    again = representative.http.delete(f"{GRANTS}/{body['id']}", headers=representative.headers)
    assert again.status_code == 200  # idempotent
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.action == "grant.revoked")) == 1


def test_a_used_grant_cannot_be_revoked(representative, licence, samr_system):
    body = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)
    assert redeem(samr_system, code=body["code"]).status_code == 200
    error_of(representative.http.delete(f"{GRANTS}/{body['id']}", headers=representative.headers), 409,
             "grant_already_used")


def test_citizen_b_cannot_see_or_revoke_citizen_as_grants(app, representative, licence, samr_system, login):
    body = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)
    other = login("王芳")
    assert listed(other) == []
    error_of(other.http.delete(f"{GRANTS}/{body['id']}", headers=other.headers), 404, "grant_not_found")
    assert stored_grant(app, body["id"]).status == "active"


def test_grants_need_a_citizen_login(client):
    assert client.get(GRANTS).status_code == 401
    assert client.delete(f"{GRANTS}/{'0' * 32}").status_code == 401


def test_grant_rows_count_one_per_offer(app, representative, licence, samr_system):
    offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Grant)) == 1
