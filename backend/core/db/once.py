"""Decide "first one wins" in the database, atomically, on both supported databases."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, Update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from backend.models import Base


def conflict_insert(dialect: str) -> Any:
    """The dialect's `insert` construct, which has `on_conflict_do_nothing` (both supported databases)."""
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    # PostgreSQL and SQLite are the only databases the platform supports (config refuses others).
    raise NotImplementedError(f"INSERT … ON CONFLICT is not available on {dialect}")  # pragma: no cover


def insert_once(session: Session, model: type[Base], values: dict[str, Any], unique: list[str]) -> bool:
    """Insert the row unless one with the same `unique` columns exists: True if this call inserted it.

    Of concurrent callers exactly one gets True (PostgreSQL makes the others wait for its commit, SQLite has one
    writer at a time).
    """
    if session.new or session.dirty or session.deleted:
        session.flush()  # as session.execute would
    connection = session.connection()
    dialect = connection.dialect.name
    key = (model, tuple(unique), dialect)
    stmt = _statements.get(key)
    if stmt is None:
        insert = conflict_insert(dialect)
        table = Base.metadata.tables[model.__tablename__]
        stmt = insert(table).on_conflict_do_nothing(index_elements=unique).returning(table.primary_key.columns[0])
        _statements[key] = stmt
    # Core on the request's connection, the statement built once: the ORM's bulk-insert path and a statement
    # built per call cost more than the insert (replay checks run on every verification and show-code scan).
    return connection.execute(stmt, values).first() is not None


# Built statements by model, columns and dialect: pure (no app state, config or keys; the models are the process's),
# so one process-wide memo is right; a plain dict, as a functools cache would double the lookup on every replay check.
_statements: dict[tuple[type[Base], tuple[str, ...], str], Any] = {}


def updated_rows(session: Session, stmt: Update) -> int:
    """Run a conditional UPDATE and answer how many rows it changed (the database decides who wins a race)."""
    result = cast(CursorResult[Any], session.execute(stmt.execution_options(synchronize_session=False)))
    return int(result.rowcount)
