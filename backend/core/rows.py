"""Core reads and writes on the request's own connection, for hot paths that need a few columns, not entities.

`session.execute` runs a Core statement through the ORM's execution layer, which on the hot paths (verification,
show codes, the wallet list) cost about as much as the query itself; these run it on the session's connection,
in the same transaction. Pending ORM changes are flushed first, as `session.execute` would (autoflush).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable


def execute(session: Session, statement: Executable, params: dict[str, Any] | None = None) -> CursorResult[Any]:
    if session.new or session.dirty or session.deleted:
        session.flush()
    return session.connection().execute(statement, params)
