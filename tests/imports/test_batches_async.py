"""Queued batch imports: 202 and a Location to poll, the sealed spool, the job that claims and imports batches (once,
even with two workers), progress while it runs, and batches whose worker died taken over without duplicates."""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.config import load_settings
from backend.core.db.bulk_insert import BulkInsert
from backend.core.spool import SealedSpool
from backend.extensions import db
from backend.identity.clients import set_client_active
from backend.imports import batches as imports
from backend.imports import jobs as import_jobs
from backend.imports.jobs import ClaimLost
from backend.issuance import issuer as issuance
from backend.jobs import imports as import_runner
from backend.kernel.actors import Actor
from backend.models import ApiClient, AuditEvent, Certificate, ImportBatch, ImportStaging, Notification
from tests.conftest import CIVIL_AFFAIRS
from tests.factories import certificate_body, company_code
from tests.imports.batch_support import (
    BATCHES,
    STALE,
    count,
    database_failure,
    import_file,
    jsonl,
    problems,
    read_batch,
    run_imports,
    spooled_files,
    submit,
)
from tests.support import detached, run_together


def on_postgresql(app: Any) -> bool:
    return str(app.config["SQLALCHEMY_DATABASE_URI"]).startswith("postgresql")


def batch_row(app: Any, batch_id: str) -> ImportBatch:
    return detached(app, ImportBatch, ImportBatch.public_id == batch_id)


def claim(app: Any, worker: str, clock: Any) -> ImportBatch | None:
    """A worker's claim, committed (as the job does before it imports)."""
    with app.app_context():
        batch = import_jobs.claim_next(db.session(), worker=worker, now=clock(), stale_after=timedelta(seconds=300))
        db.session.commit()
        if batch is not None:
            db.session.refresh(batch)
            db.session.expunge(batch)
        db.session.remove()
        return batch


def test_a_submitted_file_is_queued_with_202_and_a_location_to_follow(app, dept_client):
    data = jsonl(certificate_body(), certificate_body())
    response = submit(dept_client, data)
    assert response.status_code == 202, response.get_json()
    queued = response.get_json()
    assert response.headers["Location"] == f"{BATCHES}/{queued['id']}"
    assert (queued["status"], queued["file_bytes"], queued["processed_rows"], queued["finished_at"]) == \
        ("queued", len(data), 0, None)
    polled = dept_client.http.get(response.headers["Location"], headers=dept_client.headers())
    assert polled.status_code == 200 and polled.get_json() == queued
    assert count(app, Certificate) == 0
    assert run_imports(app) == {"completed": 1}
    done = read_batch(dept_client, queued["id"])
    assert (done["status"], done["total_rows"], done["processed_rows"], done["imported_rows"]) == \
        ("completed", 2, 2, 2)
    assert done["processed_bytes"] == len(data) and done["finished_at"] is not None
    assert count(app, Certificate) == 2 and run_imports(app) == {}  # nothing left to do


def test_the_spooled_file_is_sealed_and_deleted_once_the_batch_is_finished(app, dept_client):
    holder_code, number = company_code(), "SPOOL-PLAINTEXT-0001"
    body = certificate_body(certificate_number=number, holder={"code": holder_code})
    data = jsonl(body)
    batch_id = submit(dept_client, data).get_json()["id"]
    [sealed] = spooled_files(app)
    stored = sealed.read_bytes()
    assert holder_code.encode() not in stored and number.encode() not in stored
    assert body["holder"]["name"].encode() not in stored and len(stored) > len(data)
    assert sealed.stat().st_mode & 0o077 == 0  # the owner's only
    run_imports(app)
    assert read_batch(dept_client, batch_id)["status"] == "completed"
    assert spooled_files(app) == [] and batch_row(app, batch_id).spool_key is None


def test_a_bad_row_in_all_mode_fails_the_batch_with_a_report_and_imports_nothing(app, dept_client):
    bad = certificate_body(holder={"code": "91411502MA45XXXXX0"})
    batch = import_file(app, dept_client, jsonl(certificate_body(), bad, certificate_body()))
    assert (batch["status"], batch["imported_rows"], batch["failed_rows"], batch["error"]) == ("failed", 0, 1, None)
    assert [(entry["row"], entry["field"]) for entry in batch["report"]] == [(2, "holder.code")]
    assert count(app, Certificate) == 0 and count(app, Notification) == 0 and spooled_files(app) == []


