"""Bulk INSERTs of many rows through the database driver's executemany, for batch imports."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from operator import itemgetter
from typing import Any

from sqlalchemy import LargeBinary, Table, insert
from sqlalchemy.orm import Session

Processor = Callable[[Any], Any]
_NATIVE_BYTES = frozenset({"pysqlite", "psycopg"})  # drivers that bind Python bytes to BLOB / bytea themselves


def _remembered(process: Processor) -> Processor:
    """`process` with its results for dates and datetimes kept: an import stamps every row with the same few."""
    known: dict[Any, Any] = {}

    def convert(value: Any) -> Any:
        if not isinstance(value, date):
            return process(value)
        try:
            return known[value]
        except KeyError:
            converted = known[value] = process(value)
            return converted

    return convert


class BulkInsert:
    """`INSERT INTO table (columns…)` for many rows in one executemany, with SQLAlchemy's value conversions."""

    def __init__(self, session: Session, table: Table, columns: Iterable[str]) -> None:
        self.session = session
        dialect = session.get_bind().dialect
        self.columns = tuple(columns)
        compiled = insert(table).compile(dialect=dialect, column_keys=list(self.columns))
        self.sql = str(compiled)
        self.order = compiled.positiontup if compiled.positional else None  # qmark/format: values by position
        if sorted(compiled.params) != sorted(self.columns) or (self.order is not None
                                                               and sorted(self.order) != sorted(self.columns)):
            raise ValueError(f"{table.name}: the statement's parameters are not the columns given")
        self.processors: dict[str, Processor] = {}
        for name in self.columns:
            type_ = table.c[name].type.dialect_impl(dialect)
            if isinstance(type_, LargeBinary) and dialect.driver in _NATIVE_BYTES:
                continue  # the driver takes bytes as they are; SQLAlchemy's wrapper would only copy them
            process = type_.bind_processor(dialect)
            if process is not None:
                self.processors[name] = _remembered(process)
        order = self.order if self.order is not None else self.columns
        self._values = itemgetter(*order)
        self._converted = [(position, self.processors[name]) for position, name in enumerate(order)
                           if name in self.processors]

    def execute(self, rows: list[dict[str, Any]]) -> None:
        """Insert `rows`, each a dict with a value for every column."""
        if not rows:
            return
        params: list[Any] = []
        for row in rows:
            values = list(self._values(row))
            for position, process in self._converted:
                values[position] = process(values[position])
            params.append(tuple(values) if self.order is not None else dict(zip(self.columns, values, strict=True)))
        self.session.connection().exec_driver_sql(self.sql, params)  # the session's transaction of the moment
