"""Core reads and writes on the request's own connection, for hot paths that need a few columns, not entities."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import CursorResult, Select
from sqlalchemy.orm import Session
from sqlalchemy.sql import Executable

_Select = TypeVar("_Select", bound=Select[*tuple[Any, ...]])


def execute(session: Session, statement: Executable, params: dict[str, Any] | None = None) -> CursorResult[Any]:
    if session.new or session.dirty or session.deleted:
        session.flush()
    return session.connection().execute(statement, params)


def selecting(row_type: type[Any], statement: _Select) -> _Select:
    """`statement`, checked when its module loads to select exactly the fields of `row_type` (a NamedTuple) in their
    order: then `row_type._make(row)`, the cheapest typed row, reads every column under its own name."""
    names = tuple(statement.selected_columns.keys())
    if names != row_type._fields:
        raise TypeError(f"{row_type.__name__} has the fields {row_type._fields}; the statement selects {names}")
    return statement
