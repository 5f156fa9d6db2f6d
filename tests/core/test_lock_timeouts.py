"""A database lock held past the wait is a 503 with Retry-After in the error shape (never a 500), in requests and in
the CLI; and a long import on SQLite lets interactive writers in between its chunks."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError

from backend.errors import is_lock_timeout


@pytest.fixture
def app_settings() -> dict[str, Any]:
    """Locks are waited for 20 ms (not 30 s) before the statement fails."""
    return {"ECERT_DB_LOCK_TIMEOUT_MS": "20"}


@contextmanager
def audit_head_locked(app: Any) -> Iterator[None]:
    """Another connection holds a write lock every write needs (the audit chain's head row; on SQLite the database's
    one write lock) until the block ends."""
    with app.app_context():
        engine = sa.create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
        try:
            with engine.connect() as other:
                other.execute(sa.text("UPDATE audit_head SET seq = seq WHERE id = 1"))
                try:
                    yield
                finally:
                    other.rollback()
        finally:
            engine.dispose()


@pytest.mark.parametrize("app_settings", [{"ECERT_DB_LOCK_TIMEOUT_MS": "20"},
                                          {"ECERT_DB_LOCK_TIMEOUT_MS": "20", "RATELIMIT_ENABLED": True}],
                         ids=["no-rate-limits", "rate-limits"])  # the limiter's headers must not change Retry-After
def test_a_request_that_waits_out_a_held_lock_answers_503_with_retry_after(app, dept_client):
    with audit_head_locked(app):
        response = dept_client.token_response()
    assert response.status_code == 503, response.get_json()
    assert response.headers["Retry-After"] == "1"
    assert response.get_json()["error"]["code"] == "database_busy"
    assert response.get_json()["error"]["details"] == {"retry_after": 1}
    assert dept_client.token_response().status_code == 200  # once the lock is gone, the same request works


def test_lock_errors_of_both_databases_are_told_from_other_database_errors():
    busy = sqlite3.OperationalError("database is locked")
    busy.sqlite_errorcode = sqlite3.SQLITE_BUSY
    assert is_lock_timeout(OperationalError("UPDATE x", {}, busy))

    class PgError(Exception):
        def __init__(self, sqlstate: str) -> None:
            self.sqlstate = sqlstate

    for sqlstate in ("55P03", "40001", "40P01"):  # lock_timeout, serialization failure, deadlock
        assert is_lock_timeout(OperationalError("UPDATE x", {}, PgError(sqlstate)))
    assert not is_lock_timeout(OperationalError("UPDATE x", {}, PgError("08006")))  # connection failure
    missing = sqlite3.OperationalError("no such table: x")
    missing.sqlite_errorcode = sqlite3.SQLITE_ERROR
    assert not is_lock_timeout(OperationalError("SELECT", {}, missing))


@pytest.mark.parametrize("command", [
    ["audit", "checkpoint"],
    ["staff", "add", "--username", "clerk", "--city-admin", "--password-stdin"],
], ids=["audit", "staff"])
def test_the_cli_says_the_database_is_busy_instead_of_a_traceback(app, runner, catalog, command):
    with audit_head_locked(app):
        result = runner.invoke(args=command, input="A-long-enough-Passw0rd!\n")
    assert result.exit_code == 75, result.output
    assert "database_busy" in result.output and "Traceback" not in result.output


def test_the_openapi_document_declares_the_503_of_every_operation(client):
    document = client.get("/openapi.json").get_json()
    operations = [operation for path, item in document["paths"].items() if path.startswith(("/gov/", "/api/"))
                  for operation in item.values()]
    assert operations and all("503" in operation["responses"] for operation in operations)
