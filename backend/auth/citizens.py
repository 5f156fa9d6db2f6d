"""Citizen bearer tokens on /api/v1, and the step-up check for sensitive consents."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

from flask import current_app, g, request

from backend.auth.access import declare
from backend.core.context import keystore, now, request_actor_context, verified_tokens
from backend.errors import Unauthorized
from backend.extensions import db
from backend.identity.citizens import check_access_token
from backend.kernel.actors import Actor

F = TypeVar("F", bound=Callable[..., Any])

CITIZEN_SECURITY: list[dict[str, list[str]]] = [{"citizenBearer": []}]
STEP_UP_WINDOW = timedelta(minutes=5)


def _bearer() -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("请先登录", headers={"WWW-Authenticate": 'Bearer realm="citizen"'})
    return token.strip()


@dataclass(frozen=True)
class CitizenAccess:
    """A valid citizen access token whose session is alive; sets g.auth, g.holder and g.actor."""

    def enforce(self) -> None:
        auth = check_access_token(db.session(), keystore(), _bearer(), issuer=current_app.config["ECERT_PUBLIC_URL"],
                                  now=now(), memo=verified_tokens())
        g.auth = auth
        g.holder = auth.holder
        g.actor = Actor(kind="citizen", id=auth.holder.public_id, **request_actor_context())


def require_citizen(view: F) -> F:
    """Route decorator: a logged-in citizen (checked before the request is read, see backend.auth.access)."""
    return declare(CitizenAccess())(view)


def require_recent_login() -> None:
    """Step-up: the holder must have authenticated within the last five minutes (else 401 reauth_required)."""
    if now() - g.auth.auth_time > STEP_UP_WINDOW:
        raise Unauthorized("此操作需要重新进行实名认证", code="reauth_required",
                           details={"max_age_seconds": int(STEP_UP_WINDOW.total_seconds())})