def test_partial_mode_imports_the_good_rows_of_a_queued_batch(app, dept_client):
    rows = [certificate_body(), certificate_body(issued_on="2026-02-30"), certificate_body()]
    batch = import_file(app, dept_client, jsonl(*rows), mode="partial")
    assert (batch["status"], batch["imported_rows"], batch["failed_rows"]) == ("completed", 2, 1)
    assert problems(batch) == {(2, "issued_on", "invalid_date")}
    assert count(app, Certificate) == 2 and spooled_files(app) == []


def test_the_same_key_and_file_while_queued_answer_the_same_batch_and_spool_nothing_more(app, dept_client):
    data = jsonl(certificate_body())
    first = submit(dept_client, data, key="nightly-2026-11-27")
    again = submit(dept_client, data, key="nightly-2026-11-27")
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.get_json()["id"] == first.get_json()["id"] and "Location" not in again.headers
    other = submit(dept_client, jsonl(certificate_body()), key="nightly-2026-11-27")
    assert other.status_code == 409 and other.get_json()["error"]["code"] == "idempotency_key_reused"
    assert len(spooled_files(app)) == 1 and count(app, ImportBatch) == 1
    assert run_imports(app) == {"completed": 1} and count(app, Certificate) == 1


def test_another_department_neither_sees_a_queued_batch_nor_shares_its_key(app, dept_client, make_dept_client):
    batch_id = submit(dept_client, jsonl(certificate_body()), key="shared-key-0001").get_json()["id"]
    civil = make_dept_client(CIVIL_AFFAIRS, scopes=("issue",))
    response = civil.http.get(f"{BATCHES}/{batch_id}", headers=civil.headers())
    assert response.status_code == 404 and response.get_json()["error"]["code"] == "batch_not_found"
    own = submit(civil, jsonl(certificate_body()), key="shared-key-0001")  # keys are per department
    assert own.status_code == 202 and own.get_json()["id"] != batch_id


def test_progress_is_visible_through_get_while_the_import_runs(app, dept_client, monkeypatch):
    monkeypatch.setattr("backend.imports.batches.CHUNK_ROWS", 2)
    batch_id = submit(dept_client, jsonl(*(certificate_body() for _ in range(5)))).get_json()["id"]
    headers = dept_client.headers()
    keep_claim, seen = import_jobs.keep_claim, []

    def look_then_keep_claim(session: Session, batch: ImportBatch, **kwargs: Any) -> None:
        # Between two of the import's transactions, through the API, from another thread (another session): on
        # SQLite too, since the import holds the database's one write lock only during a step.
        polled = run_together(lambda _n: dept_client.http.get(f"{BATCHES}/{batch_id}", headers=headers), 1)[0]
        seen.append((polled.get_json()["status"], polled.get_json()["processed_rows"]))
        keep_claim(session, batch, **kwargs)

    monkeypatch.setattr(import_jobs, "keep_claim", look_then_keep_claim)
    assert run_imports(app) == {"completed": 1}
    # Three chunks staged, then the decision to publish, then publishing (one step of up to PUBLISH_ROWS rows).
    assert seen == [("processing", 0), ("processing", 2), ("processing", 4), ("processing", 5), ("processing", 5)]
    assert read_batch(dept_client, batch_id)["processed_rows"] == 5


def test_two_workers_racing_for_one_batch_import_it_once(app, dept_client):
    batch_id = submit(dept_client, jsonl(*(certificate_body() for _ in range(4)))).get_json()["id"]
    outcomes = run_together(lambda _n: run_imports(app), 2)
    assert sorted(outcomes, key=len) == [Counter(), Counter(completed=1)]
    assert count(app, Certificate) == 4
    assert count(app, AuditEvent, AuditEvent.action == "certificate.batch_imported") == 1
    assert batch_row(app, batch_id).attempts == 1


