"""Access tokens are verified once per app and remembered (backend.keys.platform_jws); what can change is still
checked on every request: expiry, a disabled client, a revoked session. A remembered token never vouches for another
text, purpose or header type."""

from __future__ import annotations

import base64
import json

import pytest

from backend.core.context import keystore, verified_tokens
from backend.crypto import jws
from backend.extensions import db
from backend.identity.clients import ACCESS_TOKEN_TYP, set_client_active
from backend.kernel.actors import Actor
from backend.keys import platform_jws
from backend.keys.keystore import PURPOSE_PLATFORM, PURPOSE_WALLET

CATALOG = "/gov/v1/catalog/types"


def _with_payload(token: str, **changes: object) -> str:
    """The token with its payload changed and the original signature kept (a forgery)."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{forged}.{signature}"


def test_a_remembered_client_token_stops_when_the_client_is_disabled(app, client, dept_client, clock):
    headers = dept_client.headers("catalog")
    assert client.get(CATALOG, headers=headers).status_code == 200
    assert client.get(CATALOG, headers=headers).status_code == 200  # the second time from the memo
    with app.app_context():
        set_client_active(db.session, dept_client.client_id, False, actor=Actor.operator("test"), now=clock())
        db.session.commit()
    response = client.get(CATALOG, headers=headers)
    assert response.status_code == 401 and response.get_json()["error"]["code"] == "invalid_token"


def test_a_remembered_client_token_stops_at_its_expiry(client, dept_client, clock):
    headers = dept_client.headers("catalog")
    assert client.get(CATALOG, headers=headers).status_code == 200
    clock.advance(hours=2)
    assert client.get(CATALOG, headers=headers).status_code == 401


def test_a_forged_payload_is_refused_after_the_genuine_token_was_remembered(client, dept_client):
    token = dept_client.token("catalog")
    assert client.get(CATALOG, headers={"Authorization": f"Bearer {token}"}).status_code == 200
    forged = _with_payload(token, scope="catalog issue verify redeem request")
    response = client.get(CATALOG, headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401


def test_a_remembered_citizen_token_stops_at_logout_and_at_expiry(client, login, clock):
    citizen = login()
    assert client.get("/api/v1/me", headers=citizen.headers).status_code == 200
    assert client.get("/api/v1/me", headers=citizen.headers).status_code == 200
    clock.advance(hours=1)
    assert client.get("/api/v1/me", headers=citizen.headers).status_code == 401
    other = login(name="李娜")
    assert client.get("/api/v1/me", headers=other.headers).status_code == 200
    assert client.post("/api/v1/auth/logout", headers=other.headers).status_code == 204
    assert client.get("/api/v1/me", headers=other.headers).status_code == 401


def test_the_memo_answers_only_for_the_purpose_and_type_it_verified(app, dept_client):
    token = dept_client.token("catalog")
    with app.test_request_context():
        memo = verified_tokens()
        parsed = platform_jws.verify(token, typ=ACCESS_TOKEN_TYP, purpose=PURPOSE_PLATFORM, keys=keystore(), memo=memo)
        assert memo.get(token, PURPOSE_PLATFORM) is parsed
        assert memo.get(token, PURPOSE_WALLET) is None
        with pytest.raises(jws.JWSError):  # checked afresh: the key is not a wallet key
            platform_jws.verify(token, typ=ACCESS_TOKEN_TYP, purpose=PURPOSE_WALLET, keys=keystore(), memo=memo)
        with pytest.raises(jws.JWSError):  # nor is the header type another one
            platform_jws.verify(token, typ="kb+jwt", purpose=PURPOSE_PLATFORM, keys=keystore(), memo=memo)


def test_refused_tokens_are_not_remembered_and_a_full_memo_starts_afresh(app, dept_client):
    token = dept_client.token("catalog")
    with app.test_request_context():
        memo = platform_jws.VerifiedTokens(capacity=2)
        forged = _with_payload(token, scope="everything")
        with pytest.raises(jws.JWSError):
            platform_jws.verify(forged, typ=ACCESS_TOKEN_TYP, purpose=PURPOSE_PLATFORM, keys=keystore(), memo=memo)
        assert memo.get(forged, PURPOSE_PLATFORM) is None
        tokens = [token, dept_client.token("catalog"), dept_client.token("issue")]
        for each in tokens:
            platform_jws.verify(each, typ=ACCESS_TOKEN_TYP, purpose=PURPOSE_PLATFORM, keys=keystore(), memo=memo)
        assert memo.get(tokens[2], PURPOSE_PLATFORM) is not None
        assert memo.get(tokens[0], PURPOSE_PLATFORM) is None  # emptied when it was full
