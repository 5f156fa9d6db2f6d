"""Callbacks to the department after a decision: allow-listed URLs only, signed with the platform key (verifiable
with /.well-known/jwks.json), delivered after the commit, retried with backoff by `flask jobs callbacks`, never
redirected."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest

from backend.adapters.callbacks import (
    CALLBACK_TYP,
    SIGNATURE_HEADER,
    CallbackUrlRefused,
    check_callback_url,
    normalise_allowlist_entry,
)
from tests.conftest import SAMR
from tests.factories import BUSINESS_LICENCE, company_code
from tests.sharing.access_request_support import (
    Asker,
    Receiver,
    allow_callbacks,
    answer,
    ask_body,
    start_receiver,
    stored_request,
)
from tests.support import Department, error_of, public_id_of

LICENCE_ONLY = [{"type_code": BUSINESS_LICENCE, "fields": ["company_name", "uscc"]}]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from start_receiver()


@pytest.fixture
def callback_asker(app: Any, make_dept_client: Any, receiver: Receiver) -> Asker:
    dept = make_dept_client(SAMR, scopes=("request", "redeem"))
    allow_callbacks(app, dept, f"{receiver.base}/ecert")
    return Asker(dept)


@pytest.fixture
def licence_representative(app: Any, login: Any, samr: Department) -> tuple[Any, str]:
    """(citizen, licence id): a citizen representing a company that holds a business licence (level 1: no step-up)."""
    company = company_code()
    citizen = login(companies=[{"code": company, "name": "信阳毛尖茶业有限公司"}])
    return citizen, public_id_of(app, samr.issue_to_company(company))


def _jwks_key(http: Any, kid: str) -> Any:
    keys = http.get("/.well-known/jwks.json").get_json()["keys"]
    return jwt.PyJWK(next(key for key in keys if key["kid"] == kid)).key


def verify_callback(http: Any, received: Any, client_id: str) -> dict[str, Any]:
    """What a department's system does: verify the JWT with the published JWKS, then bind it to the body."""
    token = received.headers[SIGNATURE_HEADER]
    header = jwt.get_unverified_header(token)
    assert header["typ"] == CALLBACK_TYP
    claims = jwt.decode(token, _jwks_key(http, header["kid"]), algorithms=[header["alg"]], audience=client_id,
                        options={"verify_exp": False, "verify_iat": False})
    digest = base64.urlsafe_b64encode(hashlib.sha256(received.body).digest()).decode().rstrip("=")
    assert claims["body_sha256"] == digest
    body = json.loads(received.body)
    assert {key: claims[key] for key in body} == body
    return dict(body)


# -- the allow-list -------------------------------------------------------------------------------------------------

def test_a_callback_url_outside_the_allow_list_is_refused_at_creation(callback_asker, receiver, app):
    for url in (f"{receiver.base}/other", f"{receiver.base}/ecertx", "http://127.0.0.2:1/ecert",
                f"{receiver.base}/ecert/../admin", f"{receiver.base}/ecert/%2e%2e/admin", "ftp://example.cn/ecert",
                f"http://user@{receiver.base.removeprefix('http://')}/ecert"):
        error = error_of(callback_asker.post(ask_body(callback_url=url)), 422, "callback_url_not_allowed")
        assert error["details"]["fields"][0]["field"] == "callback_url", url
    assert callback_asker.post(ask_body(callback_url=f"{receiver.base}/ecert/cb?case=1")).status_code == 201


def test_a_client_without_an_allow_list_cannot_name_a_callback(make_dept_client, receiver):
    bare = Asker(make_dept_client(SAMR, scopes=("request",)))
    error = error_of(bare.post(ask_body(callback_url=f"{receiver.base}/ecert")), 422, "callback_url_not_allowed")
    assert error["details"]["fields"][0]["reason"] == "not_in_allowlist"


