"""An import's look-ups by key (backend/imports/numbers.py): what they find, and on PostgreSQL the shape of their plans,
one probe of an index led by the key per key, never a scan of the certificates (issue 13)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from backend.extensions import db
from backend.imports import numbers
from backend.imports.batches import STAGING
from backend.models import Certificate
from tests.factories import FOOD_LICENCE, certificate_body
from tests.imports.batch_support import import_file, jsonl

STORED = (Certificate.number_index, Certificate.certificate_type_id, Certificate.issuer_department_id,
          Certificate.content_hash, Certificate.import_batch_id)
NUMBER_INDEX = "uq_certificate_number_index_certificate_type_id_issuer_"  # the unique index led by number_index


def test_stored_answers_every_certificate_under_the_numbers_asked_for_of_any_type_or_department(app, dept_client):
    import_file(app, dept_client, jsonl(certificate_body(), certificate_body(FOOD_LICENCE), certificate_body()))
    with app.app_context():
        everything = [tuple(row) for row in db.session.execute(select(*STORED))]
        wanted = [everything[0][0], everything[1][0], "0" * 64]  # two of them, and a number nobody has
        assert sorted(tuple(row) for row in numbers.stored(db.session, wanted)) == sorted(everything[:2])
        assert numbers.stored(db.session, []) == []


def _plan(statement: Any) -> dict[str, Any]:
    """PostgreSQL's plan of `statement` (EXPLAIN, not run), as JSON."""
    compiled = statement.compile(dialect=db.engine.dialect)
    connection = db.session.connection()
    return dict(connection.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {compiled}", compiled.params).scalar()[0]["Plan"])


def _nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
    return [node, *(found for child in node.get("Plans", []) for found in _nodes(child))]


def _scans_of(plan: dict[str, Any], relation: str) -> list[tuple[str, str | None]]:
    return [(node["Node Type"], node.get("Index Name")) for node in _nodes(plan)
            if node.get("Relation Name") == relation]


def test_on_postgresql_each_number_looked_up_is_one_probe_of_the_index_led_by_it(app, dept_client):
    import_file(app, dept_client, jsonl(*(certificate_body() for _ in range(3))))
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("query plans: PostgreSQL's (SQLite plans with the indexes alone, no statistics)")
        wanted = list(db.session.scalars(select(Certificate.number_index)))
        plan = _plan(numbers.stored_query(db.session, wanted))
        assert plan["Node Type"] == "Nested Loop"  # one probe per key, whatever the planner thinks of the table
        scans = _scans_of(plan, "certificate")
        assert scans and all(index is not None and index.startswith(NUMBER_INDEX) for _, index in scans), scans

        # The staged rows of a batch against the certificates (the decision's check), and against each other.
        columns = ("certificate_type_id", "issuer_department_id", "content_hash")
        for table in (Certificate.__table__, STAGING.alias("publishing")):
            joined, found = numbers.probe(db.session, STAGING, table, "number_index", STAGING.c.number_index, columns)
            plan = _plan(select(STAGING.c.id, found.content_hash).select_from(joined).where(
                STAGING.c.import_batch_id == 1, found.certificate_type_id == STAGING.c.certificate_type_id))
            assert plan["Node Type"] == "Nested Loop"
            probes = [node for node in _nodes(plan["Plans"][1])
                      if node.get("Relation Name") in ("certificate", "import_staging")]
            assert probes and all(node["Node Type"] != "Seq Scan" for node in probes), probes
        db.session.rollback()


def test_on_postgresql_an_import_step_runs_without_jit(app):
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("JIT compilation: PostgreSQL's")
        numbers.without_jit(db.session)
        assert db.session.connection().exec_driver_sql("SHOW jit").scalar() == "off"  # until the transaction ends
        db.session.rollback()
