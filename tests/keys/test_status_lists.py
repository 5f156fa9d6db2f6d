"""Token Status Lists: the published bits follow every lifecycle change; caching headers; random allocation."""

from __future__ import annotations

import base64
import itertools
import json
import re
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
import pytest
from sqlalchemy import select, update

from backend.catalog.loader import get_department
from backend.extensions import db
from backend.keys import status_lists
from backend.models import StatusList
from tests.conftest import CIVIL_AFFAIRS, SAMR, FakeClock
from tests.support import change, issue

PUBLIC_URL = "http://localhost"
MEDIA_TYPE = "application/statuslist+jwt"


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def status_reference(sd_jwt: str) -> tuple[str, int]:
    """The (uri, idx) of the `status` claim of an issued SD-JWT."""
    payload = json.loads(b64url_decode(sd_jwt.split("~")[0].split(".")[1]))
    reference = payload["status"]["status_list"]
    return reference["uri"], reference["idx"]


def published_list(http: Any, uri: str, clock: FakeClock) -> tuple[dict[str, Any], bytes]:
    """Fetch the list at `uri`, verify it with the key published in the JWKS, return (claims, raw bytes)."""
    assert uri.startswith(PUBLIC_URL)
    response = http.get(uri.removeprefix(PUBLIC_URL))
    assert response.status_code == 200
    assert response.mimetype == MEDIA_TYPE
    token = response.get_data(as_text=True)
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "statuslist+jwt"
    keys = http.get("/.well-known/jwks.json").get_json()["keys"]
    jwk = next(key for key in keys if key["kid"] == header["kid"])
    # Times are checked against the injected clock below, not the wall clock.
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=[jwk["alg"]],
                        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False})
    moment = int(clock().timestamp())
    assert claims["sub"] == uri
    assert claims["iat"] <= moment < claims["exp"]
    assert claims["ttl"] > 0
    assert claims["status_list"]["bits"] == 2
    return claims, zlib.decompress(b64url_decode(claims["status_list"]["lst"]))


