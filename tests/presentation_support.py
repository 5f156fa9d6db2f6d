"""Helpers for presentations to departments: SD-JWTs with a KB-JWT signed by the platform-held wallet key."""

from __future__ import annotations

import secrets
from typing import Any

from flask_openapi3 import OpenAPI

from backend.crypto.sdjwt import key_binding_jwt
from backend.extensions import db
from backend.keys.keystore import PURPOSE_WALLET, LocalKeyStore
from tests.conftest import DeptClient, FakeClock


def with_key_binding(app: OpenAPI, presentation: str, *, aud: str, nonce: str, iat: int,
                     purpose: str = PURPOSE_WALLET, typ: str | None = None, hashed: str | None = None) -> str:
    """Append a KB-JWT signed by the platform-held wallet key (or another platform key, to test refusal)."""
    with app.app_context():
        keys = LocalKeyStore(db.session(), app.config["ECERT_MASTER_KEY"])
        key = keys.active_key(purpose)

        def sign(payload: dict[str, Any], headers: dict[str, Any]) -> str:
            return keys.sign_jwt(key, payload, {**headers, **({"typ": typ} if typ else {})})

        kb = key_binding_jwt(sign, presentation_without_kb=hashed or presentation, audience=aud, nonce=nonce, iat=iat)
    return presentation + kb


def presented_to(app: OpenAPI, dept: DeptClient, clock: FakeClock, presentation: str,
                 nonce: str | None = None) -> str:
    """`presentation` (ending in "~") as the holder's wallet presents it to `dept` now: a fresh KB-JWT each time."""
    return with_key_binding(app, presentation, aud=dept.client_id, nonce=nonce or secrets.token_urlsafe(12),
                            iat=int(clock().timestamp()))
