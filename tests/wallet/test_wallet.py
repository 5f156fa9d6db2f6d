"""The citizen's wallet (/api/v1/wallet/certificates): own and represented companies' certificates, never others'."""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from typing import Any

import pytest
import sqlalchemy as sa

from backend.extensions import db
from backend.models import AuditEvent, Certificate
from miniapp_api.wallet import WalletList
from tests.conftest import CIVIL_AFFAIRS, Citizen
from tests.factories import BUSINESS_LICENCE, DISABILITY, FOOD_LICENCE, MARRIAGE, company_code, resident_id
from tests.support import WALLET, error_code, public_id_of, wallet, wallet_ids

OPAQUE_ID = re.compile(r"^[0-9a-f]{32}$")


def detail(citizen: Any, wallet_id: str) -> dict[str, Any]:
    response = citizen.http.get(f"{WALLET}/{wallet_id}", headers=citizen.headers)
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


# -- what appears ---------------------------------------------------------------------------------------

def test_a_certificate_issued_before_the_first_login_appears_after_login(app, civil_affairs, login):
    id_number = resident_id("19880808")
    identifier = civil_affairs.issue_to(id_number)

    citizen = login(id_number=id_number)
    body = wallet(citizen)

    assert body["next_cursor"] is None
    assert body["companies"] == []
    [item] = body["items"]
    assert item["id"] == public_id_of(app, identifier)
    assert item["owner"] == {"kind": "self", "code": None, "name": None}
    assert item["type_code"] == MARRIAGE
    assert item["type_name"] == "结婚证"
    assert item["title"] == "结婚证（本人）"
    assert item["issuer"] == {"code": CIVIL_AFFAIRS, "name": "信阳市民政局"}
    assert (item["status"], item["status_label"]) == ("valid", "有效")
    assert (item["valid_until"], item["valid_until_label"]) == (None, "长期")
    assert item["version"] == 1
    assert "*" in item["certificate_number_masked"]


def test_the_list_is_exactly_the_documented_wallet_list_shape(app, samr, civil_affairs, login):
    """The list is written as plain dicts: exactly what WalletList would dump, for a person's and a company's."""
    company = company_code()
    samr.issue_to_company(company)
    citizen = login(name="王建国", companies=[{"code": company, "name": "信阳毛尖茶业有限公司"}])
    civil_affairs.issue_to(citizen)
    body = wallet(citizen)
    assert len(body["items"]) == 2
    assert WalletList.model_validate(body).model_dump() == body


def test_the_wallet_lists_only_the_holders_own_certificates(civil_affairs, login):
    mine, other = login(), login(name="李娜")
    civil_affairs.issue_to(mine)
    civil_affairs.issue_to(other)

    assert len(wallet_ids(mine)) == 1
    assert len(wallet_ids(other)) == 1
    assert wallet_ids(mine) != wallet_ids(other)


def test_items_show_the_validity_date_of_a_certificate_with_a_term(disability_federation, login):
    citizen = login(name="刘芳")
    disability_federation.issue_to(citizen, DISABILITY, valid_from="2024-06-01")

    [item] = wallet(citizen)["items"]

    assert (item["valid_from"], item["valid_until"], item["valid_until_label"]) == \
        ("2024-06-01", "2034-05-31", "2034-05-31")


# -- filters --------------------------------------------------------------------------------------------

def test_filter_by_type_code(civil_affairs, disability_federation, login):
    citizen = login()
    civil_affairs.issue_to(citizen)
    disability_federation.issue_to(citizen, DISABILITY)

    assert [i["type_code"] for i in wallet(citizen, type_code=DISABILITY)["items"]] == [DISABILITY]
    assert [i["type_code"] for i in wallet(citizen, type_code=MARRIAGE)["items"]] == [MARRIAGE]
    assert wallet(citizen, type_code=FOOD_LICENCE)["items"] == []


def test_filter_by_status(app, civil_affairs, disability_federation, login):
    citizen = login()
    revoked = civil_affairs.issue_to(citizen)
    suspended = disability_federation.issue_to(citizen, DISABILITY)
    valid = civil_affairs.issue_to(citizen)
    civil_affairs.change(revoked, "revoke", {"reason": "注销"})
    disability_federation.change(suspended, "suspend", {"reason": "复核中"})

    assert wallet_ids(citizen, status="revoked") == [public_id_of(app, revoked)]
    assert wallet_ids(citizen, status="suspended") == [public_id_of(app, suspended)]
    assert wallet_ids(citizen, status="valid") == [public_id_of(app, valid)]
    assert len(wallet_ids(citizen)) == 3  # revoked and suspended stay in the wallet, marked