def test_a_batch_claimed_in_an_open_transaction_is_skipped_not_waited_for(app, dept_client, clock):
    if not on_postgresql(app):
        pytest.skip("row locks (FOR UPDATE SKIP LOCKED) are PostgreSQL's; SQLite serialises writers")
    submit(dept_client, jsonl(certificate_body()))
    with app.app_context(), Session(db.engine) as first, Session(db.engine) as second:
        stale = timedelta(seconds=300)
        mine = import_jobs.claim_next(first, worker="node-a", now=clock(), stale_after=stale)
        assert mine is not None and mine.status == "processing"
        assert import_jobs.claim_next(second, worker="node-b", now=clock(), stale_after=stale) is None
        first.commit()
        second.rollback()
        assert import_jobs.claim_next(second, worker="node-b", now=clock(), stale_after=stale) is None
        second.rollback()


def test_a_batch_whose_worker_died_is_taken_over_once_stale_and_imported_once(app, dept_client, clock):
    batch_id = submit(dept_client, jsonl(*(certificate_body() for _ in range(3)))).get_json()["id"]
    assert claim(app, "node-that-dies", clock) is not None  # and then nothing: killed before it imported a row
    clock.advance(seconds=200)
    assert run_imports(app) == {} and read_batch(dept_client, batch_id)["status"] == "processing"
    clock.advance(seconds=STALE.total_seconds() - 200)
    assert run_imports(app) == {"completed": 1}
    taken_over = batch_row(app, batch_id)
    assert (taken_over.status, taken_over.attempts, taken_over.imported_rows) == ("completed", 2, 3)
    assert taken_over.claimed_by != "node-that-dies"
    assert count(app, Certificate) == 3 and count(app, Notification) == 3
    with app.app_context():  # should the first worker come back, it can no longer finish the batch
        batch = db.session.get(ImportBatch, taken_over.id)
        assert batch is not None
        with pytest.raises(ClaimLost):
            import_jobs.keep_claim(db.session(), batch, worker="node-that-dies", now=clock())
        db.session.rollback()


def test_a_slow_worker_taken_over_rolls_its_import_back(app, dept_client, clock, monkeypatch):
    """A worker thought dead that is still running loses its claim: its next progress report (PostgreSQL) or its
    finish sees the new worker's claim, and everything it wrote is rolled back."""
    monkeypatch.setattr("backend.imports.batches.CHUNK_ROWS", 2)
    batch_id = submit(dept_client, jsonl(*(certificate_body() for _ in range(5)))).get_json()["id"]
    claimed = claim(app, "slow-node", clock)
    assert claimed is not None
    with app.app_context():  # another node takes the batch over while the slow one still works
        db.session.execute(ImportBatch.__table__.update().where(ImportBatch.id == claimed.id)
                           .values(claimed_by="fast-node", attempts=2))
        db.session.commit()
        assert import_runner.import_batch(claimed.id, "slow-node") == "lost"
        db.session.remove()
    assert count(app, Certificate) == 0 and batch_row(app, batch_id).status == "processing"
    assert len(spooled_files(app)) == 1  # the file stays for the worker that holds the batch


def database_fails(*_args: Any, **_kwargs: Any) -> Any:
    raise database_failure()


def test_a_batch_interrupted_too_often_fails_and_its_file_is_deleted(app, dept_client, clock, monkeypatch):
    monkeypatch.setattr(BulkInsert, "execute", database_fails)
    batch_id = submit(dept_client, jsonl(certificate_body())).get_json()["id"]
    for _ in range(3):  # ECERT_IMPORT_MAX_ATTEMPTS
        assert run_imports(app) == {"interrupted": 1}
        clock.advance(seconds=STALE.total_seconds())
    assert run_imports(app) == {"failed": 1}
    batch = read_batch(dept_client, batch_id)
    assert (batch["status"], batch["error"]["code"]) == ("failed", "import_interrupted")
    assert count(app, Certificate) == 0 and spooled_files(app) == []


def test_an_error_in_one_row_of_a_partial_batch_is_that_rows_problem_and_the_good_rows_are_imported(
        app, dept_client, monkeypatch):
    rows = [certificate_body(), certificate_body(), certificate_body()]
    prepare = issuance.Issuer.prepare

    def fails_for_the_second(self: issuance.Issuer, data: Any, found: Any) -> Any:
        if data.certificate_number == rows[1]["certificate_number"]:
            raise OverflowError("date value out of range")  # what a check nobody foresaw raises
        return prepare(self, data, found)

    monkeypatch.setattr(issuance.Issuer, "prepare", fails_for_the_second)
    batch = import_file(app, dept_client, jsonl(*rows), mode="partial")
    assert (batch["status"], batch["imported_rows"], batch["failed_rows"]) == ("completed", 2, 1)
    assert problems(batch) == {(2, None, "row_failed")} and batch["error"] is None
    assert count(app, Certificate) == 2 and spooled_files(app) == []


