"""Batch imports in short transactions: other writers get in between two chunks of an import, and between two steps
of its publishing (on SQLite too, where the database has one writer at a time) without waiting for it, while an
all-or-nothing batch still publishes all of its certificates or none, a number or a status-list slot taken in between
is never given twice, and an import cut short and taken over adds no certificate twice."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select

from backend.core.context import field_cipher
from backend.extensions import db
from backend.imports import batches as imports
from backend.imports.signer import Signer
from backend.issuance.issuer import Issuer
from backend.keys import status_lists
from backend.models import Certificate, CertificateEvent, ImportStaging, Notification
from tests.factories import certificate_body
from tests.imports.batch_support import (
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
from tests.support import Department, run_together

ROWS = 5  # in chunks of 2: three chunks, and between them the moments other writers get in


@pytest.fixture
def app_settings() -> dict[str, Any]:
    """A writer that finds the database locked gives up after 20 ms (503) instead of 30 s."""
    return {"ECERT_DB_LOCK_TIMEOUT_MS": "20"}


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imports, "CHUNK_ROWS", 2)


def between_chunks(monkeypatch: pytest.MonkeyPatch, row: dict[str, Any], write: Callable[[], Any]) -> list[Any]:
    """Run `write` once, from another thread (another request, another session), when the import comes to validate
    `row`: after the chunks before it were processed, while the import goes on. Answers what `write` answered."""
    prepare, answers = Issuer.prepare, []

    def prepare_after_writing(self: Issuer, data: Any, found: Any) -> Any:
        if data.certificate_number == row["certificate_number"] and not answers:
            answers.extend(run_together(lambda _n: write(), 1))
        return prepare(self, data, found)

    monkeypatch.setattr(Issuer, "prepare", prepare_after_writing)
    return answers


def between_publishing_steps(monkeypatch: pytest.MonkeyPatch, write: Callable[[], Any]) -> list[Any]:
    """Run `write` once, from another thread, after the import's first publishing step was committed and before its
    second begins (publishing in steps of 2 rows). Answers what `write` answered."""
    monkeypatch.setattr(imports, "PUBLISH_ROWS", 2)
    publish, begin_step = imports._Run._publish, imports._Run.begin_step
    published: list[Any] = []
    answers: list[Any] = []
    written: list[bool] = []

    def counted(self: Any, staged: Any) -> None:
        publish(self, staged)
        published.append(staged)

    def writing_first(self: Any, bytes_read: int) -> None:
        if len(published) == 1 and not written:
            written.append(True)  # once (the write may import a batch itself)
            answers.extend(run_together(lambda _n: write(), 1))
        begin_step(self, bytes_read)

    monkeypatch.setattr(imports._Run, "_publish", counted)
    monkeypatch.setattr(imports._Run, "begin_step", writing_first)
    return answers


def failing_at_call(monkeypatch: pytest.MonkeyPatch, step: str, call: int, error: BaseException) -> Callable[[], None]:
    """Make the import step `imports._Run.<step>` raise `error` at its `call`-th call (the calls before it run as
    they would). Answers what puts the real step back."""
    real, calls = getattr(imports._Run, step), []

    def failing(self: Any, items: Any) -> None:
        calls.append(items)
        if len(calls) == call:
            raise error
        real(self, items)

    monkeypatch.setattr(imports._Run, step, failing)
    return lambda: monkeypatch.setattr(imports._Run, step, real)


def slot_in_sd_jwt(app: Any, certificate: Certificate) -> int:
    """The status-list index the certificate's signed SD-JWT names."""
    with app.app_context():
        sd_jwt = field_cipher().decrypt(certificate.sd_jwt_enc, f"certificate:{certificate.public_id}:sd_jwt")
    payload = sd_jwt.split("~")[0].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return int(claims["status"]["status_list"]["idx"])


def certificates(app: Any) -> list[Certificate]:
    with app.app_context():
        found = list(db.session.scalars(select(Certificate).order_by(Certificate.id)))
        db.session.expunge_all()
        return found


