"""The audit chain (责任倒查): every edit, deletion or insertion is named by `audit verify`; writers never fork it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import jwt
import pytest
import sqlalchemy as sa
from flask import request

from backend.audit.chain import GENESIS, ChainReport, chain_hash, event_document, leaf_hash, record_event
from backend.core.edge import JsonFormatter
from backend.errors import AuditNote, Conflict
from backend.extensions import db
from backend.kernel.actors import Actor
from backend.models import AuditCheckpoint, AuditEvent, AuditHead, SigningKey
from tests.audit.audit_support import (
    EVENTS,
    TAMPERED,
    all_events,
    assert_broken_at,
    execute,
    forged_event,
    insert_event,
    report,
    staff,
    stored_event,
    typed,
    write_events,
)
from tests.conftest import SAMR, START
from tests.support import run_together

ID_NUMBER = "411502199001011234"


@pytest.fixture
def chain(app: Any, clock: Any) -> None:
    write_events(app, clock)


def test_an_untouched_chain_verifies(app, runner, chain):
    result = report(app)
    assert result == ChainReport(ok=True, checked=EVENTS, head_seq=EVENTS)
    cli = runner.invoke(args=["audit", "verify"])
    assert cli.exit_code == 0, cli.output
    assert f"{EVENTS} events" in cli.output


def test_an_empty_chain_verifies(app, runner):
    assert report(app) == ChainReport(ok=True, checked=0, head_seq=0)
    assert runner.invoke(args=["audit", "verify"]).exit_code == 0


def test_events_are_numbered_densely_and_each_links_to_the_previous(app, chain):
    previous = GENESIS
    for expected_seq, event in enumerate(all_events(app), start=1):
        assert event.seq == expected_seq
        assert event.leaf_hash == leaf_hash(event_document(event))
        assert event.chain_hash == chain_hash(previous, event.leaf_hash)
        previous = event.chain_hash
    with app.app_context():
        head = db.session.get(AuditHead, 1)
        assert (head.seq, head.chain_hash) == (EVENTS, previous)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("action", "certificate.revoked"),
        ("actor_id", "someone-else"),
        ("object_id", "cert-999"),
        ("outcome", "failure"),
        ("source_ip", "192.0.2.1"),
        ("details", {"n": 500, "fields": ["name"]}),
        ("occurred_at", START - timedelta(days=1)),
        ("leaf_hash", "ab" * 32),
    ],
)
def test_editing_a_middle_event_is_named_by_verify(app, runner, chain, column, value):
    execute(app, typed(f"UPDATE audit_event SET {column} = :{column} WHERE seq = :seq", column),
            **{column: value, "seq": TAMPERED})
    assert_broken_at(app, runner, TAMPERED, "edited")


def test_editing_the_chain_hash_of_a_middle_event_is_named_by_verify(app, runner, chain):
    execute(app, "UPDATE audit_event SET chain_hash = :h WHERE seq = :seq", h="cd" * 32, seq=TAMPERED)
    assert_broken_at(app, runner, TAMPERED, "edited")


def test_editing_the_chain_hash_of_the_last_event_is_named_by_verify(app, runner, chain):
    execute(app, "UPDATE audit_event SET chain_hash = :h WHERE seq = :seq", h="cd" * 32, seq=EVENTS)
    assert_broken_at(app, runner, EVENTS, "edited")


def test_deleting_a_middle_event_is_named_by_verify(app, runner, chain):
    execute(app, "DELETE FROM audit_event WHERE seq = :seq", seq=TAMPERED)
    assert_broken_at(app, runner, TAMPERED, "deleted")


def test_deleting_the_last_events_is_named_a_truncated_tail(app, runner, chain):
    execute(app, "DELETE FROM audit_event WHERE seq >= :seq", seq=EVENTS - 1)
    assert_broken_at(app, runner, EVENTS - 1, "truncated")


def test_deleting_a_middle_event_and_renumbering_the_rest_down_is_named_deleted(app, runner, chain):
    execute(app, "DELETE FROM audit_event WHERE seq = :seq", seq=TAMPERED)
    for seq in range(TAMPERED + 1, EVENTS + 1):  # one row at a time: seq is the primary key
        execute(app, "UPDATE audit_event SET seq = :new WHERE seq = :old", new=seq - 1, old=seq)
    execute(app, "UPDATE audit_head SET seq = :seq WHERE id = 1", seq=EVENTS - 1)
    assert_broken_at(app, runner, TAMPERED, "deleted")


def test_editing_the_head_is_named_by_verify(app, runner, chain):
    execute(app, "UPDATE audit_head SET chain_hash = :h WHERE id = 1", h="ef" * 32)
    assert_broken_at(app, runner, EVENTS, "head_edited")


def test_appending_a_forged_event_behind_the_head_is_named_by_verify(app, runner, chain, clock):
    last = stored_event(app, EVENTS)
    insert_event(app, forged_event(EVENTS + 1, last.chain_hash, occurred_at=clock.advance(seconds=1)))
    assert_broken_at(app, runner, EVENTS + 1, "inserted")


def test_an_event_inserted_out_of_sequence_beyond_the_head_is_named_inserted_not_deleted(app, runner, chain, clock):
    last = stored_event(app, EVENTS)
    insert_event(app, forged_event(EVENTS + 3, last.chain_hash, occurred_at=clock.advance(seconds=1)))
    assert_broken_at(app, runner, EVENTS + 3, "inserted")


def test_an_event_inserted_out_of_sequence_with_the_head_moved_is_named_inserted(app, runner, chain, clock):
    """The forger skips a number and moves the head onto the forged event: it links to the event before the gap,
    which no genuine event at that number would."""
    last = stored_event(app, EVENTS)
    forged = forged_event(EVENTS + 2, last.chain_hash, occurred_at=clock.advance(seconds=1))
    insert_event(app, forged)
    execute(app, "UPDATE audit_head SET seq = :seq, chain_hash = :h WHERE id = 1", seq=forged.seq, h=forged.chain_hash)
    assert_broken_at(app, runner, EVENTS + 2, "inserted")


@pytest.mark.parametrize("seq", [0, -7])
def test_an_event_inserted_before_the_first_is_named_inserted(app, runner, chain, clock, seq):
    insert_event(app, forged_event(seq, GENESIS, occurred_at=clock.advance(seconds=1)))
    assert_broken_at(app, runner, seq, "inserted")


def test_inserting_a_forged_event_in_the_middle_is_named_by_verify(app, runner, chain, clock):
    """The forger makes room at seq 5 and inserts an event that links correctly to the real seq 4."""
    before = stored_event(app, TAMPERED - 1)
    for seq in range(EVENTS, TAMPERED - 1, -1):  # one row at a time: seq is the primary key
        execute(app, "UPDATE audit_event SET seq = :new WHERE seq = :old", new=seq + 1, old=seq)
    execute(app, "UPDATE audit_head SET seq = :seq WHERE id = 1", seq=EVENTS + 1)
    forged = AuditEvent(seq=TAMPERED, occurred_at=before.occurred_at + timedelta(milliseconds=500), actor_type="staff",
                        actor_id="forger", department_code=SAMR, action="certificate.viewed",
                        object_type="certificate", object_id="cert-alibi", outcome="success",
                        source_ip="10.0.0.7", request_id="req-forged01", details={"n": 0})
    forged.leaf_hash = leaf_hash(event_document(forged))
    forged.chain_hash = chain_hash(before.chain_hash, forged.leaf_hash)
    insert_event(app, forged)

    assert_broken_at(app, runner, TAMPERED, "inserted")
    assert report(app).checked == TAMPERED - 1  # the forged event does not count as verified


def test_rewriting_one_event_with_consistent_hashes_breaks_the_link_to_the_next(app, runner, chain):
    """Recomputing the leaf and chain hash of seq 5 hides the edit at 5, but seq 6 no longer links to it."""
    before, target = stored_event(app, TAMPERED - 1), stored_event(app, TAMPERED)
    target.action = "certificate.revoked"
    new_leaf = leaf_hash(event_document(target))
    execute(app, "UPDATE audit_event SET action = :a, leaf_hash = :l, chain_hash = :c WHERE seq = :seq",
            a=target.action, l=new_leaf, c=chain_hash(before.chain_hash, new_leaf), seq=TAMPERED)
    assert_broken_at(app, runner, TAMPERED, "edited")
    assert report(app).checked == TAMPERED - 1  # the rewritten event does not count as verified


def test_concurrent_writers_cannot_fork_the_chain(app, clock):
    writers, per_writer = 8, 10

    def write(writer: int) -> None:
        for n in range(per_writer):
            with app.app_context():
                record_event(db.session, actor=Actor(kind="client", id=f"writer-{writer}"),
                             action="test.concurrent", now=clock(), details={"writer": writer, "n": n})
                db.session.commit()

    run_together(write, writers)  # fails here if a writer fails or hangs

    events = all_events(app)
    assert [e.seq for e in events] == list(range(1, writers * per_writer + 1))
    previous = GENESIS
    for event in events:
        assert event.chain_hash == chain_hash(previous, leaf_hash(event_document(event)))
        previous = event.chain_hash
    written = sorted((e.details["writer"], e.details["n"]) for e in events)
    assert written == [(w, n) for w in range(writers) for n in range(per_writer)]
    assert report(app) == ChainReport(ok=True, checked=writers * per_writer, head_seq=writers * per_writer)


def test_checkpoint_signs_the_current_head_with_the_platform_key(app, client, runner, catalog, clock):
    write_events(app, clock, count=3)
    with app.app_context():
        head = db.session.get(AuditHead, 1)
        head_seq, head_hash = head.seq, head.chain_hash

    result = runner.invoke(args=["audit", "checkpoint"])
    assert result.exit_code == 0, result.output

    with app.app_context():
        checkpoint = db.session.scalars(sa.select(AuditCheckpoint)).one()
        platform_kids = set(db.session.scalars(sa.select(SigningKey.kid).where(SigningKey.purpose == "platform")))
        signature, kid = checkpoint.signature, checkpoint.kid
        assert (checkpoint.seq, checkpoint.chain_hash) == (head_seq, head_hash)
    assert kid in platform_kids
    assert jwt.get_unverified_header(signature)["kid"] == kid

    jwks = client.get("/.well-known/jwks.json").get_json()
    published = next(k for k in jwks["keys"] if k["kid"] == kid)
    claims = jwt.decode(signature, jwt.PyJWK(published).key, algorithms=[published["alg"]])
    assert (claims["seq"], claims["chain_hash"]) == (head_seq, head_hash)
    assert jwt.get_unverified_header(signature)["typ"] == "audit-checkpoint+jwt"
    # The checkpoint is itself an audited action, appended after the head it signed.
    assert report(app) == ChainReport(ok=True, checked=head_seq + 1, head_seq=head_seq + 1, checkpoints=1,
                                      newest_checkpoint_seq=head_seq)
    assert stored_event(app, head_seq + 1).action == "audit.checkpoint"


def test_checkpoint_without_a_platform_key_fails_cleanly(app, runner):
    result = runner.invoke(args=["audit", "checkpoint"])
    assert result.exit_code != 0
    assert "signing_key_not_found" in result.output
    with app.app_context():
        assert db.session.scalars(sa.select(AuditCheckpoint)).all() == []


def test_details_never_hold_tokens_or_full_id_numbers(app, clock):
    secrets_ = {"access_token": "eyJ-access", "client_assertion": "eyJ-assertion", "password": "hunter2",
                "nested": {"refresh_token": "x-refresh"}, "items": [{"client_secret": "s3cret"}]}
    with app.app_context():
        record_event(db.session, actor=staff(1), action="holder.looked_up", now=clock(),
                     details={**secrets_, "id_number": ID_NUMBER, "holder_code": ID_NUMBER, "purpose": "核验"})
        db.session.commit()

    with app.app_context():
        row = db.session.execute(sa.text("SELECT * FROM audit_event")).mappings().one()
        event = db.session.scalars(sa.select(AuditEvent)).one()
        stored = event.details
    flat = json.dumps({k: str(v) for k, v in row.items()}, ensure_ascii=False)
    assert ID_NUMBER not in flat
    for secret in ("eyJ-access", "eyJ-assertion", "hunter2", "x-refresh", "s3cret"):
        assert secret not in flat
    assert stored["access_token"] == stored["client_assertion"] == stored["password"] == "[redacted]"
    assert stored["nested"] == {"refresh_token": "[redacted]"}
    assert stored["items"] == [{"client_secret": "[redacted]"}]
    assert stored["id_number"] == stored["holder_code"] == "411*************34"
    assert stored["purpose"] == "核验"
    assert report(app).ok


@pytest.fixture
def ecert_log() -> Iterator[list[str]]:
    """Every line the app's JSON logger writes during the test."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect(level=logging.DEBUG)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("ecert")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_request_logs_hold_no_tokens(dept_client, ecert_log):
    assertion = dept_client.assertion()
    response = dept_client.token_response(assertion=assertion)
    assert response.status_code == 200
    access_token = response.get_json()["access_token"]
    refused = dept_client.assertion(aud="http://evil")
    assert dept_client.token_response(assertion=refused).status_code == 401

    logged = "\n".join(ecert_log)
    assert '"/gov/v1/oauth/token"' in logged  # the requests were logged ...
    for secret in (assertion, refused, access_token, access_token.split(".")[2]):
        assert secret not in logged  # ... without their credentials