def test_a_certificate_past_its_last_day_is_expired_before_the_sweep_runs(app, disability_federation, login):
    citizen = login(name="刘芳")
    identifier = disability_federation.issue_to(citizen, DISABILITY, issued_on="2010-01-01", valid_from="2010-01-01",
                                                valid_until="2019-12-31")

    [item] = wallet(citizen)["items"]

    assert (item["status"], item["status_label"]) == ("expired", "已过期")
    assert wallet_ids(citizen, status="expired") == [public_id_of(app, identifier)]
    assert wallet_ids(citizen, status="valid") == []
    assert "有效期" in detail(citizen, item["id"])["notice"]


def test_superseded_versions_are_hidden_unless_asked_for(app, civil_affairs, login):
    citizen = login()
    old = civil_affairs.issue_to(citizen)
    new = civil_affairs.change(old, "reissue",
                               {"fields": {"registration_office": "信阳市民政局婚姻登记处"}})["identifier"]

    assert wallet_ids(citizen) == [public_id_of(app, new)]
    assert wallet_ids(citizen, status="superseded") == [public_id_of(app, old)]


# -- pagination -----------------------------------------------------------------------------------------

def _all_pages(citizen: Any, limit: int, **query: Any) -> list[str]:
    ids: list[str] = []
    cursor = None
    while True:
        body = wallet(citizen, limit=limit, **({"cursor": cursor} if cursor else {}), **query)
        assert len(body["items"]) <= limit
        ids += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids


def test_pages_follow_the_cursor_newest_first_without_gaps_or_repeats(app, civil_affairs, login, clock):
    citizen = login()
    identifiers = []
    for n in range(7):
        identifiers.append(civil_affairs.issue_to(citizen))
        if n % 3 == 0:  # some share a creation time: the order must still be total
            clock.advance(seconds=1)

    pages = _all_pages(citizen, limit=2)

    assert sorted(pages) == sorted(public_id_of(app, i) for i in identifiers)
    assert len(set(pages)) == 7
    assert pages == _all_pages(citizen, limit=100) == _all_pages(citizen, limit=3)
    assert pages[-1] == public_id_of(app, identifiers[0])  # oldest last


def test_a_certificate_issued_while_paging_does_not_shift_later_pages(app, civil_affairs, login, clock):
    citizen = login()
    for _ in range(4):
        civil_affairs.issue_to(citizen)
        clock.advance(seconds=1)
    before = _all_pages(citizen, limit=100)
    first = wallet(citizen, limit=2)

    clock.advance(seconds=1)
    newcomer = public_id_of(app, civil_affairs.issue_to(citizen))
    second = wallet(citizen, limit=2, cursor=first["next_cursor"])

    assert [i["id"] for i in first["items"] + second["items"]] == before
    assert second["next_cursor"] is None
    assert wallet_ids(citizen)[0] == newcomer


def test_the_cursor_is_opaque_and_a_forged_one_is_422(civil_affairs, login):
    citizen = login()
    for _ in range(3):
        civil_affairs.issue_to(citizen)
    cursor = wallet(citizen, limit=1)["next_cursor"]

    assert cursor and not cursor.isdigit()
    hex_id = "0" * 32
    forged_positions = [f"9999-12-31T23:59:59-23:59|{hex_id}", f"2026-01-01T00:00:00|{hex_id}",
                        "2026-01-01T00:00:00+00:00|1"]
    encoded = [base64.urlsafe_b64encode(p.encode()).decode() for p in forged_positions]
    for forged in ("MTA", "not base64!", "x" * 300, *encoded):
        response = citizen.http.get(WALLET, query_string={"cursor": forged}, headers=citizen.headers)
        assert error_code(response, 422) == "validation_failed"


@pytest.mark.parametrize("query", [
    {"page": "2"}, {"offset": "10"}, {"holder": "someone"},
    {"limit": "101"}, {"limit": "0"}, {"limit": "many"},
    {"status": "deleted"}, {"owner": "everyone"}, {"type_code": "123"}, {"company": "not-a-uscc"},
], ids=["page", "offset", "unknown", "limit-101", "limit-0", "limit-text", "status", "owner", "type", "company"])
def test_unknown_or_invalid_query_parameters_are_422(login, query):
    citizen = login()

    response = citizen.http.get(WALLET, query_string=query, headers=citizen.headers)

    assert error_code(response, 422) == "validation_failed"


def test_the_wallet_needs_a_login(client, catalog):
    assert error_code(client.get(WALLET), 401) == "unauthorized"