def test_a_token_request_and_an_issue_between_two_chunks_of_an_import_do_not_wait_for_it(app, dept_client,
                                                                                        monkeypatch):
    rows = [certificate_body() for _ in range(ROWS)]
    interactive = Department(dept_client)  # its token taken before the import

    def token_and_issue() -> tuple[int, int]:
        return dept_client.token_response().status_code, interactive.post().status_code

    answers = between_chunks(monkeypatch, rows[2], token_and_issue)
    batch = import_file(app, dept_client, jsonl(*rows))
    assert answers == [(200, 201)]  # not 503: the import held no lock while it read its next chunk
    assert (batch["status"], batch["imported_rows"]) == ("completed", ROWS)
    assert count(app, Certificate) == ROWS + 1 and count(app, ImportStaging) == 0


def test_an_all_or_nothing_batch_failing_after_some_chunks_publishes_nothing_and_leaves_nothing_staged(
        app, dept_client, monkeypatch):
    rows = [certificate_body() for _ in range(ROWS)]
    staged_meanwhile = between_chunks(monkeypatch, rows[4], lambda: count(app, ImportStaging))

    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise RuntimeError("a bug in publishing")

    monkeypatch.setattr(imports._Run, "record_events", broken)
    batch = import_file(app, dept_client, jsonl(*rows))
    assert staged_meanwhile == [2]  # the first chunk was staged (and committed) when the third was read
    assert (batch["status"], batch["imported_rows"], batch["error"]["code"]) == ("failed", 0, "import_failed")
    assert count(app, Certificate) == 0 and count(app, Notification) == 0 and count(app, ImportStaging) == 0


def test_an_all_or_nothing_batch_interrupted_after_some_chunks_is_taken_over_and_imported_once(
        app, dept_client, clock, monkeypatch):
    rows = [certificate_body() for _ in range(ROWS)]
    mended = failing_at_call(monkeypatch, "stage", 3, database_failure())
    batch_id = submit(dept_client, jsonl(*rows)).get_json()["id"]
    assert run_imports(app) == {"interrupted": 1}
    assert count(app, Certificate) == 0 and count(app, ImportStaging) == 2  # left for the next attempt to clear
    mended()
    clock.advance(seconds=STALE.total_seconds())
    assert run_imports(app) == {"completed": 1}
    assert count(app, Certificate) == ROWS and count(app, Notification) == ROWS
    assert count(app, CertificateEvent) == ROWS and count(app, ImportStaging) == 0
    assert read_batch(dept_client, batch_id)["imported_rows"] == ROWS


@pytest.mark.parametrize("mode", ["all", "partial"])
def test_a_number_issued_between_two_chunks_is_not_imported_again(app, dept_client, monkeypatch, mode):
    rows = [certificate_body() for _ in range(ROWS)]
    taken = certificate_body(certificate_number=rows[0]["certificate_number"])  # other content, same number
    answers = between_chunks(monkeypatch, rows[2], lambda: Department(dept_client).post(taken).status_code)
    batch = import_file(app, dept_client, jsonl(*rows), mode=mode)
    assert answers == [201]
    assert problems(batch) == {(1, "certificate_number", "certificate_number_taken")}
    if mode == "all":  # a conflict report, and nothing of the batch published
        assert (batch["status"], batch["imported_rows"], batch["failed_rows"]) == ("failed", 0, 1)
        assert count(app, Certificate) == 1 and count(app, Notification) == 1
    else:  # the row's problem; the other rows are published
        assert (batch["status"], batch["imported_rows"], batch["failed_rows"]) == ("completed", ROWS - 1, 1)
        assert count(app, Certificate) == ROWS and count(app, Notification) == ROWS
    assert count(app, ImportStaging) == 0


def test_a_partial_batch_cut_short_while_publishing_is_taken_over_without_duplicates(app, dept_client, clock,
                                                                                      monkeypatch):
    monkeypatch.setattr(imports, "PUBLISH_ROWS", 2)
    rows = [certificate_body() for _ in range(ROWS)]
    mended = failing_at_call(monkeypatch, "_publish", 2, database_failure())
    batch_id = submit(dept_client, jsonl(*rows), mode="partial").get_json()["id"]
    assert run_imports(app) == {"interrupted": 1}
    assert count(app, Certificate) == 2  # the first publishing step was committed: partial is not all-or-nothing
    mended()
    clock.advance(seconds=STALE.total_seconds())
    assert run_imports(app) == {"completed": 1}
    batch = read_batch(dept_client, batch_id)
    assert (batch["status"], batch["imported_rows"], batch["skipped_rows"]) == ("completed", ROWS, 0)
    assert count(app, Certificate) == ROWS and count(app, Notification) == ROWS
    assert count(app, CertificateEvent) == ROWS and count(app, ImportStaging) == 0


