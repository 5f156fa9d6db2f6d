"""The citizen's inbox (/api/v1/notifications) and usage history (/api/v1/usage)."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

import pytest

from backend.catalog.loader import get_department
from backend.extensions import db
from backend.models import Certificate, UsageRecord
from tests.conftest import SAMR
from tests.factories import MARRIAGE, company_code, resident_id
from tests.support import FORGED_CURSORS, error_code, public_id_of

INBOX = "/api/v1/notifications"
USAGE = "/api/v1/usage"


def inbox(citizen: Any, **query: Any) -> dict[str, Any]:
    response = citizen.http.get(INBOX, query_string=query, headers=citizen.headers)
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def mark_read(citizen: Any, notification_id: str) -> Any:
    return citizen.http.post(f"{INBOX}/{notification_id}/read", headers=citizen.headers)


# -- notifications --------------------------------------------------------------------------------------

def test_issuance_suspension_and_revocation_reach_the_inbox(app, civil_affairs, login, clock):
    id_number = resident_id()
    identifier = civil_affairs.issue_to(id_number)  # before the holder ever logged in
    clock.advance(seconds=1)
    civil_affairs.change(identifier, "suspend", {"reason": "信息核查"})
    clock.advance(seconds=1)
    civil_affairs.change(identifier, "resume")
    clock.advance(seconds=1)
    civil_affairs.change(identifier, "revoke", {"reason": "注销", "note": "当事人申请"})
    citizen = login(id_number=id_number)

    body = inbox(citizen)

    kinds = [item["kind"] for item in body["items"]]
    assert kinds == ["certificate_revoked", "certificate_resumed", "certificate_suspended", "certificate_issued"]
    assert body["unread_count"] == 4
    assert body["next_cursor"] is None
    wallet_id = public_id_of(app, identifier)
    assert {item["certificate_id"] for item in body["items"]} == {wallet_id}
    revoked, _, suspended, issued = body["items"]
    assert revoked["title"] == "您的结婚证已注销"
    assert "当事人申请" in revoked["body"]
    assert "信息核查" in suspended["body"]
    assert issued["title"] == "您的结婚证已签发" and "信阳市民政局" in issued["body"]
    assert issued["owner"] == {"kind": "self", "code": None, "name": None}
    assert all(item["read_at"] is None for item in body["items"])


def test_a_reissue_reaches_the_inbox_pointing_to_the_new_version(app, civil_affairs, login, clock):
    citizen = login()
    old = civil_affairs.issue_to(citizen)
    clock.advance(seconds=1)
    new = civil_affairs.change(old, "reissue",
                               {"fields": {"registration_office": "信阳市民政局婚姻登记处"}})["identifier"]

    newest = inbox(citizen)["items"][0]

    assert newest["kind"] == "certificate_reissued"
    assert newest["certificate_id"] == public_id_of(app, new)


def test_marking_read_is_recorded_once_and_filters_the_unread(civil_affairs, login, clock):
    citizen = login()
    civil_affairs.issue_to(citizen)
    clock.advance(seconds=1)
    civil_affairs.issue_to(citizen)
    newest, older = inbox(citizen)["items"]

    first = mark_read(citizen, newest["id"])
    clock.advance(minutes=1)
    again = mark_read(citizen, newest["id"])

    assert first.status_code == again.status_code == 200
    assert first.get_json()["read_at"] == again.get_json()["read_at"] is not None
    body = inbox(citizen)
    assert body["unread_count"] == 1
    assert [item["id"] for item in inbox(citizen, unread="true")["items"]] == [older["id"]]
    assert [item["read_at"] is not None for item in body["items"]] == [True, False]


def test_another_holder_can_neither_see_nor_mark_the_notifications(civil_affairs, login):
    owner, other = login(), login(name="李娜")
    civil_affairs.issue_to(owner)
    [item] = inbox(owner)["items"]

    assert inbox(other)["items"] == []
    assert error_code(mark_read(other, item["id"]), 404) == "notification_not_found"
    assert inbox(owner)["items"][0]["read_at"] is None
    assert error_code(mark_read(owner, secrets.token_hex(16)), 404) == "notification_not_found"


def test_a_companys_notifications_reach_its_representative_only(samr, login):
    code = company_code()
    samr.issue_to_company(code)
    representative = login(companies=[{"code": code, "name": "信阳毛尖茶业有限公司"}])
    stranger = login(name="李红")

    [item] = inbox(representative)["items"]

    assert item["kind"] == "certificate_issued"
    assert item["title"] == "您的营业执照已签发"
    assert item["owner"] == {"kind": "company", "code": code, "name": "信阳毛尖茶业有限公司"}
    assert inbox(stranger)["items"] == []
    assert error_code(mark_read(stranger, item["id"]), 404) == "notification_not_found"
    assert mark_read(representative, item["id"]).status_code == 200


def test_the_inbox_pages_by_cursor(civil_affairs, login, clock):
    citizen = login()
    for n in range(5):
        civil_affairs.issue_to(citizen)
        if n % 2:
            clock.advance(seconds=1)
    everything = [item["id"] for item in inbox(citizen, limit=100)["items"]]

    seen: list[str] = []
    cursor = None
    while True:
        body = inbox(citizen, limit=2, **({"cursor": cursor} if cursor else {}))
        seen += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break

    assert seen == everything
    assert len(set(seen)) == 5


@pytest.mark.parametrize("query", [{"limit": "101"}, {"limit": "0"}, {"page": "2"}, {"cursor": "garbage!"}],
                         ids=["limit-101", "limit-0", "unknown", "cursor"])
def test_bad_inbox_queries_are_422(login, query):
    citizen = login()
    assert error_code(citizen.http.get(INBOX, query_string=query, headers=citizen.headers), 422) == \
        "validation_failed"


@pytest.mark.parametrize("url", [INBOX, USAGE], ids=["inbox", "usage"])
@pytest.mark.parametrize("cursor", FORGED_CURSORS)
def test_a_forged_or_out_of_range_cursor_is_422(login, url, cursor):
    citizen = login()
    response = citizen.http.get(url, query_string={"cursor": cursor}, headers=citizen.headers)
    assert error_code(response, 422) == "validation_failed"
    assert response.get_json()["error"]["details"]["fields"] == [{"field": "cursor", "reason": "invalid_cursor"}]


def test_the_inbox_needs_a_login(client, catalog):
    assert error_code(client.get(INBOX), 401) == "unauthorized"
    assert error_code(client.post(f"{INBOX}/{secrets.token_hex(16)}/read"), 401) == "unauthorized"


# -- usage history --------------------------------------------------------------------------------------

def record_use(app: Any, identifier: str, *, kind: str, fields: list[str], minutes: int,
               department: str | None = None, purpose: str | None = None) -> str:
    """Insert a usage record directly, as the show-code check or a redemption will."""
    with app.app_context():
        certificate = db.session.scalar(db.select(Certificate).where(Certificate.identifier == identifier))
        assert certificate is not None
        public_id = secrets.token_hex(16)
        db.session.add(UsageRecord(
            public_id=public_id, holder_index=certificate.holder_index, certificate_id=certificate.id, kind=kind,
            verifier_kind="client" if department else "public", verifier_id="client-1" if department else None,
            verifier_department_id=get_department(db.session, department).id if department else None,
            purpose=purpose, fields=fields, occurred_at=certificate.created_at + timedelta(minutes=minutes)))
        db.session.commit()
        return public_id


def usage(citizen: Any, **query: Any) -> dict[str, Any]:
    response = citizen.http.get(USAGE, query_string=query, headers=citizen.headers)
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def test_the_usage_history_lists_who_used_which_certificate_for_what(app, civil_affairs, login):
    citizen = login()
    identifier = civil_affairs.issue_to(citizen)
    scanned = record_use(app, identifier, kind="show_code_checked", fields=["face.holder_name", "face.party_b_name"],
                         minutes=1)
    redeemed = record_use(app, identifier, kind="redeemed", fields=["holder.name", "document.number"], minutes=2,
                          department=SAMR, purpose="办理个体工商户登记")

    body = usage(citizen)

    assert [item["id"] for item in body["items"]] == [redeemed, scanned]
    assert body["next_cursor"] is None
    newest, oldest = body["items"]
    assert newest["kind"] == "redeemed"
    assert newest["kind_label"] == "授权用证"
    assert newest["verifier"] == {"kind": "client", "name": "信阳市市场监督管理局"}
    assert newest["purpose"] == "办理个体工商户登记"
    assert newest["fields"] == [{"name": "holder.name", "label": "持证主体名称"},
                                {"name": "document.number", "label": "证照编号"}]
    assert newest["certificate"] == {"id": public_id_of(app, identifier), "type_code": MARRIAGE, "type_name": "结婚证"}
    assert newest["owner"]["kind"] == "self"
    assert oldest["verifier"] == {"kind": "public", "name": "公众扫码"}
    assert [f["label"] for f in oldest["fields"]] == ["持证人", "姓名（另一方）"]
    assert oldest["purpose"] is None


def test_another_holder_sees_none_of_the_usage(app, civil_affairs, samr, login):
    citizen, other = login(), login(name="李娜")
    record_use(app, civil_affairs.issue_to(citizen), kind="show_code_checked", fields=[], minutes=1)
    code = company_code()
    record_use(app, samr.issue_to_company(code), kind="verified", fields=[], minutes=1, department=SAMR)

    assert len(usage(citizen)["items"]) == 1
    assert usage(other)["items"] == []
    representative = login(name="王建国", companies=[{"code": code, "name": "信阳毛尖茶业有限公司"}])
    [item] = usage(representative)["items"]
    assert item["owner"] == {"kind": "company", "code": code, "name": "信阳毛尖茶业有限公司"}


def test_the_usage_history_pages_by_cursor(app, civil_affairs, login):
    citizen = login()
    identifier = civil_affairs.issue_to(citizen)
    ids = [record_use(app, identifier, kind="show_code_checked", fields=[], minutes=n // 2) for n in range(5)]

    first = usage(citizen, limit=3)
    second = usage(citizen, limit=3, cursor=first["next_cursor"])

    seen = [item["id"] for item in first["items"] + second["items"]]
    assert sorted(seen) == sorted(ids)
    assert second["next_cursor"] is None
    assert error_code(citizen.http.get(USAGE, query_string={"limit": "101"}, headers=citizen.headers), 422) == \
        "validation_failed"
    assert error_code(citizen.http.get(USAGE, query_string={"since": "x"}, headers=citizen.headers), 422) == \
        "validation_failed"
