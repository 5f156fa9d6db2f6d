"""Department clients: the token endpoint (RFC 7523 private_key_jwt), bearer tokens and scope checks on /gov/v1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm
from sqlalchemy import select

from backend.catalog.loader import get_department
from backend.core.context import app_caches, keystore
from backend.crypto.jwk import public_jwk
from backend.extensions import db
from backend.keys.keystore import PURPOSE_CERTIFICATE, PURPOSE_WALLET
from backend.models import AuditEvent
from tests.conftest import SAMR, DeptClient
from tests.support import detached_all

TOKEN_URL = "/gov/v1/oauth/token"
CATALOG_URL = "/gov/v1/catalog/types"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    """The one error shape (DESIGN §7) with the given status and code; returns the error body."""
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert set(error) <= {"code", "message", "details"}
    return error


def assert_refused(response: Any, reason: str | None = None) -> None:
    """401 invalid_client; when given, `reason` names why the assertion was refused."""
    error = assert_error(response, 401, "invalid_client")
    if reason is not None:
        assert error["details"]["reason"] == reason


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unsigned_jwt(claims: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """A JWT with `alg: none` and an empty signature, built by hand."""
    head = b64url(json.dumps(header or {"alg": "none", "typ": "JWT"}).encode())
    return f"{head}.{b64url(json.dumps(claims).encode())}."


def hs256_jwt(claims: dict[str, Any], key: bytes) -> str:
    """An HS256 JWT built by hand (PyJWT refuses keys that look like public keys, as it should)."""
    header = {"alg": "HS256", "typ": "JWT"}
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
    return f"{signing_input}.{b64url(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


def claims_of(dept_client: DeptClient, **overrides: Any) -> dict[str, Any]:
    """The claims of a fresh valid assertion (decoded without verification), with overrides."""
    return {**jwt.decode(dept_client.assertion(), options={"verify_signature": False}), **overrides}


def catalog_with(http: Any, token: str) -> Any:
    return http.get(CATALOG_URL, headers={"Authorization": f"Bearer {token}"})


def with_one_character_changed(token: str, segment: int) -> str:
    parts = token.split(".")
    middle = len(parts[segment]) // 2
    char = parts[segment][middle]
    parts[segment] = parts[segment][:middle] + ("B" if char == "A" else "A") + parts[segment][middle + 1:]
    return ".".join(parts)


def refused_audit_events(app: Any, client_id: str) -> list[AuditEvent]:
    return detached_all(app, select(AuditEvent).where(AuditEvent.action == "client.token_refused",
                                                      AuditEvent.object_id == client_id))


# --- token endpoint: successful exchanges -------------------------------------------------------------------------


def test_valid_assertion_yields_a_short_lived_bearer_token(dept_client):
    response = dept_client.token_response()

    assert response.status_code == 200
    body = response.get_json()
    assert body["token_type"] == "Bearer"
    assert body["access_token"]
    assert 0 < body["expires_in"] <= 900
    assert body["scope"].split() == sorted(dept_client.scopes)
    assert response.headers["Cache-Control"] == "no-store"


def test_access_token_names_the_client_and_its_department(dept_client):
    claims = jwt.decode(dept_client.token(), options={"verify_signature": False})

    assert claims["sub"] == dept_client.client_id
    assert claims["dept"] == SAMR
    assert claims["exp"] - claims["iat"] <= 900


def test_requesting_a_subset_scope_narrows_the_token(dept_client):
    response = dept_client.token_response(scope="verify")

    assert response.status_code == 200
    assert response.get_json()["scope"] == "verify"
    claims = jwt.decode(response.get_json()["access_token"], options={"verify_signature": False})
    assert claims["scope"] == "verify"


def test_requesting_a_scope_the_client_lacks_is_forbidden(dept_client):
    response = dept_client.token_response(scope="catalog stats")

    error = assert_error(response, 400, "invalid_scope")
    assert "stats" in error["message"]


def test_assertion_valid_for_exactly_five_minutes_is_accepted(dept_client, clock):
    issued = int(clock().timestamp())

    response = dept_client.token_response(dept_client.assertion(exp=issued + 300))

    assert response.status_code == 200


# --- token endpoint: refused assertions ---------------------------------------------------------------------------


def test_replayed_jti_is_refused(dept_client):
    assertion = dept_client.assertion()
    assert dept_client.token_response(assertion).status_code == 200

    assert_refused(dept_client.token_response(assertion), "replayed_jti")


def test_new_assertion_reusing_a_jti_is_refused(dept_client):
    dept_client.token_response(dept_client.assertion(jti="same-jti-0001"))

    assert_refused(dept_client.token_response(dept_client.assertion(jti="same-jti-0001")), "replayed_jti")


def test_expired_assertion_is_refused(dept_client, clock):
    now = int(clock().timestamp())

    assert_refused(dept_client.token_response(dept_client.assertion(iat=now - 180, exp=now - 60)), "expired")


def test_assertion_expires_on_the_platform_clock(dept_client, clock):
    assertion = dept_client.assertion()  # valid for 120 s
    clock.advance(seconds=121)

    assert_refused(dept_client.token_response(assertion), "expired")


def test_assertion_valid_for_more_than_five_minutes_is_refused(dept_client, clock):
    now = int(clock().timestamp())

    assert_refused(dept_client.token_response(dept_client.assertion(exp=now + 600)), "lifetime_too_long")


def test_assertion_for_another_audience_is_refused(dept_client):
    assertion = dept_client.assertion(aud="https://elsewhere.example/oauth/token")

    assert_refused(dept_client.token_response(assertion), "wrong_audience")


def test_assertion_from_an_unknown_client_is_refused(dept_client):
    assertion = dept_client.assertion(iss="dc_nobody", sub="dc_nobody")

    assert_refused(dept_client.token_response(assertion), "unknown_client")


def test_assertion_whose_sub_differs_from_iss_is_refused(dept_client, make_dept_client):
    other = make_dept_client(name="另一个系统")

    assert_refused(dept_client.token_response(dept_client.assertion(sub=other.client_id)), "sub_mismatch")


def test_assertion_without_jti_is_refused(dept_client):
    assert_refused(dept_client.token_response(dept_client.assertion(jti=None)), "missing_claim")


def test_assertion_with_a_too_short_jti_is_refused(dept_client):
    assert_refused(dept_client.token_response(dept_client.assertion(jti="abc")), "bad_jti")


def test_unsigned_alg_none_assertion_is_refused(dept_client):
    assertion = unsigned_jwt(claims_of(dept_client))

    assert_refused(dept_client.token_response(assertion), "unsupported_alg")


def test_hs256_assertion_is_refused(dept_client):
    assertion = jwt.encode(claims_of(dept_client), secrets.token_bytes(32), algorithm="HS256")

    assert_refused(dept_client.token_response(assertion), "unsupported_alg")


def test_hs256_assertion_keyed_with_the_public_key_is_refused(dept_client):
    """Algorithm confusion: an HMAC keyed with the client's public key must never verify."""
    public_pem = dept_client.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assertion = hs256_jwt(claims_of(dept_client), public_pem)

    assert_refused(dept_client.token_response(assertion), "unsupported_alg")