def bit(raw: bytes, idx: int) -> int:
    """Two bits per entry, least significant bits first (draft-ietf-oauth-status-list §4.1)."""
    return (raw[idx * 2 // 8] >> (idx * 2 % 8)) & 0b11


def published_bit(http: Any, sd_jwt: str, clock: FakeClock) -> int:
    uri, idx = status_reference(sd_jwt)
    return bit(published_list(http, uri, clock)[1], idx)


def test_published_bits_follow_issue_suspend_resume_revoke_and_reissue(dept_client, clock):
    http = dept_client.http
    first = issue(dept_client)
    assert published_bit(http, first["sd_jwt"], clock) == 0

    change(dept_client, first["identifier"], "suspend", {"reason": "涉嫌违规经营，暂停使用"})
    assert published_bit(http, first["sd_jwt"], clock) == 2
    change(dept_client, first["identifier"], "resume")
    assert published_bit(http, first["sd_jwt"], clock) == 0
    change(dept_client, first["identifier"], "revoke", {"reason": "吊销"})
    assert published_bit(http, first["sd_jwt"], clock) == 1

    second = issue(dept_client)
    moved = {"fields": {"address": "河南省信阳市平桥区新华路 1 号"}}
    successor = change(dept_client, second["identifier"], "reissue", moved)
    assert published_bit(http, second["sd_jwt"], clock) == 3
    assert published_bit(http, successor["sd_jwt"], clock) == 0

    # Nothing else is set: one revoked and one superseded entry in the whole list.
    uri, _ = status_reference(first["sd_jwt"])
    raw = published_list(http, uri, clock)[1]
    entries = [bit(raw, i) for i in range(len(raw) * 4)]
    assert sorted(value for value in entries if value) == [1, 3]


def test_list_token_follows_the_status_list_format(dept_client, clock):
    issued = issue(dept_client)
    uri, _ = status_reference(issued["sd_jwt"])
    assert re.fullmatch(rf"{PUBLIC_URL}/status-lists/{SAMR}/\d+", uri)
    claims, raw = published_list(dept_client.http, uri, clock)
    assert claims["iss"] == f"{PUBLIC_URL}/issuers/{SAMR}"
    assert claims["exp"] - claims["iat"] == claims["ttl"]
    assert len(raw) * 4 >= 1 << 16  # a large list: membership reveals little


def test_list_is_served_with_a_strong_etag_and_answers_304(dept_client):
    uri, _ = status_reference(issue(dept_client)["sd_jwt"])
    path = uri.removeprefix(PUBLIC_URL)
    first = dept_client.http.get(path)
    etag = first.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")

    again = dept_client.http.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.get_data() == b""
    assert again.headers["ETag"] == etag

    other = dept_client.http.get(path, headers={"If-None-Match": '"something-else"'})
    assert other.status_code == 200 and other.get_data() == first.get_data()


def test_a_status_change_changes_the_etag(dept_client):
    issued = issue(dept_client)
    path = status_reference(issued["sd_jwt"])[0].removeprefix(PUBLIC_URL)
    etag = dept_client.http.get(path).headers["ETag"]
    change(dept_client, issued["identifier"], "suspend", {"reason": "核查中"})
    after = dept_client.http.get(path, headers={"If-None-Match": etag})
    assert after.status_code == 200
    assert after.headers["ETag"] != etag


def test_cache_control_is_public_and_at_most_half_the_ttl(dept_client, clock):
    uri, _ = status_reference(issue(dept_client)["sd_jwt"])
    response = dept_client.http.get(uri.removeprefix(PUBLIC_URL))
    match = re.fullmatch(r"public, max-age=(\d+)", response.headers["Cache-Control"])
    assert match, response.headers["Cache-Control"]
    claims, _ = published_list(dept_client.http, uri, clock)
    assert 0 < int(match.group(1)) <= claims["ttl"] // 2


def test_the_signed_token_is_cached_until_a_change_or_half_its_ttl(app, dept_client, clock):
    issued = issue(dept_client)
    path = status_reference(issued["sd_jwt"])[0].removeprefix(PUBLIC_URL)
    token = dept_client.http.get(path).get_data(as_text=True)
    with app.app_context():  # the GET's one commit stored it
        assert db.session.scalars(select(StatusList.token)).one() == token
    # ES256 signatures are randomised: the same token means it was not signed again.
    assert dept_client.http.get(path).get_data(as_text=True) == token
    ttl = jwt.decode(token, options={"verify_signature": False})["ttl"]
    clock.advance(seconds=ttl // 2 + 1)
    renewed = dept_client.http.get(path).get_data(as_text=True)
    assert renewed != token
    assert jwt.decode(renewed, options={"verify_signature": False})["iat"] == int(clock().timestamp())


def test_an_issuer_holding_the_list_does_not_block_the_public_endpoint(app, dept_client):
    """A batch import keeps the list row locked until it commits; readers get a token meanwhile, uncached."""
    uri, _ = status_reference(issue(dept_client)["sd_jwt"])
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("row locks: PostgreSQL only (SQLite has one writer at a time)")
        with db.engine.connect() as issuer, ThreadPoolExecutor(1) as pool:
            issuer.execute(update(StatusList).values(revision=StatusList.revision + 1))  # what SlotAllocator does
            pending = pool.submit(dept_client.http.get, uri.removeprefix(PUBLIC_URL))
            try:
                response = pending.result(timeout=10)
            finally:
                issuer.rollback()
        assert response.status_code == 200
        assert db.session.scalars(select(StatusList.token)).one() is None


def test_a_running_batch_import_does_not_hold_up_revocations_in_its_list(app, dept_client, clock):
    """A batch's slot allocator (PostgreSQL) holds the list row only during one of the batch's short transactions:
    a revocation meanwhile commits before the batch ends, and the batch's own end marks the list's token stale."""
    first = issue(dept_client)
    uri, index = status_reference(first["sd_jwt"])
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("row locks: PostgreSQL only (SQLite has one writer at a time)")
        department = get_department(db.session, SAMR)
        revision = db.session.scalar(select(StatusList.revision))
        db.session.rollback()
        with db.engine.connect() as connection, ThreadPoolExecutor(1) as pool:
            from sqlalchemy.orm import Session

            batch = Session(bind=connection)
            allocator = status_lists.SlotAllocator(batch, batch.merge(department), clock(), expected=1000)
            allocator.begin_transaction()
            slots = [allocator.take() for _ in range(50)]  # a batch under way: one of its transactions
            allocator.flush()
            assert {status_list.list_number for status_list, _ in slots} == {1}
            pending = pool.submit(change, dept_client, first["identifier"], "revoke", {"reason": "吊销"})
            try:
                batch.commit()  # the batch's transaction ends; its next ones come later
                revoked = pending.result(timeout=10)  # before: waited for the whole batch's row lock
                allocator.begin_transaction()
                allocator.finish()
                batch.commit()
            finally:
                batch.close()
        assert revoked["status"] == "revoked"
        status_list = db.session.scalars(select(StatusList)).one()
        assert status_list.revision == revision + 2  # the revocation's bump, then the batch's at its end
        assert status_list.allocated == 1 + 50
    _, packed = published_list(dept_client.http, uri, clock)
    assert status_lists.decode_value(packed, index) == 1  # the published token shows the revocation


@pytest.mark.parametrize("path", [
    f"/status-lists/{SAMR}/99",  # no such list
    f"/status-lists/{CIVIL_AFFAIRS}/1",  # a department that has issued nothing yet
    "/status-lists/91411502000000000X/1",  # no such department
    "/status-lists/not-a-code/1",
    f"/status-lists/{SAMR}/0",
    f"/status-lists/{SAMR}/abc",
    f"/status-lists/{SAMR}/99999999999999999999999",
    "/status-lists/%00/1",
])
def test_unknown_issuer_or_list_is_a_404_in_the_error_shape(dept_client, path):
    issue(dept_client)
    response = dept_client.http.get(path)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] in {"status_list_not_found", "not_found"}


def test_status_index_allocation_does_not_reveal_issuance_order(dept_client):
    indexes = [status_reference(issue(dept_client)["sd_jwt"])[1] for _ in range(20)]
    assert len(set(indexes)) == len(indexes)
    assert indexes != sorted(indexes), "indexes increase with issuance order"
    gaps = {b - a for a, b in itertools.pairwise(indexes)}
    assert gaps != {1}, "indexes are adjacent"
    assert max(indexes) - min(indexes) > 1000


def test_openapi_documents_the_status_list_media_type(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/status-lists/{issuer}/{list}"]["get"]
    assert MEDIA_TYPE in operation["responses"]["200"]["content"]
    assert not operation.get("security")  # public: no bearer token


def test_a_bulk_allocator_hands_out_distinct_random_slots_and_opens_a_new_list_when_full(app, dept_client, clock,
                                                                                        monkeypatch):
    """A batch draws random free slots, never one already used, and moves on at the fill limit (3/4 of a list)."""
    monkeypatch.setattr(status_lists, "LIST_SIZE", 64)
    monkeypatch.setattr(status_lists, "FILL_LIMIT", 48)
    used = {status_reference(issue(dept_client)["sd_jwt"])[1] for _ in range(5)}  # single issues probe
    with app.app_context():
        bulk = status_lists.SlotAllocator(db.session, get_department(db.session, SAMR), clock(), expected=100)
        slots = [bulk.take() for _ in range(100)]
        bulk.finish()
        by_list: dict[int, list[int]] = {}
        for status_list, index in slots:
            by_list.setdefault(status_list.list_number, []).append(index)
        first_list, second_list, third_list = by_list[1], by_list[2], by_list[3]
        assert len(first_list) == 48 - 5 and len(second_list) == 48 and len(third_list) == 100 - 43 - 48
        assert not used & set(first_list) and len(used | set(first_list)) == 48  # no slot handed out twice
        assert len(set(second_list)) == 48 and all(0 <= i < 64 for i in second_list)
        assert second_list != sorted(second_list) and second_list != sorted(second_list, reverse=True)
        lists = db.session.scalars(select(StatusList).order_by(StatusList.list_number)).all()
        assert [(s.list_number, s.allocated) for s in lists] == [(1, 48), (2, 48), (3, 9)]
        db.session.rollback()