@pytest.mark.parametrize(("url", "allowed"), [
    ("https://dept.example.cn/ecert", True),
    ("https://dept.example.cn/ecert/", True),
    ("https://DEPT.example.cn:443/ecert/cb", True),
    ("https://dept.example.cn/ecert/cb?x=1", True),
    ("https://dept.example.cn/ecertx", False),
    ("https://dept.example.cn/", False),
    ("https://dept.example.cn:8443/ecert", False),
    ("https://dept.example.cn.evil.cn/ecert", False),
    ("https://evil.cn/ecert#https://dept.example.cn/ecert", False),
    ("https://dept.example.cn/ecert/./x", False),
    ("https://dept.example.cn/ecert%2f..%2fadmin", False),
    ("http://dept.example.cn/ecert", False),
])
def test_the_allow_list_matches_origin_and_path_prefix_on_segment_boundaries(url, allowed):
    def check() -> str:
        return check_callback_url(url, ["https://dept.example.cn/ecert"], allow_http=False)

    if allowed:
        assert check() == url
    else:
        with pytest.raises(CallbackUrlRefused):
            check()


def test_http_is_refused_in_production_for_entries_and_urls():
    with pytest.raises(CallbackUrlRefused, match="https_required"):
        normalise_allowlist_entry("http://dept.example.cn/ecert", allow_http=False)
    with pytest.raises(CallbackUrlRefused, match="https_required"):
        check_callback_url("http://dept.example.cn/ecert", ["http://dept.example.cn/ecert"], allow_http=False)
    assert normalise_allowlist_entry("HTTPS://Dept.Example.CN:443/ecert", allow_http=False) \
        == "https://dept.example.cn/ecert"