def test_a_batch_whose_import_raises_unexpectedly_fails_at_once_with_an_error_report(app, dept_client, clock,
                                                                                      monkeypatch, caplog):
    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug in the batch's last step")

    monkeypatch.setattr(imports._Run, "record_events", broken)
    batch_id = submit(dept_client, jsonl(certificate_body(), certificate_body()), mode="partial").get_json()["id"]
    with caplog.at_level(logging.ERROR, logger="ecert.imports"):
        assert run_imports(app) == {"failed": 1}
    batch = read_batch(dept_client, batch_id)
    assert (batch["status"], batch["imported_rows"], batch["error"]["code"]) == ("failed", 0, "import_failed")
    assert batch["finished_at"] is not None and "新的 Idempotency-Key" in batch["error"]["message"]
    assert [record.fields["batch"] for record in caplog.records  # type: ignore[attr-defined]
            if record.getMessage() == "import batch failed unexpectedly; rolled back"] == [batch_id]
    assert count(app, Certificate) == 0 and spooled_files(app) == []
    clock.advance(seconds=STALE.total_seconds())
    assert run_imports(app) == {}  # not taken for a dead worker's batch and tried again


def test_a_tampered_spool_file_fails_the_batch_and_imports_nothing(app, dept_client):
    batch_id = submit(dept_client, jsonl(*(certificate_body() for _ in range(3)))).get_json()["id"]
    [sealed] = spooled_files(app)
    stored = bytearray(sealed.read_bytes())
    stored[-20] ^= 1
    sealed.write_bytes(bytes(stored))
    assert run_imports(app) == {"failed": 1}
    batch = read_batch(dept_client, batch_id)
    assert (batch["status"], batch["error"]["code"]) == ("failed", "batch_file_unreadable")
    assert count(app, Certificate) == 0 and spooled_files(app) == []


def test_a_spool_file_cut_short_fails_the_batch(app, dept_client):
    batch_id = submit(dept_client, jsonl(certificate_body())).get_json()["id"]
    [sealed] = spooled_files(app)
    sealed.write_bytes(sealed.read_bytes()[:-5])
    assert run_imports(app) == {"failed": 1}
    assert read_batch(dept_client, batch_id)["error"]["code"] == "batch_file_unreadable"


def test_leftover_spool_files_are_deleted_only_when_old_and_unreferenced(app, dept_client, clock):
    submit(dept_client, jsonl(certificate_body()))  # refers to its file until imported
    [queued] = spooled_files(app)
    leftover = queued.parent / ("f" * 32)
    leftover.write_bytes(b"sealed bytes of a request that died before its commit")
    upload = queued.parent / ".upload-abandoned"
    upload.write_bytes(b"half an upload")
    recent = queued.parent / ("e" * 32)
    recent.write_bytes(b"being committed right now")
    an_hour_ago = (clock() - timedelta(hours=2)).timestamp()
    for path in (queued, leftover, upload):
        os.utime(path, (an_hour_ago, an_hour_ago))
    os.utime(recent, (clock().timestamp(), clock().timestamp()))
    with app.app_context():
        assert import_runner.delete_leftovers() == 1
        db.session.remove()
    assert spooled_files(app) == sorted([queued, recent])


def test_the_job_command_imports_queued_batches_and_says_what_it_did(app, runner, dept_client):
    submit(dept_client, jsonl(certificate_body()))
    submit(dept_client, jsonl(certificate_body(issued_on="never")))
    result = runner.invoke(args=["jobs", "imports"])
    assert result.exit_code == 0, result.output
    assert "1 batch(es) completed, 1 failed" in result.output
    assert count(app, Certificate) == 1
    assert runner.invoke(args=["jobs", "imports"]).output.startswith("0 batch(es) completed")


def test_the_job_command_exits_non_zero_when_an_import_was_interrupted(app, runner, dept_client, monkeypatch):
    monkeypatch.setattr(BulkInsert, "execute", database_fails)
    submit(dept_client, jsonl(certificate_body()))
    result = runner.invoke(args=["jobs", "imports"])
    assert result.exit_code == 1 and "1 interrupted" in result.output


