"""Record a one-time value exactly once, atomically, on both supported databases (INSERT … ON CONFLICT DO NOTHING).

Unlike a savepoint around a plain INSERT, a conflict neither aborts the request's transaction on PostgreSQL nor
commits early on SQLite (pysqlite releases a savepoint that opened the transaction by committing it).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from backend.models import Base


def insert_once(session: Session, model: type[Base], values: dict[str, Any], unique: list[str]) -> bool:
    """Insert the row unless one with the same `unique` columns exists: True if this call inserted it.

    Of concurrent callers exactly one gets True (PostgreSQL makes the others wait for its commit, SQLite has one
    writer at a time).
    """
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        insert: Any = postgresql.insert
    elif dialect == "sqlite":
        insert = sqlite.insert
    else:  # pragma: no cover - only the two supported databases
        raise NotImplementedError(f"insert_once needs INSERT … ON CONFLICT, not available on {dialect}")
    primary_key = model.__table__.primary_key.columns.values()[0]  # type: ignore[attr-defined]
    stmt = insert(model).values(**values).on_conflict_do_nothing(index_elements=unique).returning(primary_key)
    return session.execute(stmt).first() is not None
