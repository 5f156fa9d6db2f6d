"""grant_from_request: the grant that answers a department's access request (used by approval and the counter)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from backend.errors import DomainError
from backend.extensions import db
from backend.kernel.actors import Actor
from backend.models import AccessRequest, AuditEvent, Certificate, Holder
from backend.models.sharing import CONSENT_APP, CONSENT_STAFF, GRANT_ACTIVE
from backend.sharing.grants import grant_from_request
from tests.conftest import CIVIL_AFFAIRS, SAMR, START
from tests.factories import BUSINESS_LICENCE, MARRIAGE, company_code
from tests.grant_support import holder_of, make_access_request
from tests.support import Department, change, marriage_of, public_id_of

WANTED_MARRIAGE = [{"type_code": MARRIAGE, "fields": ["holder.name", "registered_on", "party_b_name"]}]


@pytest.fixture
def civil(make_dept_client: Any) -> Any:
    return make_dept_client(CIVIL_AFFAIRS, scopes=("issue", "verify", "request", "redeem"))


@pytest.fixture
def citizen(login: Any) -> Any:
    return login("张伟")


def approve(app: Any, citizen: Any, request_id: str, certificate_ids: list[str], *,
            consent_method: str = CONSENT_APP, holder: Any = None) -> Any:
    """Call grant_from_request as engineer R's approval does; answers the grant's (public id, fields, expiry)."""
    holder = holder or holder_of(app, citizen)
    with app.app_context():
        request = db.session.scalar(sa.select(AccessRequest).where(AccessRequest.public_id == request_id))
        certificates = list(db.session.scalars(
            sa.select(Certificate).where(Certificate.public_id.in_(certificate_ids))))
        grant = grant_from_request(db.session, request=request, holder=db.session.get_one(Holder, holder.id),
                                   certificates=certificates, consent_method=consent_method,
                                   actor=Actor(kind="citizen", id=holder.public_id), now=START)
        db.session.commit()
        return grant.public_id, [gc.fields for gc in grant.certificates], grant.expires_at, grant.status, \
            grant.api_client.client_id, grant.consent_method


def test_grant_carries_the_wanted_fields_for_the_requesting_client(app, citizen, civil):
    held = marriage_of(citizen, app, civil)
    request_id = make_access_request(app, civil, WANTED_MARRIAGE, now=START, consent_seconds=3600)
    public_id, fields, expires_at, status, client_id, method = approve(app, citizen, request_id, [held.id])
    assert fields == [["holder.name", "registered_on", "party_b_name"]]
    assert expires_at == START + timedelta(seconds=3600)
    assert (status, client_id, method) == (GRANT_ACTIVE, civil.client_id, CONSENT_APP)
    with app.app_context():
        event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "grant.created"))
        assert event is not None and event.object_id == public_id
        assert event.details["via"] == "request" and event.details["client"] == civil.client_id


def test_grant_lifetime_is_capped_by_the_type_policy(app, citizen, civil):
    held = marriage_of(citizen, app, civil)  # marriage certificates: max_grant_seconds 86400
    request_id = make_access_request(app, civil, WANTED_MARRIAGE, now=START, consent_seconds=30 * 86400)
    assert approve(app, citizen, request_id, [held.id])[2] == START + timedelta(seconds=86400)


def test_a_certificate_of_a_type_not_asked_for_is_refused(app, citizen, civil, make_dept_client, login):
    samr = make_dept_client(SAMR, scopes=("issue",))
    company = company_code()
    holder = login("李娜", companies=[{"code": company, "name": "信阳毛尖茶业有限公司"}])
    licence = public_id_of(app, Department(samr).issue_to_company(company))
    request_id = make_access_request(app, civil, WANTED_MARRIAGE, now=START)
    with pytest.raises(DomainError) as refused:
        approve(app, holder, request_id, [licence])
    assert refused.value.code == "certificate_type_not_requested"
    assert BUSINESS_LICENCE in str(refused.value.details)


def test_someone_elses_certificate_is_not_found(app, citizen, civil, login):
    other = login("王芳")
    held = marriage_of(other, app, civil)
    request_id = make_access_request(app, civil, WANTED_MARRIAGE, now=START)
    with pytest.raises(DomainError) as refused:
        approve(app, citizen, request_id, [held.id])
    assert (refused.value.status, refused.value.code) == (404, "certificate_not_found")


def test_fields_the_policy_no_longer_allows_are_refused_at_consent(app, citizen, civil):
    held = marriage_of(citizen, app, civil)
    request_id = make_access_request(app, civil, [{"type_code": MARRIAGE, "fields": ["no_such_field"]}], now=START)
    with pytest.raises(DomainError) as refused:
        approve(app, citizen, request_id, [held.id])
    assert (refused.value.status, refused.value.code) == (422, "fields_not_shareable")


def test_a_revoked_certificate_cannot_be_granted(app, citizen, civil):
    held = marriage_of(citizen, app, civil)
    change(civil, held.identifier, "revoke", {"reason": "注销"})
    request_id = make_access_request(app, civil, WANTED_MARRIAGE, now=START)
    with pytest.raises(DomainError) as refused:
        approve(app, citizen, request_id, [held.id])
    assert refused.value.code == "certificate_revoked"


def test_the_counter_records_how_consent_was_given(app, citizen, civil):
    held = marriage_of(citizen, app, civil)
    request_id = make_access_request(app, civil, WANTED_MARRIAGE, now=START)
    assert approve(app, citizen, request_id, [held.id], consent_method=CONSENT_STAFF)[5] == CONSENT_STAFF