def test_the_job_command_keeps_watching_with_watch(app, runner, dept_client, monkeypatch):
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 1:
            submit(dept_client, jsonl(certificate_body()))  # arrives while the job waits
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr("backend.cli.jobs.time.sleep", nap)
    result = runner.invoke(args=["jobs", "imports", "--watch", "--interval", "2"])
    assert naps == [2, 2] and count(app, Certificate) == 1
    assert "1 batch(es) completed" in result.output


@pytest.mark.parametrize("app_settings", [{"ECERT_IMPORT_IN_PROCESS": "1"}])
def test_the_in_process_runner_imports_a_batch_after_its_submission(app, dept_client, monkeypatch):
    passes, finished = [], threading.Event()
    run_pending = import_runner.run_pending

    def observed(**options: Any) -> Counter[str]:
        outcome = run_pending(**options)
        passes.append(outcome)
        if outcome:
            finished.set()
        return outcome

    monkeypatch.setattr(import_runner, "run_pending", observed)
    response = submit(dept_client, jsonl(certificate_body(), certificate_body()))
    assert response.status_code == 202
    response.close()  # the server closes the response after the commit: that wakes the runner
    runner = import_runner.in_process_runner(app)
    assert runner is not None
    try:
        assert finished.wait(timeout=60)
    finally:
        runner.stop(timeout=60)
    assert read_batch(dept_client, response.get_json()["id"])["status"] == "completed"
    assert Counter(completed=1) in passes and count(app, Certificate) == 2


def test_the_in_process_runner_is_on_in_development_only_unless_asked(tmp_path):
    def setting(**env: str) -> bool:
        return bool(load_settings(env={"ECERT_INSTANCE_PATH": str(tmp_path), **env})["ECERT_IMPORT_IN_PROCESS"])

    assert setting() is True  # ECERT_ENV defaults to development
    assert setting(ECERT_ENV="testing") is False
    assert setting(ECERT_ENV="testing", ECERT_IMPORT_IN_PROCESS="1") is True
    assert setting(ECERT_IMPORT_IN_PROCESS="0") is False


def test_the_runner_is_off_in_tests_so_batches_wait_for_the_job(app, dept_client):
    assert import_runner.in_process_runner(app) is None
    response = submit(dept_client, jsonl(certificate_body()))
    response.close()
    assert read_batch(dept_client, response.get_json()["id"])["status"] == "queued"


# -- the submitting client is checked again when its batch is imported ---------------------------------------------

def _change_client(app: Any, client_id: str, clock: Any, *, active: bool | None = None,
                   scopes: list[str] | None = None) -> None:
    with app.app_context():
        if active is not None:
            set_client_active(db.session(), client_id, active, actor=Actor.operator("test"), now=clock())
        if scopes is not None:
            found = db.session.scalar(select(ApiClient).where(ApiClient.client_id == client_id))
            assert found is not None
            found.scopes = scopes
        db.session.commit()
        db.session.remove()


def test_a_batch_records_the_client_that_submitted_it(app, dept_client):
    batch_id = submit(dept_client, jsonl(certificate_body())).get_json()["id"]
    with app.app_context():
        found = db.session.scalar(select(ApiClient).where(ApiClient.client_id == dept_client.client_id))
        assert found is not None and batch_row(app, batch_id).api_client_id == found.id
        db.session.remove()


def test_a_client_disabled_after_submitting_gets_its_queued_batch_failed_and_nothing_issued(app, dept_client, clock):
    batch_id = submit(dept_client, jsonl(certificate_body(), certificate_body())).get_json()["id"]
    assert len(spooled_files(app)) == 1
    _change_client(app, dept_client.client_id, clock, active=False)
    assert run_imports(app) == {"failed": 1}
    batch = batch_row(app, batch_id)
    assert (batch.status, batch.imported_rows, batch.spool_key) == ("failed", 0, None)
    assert batch.error is not None and batch.error["code"] == "client_disabled" and "停用" in batch.error["message"]
    assert count(app, Certificate) == 0 and count(app, Notification) == 0 and spooled_files(app) == []
    assert count(app, AuditEvent, AuditEvent.action == "certificate.batch_imported",
                 AuditEvent.outcome == "failure") == 1
    _change_client(app, dept_client.client_id, clock, active=True)  # enabled again: the failed batch stays failed
    assert read_batch(dept_client, batch_id)["error"]["code"] == "client_disabled"
    assert run_imports(app) == {} and count(app, Certificate) == 0


