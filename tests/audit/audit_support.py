"""Helpers for the audit-chain tests: write a chain, tamper with it as someone with SQL access would, verify it."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from backend.audit.chain import (
    GENESIS,
    ChainReport,
    chain_hash,
    event_document,
    leaf_hash,
    record_event,
    verify_chain,
)
from backend.core.context import keystore
from backend.extensions import db
from backend.kernel.actors import Actor
from backend.models import AuditCheckpoint, AuditEvent
from tests.conftest import SAMR
from tests.support import detached_all

EVENTS = 10
TAMPERED = 5


def staff(n: int) -> Actor:
    return Actor(kind="staff", id=f"staff-{n}", department_code=SAMR, source_ip="10.0.0.7", request_id=f"req-{n:08d}")


def write_events(app: Any, clock: Any, count: int = EVENTS) -> None:
    """`count` committed events, one second apart, as a department's staff viewing certificates."""
    with app.app_context():
        for n in range(1, count + 1):
            record_event(db.session, actor=staff(n), action="certificate.viewed", now=clock.advance(seconds=1),
                         object_type="certificate", object_id=f"cert-{n}", details={"n": n, "fields": ["name"]})
        db.session.commit()


def report(app: Any) -> ChainReport:
    with app.app_context():
        return verify_chain(db.session(), keystore())


def execute(app: Any, statement: str | sa.TextClause, **params: Any) -> None:
    """Tamper with the database directly, as someone with SQL access would: raw SQL, then commit."""
    with app.app_context():
        db.session.execute(sa.text(statement) if isinstance(statement, str) else statement, params)
        db.session.commit()


def typed(statement: str, *columns: str) -> sa.TextClause:
    """Raw SQL whose parameters are bound with the model's column types (JSON, UTC datetimes)."""
    table = AuditEvent.__table__
    return sa.text(statement).bindparams(*(sa.bindparam(name, type_=table.c[name].type) for name in columns))


def stored_event(app: Any, seq: int) -> AuditEvent:
    with app.app_context():
        event = db.session.get(AuditEvent, seq)
        assert event is not None
        db.session.expunge(event)
        return event


def all_events(app: Any) -> list[AuditEvent]:
    return detached_all(app, sa.select(AuditEvent).order_by(AuditEvent.seq))


def insert_event(app: Any, event: AuditEvent) -> None:
    columns = [c.name for c in AuditEvent.__table__.columns]
    execute(app, typed(f"INSERT INTO audit_event ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})",
                       "occurred_at", "details"),
            **{c: getattr(event, c) for c in columns})


def forged_event(seq: int, previous_chain_hash: str, **fields: Any) -> AuditEvent:
    """An event hashed correctly for `seq`, linking to `previous_chain_hash`."""
    values: dict[str, Any] = {
        "occurred_at": fields.pop("occurred_at"), "actor_type": "staff", "actor_id": "forger", "department_code": SAMR,
        "action": "certificate.viewed", "object_type": "certificate", "object_id": "cert-x", "outcome": "success",
        "source_ip": None, "request_id": None, "details": {}, **fields,
    }
    event = AuditEvent(seq=seq, **values)
    event.leaf_hash = leaf_hash(event_document(event))
    event.chain_hash = chain_hash(previous_chain_hash, event.leaf_hash)
    return event


def rehash(app: Any, *, edit: dict[int, dict[str, Any]] | None = None, drop: set[int] | None = None) -> None:
    """Rewrite the whole chain as an attacker without the platform key would: edit or drop events, renumber the rest
    densely, recompute every hash and move the head — a chain that is consistent in itself."""
    edit, drop = edit or {}, drop or set()
    kept = [event for event in all_events(app) if event.seq not in drop]
    previous = GENESIS
    rows = []
    for seq, event in enumerate(kept, start=1):
        document = {**event_document(event), **edit.get(event.seq, {}), "seq": seq}
        leaf = leaf_hash(document)
        previous = chain_hash(previous, leaf)
        rows.append({**document, "occurred_at": event.occurred_at, "leaf_hash": leaf, "chain_hash": previous})
    with app.app_context():
        db.session.execute(sa.delete(AuditEvent))
        if rows:
            db.session.execute(sa.insert(AuditEvent), rows)
        db.session.execute(sa.text("UPDATE audit_head SET seq = :seq, chain_hash = :h WHERE id = 1"),
                           {"seq": len(rows), "h": previous})
        db.session.commit()


def checkpoints(app: Any) -> list[AuditCheckpoint]:
    return detached_all(app, sa.select(AuditCheckpoint).order_by(AuditCheckpoint.seq))


def assert_broken_at(app: Any, runner: Any, seq: int, problem: str) -> None:
    result = report(app)
    assert not result.ok
    assert (result.first_bad_seq, result.problem) == (seq, problem)
    cli = runner.invoke(args=["audit", "verify"])
    assert cli.exit_code == 2
    assert f"seq {seq}" in cli.output
    assert problem in cli.output