def test_interactive_issues_between_chunks_never_share_a_status_list_slot_with_the_batch(app, dept_client,
                                                                                        monkeypatch):
    rows = [certificate_body() for _ in range(ROWS)]
    drawn: list[int] = []  # the batch's slots as it takes them, before it stages the certificates signed with them
    slots_for = Signer.slots_for

    def remember(self: Signer, items: Any) -> Any:
        slots = slots_for(self, items)
        drawn.extend(index for _, index in slots)
        return slots

    monkeypatch.setattr(Signer, "slots_for", remember)
    interactive, issued = Department(dept_client), []

    def issue_picking(first: Callable[[], int]) -> Callable[[], int]:
        """An interactive issue whose allocator draws `first()` before any random slot."""
        def write() -> int:
            real = status_lists._rng.randrange
            queue = [first()]
            monkeypatch.setattr(status_lists._rng, "randrange", lambda n: queue.pop() if queue else real(n))
            try:
                response = interactive.post()
            finally:
                monkeypatch.setattr(status_lists._rng, "randrange", real)
            issued.append(response.get_json()["identifier"])
            return int(response.status_code)
        return write

    # Before the third row: the first two rows' slots are drawn and their certificates signed, not yet staged.
    # Before the fifth: those two are staged (their slots taken for everyone), the next two drawn.
    pending = between_chunks(monkeypatch, rows[2], issue_picking(lambda: drawn[0]))
    staged_first: list[int] = []

    def staged_slot() -> int:
        with app.app_context():
            staged_first.append(int(db.session.scalar(select(ImportStaging.status_index)
                                                      .order_by(ImportStaging.id).limit(1)) or 0))
        return staged_first[0]

    after_staging = between_chunks(monkeypatch, rows[4], issue_picking(staged_slot))
    batch = import_file(app, dept_client, jsonl(*rows))
    assert pending == [201] and after_staging == [201]
    assert (batch["status"], batch["imported_rows"]) == ("completed", ROWS)
    stored = certificates(app)
    assert len(stored) == ROWS + 2
    assert len({(c.status_list_id, c.status_index) for c in stored}) == ROWS + 2  # no slot given twice
    assert all(slot_in_sd_jwt(app, c) == c.status_index for c in stored)  # each signed with the slot it holds
    by_identifier = {c.identifier: c for c in stored}
    assert by_identifier[issued[0]].status_index == drawn[0]  # the interactive issue got the batch's drawn slot…
    assert drawn[0] not in {c.status_index for c in stored if c.import_batch_id is not None}  # …the batch re-drew
    assert by_identifier[issued[1]].status_index != staged_first[0]  # a staged row's slot is not given away


def test_a_token_request_and_an_issue_between_two_publishing_steps_of_an_all_or_nothing_batch_do_not_wait(
        app, dept_client, monkeypatch):
    rows = [certificate_body() for _ in range(ROWS)]
    interactive = Department(dept_client)  # its token taken before the import
    batch_id: list[str] = []

    def token_issue_and_status() -> tuple[int, int, str, int]:
        return (dept_client.token_response().status_code, interactive.post().status_code,
                read_batch(dept_client, batch_id[0])["status"],
                count(app, Certificate, Certificate.import_batch_id.is_not(None)))

    answers = between_publishing_steps(monkeypatch, token_issue_and_status)
    batch_id.append(submit(dept_client, jsonl(*rows)).get_json()["id"])
    assert run_imports(app) == {"completed": 1}
    # Not 503: the batch held no lock between its steps; its first two certificates are out, the batch still
    # processing until all are.
    assert answers == [(200, 201, "processing", 2)]
    batch = read_batch(dept_client, batch_id[0])
    assert (batch["status"], batch["imported_rows"]) == ("completed", ROWS)
    assert count(app, Certificate) == ROWS + 1 and count(app, ImportStaging) == 0


