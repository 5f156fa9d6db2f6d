"""Redemption (用证): POST /gov/v1/grants/redeem — presentations of exactly the consented fields, used once, and
every refusal with its own code; each use in the holder's usage history, inbox and the audit chain."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from backend.audit.chain import verify_chain
from backend.core.context import keystore
from backend.crypto.sdjwt import b64url_decode
from backend.extensions import db
from backend.models import AccessRequest, AuditEvent, Redemption, UsageRecord
from backend.models.sharing import REQUEST_DECLINED
from tests.conftest import CIVIL_AFFAIRS, SAMR, START
from tests.factories import MARRIAGE
from tests.sharing.access_request_support import Asker, answer
from tests.sharing.grant_support import (
    LICENCE_FIELDS,
    approve,
    disclosed_paths,
    make_access_request,
    offered,
    redeem,
    reference_verify,
    stored_grant,
)
from tests.support import PARTNER_ID, assert_documented, change, error_of, marriage_of


def redeemed(dept: Any, **body: Any) -> dict[str, Any]:
    response = redeem(dept, **body)
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def refusals(app: Any) -> list[dict[str, Any]]:
    with app.app_context():
        return [{"object_id": e.object_id, "outcome": e.outcome, **e.details} for e in db.session.scalars(
            sa.select(AuditEvent).where(AuditEvent.action == "grant.redeem_refused").order_by(AuditEvent.seq))]


# -- what the department receives ------------------------------------------------------------------------------

def test_presentations_verify_independently_and_disclose_exactly_the_consented_fields(
        representative, licence, licence_identifier, samr_system):
    grant = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)
    body = redeemed(samr_system, code=grant["code"])
    assert body["grant_id"] == grant["id"]
    [presentation] = body["presentations"]
    assert presentation["identifier"] == licence_identifier
    claims = reference_verify(samr_system.http, presentation["sd_jwt"], aud=samr_system.client_id, nonce=grant["id"])
    assert disclosed_paths(claims) == {"holder.name", "face.company_name", "face.legal_representative"}
    assert claims["holder"] == {"name": "信阳毛尖茶业有限公司"}
    assert claims["face"]["legal_representative"] == "王建国"
    assert claims["identifier"] == licence_identifier
    # Nothing more travels than what was consented: one disclosure per consented claim.
    assert presentation["sd_jwt"].count("~") == 1 + 3


def test_the_key_binding_is_for_the_redeeming_client_and_the_grant(representative, licence, samr_system,
                                                                   make_dept_client):
    grant = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)
    sd_jwt = redeemed(samr_system, code=grant["code"])["presentations"][0]["sd_jwt"]
    other = make_dept_client(SAMR, scopes=("verify",))
    with pytest.raises(ValueError, match="audience"):
        reference_verify(samr_system.http, sd_jwt, aud=other.client_id, nonce=grant["id"])
    with pytest.raises(ValueError, match="nonce"):
        reference_verify(samr_system.http, sd_jwt, aud=samr_system.client_id, nonce="0" * 32)


def test_holder_code_discloses_code_type_and_code_and_nothing_of_the_face(app, representative, civil_requester):
    held = marriage_of(representative, app, civil_requester)
    grant = offered(representative, held.id, civil_requester.client_id, ["holder.code", "document.number"])
    sd_jwt = redeemed(civil_requester, code=grant["code"])["presentations"][0]["sd_jwt"]
    claims = reference_verify(civil_requester.http, sd_jwt, aud=civil_requester.client_id, nonce=grant["id"])
    assert disclosed_paths(claims) == {"holder.code_type", "holder.code", "document.number"}
    assert claims["holder"] == {"code_type": "111", "code": representative.id_number}
    assert representative.id_number not in str(claims.get("face")) and PARTNER_ID not in sd_jwt_payloads(sd_jwt)


def sd_jwt_payloads(sd_jwt: str) -> str:
    """Everything the presentation reveals, decoded (issuer payload and disclosures)."""
    parts = sd_jwt.split("~")
    return " ".join(b64url_decode(p.split(".")[1] if "." in p else p).decode() for p in parts if p)


def test_our_verify_endpoint_judges_the_redeemed_presentation_valid_with_the_grant_nonce(
        representative, licence, samr_system):
    grant = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)
    sd_jwt = redeemed(samr_system, code=grant["code"])["presentations"][0]["sd_jwt"]
    response = samr_system.http.post("/gov/v1/verify", json={"presentation": sd_jwt, "nonce": grant["id"]},
                                     headers=samr_system.headers())
    result = response.get_json()
    assert response.status_code == 200 and result["valid"] is True, result
    assert result["certificate"]["disclosed"] == {"holder": {"name": "信阳毛尖茶业有限公司"},
                                                  "face": {"company_name": "信阳毛尖茶业有限公司",
                                                           "legal_representative": "王建国"}}


# -- once, for the named client, while valid --------------------------------------------------------------------

def test_a_redeemed_grant_cannot_be_redeemed_again(app, representative, licence, samr_system):
    grant = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)
    redeemed(samr_system, code=grant["code"])
    error_of(redeem(samr_system, code=grant["code"]), 409, "grant_already_used")
    assert stored_grant(app, grant["id"]).status == "used"
    assert [r["reason"] for r in refusals(app)] == ["used"]


def test_another_client_is_refused_and_the_attempt_is_audited(app, representative, licence, samr_system,
                                                              make_dept_client):
    grant = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)
    intruder = make_dept_client(CIVIL_AFFAIRS, scopes=("redeem",))
    error_of(redeem(intruder, code=grant["code"]), 403, "grant_wrong_client")
    assert refusals(app) == [{"object_id": grant["id"], "outcome": "failure", "reason": "wrong_client",
                              "client": intruder.client_id}]
    # The named client can still use it: a wrong client's attempt does not burn the grant.
    redeemed(samr_system, code=grant["code"])


def test_an_expired_code_is_gone(app, representative, licence, samr_system, clock):
    grant = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS, expires_in=60)
    clock.advance(seconds=60)
    error_of(redeem(samr_system, code=grant["code"]), 410, "grant_expired")
    assert [r["reason"] for r in refusals(app)] == ["expired"]


def test_a_revoked_grant_is_gone(representative, licence, samr_system):
    grant = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)
    assert representative.http.delete(f"/api/v1/grants/{grant['id']}",
                                      headers=representative.headers).status_code == 200
    error_of(redeem(samr_system, code=grant["code"]), 410, "grant_revoked")


def test_an_unknown_code_is_not_found(samr_system, catalog):
    error_of(redeem(samr_system, code="A" * 22), 404, "grant_not_found")
    error_of(redeem(samr_system, code="not a code at all"), 404, "grant_not_found")


def test_a_certificate_revoked_since_consent_is_refused_and_the_grant_stays_unused(
        app, representative, licence, licence_identifier, samr_system):
    grant = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)
    change(samr_system, licence_identifier, "revoke", {"reason": "吊销"})
    error = error_of(redeem(samr_system, code=grant["code"]), 409, "certificate_revoked")
    assert error["details"]["identifier"] == licence_identifier
    assert stored_grant(app, grant["id"]).status == "active"


def test_redeeming_needs_the_redeem_scope(representative, licence, make_dept_client):
    verifier = make_dept_client(SAMR, scopes=("verify",))
    error_of(redeem(verifier, code="A" * 22), 403, "insufficient_scope")


def test_the_body_names_exactly_one_of_code_and_request_id(samr_system, catalog):
    assert redeem(samr_system).status_code == 422
    assert redeem(samr_system, code="A" * 22, request_id="b" * 32).status_code == 422
    assert redeem(samr_system, code="A" * 22, extra=1).status_code == 422


# -- by access request ------------------------------------------------------------------------------------------

WANTED = [{"type_code": MARRIAGE, "fields": ["holder.name", "registered_on"]}]


def test_an_approved_request_is_redeemed_by_its_id(app, representative, civil_requester):
    held = marriage_of(representative, app, civil_requester)
    request_id = make_access_request(app, civil_requester, WANTED, now=START)
    grant_id = approve(app, representative, request_id, [held.id])[0]
    body = redeemed(civil_requester, request_id=request_id)
    assert body["grant_id"] == grant_id
    claims = reference_verify(civil_requester.http, body["presentations"][0]["sd_jwt"], aud=civil_requester.client_id,
                              nonce=grant_id)
    assert disclosed_paths(claims) == {"holder.name", "face.registered_on"}
    error_of(redeem(civil_requester, request_id=request_id), 409, "grant_already_used")


def test_a_request_not_yet_answered_or_declined_has_nothing_to_redeem(app, civil_requester, catalog):
    request_id = make_access_request(app, civil_requester, WANTED, now=START)
    error_of(redeem(civil_requester, request_id=request_id), 409, "access_request_pending")
    with app.app_context():
        db.session.execute(sa.update(AccessRequest).where(AccessRequest.public_id == request_id)
                           .values(status=REQUEST_DECLINED))
        db.session.commit()
    error_of(redeem(civil_requester, request_id=request_id), 409, "access_request_declined")
    error_of(redeem(civil_requester, request_id="f" * 32), 404, "access_request_not_found")


def test_another_clients_request_is_refused_and_audited(app, representative, civil_requester, make_dept_client):
    held = marriage_of(representative, app, civil_requester)
    request_id = make_access_request(app, civil_requester, WANTED, now=START)
    approve(app, representative, request_id, [held.id])
    intruder = make_dept_client(SAMR, scopes=("redeem",))
    error_of(redeem(intruder, request_id=request_id), 403, "grant_wrong_client")
    assert refusals(app)[0]["reason"] == "wrong_client"


def test_a_request_grant_expires_with_its_consent(app, representative, civil_requester, clock):
    held = marriage_of(representative, app, civil_requester)
    request_id = make_access_request(app, civil_requester, WANTED, now=START, consent_seconds=600)
    approve(app, representative, request_id, [held.id])
    clock.advance(seconds=600)
    error_of(redeem(civil_requester, request_id=request_id), 410, "grant_expired")


# -- every use is traceable -------------------------------------------------------------------------------------

def test_each_redemption_is_in_the_holders_usage_history(app, representative, licence, samr_system):
    grant = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS, purpose="企业年报核验")
    redeemed(samr_system, code=grant["code"])
    usage = representative.http.get("/api/v1/usage", headers=representative.headers).get_json()["items"]
    [item] = [u for u in usage if u["kind"] == "redeemed"]
    assert item["kind_label"] == "授权用证"
    assert item["verifier"] == {"kind": "client", "name": "信阳市市场监督管理局"}
    assert item["purpose"] == "企业年报核验"
    assert item["fields"] == [{"name": "holder.name", "label": "持证主体名称"},
                              {"name": "face.company_name", "label": "名称"},
                              {"name": "face.legal_representative", "label": "法定代表人"}]
    assert item["occurred_at"] == START.isoformat() and item["certificate"]["id"] == licence


def test_each_redemption_notifies_the_holder(representative, licence, samr_system):
    grant = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS, purpose="企业年报核验")
    redeemed(samr_system, code=grant["code"])
    inbox = representative.http.get("/api/v1/notifications", query_string={"limit": 100},
                             headers=representative.headers).get_json()["items"]
    [used] = [n for n in inbox if n["kind"] == "certificate_used"]
    assert "信阳市市场监督管理局" in used["title"] and "企业年报核验" in used["body"] and "法定代表人" in used["body"]


def test_each_redemption_is_in_the_audit_chain(app, representative, licence, licence_identifier, samr_system):
    grant = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)
    body = redeemed(samr_system, code=grant["code"])
    with app.app_context():
        event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "grant.redeemed"))
        assert event is not None and event.object_id == grant["id"] and event.outcome == "success"
        assert event.actor_id == samr_system.client_id
        assert event.details["redemption"] == body["redemption_id"]
        assert event.details["certificates"] == [{"identifier": licence_identifier, "fields": LICENCE_FIELDS}]
        assert grant["code"] not in str(event.details)
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Redemption)) == 1
        assert db.session.scalar(sa.select(sa.func.count()).select_from(UsageRecord)) == 1
        assert verify_chain(db.session(), keystore()).ok


def test_the_redeem_response_is_documented(representative, licence, samr_system):
    grant = offered(representative, licence, samr_system.client_id, LICENCE_FIELDS)
    response = redeem(samr_system, code=grant["code"])
    assert_documented(samr_system.http, "post", "/gov/v1/grants/redeem", response)


def test_department_asks_holder_approves_in_the_app_department_redeems(app, representative, civil_requester):
    """The whole "department asks" path through the public endpoints: ask, approve, redeem by request id."""
    held = marriage_of(representative, app, civil_requester)
    asked = Asker(civil_requester).ask(wanted=[{"type_code": MARRIAGE, "fields": ["holder.name", "party_b_name"]}])
    assert answer(representative, asked["id"], "approve", [held.id]).status_code == 200
    body = redeemed(civil_requester, request_id=asked["id"])
    claims = reference_verify(civil_requester.http, body["presentations"][0]["sd_jwt"], aud=civil_requester.client_id,
                              nonce=body["grant_id"])
    assert disclosed_paths(claims) == {"holder.name", "face.party_b_name"}
    grants = representative.http.get("/api/v1/grants", headers=representative.headers).get_json()["items"]
    assert [(g["id"], g["status"], g["source"]) for g in grants] == [(body["grant_id"], "used", "request")]
