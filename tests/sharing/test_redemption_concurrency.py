"""Concurrent redemption of one grant: exactly one success, on SQLite (a file database) and on PostgreSQL.

Each redeemer is a real thread with its own test client, app context, database session and connection, so the
requests meet only in the database — as on several workers. With `overlap`, every redeemer is held after the
read-only checks until all have passed them, so all of them reach the conditional UPDATE believing the grant
active: only the database's answer can then pick the one winner.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa

from backend.extensions import db
from backend.models import AuditEvent, Grant, Notification, Redemption, UsageRecord
from backend.sharing import redemption
from tests.conftest import SAMR
from tests.factories import company_code
from tests.sharing.grant_support import REDEEM, offered, reference_verify
from tests.support import Department, database_is_shared, public_id_of, run_together

REDEEMERS = 8


@pytest.fixture
def setting(app: Any, login: Any, make_dept_client: Any) -> Any:
    company = company_code()
    citizen = login("张伟", companies=[{"code": company, "name": "信阳毛尖茶业有限公司"}])
    samr = make_dept_client(SAMR, scopes=("issue", "verify", "redeem"))
    licence = public_id_of(app, Department(samr).issue_to_company(company))
    return citizen, samr, licence


@pytest.mark.parametrize("overlap", [False, True], ids=["released-together", "all-past-the-checks"])
def test_exactly_one_of_many_concurrent_redemptions_succeeds(app, setting, monkeypatch, overlap):
    database_is_shared(app)
    citizen, samr, licence = setting
    grant = offered(citizen, licence, samr.client_id, ["holder.name", "company_name"])
    token = samr.token()
    if overlap:
        checked = threading.Barrier(REDEEMERS)
        original = redemption._check_certificates

        def check_then_wait(*args: Any, **kwargs: Any) -> None:
            original(*args, **kwargs)
            checked.wait(timeout=30)  # every redeemer has seen the grant active

        monkeypatch.setattr(redemption, "_check_certificates", check_then_wait)

    def redeem(_: int) -> tuple[int, Any]:
        http = app.test_client()  # one client, context and session per worker
        response = http.post(REDEEM, json={"code": grant["code"]}, headers={"Authorization": f"Bearer {token}"})
        return response.status_code, response.get_json()

    results = run_together(redeem, REDEEMERS)

    statuses = sorted(status for status, _ in results)
    assert statuses == [200] + [409] * (REDEEMERS - 1), results
    assert {body["error"]["code"] for status, body in results if status == 409} == {"grant_already_used"}
    [winner] = [body for status, body in results if status == 200]
    reference_verify(samr.http, winner["presentations"][0]["sd_jwt"], aud=samr.client_id, nonce=grant["id"])
    with app.app_context():
        count = lambda model, *where: db.session.scalar(  # noqa: E731
            sa.select(sa.func.count()).select_from(model).where(*where))
        assert count(Redemption) == 1
        assert count(UsageRecord, UsageRecord.kind == "redeemed") == 1
        assert count(Notification, Notification.kind == "certificate_used") == 1
        assert count(AuditEvent, AuditEvent.action == "grant.redeemed") == 1
        assert count(AuditEvent, AuditEvent.action == "grant.redeem_refused") == REDEEMERS - 1
        assert db.session.scalar(sa.select(Grant.status).where(Grant.public_id == grant["id"])) == "used"


def test_a_revocation_racing_redemptions_leaves_one_outcome(app, setting):
    """The holder revokes while departments redeem: either the redemption won (and the revocation is refused) or
    the revocation did (and every redemption is refused) — never both."""
    citizen, samr, licence = setting
    grant = offered(citizen, licence, samr.client_id, ["holder.name"])
    token = samr.token()

    def act(n: int) -> tuple[str, int]:
        http = app.test_client()
        if n == 0:
            response = http.delete(f"/api/v1/grants/{grant['id']}", headers=citizen.headers)
            return "revoke", response.status_code
        response = http.post(REDEEM, json={"code": grant["code"]}, headers={"Authorization": f"Bearer {token}"})
        return "redeem", response.status_code

    results = run_together(act, 4)
    revoked = ("revoke", 200) in results
    redeemed = [r for r in results if r == ("redeem", 200)]
    assert len(redeemed) == (0 if revoked else 1), results
    with app.app_context():
        status = db.session.scalar(sa.select(Grant.status).where(Grant.public_id == grant["id"]))
    assert status == ("revoked" if revoked else "used")