def test_assertion_signed_by_a_different_key_is_refused(dept_client):
    stranger = ec.generate_private_key(ec.SECP256R1())
    assertion = jwt.encode(claims_of(dept_client), stranger, algorithm="ES256")

    assert_refused(dept_client.token_response(assertion), "bad_signature")


def test_assertion_with_an_altered_claim_is_refused(dept_client):
    header, _, signature = dept_client.assertion().split(".")
    altered = b64url(json.dumps(claims_of(dept_client, scope="stats")).encode())

    assert_refused(dept_client.token_response(f"{header}.{altered}.{signature}"), "bad_signature")


def test_garbage_assertion_is_refused(dept_client):
    assert_refused(dept_client.token_response("this-is-not-a-jwt"))


def test_wrong_grant_type_is_rejected(dept_client):
    assert_error(dept_client.token_response(grant_type="password"), 422, "validation_failed")


def test_wrong_client_assertion_type_is_rejected(dept_client):
    saml = "urn:ietf:params:oauth:client-assertion-type:saml2-bearer"

    response = dept_client.token_response(client_assertion_type=saml)

    assert_error(response, 422, "validation_failed")


def test_unknown_form_field_is_rejected(dept_client):
    error = assert_error(dept_client.token_response(client_secret="hunter2"), 422, "validation_failed")

    assert any("client_secret" in f["field"] for f in error["details"]["fields"])


