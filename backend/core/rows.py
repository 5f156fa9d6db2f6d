"""Core reads and writes on the request's own connection, for hot paths that need a few columns, not entities."""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable


def execute(session: Session, statement: Executable, params: dict[str, Any] | None = None) -> CursorResult[Any]:
    if session.new or session.dirty or session.deleted:
        session.flush()
    return session.connection().execute(statement, params)
