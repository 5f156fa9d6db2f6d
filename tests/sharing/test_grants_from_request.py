"""grant_from_request: the grant that answers a department's access request (used by approval and the counter)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from backend.errors import DomainError
from backend.extensions import db
from backend.models import AuditEvent
from backend.models.sharing import CONSENT_APP, CONSENT_STAFF, GRANT_ACTIVE
from tests.conftest import SAMR, START
from tests.factories import BUSINESS_LICENCE, MARRIAGE, company_code
from tests.sharing.grant_support import approve, make_access_request
from tests.support import Department, change, marriage_of, public_id_of

WANTED_MARRIAGE = [{"type_code": MARRIAGE, "fields": ["holder.name", "registered_on", "party_b_name"]}]


def test_grant_carries_the_wanted_fields_for_the_requesting_client(app, citizen, civil_requester):
    held = marriage_of(citizen, app, civil_requester)
    request_id = make_access_request(app, civil_requester, WANTED_MARRIAGE, now=START, consent_seconds=3600)
    public_id, fields, expires_at, status, client_id, method = approve(app, citizen, request_id, [held.id])
    assert fields == [["holder.name", "registered_on", "party_b_name"]]
    assert expires_at == START + timedelta(seconds=3600)
    assert (status, client_id, method) == (GRANT_ACTIVE, civil_requester.client_id, CONSENT_APP)
    with app.app_context():
        event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "grant.created"))
        assert event is not None and event.object_id == public_id
        assert event.details["via"] == "request" and event.details["client"] == civil_requester.client_id


def test_grant_lifetime_is_capped_by_the_type_policy(app, citizen, civil_requester):
    held = marriage_of(citizen, app, civil_requester)  # marriage certificates: max_grant_seconds 86400
    request_id = make_access_request(app, civil_requester, WANTED_MARRIAGE, now=START, consent_seconds=30 * 86400)
    assert approve(app, citizen, request_id, [held.id])[2] == START + timedelta(seconds=86400)


def test_a_certificate_of_a_type_not_asked_for_is_refused(app, citizen, civil_requester, make_dept_client, login):
    samr = make_dept_client(SAMR, scopes=("issue",))
    company = company_code()
    holder = login("李娜", companies=[{"code": company, "name": "信阳毛尖茶业有限公司"}])
    licence = public_id_of(app, Department(samr).issue_to_company(company))
    request_id = make_access_request(app, civil_requester, WANTED_MARRIAGE, now=START)
    with pytest.raises(DomainError) as refused:
        approve(app, holder, request_id, [licence])
    assert refused.value.code == "certificate_type_not_requested"
    assert BUSINESS_LICENCE in str(refused.value.details)


def test_someone_elses_certificate_is_not_found(app, citizen, civil_requester, login):
    other = login("王芳")
    held = marriage_of(other, app, civil_requester)
    request_id = make_access_request(app, civil_requester, WANTED_MARRIAGE, now=START)
    with pytest.raises(DomainError) as refused:
        approve(app, citizen, request_id, [held.id])
    assert (refused.value.status, refused.value.code) == (404, "certificate_not_found")


def test_fields_the_policy_no_longer_allows_are_refused_at_consent(app, citizen, civil_requester):
    held = marriage_of(citizen, app, civil_requester)
    request_id = make_access_request(app, civil_requester, [{"type_code": MARRIAGE, "fields": ["no_such_field"]}],
                                     now=START)
    with pytest.raises(DomainError) as refused:
        approve(app, citizen, request_id, [held.id])
    assert (refused.value.status, refused.value.code) == (422, "fields_not_shareable")


def test_a_revoked_certificate_cannot_be_granted(app, citizen, civil_requester):
    held = marriage_of(citizen, app, civil_requester)
    change(civil_requester, held.identifier, "revoke", {"reason": "注销"})
    request_id = make_access_request(app, civil_requester, WANTED_MARRIAGE, now=START)
    with pytest.raises(DomainError) as refused:
        approve(app, citizen, request_id, [held.id])
    assert refused.value.code == "certificate_revoked"


def test_the_counter_records_how_consent_was_given(app, citizen, civil_requester):
    held = marriage_of(citizen, app, civil_requester)
    request_id = make_access_request(app, civil_requester, WANTED_MARRIAGE, now=START)
    assert approve(app, citizen, request_id, [held.id], consent_method=CONSENT_STAFF)[5] == CONSENT_STAFF