def test_the_operator_sets_the_allow_list_with_the_cli(runner, make_dept_client, app):
    dept = make_dept_client(SAMR, scopes=("request",))
    result = runner.invoke(args=["clients", "callbacks", dept.client_id, "https://dept.example.cn/ecert/"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "https://dept.example.cn/ecert/"
    result = runner.invoke(args=["clients", "callbacks", dept.client_id, "https://dept.example.cn/x?token=1"])
    assert result.exit_code == 1 and "invalid_callback_allowlist" in result.output


# -- delivery -------------------------------------------------------------------------------------------------------

def test_the_decision_is_posted_after_the_commit_and_its_signature_verifies_against_jwks(
        callback_asker, receiver, licence_representative, app, client):
    citizen, licence = licence_representative
    request_id = callback_asker.ask(wanted=LICENCE_ONLY, callback_url=f"{receiver.base}/ecert/cb")["id"]
    assert receiver.received == []
    response = answer(citizen, request_id, "approve", [licence])
    assert response.status_code == 200, response.get_json()
    assert len(receiver.received) == 1 and receiver.received[0].path == "/ecert/cb"
    body = verify_callback(client, receiver.received[0], callback_asker.dept.client_id)
    assert body == {"request_id": request_id, "status": "approved", "grant_id": response.get_json()["grant_id"],
                    "decided_at": response.get_json()["decided_at"]}
    row = stored_request(app, request_id)
    assert row.callback_delivered_at is not None and row.callback_next_at is None and row.callback_attempts == 1
    assert callback_asker.poll(request_id).get_json()["callback_delivered_at"] is not None


def test_a_signature_for_another_client_does_not_verify(callback_asker, receiver, licence_representative, client):
    citizen, _ = licence_representative
    request_id = callback_asker.ask(wanted=LICENCE_ONLY, callback_url=f"{receiver.base}/ecert")["id"]
    answer(citizen, request_id, "decline")
    with pytest.raises(jwt.InvalidAudienceError):
        verify_callback(client, receiver.received[0], "dc_someone_else")
    tampered = type(receiver.received[0])(receiver.received[0].path, receiver.received[0].headers,
                                          receiver.received[0].body.replace(b"declined", b"approved"))
    with pytest.raises(AssertionError):
        verify_callback(client, tampered, callback_asker.dept.client_id)


def test_a_decline_is_posted_without_a_grant(callback_asker, receiver, licence_representative, client):
    citizen, _ = licence_representative
    request_id = callback_asker.ask(wanted=LICENCE_ONLY, callback_url=f"{receiver.base}/ecert")["id"]
    answer(citizen, request_id, "decline")
    body = verify_callback(client, receiver.received[0], callback_asker.dept.client_id)
    assert body["status"] == "declined" and "grant_id" not in body


def test_a_failed_callback_is_retried_by_the_job_with_backoff_and_delivered_once(
        callback_asker, receiver, licence_representative, app, runner, clock, client):
    citizen, licence = licence_representative
    request_id = callback_asker.ask(wanted=LICENCE_ONLY, callback_url=f"{receiver.base}/ecert")["id"]
    receiver.status = 503
    assert answer(citizen, request_id, "approve", [licence]).status_code == 200  # the citizen is not held up
    row = stored_request(app, request_id)
    assert row.callback_attempts == 1 and row.callback_delivered_at is None
    assert row.callback_next_at == clock() + timedelta(seconds=30)
    receiver.status = 200
    result = runner.invoke(args=["jobs", "callbacks"])
    assert result.exit_code == 0 and "0 callback(s) delivered" in result.output  # not due yet
    assert len(receiver.received) == 1
    clock.advance(seconds=30)
    result = runner.invoke(args=["jobs", "callbacks"])
    assert result.exit_code == 0 and "1 callback(s) delivered" in result.output, result.output
    assert len(receiver.received) == 2
    # The retry carries the same body: the receiver may deduplicate by request_id.
    assert receiver.received[0].body == receiver.received[1].body
    verify_callback(client, receiver.received[1], callback_asker.dept.client_id)
    clock.advance(hours=2)
    assert "0 callback(s) delivered" in runner.invoke(args=["jobs", "callbacks"]).output
    assert len(receiver.received) == 2


def test_redirects_are_never_followed(callback_asker, receiver, licence_representative, app):
    citizen, licence = licence_representative
    receiver.status, receiver.location = 302, f"{receiver.base}/ecert/elsewhere"
    request_id = callback_asker.ask(wanted=LICENCE_ONLY, callback_url=f"{receiver.base}/ecert/cb")["id"]
    answer(citizen, request_id, "approve", [licence])
    assert [item.path for item in receiver.received] == ["/ecert/cb"]
    row = stored_request(app, request_id)
    assert row.callback_delivered_at is None and row.callback_next_at is not None


@pytest.mark.parametrize("app_settings", [{"ECERT_CALLBACK_MAX_ATTEMPTS": 2}])
def test_a_callback_is_given_up_after_the_last_attempt(callback_asker, receiver, licence_representative, app, runner,
                                                       clock):
    citizen, licence = licence_representative
    receiver.status = 500
    request_id = callback_asker.ask(wanted=LICENCE_ONLY, callback_url=f"{receiver.base}/ecert")["id"]
    answer(citizen, request_id, "approve", [licence])
    clock.advance(minutes=1)
    assert "1 given up" in runner.invoke(args=["jobs", "callbacks"]).output
    row = stored_request(app, request_id)
    assert row.callback_attempts == 2 and row.callback_next_at is None and row.callback_delivered_at is None
    clock.advance(hours=5)
    runner.invoke(args=["jobs", "callbacks"])
    assert len(receiver.received) == 2


def test_an_unreachable_receiver_leaves_the_callback_for_the_job(callback_asker, receiver, licence_representative, app):
    citizen, licence = licence_representative
    request_id = callback_asker.ask(wanted=LICENCE_ONLY, callback_url=f"{receiver.base}/ecert")["id"]
    receiver.server.shutdown()
    receiver.server.server_close()
    assert answer(citizen, request_id, "approve", [licence]).status_code == 200
    row = stored_request(app, request_id)
    assert row.status == "approved" and row.callback_next_at is not None and row.callback_delivered_at is None