def test_missing_assertion_is_rejected(client, catalog):
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE}

    response = client.post(TOKEN_URL, data=form)

    assert_error(response, 422, "validation_failed")


def test_json_body_instead_of_a_form_is_a_client_error(dept_client):
    body = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": dept_client.assertion()}

    response = dept_client.http.post(TOKEN_URL, json=body)

    assert 400 <= response.status_code < 500
    assert response.get_json()["error"]["code"]


def test_malformed_json_body_is_a_client_error(client, catalog):
    response = client.post(TOKEN_URL, data="{not json", content_type="application/json")

    assert 400 <= response.status_code < 500
    assert response.get_json()["error"]["code"]


def test_refused_assertion_issues_no_token_and_uses_no_jti(dept_client, clock):
    """A refused attempt leaves nothing behind: the same jti still works in a valid assertion."""
    now = int(clock().timestamp())
    assert_refused(dept_client.token_response(dept_client.assertion(jti="jti-of-refused-1", aud="x")))

    assert dept_client.token_response(dept_client.assertion(jti="jti-of-refused-1", exp=now + 60)).status_code == 200


# --- audit --------------------------------------------------------------------------------------------------------


def test_refused_attempt_of_a_known_client_is_audited(app, dept_client, clock):
    now = int(clock().timestamp())
    assertion = dept_client.assertion(iat=now - 180, exp=now - 60)

    assert_refused(dept_client.token_response(assertion), "expired")

    events = refused_audit_events(app, dept_client.client_id)
    assert len(events) == 1
    assert events[0].outcome == "failure"
    assert events[0].details["reason"] == "expired"


def test_audit_of_a_refused_attempt_never_contains_the_assertion(app, dept_client):
    assertion = dept_client.assertion(aud="https://elsewhere.example/")

    dept_client.token_response(assertion)

    [event] = refused_audit_events(app, dept_client.client_id)
    recorded = json.dumps([event.details, event.object_id, event.actor_id], ensure_ascii=False)
    assert assertion not in recorded
    assert assertion.split(".")[2] not in recorded


def test_forged_unsigned_assertion_naming_a_known_client_is_audited(app, dept_client):
    dept_client.token_response(unsigned_jwt(claims_of(dept_client)))

    [event] = refused_audit_events(app, dept_client.client_id)
    assert event.outcome == "failure"
    assert event.details["reason"] == "unsupported_alg"


def test_issued_token_is_audited_without_the_token(app, dept_client):
    token = dept_client.token()

    with app.app_context():
        event = db.session.scalars(select(AuditEvent).where(AuditEvent.action == "client.token_issued")).one()
        assert event.outcome == "success"
        assert event.actor_id == dept_client.client_id
        assert token not in json.dumps(event.details)


# --- bearer tokens on /gov/v1 -------------------------------------------------------------------------------------


def test_valid_token_with_catalog_scope_reads_the_catalog(dept_client):
    response = catalog_with(dept_client.http, dept_client.token("catalog"))

    assert response.status_code == 200
    assert response.get_json()["items"]


def test_request_without_authorization_is_unauthorized(client, catalog):
    response = client.get(CATALOG_URL)

    assert_error(response, 401, "unauthorized")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_non_bearer_authorization_is_unauthorized(client, catalog):
    response = client.get(CATALOG_URL, headers={"Authorization": "Basic dXNlcjpwYXNz"})

    assert_error(response, 401, "unauthorized")
    assert "WWW-Authenticate" in response.headers


def test_token_without_the_catalog_scope_is_forbidden(dept_client):
    response = catalog_with(dept_client.http, dept_client.token("verify"))

    error = assert_error(response, 403, "insufficient_scope")
    assert error["details"]["required_scope"] == "catalog"
    assert 'error="insufficient_scope"' in response.headers["WWW-Authenticate"]


