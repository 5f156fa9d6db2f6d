"""Staff console sessions: the signed session cookie names a server-side StaffSession; CSRF on every form."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

from argon2 import PasswordHasher
from flask import Flask, current_app, g, redirect, request, session, url_for
from flask.typing import ResponseReturnValue
from flask_wtf.csrf import CSRFProtect

from backend.auth.access import declare
from backend.core.context import now, request_actor_context
from backend.errors import Forbidden
from backend.extensions import db
from backend.identity import staff as staff_service
from backend.models import StaffAccount

F = TypeVar("F", bound=Callable[..., Any])

TOKEN_KEY = "staff_token"
# A console path with an optional plain query: nothing that a browser could read as another host or scheme.
_SAFE_PATH = re.compile(r"/console/[A-Za-z0-9/_.-]*(\?[A-Za-z0-9=&_.%-]*)?")
csrf = CSRFProtect()


def init_app(app: Flask) -> None:
    """Cookie flags and CSRF for the console. The API faces use bearer tokens and no cookie at all."""
    secure = app.config["ECERT_ENV"] == "production" or str(app.config["ECERT_PUBLIC_URL"]).startswith("https://")
    app.config.update(
        SESSION_COOKIE_NAME="ecert_console",
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SECURE=secure,  # plain http only for development and tests on localhost
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_REFRESH_EACH_REQUEST=False,
        # The console checks its forms itself (CSRFProtect.protect in its before_request); /api and /gov take
        # bearer tokens, not cookies, and need no CSRF token.
        WTF_CSRF_CHECK_DEFAULT=False,
        # The token lives as long as the login that issued it; the session's own timeouts bound it.
        WTF_CSRF_TIME_LIMIT=None,
    )
    app.config.setdefault("STAFF_PASSWORD_HASHER", staff_service.STANDARD_HASHER)
    app.config.setdefault("STAFF_IDLE_TIMEOUT", staff_service.IDLE_TIMEOUT)
    app.config.setdefault("STAFF_SESSION_LIFETIME", staff_service.ABSOLUTE_TIMEOUT)
    csrf.init_app(app)


def password_hasher() -> PasswordHasher:
    hasher: PasswordHasher = current_app.config["STAFF_PASSWORD_HASHER"]
    return hasher


def session_lifetime() -> timedelta:
    lifetime: timedelta = current_app.config["STAFF_SESSION_LIFETIME"]
    return lifetime


def protect_form() -> None:
    """Refuse a state-changing request without the session's CSRF token (400)."""
    csrf.protect()


def log_in(login: staff_service.StaffLogin) -> None:
    """Bind the browser to the new session. Clearing first rotates everything, the CSRF secret included."""
    session.clear()
    session[TOKEN_KEY] = login.token


def log_out() -> None:
    session.clear()


def current_staff() -> StaffAccount | None:
    """The logged-in staff member (sets g.staff, g.staff_session, g.actor), or None."""
    if "staff" in g:
        return cast(StaffAccount | None, g.staff)
    g.staff = None
    token = session.get(TOKEN_KEY)
    if isinstance(token, str) and token:
        live = staff_service.session_for_token(db.session(), token, now=now(),
                                               idle=current_app.config["STAFF_IDLE_TIMEOUT"])
        if live is None:
            session.clear()
        else:
            g.staff = live.staff
            g.staff_session = live
            g.actor = staff_service.staff_actor(live.staff, **request_actor_context())
    return cast(StaffAccount | None, g.staff)


def safe_next(target: str | None) -> str | None:
    """Only a path inside the console is a place to return to after login (no open redirect)."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not _SAFE_PATH.fullmatch(target) \
            or posixpath.normpath(parts.path) != parts.path.rstrip("/"):
        return None
    return target


@dataclass(frozen=True)
class StaffAccess:
    """A logged-in staff member, else the login page (returning here afterwards). `acting`: acting on a queue is
    for a department's own staff; city administrators only read (403 read_only_role)."""

    acting: bool = False

    def enforce(self) -> ResponseReturnValue | None:
        account = current_staff()
        if account is None:
            target = request.full_path.rstrip("?") if request.method == "GET" else None
            return redirect(url_for("console.login", next=safe_next(target)))
        if self.acting and (account.is_city_admin or account.department is None):
            raise Forbidden("市级管理员只能查看异议，不能办理", code="read_only_role")
        return None


def require_staff(view: F) -> F:
    """Route decorator: a logged-in staff member (checked before the request is read, see backend.auth.access)."""
    return declare(StaffAccess())(view)


def require_department_staff(view: F) -> F:
    """Route decorator: a logged-in staff member of a department, who may act on its queue."""
    return declare(StaffAccess(acting=True))(view)