def test_an_issue_of_a_number_staged_by_a_publishing_batch_is_refused_as_a_duplicate(app, dept_client, monkeypatch):
    rows = [certificate_body() for _ in range(ROWS)]
    same_number = certificate_body(certificate_number=rows[4]["certificate_number"])  # other content

    def issue() -> tuple[int, str]:
        response = Department(dept_client).post(same_number)
        return response.status_code, response.get_json()["error"]["code"]

    answers = between_publishing_steps(monkeypatch, issue)
    batch = import_file(app, dept_client, jsonl(*rows))
    assert answers == [(409, "certificate_number_taken")]  # the batch decided to publish it: it is taken
    assert (batch["status"], batch["imported_rows"], batch["failed_rows"]) == ("completed", ROWS, 0)
    assert count(app, Certificate) == ROWS and count(app, ImportStaging) == 0


def test_an_all_or_nothing_batch_whose_worker_stops_while_publishing_is_published_to_the_end_by_the_takeover(
        app, dept_client, clock, monkeypatch):
    monkeypatch.setattr(imports, "PUBLISH_ROWS", 2)
    rows = [certificate_body() for _ in range(ROWS)]
    assert Department(dept_client).post(rows[0]).status_code == 201  # imported before: skipped
    mended = failing_at_call(monkeypatch, "_publish", 2, database_failure())
    batch_id = submit(dept_client, jsonl(*rows)).get_json()["id"]
    assert run_imports(app) == {"interrupted": 1}
    assert count(app, Certificate) == 1 + 2 and count(app, ImportStaging) == 2  # one step published, one to go
    mended()
    for path in spooled_files(app):  # the takeover does not read the file again
        path.unlink()
    clock.advance(seconds=STALE.total_seconds())
    assert run_imports(app) == {"completed": 1}
    batch = read_batch(dept_client, batch_id)
    assert (batch["status"], batch["total_rows"], batch["imported_rows"], batch["skipped_rows"],
            batch["failed_rows"]) == ("completed", ROWS, ROWS - 1, 1, 0)
    imported = Certificate.import_batch_id.is_not(None)
    assert count(app, Certificate, imported) == ROWS - 1 and count(app, Certificate) == ROWS
    assert len(set(numbers(app))) == ROWS  # every row exactly once
    assert count(app, Notification) == ROWS and count(app, CertificateEvent) == ROWS
    assert count(app, ImportStaging) == 0


def test_an_all_or_nothing_batch_failing_unexpectedly_while_publishing_says_how_many_it_published(
        app, dept_client, monkeypatch):
    monkeypatch.setattr(imports, "PUBLISH_ROWS", 2)
    rows = [certificate_body() for _ in range(ROWS)]
    failing_at_call(monkeypatch, "_publish", 2, RuntimeError("a bug in publishing"))
    batch = import_file(app, dept_client, jsonl(*rows))
    # Failed at once (not retried: it would fail again), its first step's certificates out, the rest not.
    assert (batch["status"], batch["error"]["code"], batch["imported_rows"]) == ("failed", "import_failed", 2)
    assert count(app, Certificate) == 2 and count(app, ImportStaging) == 0


@pytest.mark.parametrize("mode", ["all", "partial"])
def test_a_number_staged_by_a_publishing_batch_is_taken_for_a_batch_deciding_later(app, dept_client, monkeypatch,
                                                                                   mode):
    first = [certificate_body() for _ in range(ROWS)]
    second = [certificate_body(), certificate_body(certificate_number=first[4]["certificate_number"])]
    first_id = submit(dept_client, jsonl(*first)).get_json()["id"]
    second_id = submit(dept_client, jsonl(*second), mode=mode).get_json()["id"]
    # The second batch imports from start to end while the first publishes (its last row still staged).
    answers = between_publishing_steps(monkeypatch, lambda: run_imports(app))
    assert run_imports(app) == {"completed": 1}
    assert [dict(outcome) for outcome in answers] == [{"failed" if mode == "all" else "completed": 1}]
    batch = read_batch(dept_client, second_id)
    assert problems(batch) == {(2, "certificate_number", "certificate_number_taken")}
    if mode == "all":  # nothing of it published
        assert (batch["status"], batch["imported_rows"], batch["failed_rows"]) == ("failed", 0, 1)
    else:
        assert (batch["status"], batch["imported_rows"], batch["failed_rows"]) == ("completed", 1, 1)
    assert read_batch(dept_client, first_id)["imported_rows"] == ROWS
    assert count(app, Certificate) == ROWS + (mode == "partial") and count(app, ImportStaging) == 0


def numbers(app: Any) -> list[str]:
    """The certificate numbers (their blind indexes) of every stored certificate."""
    with app.app_context():
        return list(db.session.scalars(select(Certificate.number_index)))