# -- companies ------------------------------------------------------------------------------------------

def test_a_company_certificate_appears_only_for_its_representative(app, samr, civil_affairs, login):
    code = company_code()
    licence = public_id_of(app, samr.issue_to_company(code))
    representative = login(name="王建国", companies=[{"code": code, "name": "信阳毛尖茶业有限公司"}])
    civil_affairs.issue_to(representative)
    stranger = login(name="李红")

    body = wallet(representative)
    assert body["companies"] == [{"code": code, "name": "信阳毛尖茶业有限公司", "role": "legal_representative"}]
    by_id = {item["id"]: item for item in body["items"]}
    assert by_id[licence]["owner"] == {"kind": "company", "code": code, "name": "信阳毛尖茶业有限公司"}
    assert by_id[licence]["title"] == "营业执照（信阳毛尖茶业有限公司）"
    assert len(by_id) == 2
    assert wallet_ids(representative, owner="company") == [licence]
    assert wallet_ids(representative, company=code) == [licence]
    assert licence not in wallet_ids(representative, owner="self")
    assert detail(representative, licence)["holder"]["code_masked"] == code  # a USCC is not personal data

    assert wallet_ids(stranger) == []
    assert wallet_ids(stranger, owner="company") == []
    assert error_code(stranger.http.get(f"{WALLET}/{licence}", headers=stranger.headers), 404) == \
        "certificate_not_found"
    response = stranger.http.get(WALLET, query_string={"company": code}, headers=stranger.headers)
    assert error_code(response, 403) == "not_company_representative"


def test_representation_ends_when_the_identity_provider_stops_asserting_it(app, samr, login):
    code = company_code()
    licence = public_id_of(app, samr.issue_to_company(code))
    id_number = resident_id()
    representative = login(id_number=id_number, companies=[{"code": code, "name": "信阳毛尖茶业有限公司"}])
    assert wallet_ids(representative) == [licence]

    former = login(id_number=id_number)  # a later login without the company

    assert wallet_ids(former) == []
    assert error_code(former.http.get(f"{WALLET}/{licence}", headers=former.headers), 404) == "certificate_not_found"


def refreshed(citizen: Citizen) -> Citizen:
    """The same session with a new access token: a refresh renews no represented company."""
    response = citizen.http.post("/api/v1/auth/refresh", json={"refresh_token": citizen.refresh_token})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    return replace(citizen, access_token=body["access_token"], refresh_token=body["refresh_token"])


def notifications(citizen: Citizen) -> dict[str, Any]:
    response = citizen.http.get("/api/v1/notifications", headers=citizen.headers)
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def test_a_stale_representation_hides_the_company_everywhere_until_a_real_name_login_renews_it(
        app, samr, login, clock):
    code = company_code()
    licence = public_id_of(app, samr.issue_to_company(code))
    id_number, companies = resident_id(), [{"code": code, "name": "信阳毛尖茶业有限公司"}]
    representative = login(id_number=id_number, companies=companies)
    assert wallet_ids(representative) == [licence]
    clock.advance(hours=24, seconds=1)

    # The session lives on (refresh tokens last 30 days), but the IdP's word about the company is over a day old.
    stale = refreshed(representative)

    assert wallet_ids(stale) == [] and wallet(stale)["companies"] == []
    response = stale.http.get(WALLET, query_string={"company": code}, headers=stale.headers)
    assert error_code(response, 403) == "not_company_representative"
    for method, rule in _certificate_endpoints(app):
        url = re.sub(r"<[^>]+>", licence, rule, count=1)
        inputs = next((v for k, v in ENDPOINT_INPUTS.items() if rule.endswith(k)), {})
        response = stale.http.open(url, method=method, headers=stale.headers, **inputs)
        assert error_code(response, 404) == "certificate_not_found", (method, rule)
    inbox = notifications(stale)
    assert (inbox["items"], inbox["unread_count"]) == ([], 0)
    [company] = stale.http.get("/api/v1/me", headers=stale.headers).get_json()["companies"]
    assert (company["code"], company["current"]) == (code, False)

    renewed = login(id_number=id_number, companies=companies)  # a fresh real-name login asserts it again

    assert wallet_ids(renewed) == [licence]
    assert detail(renewed, licence)["owner"]["code"] == code
    assert [item["owner"]["code"] for item in notifications(renewed)["items"]] == [code]


