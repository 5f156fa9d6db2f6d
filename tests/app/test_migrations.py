"""The schema comes only from migrations: the migrated database matches the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from backend.extensions import db
from backend.models import Base


def test_models_and_migrations_agree(app):
    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_migrations_seed_the_audit_chain_head(app):
    with app.app_context():
        head = db.session.execute(db.text("SELECT seq, chain_hash FROM audit_head WHERE id = 1")).one()
    assert head.seq == 0
    assert head.chain_hash == "0" * 64
