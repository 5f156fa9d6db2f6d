"""One read of a few columns on a pooled DBAPI connection, beneath SQLAlchemy's statement execution (GET /healthz)."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement

_compiled: dict[tuple[str, int], tuple[ClauseElement, str]] = {}  # (dialect, statement) -> (statement kept alive, SQL)


def first_row(engine: Engine, statement: ClauseElement) -> tuple[Any, ...] | None:
    """The first row of `statement`, whose parameters are all constants (rendered into its SQL once per dialect),
    as the driver returns it, read in autocommit: no BEGIN and ROLLBACK round trips on PostgreSQL (pysqlite begins
    no transaction for a read). A database error is raised as SQLAlchemy's DBAPIError, as Core would raise it."""
    dialect = engine.dialect
    key = (dialect.name, id(statement))
    compiled = _compiled.get(key)
    if compiled is None:
        sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
        compiled = _compiled[key] = (statement, sql)
    sql, error = compiled[1], dialect.loaded_dbapi.Error
    try:
        pooled = engine.raw_connection()  # checked out (and pinged) as the pool's settings say
    except error as exc:
        raise DBAPIError.instance(None, None, exc, error) from exc
    autocommit, dbapi_connection = dialect.name != "sqlite", cast(DBAPIConnection, pooled.dbapi_connection)
    try:
        if autocommit:
            dialect.set_isolation_level(dbapi_connection, "AUTOCOMMIT")
        cursor = pooled.cursor()
        try:
            cursor.execute(sql)
            row = cursor.fetchone()
        finally:
            cursor.close()
        if autocommit:
            dialect.reset_isolation_level(dbapi_connection)
    except error as exc:
        pooled.invalidate(exc)  # never back to the pool in an unknown state
        raise DBAPIError.instance(sql, None, exc, error) from exc
    finally:
        pooled.close()
    return None if row is None else tuple(row)