@pytest.mark.parametrize("app_settings", [{"ECERT_REPRESENTATION_MAX_AGE": "3600"}])
def test_how_long_a_representation_counts_is_a_setting(app, samr, login, clock, app_settings):
    code = company_code()
    licence = public_id_of(app, samr.issue_to_company(code))
    representative = login(companies=[{"code": code, "name": "信阳毛尖茶业有限公司"}])
    clock.advance(minutes=59)
    representative = refreshed(representative)
    assert detail(representative, licence)["id"] == licence
    clock.advance(minutes=1)
    representative = refreshed(representative)
    assert error_code(representative.http.get(f"{WALLET}/{licence}", headers=representative.headers), 404) == \
        "certificate_not_found"


def test_a_fresh_representation_of_one_company_opens_no_other(app, samr, login):
    mine, theirs = company_code(), company_code()
    their_licence = public_id_of(app, samr.issue_to_company(theirs, name="信阳老街饭店有限公司"))
    representative = login(companies=[{"code": mine, "name": "信阳毛尖茶业有限公司"}])

    assert their_licence not in wallet_ids(representative)
    response = representative.http.get(f"{WALLET}/{their_licence}", headers=representative.headers)
    assert error_code(response, 404) == "certificate_not_found"


def test_owner_self_and_a_company_together_are_422(samr, login):
    code = company_code()
    citizen = login(companies=[{"code": code, "name": "信阳毛尖茶业有限公司"}])

    response = citizen.http.get(WALLET, query_string={"owner": "self", "company": code}, headers=citizen.headers)

    assert error_code(response, 422) == "validation_failed"


# -- no one else's certificate, on any wallet endpoint ----------------------------------------------------

# Inputs that pass validation on the per-certificate wallet endpoints, so that only ownership decides.
ENDPOINT_INPUTS = {"show-codes": {"json": {"profile": "basic"}}, "card.png": {"query_string": {"purpose": "办理业务"}}}


def _certificate_endpoints(app: Any) -> list[tuple[str, str]]:
    """Every (method, rule) under /api/v1/wallet/certificates/<id>: today's and any added later."""
    endpoints = []
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith(f"{WALLET}/<"):
            endpoints += [(method, rule.rule) for method in sorted(rule.methods - {"HEAD", "OPTIONS"})]
    return endpoints


def test_holder_a_gets_404_for_holder_b_certificates_on_every_wallet_endpoint(app, samr, civil_affairs, login):
    holder_a = login(name="张伟")
    holder_b = login(name="李娜", companies=[{"code": (code := company_code()), "name": "信阳毛尖茶业有限公司"}])
    b_ids = [public_id_of(app, civil_affairs.issue_to(holder_b)), public_id_of(app, samr.issue_to_company(code))]
    endpoints = _certificate_endpoints(app)
    assert ("GET", f"{WALLET}/<certificate_id>") in endpoints

    for method, rule in endpoints:
        for b_id in b_ids:
            url = re.sub(r"<[^>]+>", b_id, rule, count=1)
            inputs = next((v for k, v in ENDPOINT_INPUTS.items() if rule.endswith(k)), {})
            response = holder_a.http.open(url, method=method, headers=holder_a.headers, **inputs)
            assert error_code(response, 404) == "certificate_not_found", (method, rule)
            assert b_id not in response.get_data(as_text=True)
    # Holder B, of course, reaches both.
    assert all(detail(holder_b, b_id)["id"] == b_id for b_id in b_ids)


def test_ids_are_opaque_and_sequential_ids_find_nothing(app, civil_affairs, login):
    citizen = login()
    for _ in range(2):
        civil_affairs.issue_to(citizen)

    ids = wallet_ids(citizen)

    assert all(OPAQUE_ID.match(i) for i in ids)
    with app.app_context():
        row_ids = db.session.scalars(sa.select(Certificate.id)).all()
    for row_id in [*row_ids, 0]:
        response = citizen.http.get(f"{WALLET}/{row_id}", headers=citizen.headers)
        assert error_code(response, 404) == "certificate_not_found"


# -- the detail -----------------------------------------------------------------------------------------

