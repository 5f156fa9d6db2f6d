"""Unbound extension instances, bound to an app in `create_app` (Flask-Migrate's there too: it imports alembic)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Flask, current_app, request
from flask_limiter import ExemptionScope, Limiter
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import event
from sqlalchemy.engine import Engine

from backend.core.db.sqlite_writers import QueuedWriterConnection
from backend.core.private_files import private_sqlite_database
from backend.models.base import Base


def _client_address() -> str:
    # Behind the load balancer ProxyFix has already put the client address in remote_addr.
    return request.remote_addr or "unknown"


def _default_limit() -> str:
    # Read per request: Flask-Limiter takes a default limit given in the config from the first app it enables in
    # the process and keeps it for every later one (tests build many apps with different limits).
    return str(current_app.config["ECERT_RATELIMIT_DEFAULT"])


db = SQLAlchemy(model_class=Base)
limiter = Limiter(key_func=_client_address, default_limits=[_default_limit])

# What `@limiter.exempt` without flags exempts a route from: every limit but its blueprint's own.
_EVERY_LIMIT = ExemptionScope.APPLICATION | ExemptionScope.DEFAULT | ExemptionScope.META
Hook = Callable[..., Any]


def init_limiter(app: Flask) -> None:
    """Bind the limiter to `app`, its three request hooks returning at once on a request no limit can apply to.

    Flask-Limiter resolves every request's limits (the route's, its blueprint's, the defaults read from the config)
    before it looks at exemptions, and its after-request and teardown hooks look up its per-request context: on
    GET /healthz, exempt from every limit, that cost more than the rest of the request edge. Whether a limit can
    apply is decided once per endpoint. If a Flask-Limiter upgrade moves its hooks, the app is not built (rather
    than built with limits unchecked).
    """
    limiter.init_app(app)
    if limiter not in app.extensions.get("limiter", ()):
        return  # RATELIMIT_ENABLED is off: Flask-Limiter registered no hooks
    decided: dict[str | None, bool] = {}

    def limited() -> bool:
        endpoint = request.endpoint
        applies = decided.get(endpoint)
        if applies is None:
            applies = decided[endpoint] = _limits_apply(app, endpoint, request.blueprint)
        return applies

    def skip_before(hook: Hook) -> Hook:
        return lambda: hook() if limited() else None

    def skip_after(hook: Hook) -> Hook:
        return lambda response: hook(response) if limited() else response

    def skip_teardown(hook: Hook) -> Hook:
        return lambda exc: hook(exc) if limited() else None

    _replace(app.before_request_funcs, lambda f: f == limiter._check_request_limit, skip_before)
    _replace(app.after_request_funcs, lambda f: isinstance(f, partial) and f.args == (limiter,), skip_after)
    _replace(app.teardown_request_funcs, lambda f: getattr(f, "__self__", None) is limiter, skip_teardown)


def _limits_apply(app: Flask, endpoint: str | None, blueprint: str | None) -> bool:
    """False when Flask-Limiter would find no limit for the endpoint: none matched (it never limits 404s and 405s),
    or exempt from application, default and meta limits and in no blueprint with limits of its own."""
    if endpoint is None:
        return False
    manager = limiter.limit_manager
    exempt = manager.exemption_scope(app, endpoint, blueprint) & _EVERY_LIMIT == _EVERY_LIMIT
    return not exempt or bool(blueprint and manager.blueprint_limits(app, blueprint))


def _replace(hooks: dict[Any, list[Hook]], is_limiters: Callable[[Hook], bool], wrap: Callable[[Hook], Hook]) -> None:
    app_wide = hooks.get(None, [])
    found = [i for i, hook in enumerate(app_wide) if is_limiters(hook)]
    if len(found) != 1:
        raise RuntimeError(f"Flask-Limiter's request hook not found once among {app_wide!r}")
    app_wide[found[0]] = wrap(app_wide[found[0]])


@event.listens_for(Engine, "do_connect")
def _sqlite_queued_writers(dialect: Any, _record: Any, args: list[Any], params: dict[str, Any]) -> None:
    """SQLite: the database file (and so its -wal and -shm) the owner's only; writers queue on a file lock instead
    of SQLite's sleep-and-retry (backend.core.db.sqlite_writers)."""
    if dialect.name == "sqlite" and dialect.driver == "pysqlite":
        database = args[0] if args else params.get("database", "")
        if isinstance(database, str) and not params.get("uri"):
            private_sqlite_database(database)
        params.setdefault("factory", QueuedWriterConnection)


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """SQLite: enforce foreign keys, WAL for concurrent readers (the wait for the write lock is the driver's timeout,
    ECERT_DB_LOCK_TIMEOUT_MS).

    synchronous=NORMAL is SQLite's recommended setting with WAL: the database stays consistent after any crash and
    an application crash loses nothing; only the last commits before a power cut may be lost. SQLite is the
    embedded development and demo database (production refuses it), so a commit need not wait for an fsync.
    """
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()