def test_access_token_works_until_it_expires(dept_client, clock):
    response = dept_client.token_response()
    token, expires_in = response.get_json()["access_token"], response.get_json()["expires_in"]

    clock.advance(seconds=expires_in - 1)
    assert catalog_with(dept_client.http, token).status_code == 200

    clock.advance(seconds=1)
    assert_error(catalog_with(dept_client.http, token), 401, "invalid_token")


@pytest.mark.parametrize("segment", [0, 1, 2], ids=["header", "payload", "signature"])
def test_access_token_with_one_character_changed_is_refused(dept_client, segment):
    token = with_one_character_changed(dept_client.token(), segment)

    response = catalog_with(dept_client.http, token)

    assert_error(response, 401, "invalid_token")
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_garbage_bearer_token_is_refused(client, catalog):
    response = client.get(CATALOG_URL, headers={"Authorization": "Bearer not.a.token"})

    assert_error(response, 401, "invalid_token")


def test_unsigned_access_token_is_refused(dept_client):
    claims = jwt.decode(dept_client.token(), options={"verify_signature": False})

    token = unsigned_jwt(claims, header={"alg": "none", "typ": "at+jwt"})

    assert_error(catalog_with(dept_client.http, token), 401, "invalid_token")


@pytest.mark.parametrize("purpose", [PURPOSE_CERTIFICATE, PURPOSE_WALLET])
def test_access_token_signed_by_a_non_platform_key_is_refused(app, dept_client, purpose):
    """Only the platform key mints access tokens; a department's (or the wallet's) key must not."""
    genuine = dept_client.token()
    claims = jwt.decode(genuine, options={"verify_signature": False})
    with app.app_context():
        store = keystore()
        owner = get_department(db.session, SAMR) if purpose == PURPOSE_CERTIFICATE else None
        forged = store.sign_jwt(store.active_key(purpose, owner), claims, headers={"typ": "at+jwt"})

    assert_error(catalog_with(dept_client.http, forged), 401, "invalid_token")


def test_access_token_for_another_audience_is_refused(app, dept_client):
    claims = {**jwt.decode(dept_client.token(), options={"verify_signature": False}), "aud": "ecert-citizen-api"}
    with app.app_context():
        store = keystore()
        forged = store.sign_jwt(store.active_key("platform"), claims, headers={"typ": "at+jwt"})

    assert_error(catalog_with(dept_client.http, forged), 401, "invalid_token")


def test_client_assertion_is_not_accepted_as_an_access_token(dept_client):
    assert_error(catalog_with(dept_client.http, dept_client.assertion()), 401, "invalid_token")


def test_disabled_client_loses_its_issued_token_at_once(dept_client, runner):
    token = dept_client.token("catalog")
    assert catalog_with(dept_client.http, token).status_code == 200

    result = runner.invoke(args=["clients", "disable", dept_client.client_id])

    assert result.exit_code == 0, result.output
    assert_error(catalog_with(dept_client.http, token), 401, "invalid_token")


def test_disabled_client_gets_no_new_token(app, dept_client, runner):
    runner.invoke(args=["clients", "disable", dept_client.client_id])

    assert_refused(dept_client.token_response(), "client_disabled")
    assert refused_audit_events(app, dept_client.client_id)[0].details["reason"] == "client_disabled"


def test_disabling_an_unknown_client_fails(runner, catalog):
    result = runner.invoke(args=["clients", "disable", "dc_nobody"])

    assert result.exit_code != 0
    assert "client_not_found" in result.output


# --- registering clients with the CLI -----------------------------------------------------------------------------


@pytest.fixture
def client_key(tmp_path: Path) -> tuple[ec.EllipticCurvePrivateKey, Path]:
    """A fresh client key pair; its public JWK written to a file for `clients add --jwk`."""
    private = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "client.jwk.json"
    path.write_text(json.dumps(public_jwk(private.public_key())))
    return private, path