def test_the_detail_shows_face_fields_with_labels_in_catalog_order(app, civil_affairs, login):
    citizen = login(name="张伟")
    identifier = civil_affairs.issue_to(citizen)
    wallet_id = public_id_of(app, identifier)

    body = detail(citizen, wallet_id)

    with app.app_context():
        certificate = db.session.scalar(sa.select(Certificate).where(Certificate.identifier == identifier))
        catalog_order = [spec["name"] for spec in certificate.certificate_type.definition["fields"]]
    names = [f["name"] for f in body["fields"]]
    assert names == [n for n in catalog_order if n in names]
    by_name = {f["name"]: f for f in body["fields"]}
    assert by_name["holder_name"] == {"name": "holder_name", "label": "持证人", "value": "张伟", "sensitivity":
                                      by_name["holder_name"]["sensitivity"]}
    assert (by_name["party_b_name"]["label"], by_name["party_b_name"]["value"]) == ("姓名（另一方）", "李娜")
    assert by_name["party_a_id_number"]["label"] == "身份证件号（一方）"
    assert body["holder"]["name"] == "张伟"
    assert body["holder"]["code_type"] == "111"
    assert citizen.id_number not in str(body["holder"])
    assert body["certificate_number"] == by_name["certificate_no"]["value"]
    assert body["identifier"] == identifier
    assert body["issuer"] == {"code": CIVIL_AFFAIRS, "name": "信阳市民政局"}
    assert (body["status"], body["status_label"], body["notice"]) == ("valid", "有效", None)
    assert (body["is_current"], body["current_version_id"]) == (True, None)
    assert [(v["id"], v["version"], v["status"]) for v in body["versions"]] == [(wallet_id, 1, "valid")]


def test_reading_the_detail_is_audited(app, civil_affairs, login):
    citizen = login()
    identifier = civil_affairs.issue_to(citizen)

    detail(citizen, public_id_of(app, identifier))

    with app.app_context():
        event = db.session.scalar(sa.select(AuditEvent).where(AuditEvent.action == "wallet.certificate_viewed"))
        assert event is not None
        assert (event.actor_type, event.object_type, event.object_id) == ("citizen", "certificate", identifier)
        assert citizen.id_number not in str(event.details)
    wallet(citizen)  # the list decrypts no personal data: not audited as a reading
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)
                                 .where(AuditEvent.action == "wallet.certificate_viewed")) == 1


def test_after_reissue_the_old_version_says_superseded_and_points_to_the_current_one(app, civil_affairs, login):
    citizen = login()
    old = civil_affairs.issue_to(citizen)
    new = civil_affairs.change(old, "reissue", {"fields": {"registration_office": "信阳市民政局婚姻登记处"},
                                             "reason": "登记机关名称变更"})["identifier"]
    old_id, new_id = public_id_of(app, old), public_id_of(app, new)

    old_body = detail(citizen, old_id)
    new_body = detail(citizen, new_id)

    assert (old_body["status"], old_body["status_label"]) == ("superseded", "已更新")
    assert old_body["is_current"] is False
    assert old_body["current_version_id"] == new_id
    assert "第 2 版" in old_body["notice"]
    assert (new_body["status"], new_body["version"], new_body["notice"]) == ("valid", 2, None)
    assert (new_body["is_current"], new_body["current_version_id"]) == (True, None)
    assert [(v["id"], v["version"], v["status"]) for v in new_body["versions"]] == \
        [(old_id, 1, "superseded"), (new_id, 2, "valid")]
    assert old_body["versions"] == new_body["versions"]
    assert {f["name"]: f["value"] for f in new_body["fields"]}["registration_office"] == "信阳市民政局婚姻登记处"


def test_a_revoked_certificate_says_so_and_has_no_current_version(app, civil_affairs, login):
    citizen = login()
    identifier = civil_affairs.issue_to(citizen)
    civil_affairs.change(identifier, "revoke", {"reason": "注销", "note": "当事人申请"})

    body = detail(citizen, public_id_of(app, identifier))

    assert (body["status"], body["status_label"]) == ("revoked", "已注销")
    assert body["status_reason"] == "注销：当事人申请"
    assert "已注销" in body["notice"] and "当事人申请" in body["notice"]
    assert body["current_version_id"] is None


def test_a_suspended_certificate_says_so(app, disability_federation, login):
    citizen = login(name="刘芳")
    identifier = disability_federation.issue_to(citizen, DISABILITY)
    disability_federation.change(identifier, "suspend", {"reason": "等级复核"})

    body = detail(citizen, public_id_of(app, identifier))

    assert (body["status"], body["status_label"]) == ("suspended", "中止")
    assert "中止" in body["notice"] and "等级复核" in body["notice"]


def test_a_company_certificate_detail_names_the_company(app, samr, login):
    code = company_code()
    licence = public_id_of(app, samr.issue_to_company(code))
    representative = login(companies=[{"code": code, "name": "信阳毛尖茶业有限公司"}])

    body = detail(representative, licence)

    assert body["owner"] == {"kind": "company", "code": code, "name": "信阳毛尖茶业有限公司"}
    assert body["type_code"] == BUSINESS_LICENCE
    assert {f["name"]: f["label"] for f in body["fields"]}["legal_representative"] == "法定代表人"
