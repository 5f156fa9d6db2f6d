"""An import's look-ups by key (certificate number, public id), one index probe per key whatever the statistics say.

Why and how: backend/imports/README.md, "look-ups that cannot scan"."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, FromClause, Select, String, bindparam, func, literal_column, select, text, true
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import NamedFromClause

from backend.models import Base

CERTIFICATES = Base.metadata.tables["certificate"]
STORED = ("number_index", "certificate_type_id", "issuer_department_id", "content_hash", "import_batch_id")


def on_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def probe(session: Session, outer: FromClause, table: NamedFromClause, key: str, outer_key: ColumnElement[Any],
          columns: Sequence[str]) -> tuple[FromClause, Any]:
    """`outer` joined with the rows of `table` whose `key` equals `outer_key`; answers the join and the columns of
    `table` to use in the statement (`columns` of them on PostgreSQL). Conditions on those columns belong in the
    statement's WHERE: on PostgreSQL they filter the rows each probe found, and cannot steer it to another index."""
    if not on_postgres(session):
        return outer.join(table, table.c[key] == outer_key), table.c
    # OFFSET 0: PostgreSQL neither flattens the subquery into a join of its choosing nor pushes conditions into it.
    found = (select(*(table.c[name] for name in columns)).where(table.c[key] == outer_key).correlate_except(table)
             .offset(literal_column("0")).lateral(f"{table.name}_found"))
    return outer.join(found, true()), found.c


def stored(session: Session, number_indexes: list[str]) -> list[Any]:
    """The certificates (every version, any type or department) stored under these number indexes, as
    (number_index, certificate_type_id, issuer_department_id, content_hash, import_batch_id)."""
    return list(session.execute(stored_query(session, number_indexes))) if number_indexes else []


def stored_query(session: Session, number_indexes: list[str]) -> Select[Any]:
    if not on_postgres(session):
        return select(*(CERTIFICATES.c[name] for name in STORED)).where(CERTIFICATES.c.number_index.in_(number_indexes))
    wanted = (func.unnest(bindparam("number_indexes", number_indexes, type_=ARRAY(String)))
              .table_valued("number_index").render_derived("wanted"))
    joined, found = probe(session, wanted, CERTIFICATES, "number_index", wanted.c.number_index, STORED)
    return select(*(found[name] for name in STORED)).select_from(joined)


def without_jit(session: Session) -> None:
    """No JIT compilation for the rest of this transaction (PostgreSQL). Without statistics the planner estimates
    a probe per key to find hundreds of rows, and compiled each look-up of 500 numbers for 0.1 s: the look-ups
    themselves take milliseconds."""
    if on_postgres(session):
        session.execute(text("SET LOCAL jit = off"))
