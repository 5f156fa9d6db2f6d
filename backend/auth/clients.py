"""Bearer access tokens of department clients, checked on every /gov/v1 request before anything reads it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import current_app, g, request
from sqlalchemy import bindparam, select
from sqlalchemy.orm import joinedload

from backend.auth.access import declare
from backend.core.context import keystore, now, request_actor_context, verified_tokens
from backend.crypto import jws
from backend.errors import InsufficientScope, Unauthorized
from backend.extensions import db
from backend.identity.clients import ACCESS_TOKEN_AUDIENCE, ACCESS_TOKEN_TYP
from backend.kernel.actors import Actor
from backend.keys import platform_jws
from backend.keys.keystore import PURPOSE_PLATFORM
from backend.models import ApiClient

F = TypeVar("F", bound=Callable[..., Any])

BEARER_SECURITY: list[dict[str, list[str]]] = [{"clientBearer": []}]


def _bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("缺少 Bearer 访问令牌", headers={"WWW-Authenticate": 'Bearer realm="gov"'})
    return token.strip()


# Built once: building this statement (with its eager load) cost as much as running it, on every request.
_CLIENT_WITH_DEPARTMENT = (select(ApiClient).where(ApiClient.client_id == bindparam("client_id"))
                           .options(joinedload(ApiClient.department)))


def authenticate_client() -> tuple[ApiClient, set[str]]:
    token = _bearer_token()
    invalid = Unauthorized(
        "访问令牌无效或已过期", code="invalid_token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )
    try:
        # Signature and header checked once per token and remembered (backend.keys.platform_jws).
        parsed = platform_jws.verify(token, typ=ACCESS_TOKEN_TYP, purpose=PURPOSE_PLATFORM, keys=keystore(),
                                     memo=verified_tokens())
    except jws.JWSError as exc:
        raise invalid from exc
    claims = parsed.payload
    # Times are checked below against the app clock, not the wall clock.
    if not jws.claims_hold(claims, audience=ACCESS_TOKEN_AUDIENCE, issuer=current_app.config["ECERT_PUBLIC_URL"],
                           required=("exp", "iat", "sub", "scope")):
        raise invalid
    moment = now().timestamp()
    if not (claims["iat"] - 30 <= moment < claims["exp"]):
        raise invalid
    # Read on every request (a disabled client stops at once), with its department: every caller needs it.
    client = db.session.scalar(_CLIENT_WITH_DEPARTMENT, {"client_id": claims["sub"]})
    if client is None or not client.active:
        # A disabled client's tokens stop working at once, not at expiry.
        raise invalid
    return client, set(str(claims["scope"]).split())


@dataclass(frozen=True)
class ClientAccess:
    """A valid client bearer token carrying at least one of `scopes`; sets g.client, g.client_id and g.actor."""

    scopes: tuple[str, ...]

    def enforce(self) -> None:
        client, granted = authenticate_client()
        scopes = self.scopes
        if granted.isdisjoint(scopes):
            raise InsufficientScope(
                f"访问令牌缺少权限范围 {' 或 '.join(scopes)}",
                details={"required_scope": scopes[0]} if len(scopes) == 1 else {"required_scope_any": list(scopes)},
                headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{" ".join(scopes)}"'},
            )
        g.client = client
        g.client_id = client.client_id  # for the request log, written after the commit has expired `client`
        g.actor = Actor(
            kind="client", id=client.client_id, department_code=client.department.code, **request_actor_context()
        )


def require_scope(scope: str) -> Callable[[F], F]:
    """Route decorator: a valid client bearer token carrying `scope` (checked before the request is read)."""
    return require_any_scope(scope)


def require_any_scope(*scopes: str) -> Callable[[F], F]:
    """Route decorator: a valid client bearer token carrying at least one of `scopes` (checked before the request
    is read, see backend.auth.access)."""
    return declare(ClientAccess(scopes))
