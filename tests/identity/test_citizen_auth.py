"""Citizen login (dev provider), rotating refresh tokens, logout, /me."""

from __future__ import annotations

from backend.extensions import db
from backend.models import AuditEvent, AuthSession


def test_dev_login_answers_a_short_access_token_and_a_refresh_token(login, client):
    citizen = login()
    me = client.get("/api/v1/me", headers=citizen.headers)
    assert me.status_code == 200
    body = me.get_json()
    assert body["name"] == "张伟"
    assert citizen.id_number not in str(body)
    assert body["id_number_masked"].startswith(citizen.id_number[:3])


def test_refresh_rotates_and_reuse_revokes_the_whole_family(app, login, client):
    citizen = login()
    first = client.post("/api/v1/auth/refresh", json={"refresh_token": citizen.refresh_token})
    assert first.status_code == 200
    second_refresh = first.get_json()["refresh_token"]
    assert second_refresh != citizen.refresh_token
    reused = client.post("/api/v1/auth/refresh", json={"refresh_token": citizen.refresh_token})
    assert reused.status_code == 401
    assert reused.get_json()["error"]["code"] == "refresh_token_reused"
    # The family is gone: the newest refresh token and the access tokens stop working too.
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": second_refresh}).status_code == 401
    new_access = first.get_json()["access_token"]
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {new_access}"}).status_code == 401
    with app.app_context():
        assert db.session.scalar(db.select(AuthSession.revoked_reason)) == "refresh_token_reuse"
        actions = db.session.scalars(db.select(AuditEvent.action)).all()
        assert "citizen.refresh_token_reused" in actions


def test_logout_ends_the_session_at_once(login, client):
    citizen = login()
    assert client.post("/api/v1/auth/logout", headers=citizen.headers).status_code == 204
    assert client.get("/api/v1/me", headers=citizen.headers).status_code == 401
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": citizen.refresh_token}).status_code == 401


def test_access_tokens_expire_within_fifteen_minutes(login, client, clock):
    citizen = login()
    clock.advance(minutes=15)
    response = client.get("/api/v1/me", headers=citizen.headers)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_token"
