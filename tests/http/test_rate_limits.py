"""Rate limits (Flask-Limiter): 429 in the error shape with Retry-After; shared through Redis when configured."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from backend.app import create_app
from backend.core.rate_limit_storage import SweptMemoryStorage
from tests.conftest import _settings


@pytest.fixture
def app_settings():
    return {"RATELIMIT_ENABLED": True, "ECERT_RATELIMIT_TOKEN": "3 per minute",
            "ECERT_RATELIMIT_DEFAULT": "5 per minute"}


def token_request(client):
    return client.post("/gov/v1/oauth/token", data={
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": "not.a.jwt"})


def test_token_endpoint_answers_429_with_retry_after_past_its_limit(client):
    statuses = [token_request(client).status_code for _ in range(4)]
    assert statuses[:3] == [401, 401, 401]
    response = token_request(client)
    assert response.status_code == 429
    assert response.get_json()["error"]["code"] == "rate_limited"
    assert 0 < int(response.headers["Retry-After"]) <= 60


def test_login_nonces_are_limited_like_logins(client):
    # Unauthenticated and writing a row each: the login limit (3 here), not the default (5).
    statuses = [client.post("/api/v1/auth/nonce").status_code for _ in range(4)]
    assert 429 not in statuses[:3] and statuses[3] == 429


def test_default_limit_applies_to_other_endpoints(client):
    for _ in range(5):
        assert client.get("/.well-known/jwks.json").status_code == 200
    response = client.get("/.well-known/jwks.json")
    assert response.status_code == 429
    assert "Retry-After" in response.headers


def test_only_a_limited_request_is_told_to_retry_after_the_limits_reset(client):
    allowed = client.get("/.well-known/jwks.json")
    assert "Retry-After" not in allowed.headers  # a client told to back off on every answer would do so
    assert int(allowed.headers["X-RateLimit-Remaining"]) == 4 and "X-RateLimit-Reset" in allowed.headers
    for _ in range(4):
        client.get("/.well-known/jwks.json")
    assert 0 < int(client.get("/.well-known/jwks.json").headers["Retry-After"]) <= 60


def test_in_process_limits_start_no_thread_per_request(client, monkeypatch):
    # limits' MemoryStorage started a timer thread on about every other request; ours sweeps inline.
    started = []
    monkeypatch.setattr(threading.Thread, "start", lambda thread: started.append(thread))
    assert [client.get("/.well-known/jwks.json").status_code for _ in range(5)] == [200] * 5
    assert client.get("/.well-known/jwks.json").status_code == 429  # still counted and enforced
    assert started == []


def test_in_process_storage_frees_expired_counters_when_it_sweeps():
    storage = SweptMemoryStorage("swept-memory://")
    storage.incr("stale", expiry=-1)  # expired at once
    storage.incr("fresh", expiry=60)
    assert "stale" in storage.storage  # not swept yet: sweeps are at most every SWEEP_SECONDS
    storage._next_sweep = 0.0
    storage.incr("fresh", expiry=60)
    assert "stale" not in storage.storage and storage.get("fresh") == 2


def test_health_checks_are_never_limited(client):
    assert all(client.get("/healthz").status_code == 200 for _ in range(10))


@pytest.mark.skipif(not os.environ.get("ECERT_TEST_REDIS_URL"), reason="ECERT_TEST_REDIS_URL not set")
def test_limits_are_shared_between_app_servers_through_redis(_migrated, tmp_path):
    # Two app instances stand for two servers behind the load balancer; a unique key prefix isolates the run.
    settings = _settings(_migrated, tmp_path / "instance", RATELIMIT_ENABLED=True,
                         ECERT_REDIS_URL=os.environ["ECERT_TEST_REDIS_URL"], ECERT_RATELIMIT_TOKEN="4 per minute",
                         RATELIMIT_KEY_PREFIX=f"test-{uuid.uuid4().hex}")
    first, second = create_app(settings).test_client(), create_app(settings).test_client()
    assert [token_request(c).status_code for c in (first, second, first, second)] == [401] * 4
    assert token_request(first).status_code == 429
    assert token_request(second).status_code == 429