def test_a_client_that_lost_the_issue_scope_gets_its_queued_batch_failed(app, dept_client, clock):
    batch_id = submit(dept_client, jsonl(certificate_body())).get_json()["id"]
    _change_client(app, dept_client.client_id, clock, scopes=["catalog", "verify"])
    assert run_imports(app) == {"failed": 1}
    batch = batch_row(app, batch_id)
    assert batch.status == "failed" and batch.error is not None and batch.error["code"] == "client_scope_revoked"
    assert count(app, Certificate) == 0 and spooled_files(app) == []


def test_the_actor_of_an_import_is_the_submitting_client_not_a_parse_of_submitted_by(app, dept_client):
    batch_id = submit(dept_client, jsonl(certificate_body())).get_json()["id"]
    with app.app_context():  # submitted_by is a truncated label only: the client is found by its id
        db.session.execute(ImportBatch.__table__.update().where(ImportBatch.public_id == batch_id)
                           .values(submitted_by="client:" + "x" * 73))
        db.session.commit()
        db.session.remove()
    assert run_imports(app) == {"completed": 1}
    with app.app_context():
        actors = set(db.session.scalars(select(AuditEvent.actor_id).where(
            AuditEvent.action == "certificate.batch_imported")))
        db.session.remove()
    assert actors == {dept_client.client_id}


def test_a_failure_before_the_file_is_read_closes_the_file(app, dept_client, monkeypatch):
    batch_id = submit(dept_client, jsonl(certificate_body())).get_json()["id"]
    opened: list[Any] = []
    open_spool = SealedSpool.open

    def tracked(self: SealedSpool, key: str) -> Any:
        opened.append(open_spool(self, key))
        return opened[-1]

    def lost(_session: Any, batch: ImportBatch, **_kwargs: Any) -> None:
        raise ClaimLost(batch.public_id)

    monkeypatch.setattr(SealedSpool, "open", tracked)
    monkeypatch.setattr(import_jobs, "keep_claim", lost)
    assert run_imports(app) == {"lost": 1}
    assert all(reader.closed for reader in opened)
    assert batch_row(app, batch_id).status == "processing" and count(app, Certificate) == 0


def test_failed_batch_messages_ask_for_a_new_idempotency_key(app, dept_client):
    batch_id = submit(dept_client, jsonl(certificate_body())).get_json()["id"]
    [sealed] = spooled_files(app)
    sealed.unlink()
    assert run_imports(app) == {"failed": 1}
    error = read_batch(dept_client, batch_id)["error"]
    assert error["code"] == "batch_file_unreadable" and "新的 Idempotency-Key" in error["message"]
    assert "新的 Idempotency-Key" in import_jobs.ImportInterrupted().message


def test_a_client_disabled_while_its_batch_is_imported_gets_the_batch_failed(app, dept_client, monkeypatch):
    monkeypatch.setattr("backend.imports.batches.CHUNK_ROWS", 2)
    batch_id = submit(dept_client, jsonl(*(certificate_body() for _ in range(5)))).get_json()["id"]
    keep_claim, steps = import_jobs.keep_claim, []

    def disable_then_keep_claim(session: Session, batch: ImportBatch, **kwargs: Any) -> None:
        steps.append(batch.id)
        if len(steps) == 2:  # between two of the import's transactions: an operator, elsewhere, disables the client
            with db.engine.begin() as connection:
                connection.execute(ApiClient.__table__.update().where(ApiClient.client_id == dept_client.client_id)
                                   .values(active=False))
        keep_claim(session, batch, **kwargs)

    monkeypatch.setattr(import_jobs, "keep_claim", disable_then_keep_claim)
    assert run_imports(app) == {"failed": 1}
    batch = batch_row(app, batch_id)
    assert batch.status == "failed" and batch.error is not None and batch.error["code"] == "client_disabled"
    assert count(app, Certificate) == 0 and count(app, Notification) == 0 and spooled_files(app) == []
    assert count(app, ImportStaging) == 0