def test_clients_add_prints_a_client_id_that_gets_a_token(runner, client, clock, catalog, client_key):
    private, jwk_path = client_key

    result = runner.invoke(args=["clients", "add", "--dept", SAMR, "--name", "市场监管业务系统",
                                 "--scope", "catalog", "--jwk", str(jwk_path)])

    assert result.exit_code == 0, result.output
    client_id = result.stdout.strip()
    assert client_id.startswith("dc_")
    registered = DeptClient(client_id, SAMR, private, client, clock, ["catalog"])
    response = registered.token_response()
    assert response.status_code == 200
    assert response.get_json()["scope"] == "catalog"
    assert catalog_with(client, response.get_json()["access_token"]).status_code == 200


def test_clients_add_with_an_unknown_department_fails(runner, catalog, client_key):
    _, jwk_path = client_key

    result = runner.invoke(args=["clients", "add", "--dept", "91411500MA00000000", "--name", "x",
                                 "--scope", "catalog", "--jwk", str(jwk_path)])

    assert result.exit_code != 0
    assert "department_not_found" in result.output


def test_clients_add_refuses_a_jwk_with_a_private_member(runner, catalog, tmp_path):
    private = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "private.jwk.json"
    path.write_text(ECAlgorithm.to_jwk(private))  # includes "d"
    assert '"d"' in path.read_text()

    result = runner.invoke(args=["clients", "add", "--dept", SAMR, "--name", "x", "--scope", "catalog",
                                 "--jwk", str(path)])

    assert result.exit_code != 0
    assert "invalid_jwk" in result.output or "private" in result.output


def test_clients_add_refuses_an_unknown_scope(runner, catalog, client_key):
    _, jwk_path = client_key

    result = runner.invoke(args=["clients", "add", "--dept", SAMR, "--name", "x", "--scope", "admin",
                                 "--jwk", str(jwk_path)])

    assert result.exit_code != 0


def test_an_assertion_with_a_list_of_audiences_is_refused(dept_client):
    assertion = dept_client.assertion(aud=["http://localhost/gov/v1/oauth/token", "https://elsewhere.example/token"])
    response = dept_client.token_response(assertion=assertion)
    assert_error(response, 401, "invalid_client")
    assert response.get_json()["error"]["details"]["reason"] == "wrong_audience"


@pytest.mark.parametrize("claims", [{"iat": "yesterday"}, {"jti": 12345678}])
def test_a_malformed_claim_is_reported_as_such_not_as_a_bad_signature(dept_client, claims):
    response = dept_client.token_response(assertion=dept_client.assertion(**claims))
    assert_error(response, 401, "invalid_client")
    assert response.get_json()["error"]["details"]["reason"] == "invalid_claims"


@pytest.mark.parametrize("claims", [{"iss": "dc_\x00evil", "sub": "dc_\x00evil"}, {"jti": "abc\x00defghij"}])
def test_nul_bytes_in_assertion_claims_are_refused_not_a_server_error(dept_client, claims):
    response = dept_client.token_response(assertion=dept_client.assertion(**claims))
    assert_error(response, 401, "invalid_client")


def test_number_like_form_values_stay_strings(dept_client):
    response = dept_client.token_response(assertion="0")
    assert_error(response, 401, "invalid_client")


def test_healthz_fails_when_the_master_key_cannot_open_the_platform_key(app, client, catalog):
    with app.app_context():
        app.config["ECERT_MASTER_KEY"] = b"\x01" * 32
        app_caches().keys.private_keys.clear()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "master_key_mismatch"


@pytest.mark.parametrize("exp", [float("nan"), float("inf"), True, "soon"])
def test_a_non_numeric_or_non_finite_exp_is_refused(dept_client, exp):
    # Signed by hand: PyJWT refuses to encode NaN, an attacker's library need not.
    claims = jwt.decode(dept_client.assertion(), options={"verify_signature": False})
    claims["exp"] = exp
    payload = jwt.utils.base64url_encode(json.dumps(claims, allow_nan=True).encode()).decode()
    header = jwt.utils.base64url_encode(b'{"alg":"ES256","typ":"JWT"}').decode()
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(f"{header}.{payload}".encode(), dept_client.private_key)
    token = f"{header}.{payload}.{jwt.utils.base64url_encode(signature).decode()}"
    response = dept_client.token_response(assertion=token)
    assert_error(response, 401, "invalid_client")