def test_a_refused_token_request_is_audited_although_the_request_rolled_back(app, dept_client):
    with app.app_context():
        head_before = db.session.get(AuditHead, 1).seq
    refused = dept_client.assertion(aud="http://evil")
    response = dept_client.token_response(assertion=refused)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "invalid_client"

    with app.app_context():
        event = db.session.scalars(sa.select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
        assert event.seq == head_before + 1
        assert (event.action, event.outcome) == ("client.token_refused", "failure")
        assert (event.actor_type, event.actor_id, event.object_id) == ("client", dept_client.client_id,
                                                                        dept_client.client_id)
        assert event.details == {"reason": "wrong_audience"}
        assert event.request_id == response.headers["X-Request-Id"]
        assert refused not in json.dumps(event.details)
    assert report(app).ok


def test_a_failed_request_rolls_back_the_audit_events_it_wrote(app, client, clock):
    """Audit rows share the request's transaction: an error after `record_event` leaves no trace of it."""

    @app.before_request
    def write_then_fail() -> None:
        if request.path == "/healthz":
            record_event(db.session, actor=staff(1), action="test.half_done", now=clock())
            raise Conflict("测试冲突", code="test_conflict")

    response = client.get("/healthz")
    assert response.status_code == 409
    assert all_events(app) == []
    assert report(app) == ChainReport(ok=True, checked=0, head_seq=0)


def test_an_unexpected_error_rolls_back_the_audit_events_it_wrote(app, client, clock):
    @app.before_request
    def write_then_crash() -> None:
        if request.path == "/healthz":
            record_event(db.session, actor=staff(1), action="test.half_done", now=clock())
            raise RuntimeError("boom")

    response = client.get("/healthz")
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "internal_error"
    assert all_events(app) == []
    assert report(app) == ChainReport(ok=True, checked=0, head_seq=0)


def test_a_refused_request_keeps_only_its_failure_event(app, client, clock):
    @app.before_request
    def write_then_refuse() -> None:
        if request.path == "/healthz":
            record_event(db.session, actor=staff(1), action="test.half_done", now=clock())
            error = Conflict("测试冲突", code="test_conflict")
            error.audit = AuditNote(actor=staff(2), action="test.refused", details={"reason": "conflict"})
            raise error

    assert client.get("/healthz").status_code == 409
    events = all_events(app)
    assert [(e.seq, e.action, e.outcome) for e in events] == [(1, "test.refused", "failure")]
    assert report(app).ok


def test_cutting_the_chain_short_behind_a_checkpoint_is_named_by_verify(app, runner, catalog, chain):
    assert runner.invoke(args=["audit", "checkpoint"]).exit_code == 0
    with app.app_context():
        checkpoint_seq = db.session.scalar(sa.select(AuditCheckpoint.seq))
        kept = db.session.get(AuditEvent, checkpoint_seq - 2)
        kept_hash = kept.chain_hash
    # Delete the last events and rewind the head consistently: the recomputed chain alone looks fine.
    execute(app, "DELETE FROM audit_event WHERE seq > :seq", seq=checkpoint_seq - 2)
    execute(app, "UPDATE audit_head SET seq = :seq, chain_hash = :h WHERE id = 1", seq=checkpoint_seq - 2, h=kept_hash)
    result = report(app)
    assert result.ok is False and result.problem == "truncated"
    assert result.first_bad_seq == checkpoint_seq - 1
