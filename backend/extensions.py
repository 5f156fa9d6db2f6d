"""Unbound extension instances, bound to an app in `create_app`."""

from __future__ import annotations

import sqlite3
from typing import Any

from flask import current_app, request
from flask_limiter import Limiter
from flask_migrate import Migrate
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
migrate = Migrate()
limiter = Limiter(key_func=_client_address, default_limits=[_default_limit])


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
