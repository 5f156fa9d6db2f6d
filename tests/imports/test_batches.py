"""Batch import (批量导入): JSON Lines and CSV, all-or-nothing and partial, idempotent, from the API (queued, then
imported by the job) and the CLI (at once). test_batches_async.py covers the queue itself."""

from __future__ import annotations

import io
import json
import multiprocessing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from backend.core.db.bulk_insert import BulkInsert
from backend.extensions import db
from backend.imports import signer as import_signer
from backend.issuance import issuer as issuance
from backend.models import AuditEvent, Certificate, CertificateEvent, ImportBatch, Notification, SigningKey
from tests.conftest import CIVIL_AFFAIRS, SAMR
from tests.factories import BUSINESS_LICENCE, FOOD_LICENCE, MARRIAGE, certificate_body
from tests.imports.batch_support import (
    CSV,
    JSONL,
    STALE,
    count,
    csv_file,
    database_failure,
    identifiers,
    import_file,
    jsonl,
    problems,
    read_batch,
    run_imports,
    spooled_files,
    submit,
)
from tests.presentation_support import presented_to


def test_jsonl_batch_imports_every_row_and_each_certificate_can_be_read(app, dept_client):
    bodies = [certificate_body(), certificate_body(FOOD_LICENCE), certificate_body()]
    batch = import_file(app, dept_client, jsonl(*bodies))
    assert batch["status"] == "completed" and batch["format"] == "jsonl" and batch["mode"] == "all"
    assert (batch["total_rows"], batch["imported_rows"], batch["skipped_rows"], batch["failed_rows"]) == (3, 3, 0, 0)
    assert batch["report"] == [] and batch["report_truncated"] is False and batch["error"] is None
    numbers = set()
    for identifier in identifiers(app):
        detail = dept_client.http.get(f"/gov/v1/certificates/{identifier}", headers=dept_client.headers())
        assert detail.status_code == 200
        assert detail.get_json()["origin"] == "imported" and detail.get_json()["status"] == "valid"
        numbers.add(detail.get_json()["certificate_number"])
    assert numbers == {body["certificate_number"] for body in bodies}


def test_csv_batch_converts_cells_by_field_type_and_reads_long_term_and_default_validity(app, dept_client):
    food = certificate_body(FOOD_LICENCE, fields={"online_operation": False})  # no valid_until: type default
    business = certificate_body()  # valid_until None: 长期
    batch = import_file(app, dept_client, csv_file(food, business), CSV)
    assert (batch["format"], batch["imported_rows"], batch["failed_rows"]) == ("csv", 2, 0)
    details = {}
    for identifier in identifiers(app):
        detail = dept_client.http.get(f"/gov/v1/certificates/{identifier}", headers=dept_client.headers()).get_json()
        details[detail["type_code"]] = detail
    assert details[FOOD_LICENCE]["fields"]["online_operation"] is False
    assert details[FOOD_LICENCE]["valid_until"] == "2031-01-09"  # five years by default
    assert details[BUSINESS_LICENCE]["valid_until"] is None


def test_bom_at_the_start_of_a_file_is_tolerated(app, dept_client):
    assert import_file(app, dept_client, b"\xef\xbb\xbf" + jsonl(certificate_body()))["imported_rows"] == 1
    data = b"\xef\xbb\xbf" + csv_file(certificate_body())
    assert import_file(app, dept_client, data, "text/csv; charset=utf-8")["imported_rows"] == 1


def test_one_bad_row_in_all_mode_imports_nothing_and_the_report_names_row_and_field(app, dept_client):
    bad = certificate_body(holder={"code": "91411502MA45XXXXX0"})
    batch = import_file(app, dept_client, jsonl(certificate_body(), certificate_body(), bad, certificate_body()))
    assert batch["status"] == "failed" and batch["error"] is None
    assert (batch["total_rows"], batch["imported_rows"], batch["failed_rows"]) == (4, 0, 1)
    assert [(entry["row"], entry["field"]) for entry in batch["report"]] == [(3, "holder.code")]
    assert count(app, Certificate) == 0 and count(app, Notification) == 0
    # The failed batch and its report were kept.
    assert read_batch(dept_client, batch["id"]) == batch


def test_every_bad_row_is_reported_with_each_of_its_fields(app, dept_client):
    rows = [certificate_body(issued_on="2026-13-01"), certificate_body(),
            certificate_body(fields={"entity_type": None, "unknown": "x"})]
    batch = import_file(app, dept_client, jsonl(*rows))
    assert problems(batch) == {(1, "issued_on", "invalid_date"), (3, "fields.entity_type", "missing"),
                               (3, "fields.unknown", "unknown_field")}
    assert batch["failed_rows"] == 2 and all(entry["detail"] for entry in batch["report"])


def test_partial_mode_imports_the_good_rows_and_reports_the_bad_ones(app, dept_client):
    rows = [certificate_body(), certificate_body(valid_from="not a date"), certificate_body()]
    batch = import_file(app, dept_client, jsonl(*rows), mode="partial")
    assert (batch["status"], batch["mode"]) == ("completed", "partial")
    assert (batch["imported_rows"], batch["failed_rows"]) == (2, 1)
    assert problems(batch) == {(2, "valid_from", "invalid_date")}
    assert count(app, Certificate, Certificate.import_batch_id.is_not(None)) == 2


def test_malformed_json_lines_are_row_errors_with_a_reason(app, dept_client):
    data = jsonl(certificate_body(), b'{"type_code": ', b"[1, 2]", certificate_body(), b"\xff\xfe",
                 b"[" * 100_000, b'{"fields": ' + b"9" * 5000 + b"}") + b"\n\n"
    batch = import_file(app, dept_client, data, mode="partial")
    assert problems(batch) == {(2, None, "malformed_json"), (3, None, "not_an_object"), (5, None, "invalid_encoding"),
                               (6, None, "malformed_json"), (7, None, "malformed_json")}
    assert (batch["total_rows"], batch["imported_rows"], batch["failed_rows"]) == (7, 2, 5)
    assert "第 15 列" in batch["report"][0]["detail"]


def test_an_overlong_line_is_a_row_error_and_the_next_line_is_read(app, dept_client):
    huge = json.dumps({**certificate_body(), "fields": {"business_scope": "茶" * 400_000}}).encode()
    batch = import_file(app, dept_client, jsonl(huge, certificate_body()), mode="partial")
    assert problems(batch) == {(1, None, "line_too_long")}
    assert batch["imported_rows"] == 1


def test_unknown_keys_in_a_json_line_are_rejected(app, dept_client):
    row = {**certificate_body(), "colour": "red"}
    row["holder"]["nickname"] = "x"
    batch = import_file(app, dept_client, jsonl(row))
    assert problems(batch) == {(1, "colour", "unknown_field"), (1, "holder.nickname", "unknown_field")}


def test_the_same_key_and_file_return_the_same_batch_without_importing_again(app, dept_client):
    data = jsonl(certificate_body(), certificate_body())
    first = submit(dept_client, data, key="import-2026-11-26")
    second = submit(dept_client, data, key="import-2026-11-26")
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.get_json() == first.get_json()  # still queued
    run_imports(app)
    third = submit(dept_client, data, key="import-2026-11-26")
    assert third.status_code == 200 and third.get_json() == read_batch(dept_client, first.get_json()["id"])
    assert third.get_json()["status"] == "completed"
    run_imports(app)
    assert count(app, Certificate) == 2 and count(app, ImportBatch) == 1


def test_the_same_file_under_a_new_key_skips_every_row(app, dept_client):
    data = jsonl(certificate_body(), certificate_body(FOOD_LICENCE))
    import_file(app, dept_client, data, key="first-run-0001")
    batch = import_file(app, dept_client, data, key="second-run-0002")
    assert (batch["status"], batch["imported_rows"], batch["skipped_rows"], batch["failed_rows"]) == \
        ("completed", 0, 2, 0)
    assert count(app, Certificate) == 2 and count(app, Notification) == 2


def test_the_same_rows_as_csv_after_jsonl_are_skipped_too(app, dept_client):
    bodies = [certificate_body(FOOD_LICENCE, fields={"online_operation": True}), certificate_body()]
    import_file(app, dept_client, jsonl(*bodies))
    batch = import_file(app, dept_client, csv_file(*bodies), CSV)
    assert (batch["imported_rows"], batch["skipped_rows"]) == (0, 2)


def test_the_same_key_with_another_file_is_refused(app, dept_client):
    first = submit(dept_client, jsonl(certificate_body()), key="import-2026-11-26")
    response = submit(dept_client, jsonl(certificate_body()), key="import-2026-11-26")
    assert response.status_code == 409
    error = response.get_json()["error"]
    assert error["code"] == "idempotency_key_reused" and error["details"]["batch"] == first.get_json()["id"]
    run_imports(app)
    assert submit(dept_client, jsonl(certificate_body()), key="import-2026-11-26").status_code == 409  # finished too
    assert count(app, Certificate) == 1 and count(app, ImportBatch) == 1


def test_the_same_key_with_another_mode_is_refused(app, dept_client):
    data = jsonl(certificate_body())
    submit(dept_client, data, key="import-2026-11-26")
    assert submit(dept_client, data, key="import-2026-11-26", mode="partial").status_code == 409


def test_a_number_issued_before_with_other_content_is_a_row_error(app, dept_client):
    issued = certificate_body()
    assert dept_client.http.post("/gov/v1/certificates", json=issued, headers=dept_client.headers()).status_code == 201
    changed = {**issued, "holder": {**issued["holder"], "name": "另一家公司"}}
    batch = import_file(app, dept_client, jsonl(certificate_body(), changed), mode="partial")
    assert problems(batch) == {(2, "certificate_number", "certificate_number_taken")}
    assert batch["imported_rows"] == 1
    same = import_file(app, dept_client, jsonl(issued))  # the API-issued one, word for word
    assert (same["status"], same["skipped_rows"]) == ("completed", 1)


def test_a_number_twice_in_one_file_fails_the_second_row(app, dept_client):
    first = certificate_body()
    second = certificate_body(certificate_number=first["certificate_number"])
    batch = import_file(app, dept_client, jsonl(first, certificate_body(), first, second), mode="partial")
    assert problems(batch) == {(3, "certificate_number", "duplicate_in_file"),
                               (4, "certificate_number", "duplicate_in_file")}
    assert batch["imported_rows"] == 2


def test_a_number_repeated_in_a_later_chunk_is_found(app, dept_client, monkeypatch):
    monkeypatch.setattr("backend.imports.batches.CHUNK_ROWS", 2)
    rows = [certificate_body() for _ in range(4)]
    batch = import_file(app, dept_client, jsonl(*rows, rows[0]), mode="partial")
    assert problems(batch) == {(5, "certificate_number", "duplicate_in_file")}
    assert batch["imported_rows"] == 4 and batch["processed_rows"] == 5


def test_another_department_cannot_read_the_batch(app, dept_client, make_dept_client):
    batch = import_file(app, dept_client, jsonl(certificate_body()))
    other = make_dept_client(CIVIL_AFFAIRS, scopes=("issue",))
    response = other.http.get(f"/gov/v1/certificates/batches/{batch['id']}", headers=other.headers())
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "batch_not_found"
    missing = dept_client.http.get("/gov/v1/certificates/batches/" + "0" * 32, headers=dept_client.headers())
    assert missing.status_code == 404


def test_a_type_the_department_does_not_issue_is_a_row_error(app, make_dept_client):
    civil = make_dept_client(CIVIL_AFFAIRS, scopes=("issue",))
    rows = [certificate_body(MARRIAGE), certificate_body(BUSINESS_LICENCE), certificate_body(BUSINESS_LICENCE),
            {**certificate_body(MARRIAGE), "type_code": "11411500MB1C629765999"}]
    batch = import_file(app, civil, jsonl(*rows), mode="partial")
    assert problems(batch) == {(2, "type_code", "type_not_issuable"), (3, "type_code", "type_not_issuable"),
                               (4, "type_code", "unknown_type")}
    assert batch["imported_rows"] == 1
    assert count(app, Certificate) == 1


def test_batches_need_the_issue_scope(app, make_dept_client):
    verifier = make_dept_client(scopes=("verify",))
    assert submit(verifier, jsonl(certificate_body())).status_code == 403


def test_a_batch_writes_one_audit_event_and_one_holder_notification_per_certificate(app, dept_client, clock,
                                                                                     monkeypatch):
    monkeypatch.setattr("backend.imports.batches.CHUNK_ROWS", 2)  # rows stored in several chunks
    import_file(app, dept_client, jsonl(*(certificate_body() for _ in range(3))))
    assert count(app, AuditEvent, AuditEvent.action == "certificate.batch_queued") == 1
    assert count(app, AuditEvent, AuditEvent.action == "certificate.batch_imported") == 1
    assert count(app, AuditEvent, AuditEvent.action == "certificate.issued") == 0
    assert count(app, Notification, Notification.kind == "certificate_issued") == 3
    with app.app_context():
        for certificate in db.session.scalars(select(Certificate)):
            events = db.session.scalars(select(CertificateEvent)
                                        .where(CertificateEvent.certificate_id == certificate.id)).all()
            assert [(e.event, e.from_status, e.to_status, e.occurred_at) for e in events] == \
                [("issued", None, "valid", clock())]
            assert events[0].actor.startswith("client:")
            notice = db.session.scalars(select(Notification).where(Notification.certificate_id == certificate.id)).one()
            assert (notice.holder_index, notice.data, notice.created_at, notice.read_at) == \
                (certificate.holder_index, {"identifier": certificate.identifier}, clock(), None)
            assert (certificate.created_at, certificate.status_changed_at) == (clock(), clock())
        event = db.session.scalar(select(AuditEvent).where(AuditEvent.action == "certificate.batch_imported"))
        assert event is not None
        assert {k: event.details[k] for k in ("total", "imported", "skipped", "failed")} == \
            {"total": 3, "imported": 3, "skipped": 0, "failed": 0}


def test_a_crash_mid_import_leaves_nothing_and_the_batch_is_imported_once_taken_over(app, dept_client, clock,
                                                                                      monkeypatch):
    monkeypatch.setattr("backend.imports.batches.CHUNK_ROWS", 2)
    data = jsonl(*(certificate_body() for _ in range(5)))
    calls = 0
    insert = BulkInsert.execute

    def crash_in_second_chunk(self: BulkInsert, rows: list[dict[str, Any]]) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:  # certificates and notifications of the first chunk went in
            raise database_failure()
        insert(self, rows)

    monkeypatch.setattr(BulkInsert, "execute", crash_in_second_chunk)
    batch_id = submit(dept_client, data, key="crash-test-0001").get_json()["id"]
    assert run_imports(app) == {"interrupted": 1}
    assert count(app, Certificate) == 0 and count(app, Notification) == 0
    assert read_batch(dept_client, batch_id)["status"] == "processing"  # until its worker is taken to be dead
    monkeypatch.setattr(BulkInsert, "execute", insert)
    assert run_imports(app) == {}  # not stale yet: nobody takes it over
    clock.advance(seconds=STALE.total_seconds())
    assert run_imports(app) == {"completed": 1}
    assert read_batch(dept_client, batch_id)["imported_rows"] == 5
    assert submit(dept_client, data, key="crash-test-0001").status_code == 200
    assert count(app, Certificate) == 5 and count(app, ImportBatch) == 1


def test_the_stored_report_is_capped_and_says_so(app, dept_client):
    data = jsonl(*(b"not json" for _ in range(1005)))
    batch = import_file(app, dept_client, data, mode="partial")
    assert batch["failed_rows"] == 1005
    assert len(batch["report"]) == 1000 and batch["report_truncated"] is True
    small = import_file(app, dept_client, jsonl(b"not json"))
    assert small["report_truncated"] is False


@pytest.mark.parametrize("app_settings", [{"ECERT_MAX_BATCH_BYTES": 4096}])
def test_a_file_over_the_byte_cap_is_refused_with_413(app, dept_client):
    data = jsonl(*(certificate_body() for _ in range(10)))
    assert len(data) > 4096
    response = submit(dept_client, data)
    assert response.status_code == 413
    assert response.get_json()["error"]["details"]["max_bytes"] == 4096
    assert count(app, ImportBatch) == 0 and spooled_files(app) == []


@pytest.mark.parametrize("app_settings", [{"ECERT_MAX_BATCH_BYTES": 4096}])
def test_a_streamed_file_without_length_is_cut_off_at_the_byte_cap(app, dept_client):
    data = jsonl(*(certificate_body() for _ in range(10)))
    headers = {**dept_client.headers(), "Content-Type": JSONL, "Idempotency-Key": "streamed-0001",
               "Transfer-Encoding": "chunked"}
    response = dept_client.http.post("/gov/v1/certificates/batches", input_stream=io.BytesIO(data), headers=headers,
                                     environ_overrides={"wsgi.input_terminated": True})
    assert response.status_code == 413
    assert response.get_json()["error"]["details"]["max_bytes"] == 4096
    assert count(app, ImportBatch) == 0 and count(app, Certificate) == 0 and spooled_files(app) == []


def test_a_file_may_be_larger_than_the_cap_of_ordinary_requests(app, dept_client):
    data = jsonl(certificate_body()) + b"\n" * (app.config["MAX_CONTENT_LENGTH"] + 10)
    assert import_file(app, dept_client, data)["imported_rows"] == 1


@pytest.mark.parametrize("app_settings", [{"ECERT_MAX_BATCH_ROWS": 3}])
def test_a_file_over_the_row_cap_fails_as_a_whole(app, dept_client):
    batch = import_file(app, dept_client, jsonl(*(certificate_body() for _ in range(4))), mode="partial")
    assert (batch["status"], batch["imported_rows"], batch["report"]) == ("failed", 0, [])
    assert batch["error"]["code"] == "too_many_rows" and batch["error"]["details"] == {"max_rows": 3}
    assert count(app, Certificate) == 0 and spooled_files(app) == []
    assert import_file(app, dept_client, jsonl(*(certificate_body() for _ in range(3))))["status"] == "completed"


def test_a_csv_with_an_unknown_column_is_refused_with_a_clear_error(app, dept_client):
    response = submit(dept_client, csv_file(certificate_body(), extra_columns=("holder_phone",)), CSV)
    assert response.status_code == 422
    error = response.get_json()["error"]
    assert error["code"] == "unknown_column" and error["details"]["columns"] == ["holder_phone"]
    assert "holder_phone" in error["message"]
    assert count(app, ImportBatch) == 0 and spooled_files(app) == []


def test_a_csv_without_a_required_column_is_refused(app, dept_client):
    response = submit(dept_client, b"type_code,certificate_number\n" + BUSINESS_LICENCE.encode() + b",X1\n", CSV)
    assert response.status_code == 422
    assert response.get_json()["error"]["code"] == "missing_column"


def test_csv_rows_with_the_wrong_number_of_cells_or_bad_booleans_are_row_errors(app, dept_client):
    food = certificate_body(FOOD_LICENCE, fields={"online_operation": True})
    lines = csv_file(food, certificate_body(FOOD_LICENCE)).decode().splitlines()
    lines[1] = lines[1].replace(",是,", ",也许,")
    lines.append("only,three,cells")
    batch = import_file(app, dept_client, "\n".join(lines).encode(), CSV, mode="partial")
    assert problems(batch) == {(1, "fields.online_operation", "invalid"), (3, None, "wrong_column_count")}
    assert batch["imported_rows"] == 1


def test_an_empty_file_is_refused(app, dept_client):
    for data in (b"", b"\n\n", b"\xef\xbb\xbf \r\n"):
        response = submit(dept_client, data)
        assert response.status_code == 422
        assert response.get_json()["error"]["code"] == "empty_batch"
    assert count(app, ImportBatch) == 0 and spooled_files(app) == []


def test_a_csv_with_a_header_and_no_rows_fails_as_a_whole(app, dept_client):
    batch = import_file(app, dept_client, csv_file(), CSV)
    assert (batch["status"], batch["error"]["code"], batch["total_rows"]) == ("failed", "empty_batch", 0)


def test_a_batch_needs_an_idempotency_key(app, dept_client):
    headers = {**dept_client.headers(), "Content-Type": JSONL}
    response = dept_client.http.post("/gov/v1/certificates/batches", data=jsonl(certificate_body()), headers=headers)
    assert response.status_code == 422
    assert response.get_json()["error"]["details"]["fields"][0]["field"] == "Idempotency-Key"


def test_an_idempotency_key_must_be_8_to_128_printable_characters(app, dept_client):
    assert submit(dept_client, jsonl(certificate_body()), key="short").status_code == 422
    assert submit(dept_client, jsonl(certificate_body()), key="k" * 129).status_code == 422
    assert count(app, ImportBatch) == 0


def test_a_csv_that_is_not_utf8_is_refused(app, dept_client):
    batch = import_file(app, dept_client, csv_file(certificate_body()).decode().encode("gb18030"), CSV)
    assert (batch["status"], batch["error"]["code"]) == ("failed", "invalid_encoding")
    assert "数据行" in batch["error"]["message"] and count(app, Certificate) == 0


def test_a_holder_code_type_that_lost_its_leading_zeros_in_a_spreadsheet_is_read_as_001(app, dept_client):
    data = csv_file(certificate_body()).decode().replace(",001,", ",1,").encode()
    assert import_file(app, dept_client, data, CSV)["imported_rows"] == 1


def test_other_content_types_are_refused_with_415(app, dept_client):
    response = submit(dept_client, json.dumps([certificate_body()]).encode(), "application/json")
    assert response.status_code == 415
    assert response.get_json()["error"]["code"] == "unsupported_media_type"


def test_cli_import_shows_progress_and_a_second_run_adds_nothing(app, runner, catalog, tmp_path: Path):
    path = tmp_path / "licences.jsonl"
    path.write_bytes(jsonl(certificate_body(), certificate_body(FOOD_LICENCE), certificate_body()))
    result = runner.invoke(args=["certificates", "import", str(path), "--dept", SAMR])
    assert result.exit_code == 0, result.output
    assert "导入中" in result.output and "导入 3" in result.output
    assert count(app, Certificate) == 3
    again = runner.invoke(args=["certificates", "import", str(path), "--dept", SAMR])
    assert again.exit_code == 0 and "未重复导入" in again.output
    assert count(app, Certificate) == 3 and count(app, ImportBatch) == 1
    with app.app_context():
        batch = db.session.scalar(select(ImportBatch))
        assert batch is not None and batch.submitted_by.startswith("operator:")
        assert batch.file_bytes == batch.processed_bytes == path.stat().st_size and batch.spool_key is None


def test_cli_import_of_a_failing_file_exits_non_zero_and_lists_the_problems(app, runner, catalog, tmp_path: Path):
    path = tmp_path / "licences.csv"
    path.write_bytes(csv_file(certificate_body(), certificate_body(issued_on="2026/03/01")))
    result = runner.invoke(args=["certificates", "import", str(path), "--dept", SAMR])
    assert result.exit_code == 1
    assert "failed" in result.output and "第 2 行 issued_on [invalid_date]" in result.output
    assert count(app, Certificate) == 0 and count(app, ImportBatch) == 1
    partial = runner.invoke(args=["certificates", "import", str(path), "--dept", SAMR, "--mode", "partial"])
    assert partial.exit_code == 0 and "导入 1" in partial.output
    assert count(app, Certificate) == 1


@pytest.fixture
def forks(monkeypatch):
    """Counts the worker processes an import starts; chunks of 3 rows, so that a few rows make several chunks."""
    started = []
    start = multiprocessing.process.BaseProcess.start

    def counting_start(self: Any) -> None:
        started.append(self.name)
        start(self)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", counting_start)
    monkeypatch.setattr("backend.imports.batches.CHUNK_ROWS", 3)
    return started


@pytest.mark.parametrize("app_settings", [{"ECERT_IMPORT_WORKERS": 2}])
def test_certificates_signed_in_worker_processes_are_stored_like_the_others(app, dept_client, clock, forks):
    bodies = [certificate_body(FOOD_LICENCE if n % 2 else BUSINESS_LICENCE) for n in range(7)]
    batch = import_file(app, dept_client, jsonl(*bodies[:4], {**bodies[4], "issued_on": "x"}, *bodies[5:]),
                        mode="partial")
    assert (batch["imported_rows"], batch["failed_rows"]) == (6, 1)
    assert len(forks) == 2  # forked once for the import, fed chunk after chunk (3 rows a chunk here)
    assert not multiprocessing.active_children()  # and let go when it is done
    slots, numbers = set(), set()
    for identifier in identifiers(app):
        detail = dept_client.http.get(f"/gov/v1/certificates/{identifier}", headers=dept_client.headers()).get_json()
        slots.add((detail["status_list"]["list"], detail["status_list"]["idx"]))
        numbers.add(detail["certificate_number"])
        presentation = presented_to(app, dept_client, clock, detail["sd_jwt"])
        verified = dept_client.http.post("/gov/v1/verify", json={"presentation": presentation},
                                         headers=dept_client.headers())
        assert verified.get_json()["valid"] is True, verified.get_json()
    assert numbers == {body["certificate_number"] for n, body in enumerate(bodies) if n != 4}
    assert len(slots) == 6
    assert count(app, Notification) == 6


@pytest.mark.parametrize("app_settings", [{"ECERT_IMPORT_WORKERS": 2}])
def test_with_worker_processes_one_bad_row_in_all_mode_still_imports_nothing(app, dept_client, forks):
    rows = [certificate_body() for _ in range(8)]
    batch = import_file(app, dept_client, jsonl(*rows[:7], {**rows[7], "valid_from": ""}))
    assert (batch["status"], batch["imported_rows"], problems(batch)) == ("failed", 0, {(8, "valid_from",
                                                                                         "invalid_date")})
    assert forks and count(app, Certificate) == 0
    assert not multiprocessing.active_children()


def signing_fails_for(monkeypatch: Any, number: str, error: BaseException) -> None:
    """`Issuer.build_row` (identify, sign, encrypt) raises `error` for the certificate numbered `number`."""
    build = issuance.Issuer.build_row

    def failing(self: Any, prepared: Any, **kwargs: Any) -> Any:
        if prepared.number == number:
            raise error
        return build(self, prepared, **kwargs)

    monkeypatch.setattr(issuance.Issuer, "build_row", failing)


@pytest.mark.parametrize("app_settings", [{}, {"ECERT_IMPORT_WORKERS": 2}], ids=["in-process", "workers"])
@pytest.mark.parametrize("mode", ["all", "partial"])
def test_a_row_whose_signing_raises_is_that_rows_problem(app, dept_client, clock, forks, monkeypatch, mode):
    rows = [certificate_body() for _ in range(7)]
    signing_fails_for(monkeypatch, rows[4]["certificate_number"], OverflowError("date value out of range"))
    batch = import_file(app, dept_client, jsonl(*rows), mode=mode)
    assert problems(batch) == {(5, None, "row_failed")} and batch["failed_rows"] == 1
    if mode == "partial":
        assert (batch["status"], batch["imported_rows"]) == ("completed", 6)
        assert count(app, Certificate) == 6 and count(app, Notification) == 6
    else:
        assert (batch["status"], batch["imported_rows"]) == ("failed", 0)
        assert count(app, Certificate) == 0
    assert not multiprocessing.active_children()


@pytest.mark.parametrize("app_settings", [{"ECERT_IMPORT_WORKERS": 2}])
def test_a_signing_worker_that_dies_fails_the_import_at_once_and_leaves_nothing(app, dept_client, clock, forks,
                                                                                 monkeypatch):
    rows = [certificate_body() for _ in range(7)]
    signing_fails_for(monkeypatch, rows[4]["certificate_number"], SystemExit(9))  # the worker process ends
    batch_id = submit(dept_client, jsonl(*rows), key="worker-failure-1").get_json()["id"]
    assert run_imports(app) == {"failed": 1}
    batch = read_batch(dept_client, batch_id)
    assert (batch["status"], batch["error"]["code"], batch["imported_rows"]) == ("failed", "import_failed", 0)
    assert count(app, Certificate) == 0 and not multiprocessing.active_children()
    clock.advance(seconds=STALE.total_seconds())
    assert run_imports(app) == {}  # failed, not left to be tried again


def test_a_signing_worker_stops_when_the_importing_process_is_gone():
    """A killed import must not leave its workers waiting for work for ever: they see the pipe close and exit."""
    mine, theirs = multiprocessing.Pipe()
    mine.close()
    import_signer._sign_in_worker(theirs, [], issuer=None, batch_id=1)  # type: ignore[arg-type]  # returns
    assert theirs.closed


def test_bulk_inserted_rows_read_back_as_the_orm_would_have_written_them(app):
    """BulkInsert converts values as SQLAlchemy does (aware datetimes to UTC, JSON, bytes, NULLs), once per value."""
    moment = datetime(2026, 3, 1, 20, 30, 15, 123456, tzinfo=timezone(timedelta(hours=8)))
    table = SigningKey.__table__
    rows = [{"kid": f"bulk-{n}", "purpose": "platform", "department_id": None, "alg": "ES256", "origin": "local",
             "status": "retired", "public_jwk": {"kty": "EC", "名称": n}, "private_key_enc": bytes([n, 0, 255]),
             "created_at": moment, "retired_at": None if n else moment + timedelta(days=n)} for n in range(3)]
    with app.app_context():
        BulkInsert(db.session, table, import_signer.columns_of(table)).execute(rows)
        stored = db.session.scalars(select(SigningKey).where(SigningKey.kid.like("bulk-%"))
                                    .order_by(SigningKey.kid)).all()
        assert [(k.kid, k.department_id, k.public_jwk, k.private_key_enc, k.created_at, k.retired_at)
                for k in stored] == [(r["kid"], None, r["public_jwk"], r["private_key_enc"], moment, r["retired_at"])
                                     for r in rows]
        assert all(k.created_at.utcoffset() == timedelta(0) for k in stored)
        db.session.rollback()


LONE_SURROGATE = "\\ud800"  # a JSON escape that decodes to half a UTF-16 pair: not a character, not storable


def _with_lone_surrogate(body: dict[str, Any], where: str) -> bytes:
    """The JSON line of `body` with a lone surrogate escape put into the string at `where` (a dotted path)."""
    marker = "SURROGATE-MARKER"
    target: Any = body
    *parents, last = where.split(".")
    for name in parents:
        target = target[name]
    if last == "<key>":
        target[marker] = "x"
    else:
        target[last] = target[last] + marker
    return json.dumps(body, ensure_ascii=False).replace(marker, LONE_SURROGATE).encode()


def test_a_lone_surrogate_in_a_json_line_fails_that_row_all_or_nothing_with_a_report(app, dept_client):
    data = jsonl(certificate_body(), _with_lone_surrogate(certificate_body(), "holder.name"), certificate_body())
    assert b"\\ud800" in data
    batch = import_file(app, dept_client, data)
    assert (batch["status"], batch["error"], batch["imported_rows"], batch["failed_rows"]) == ("failed", None, 0, 1)
    assert problems(batch) == {(2, "holder.name", "invalid_unicode")}
    assert count(app, Certificate) == 0 and spooled_files(app) == []


def test_lone_surrogates_anywhere_in_a_row_are_row_problems_and_partial_mode_imports_the_rest(app, dept_client):
    rows = [certificate_body(), _with_lone_surrogate(certificate_body(), "certificate_number"),
            _with_lone_surrogate(certificate_body(), "fields.legal_representative"),
            _with_lone_surrogate(certificate_body(), "fields.<key>"),
            _with_lone_surrogate(certificate_body(), "<key>"),
            b'{"type_code": "\\udc00\\ud800"}', certificate_body(),
            b'{"fields": {"deep": ' + b"[" * 30 + b'"\\uDBFF"' + b"]" * 30 + b"}}"]  # as deep as a line may nest
    batch = import_file(app, dept_client, jsonl(*rows), mode="partial")
    assert (batch["status"], batch["imported_rows"], batch["failed_rows"]) == ("completed", 2, 6)
    assert problems(batch) == {(2, "certificate_number", "invalid_unicode"),
                               (3, "fields.legal_representative", "invalid_unicode"),
                               (4, "fields", "invalid_unicode"), (5, None, "invalid_unicode"),
                               (6, "type_code", "invalid_unicode"), (8, "fields.deep", "invalid_unicode")}
    assert count(app, Certificate) == 2


def test_a_surrogate_pair_escape_is_one_character_and_imports(app, dept_client):
    body = certificate_body()
    body["holder"]["name"] += "PAIR"
    data = json.dumps(body, ensure_ascii=False).replace("PAIR", "\\ud840\\udc00").encode()  # 𠀀, one character
    batch = import_file(app, dept_client, jsonl(data))
    assert (batch["status"], batch["imported_rows"]) == ("completed", 1)


def test_surrogates_encoded_as_bytes_are_not_utf8_in_either_format(app, dept_client):
    body = certificate_body()
    line = json.dumps(body, ensure_ascii=False).encode().replace(b'"issued_on"', b'"issued_on\xed\xa0\x80"')
    batch = import_file(app, dept_client, jsonl(certificate_body(), line), mode="partial")
    assert problems(batch) == {(2, None, "invalid_encoding")} and batch["imported_rows"] == 1
    second = certificate_body()
    number = second["certificate_number"].encode()
    table = csv_file(certificate_body(), second).replace(number, number + b"\xed\xa0\x80")
    batch = import_file(app, dept_client, table, CSV, mode="partial")
    assert (batch["status"], batch["error"]["code"]) == ("failed", "invalid_encoding")
    assert count(app, Certificate) == 1


def test_cli_import_reports_a_lone_surrogate_as_a_row_problem(app, runner, catalog, tmp_path: Path):
    path = tmp_path / "batch.jsonl"
    path.write_bytes(jsonl(certificate_body(), _with_lone_surrogate(certificate_body(), "holder.name")))
    result = runner.invoke(args=["certificates", "import", str(path), "--dept", SAMR, "--mode", "partial"])
    assert "invalid_unicode" in result.output, result.output
    assert count(app, Certificate) == 1


def test_dates_outside_1900_to_2199_are_row_problems_naming_the_field_and_partial_mode_imports_the_rest(app,
                                                                                                   dept_client):
    rows = [certificate_body(), certificate_body(valid_until="9999-12-31"), certificate_body(valid_from="1899-12-31"),
            certificate_body(fields={"established_on": "2200-01-01"}), certificate_body()]

    batch = import_file(app, dept_client, jsonl(*rows), mode="partial")

    assert (batch["status"], batch["imported_rows"], batch["failed_rows"]) == ("completed", 2, 3)
    assert problems(batch) == {(2, "valid_until", "date_out_of_range"), (3, "valid_from", "date_out_of_range"),
                               (4, "fields.established_on", "date_out_of_range")}
    assert count(app, Certificate) == 2


def test_json_lines_with_non_finite_or_huge_numbers_are_row_problems(app, dept_client):
    good = json.dumps(certificate_body()).encode()
    lines = [good.replace(b'"fields": {', b'"fields": {"n": ' + literal + b", ")
             for literal in (b"NaN", b"-Infinity", b"1e400", b"9" * 40)]

    batch = import_file(app, dept_client, jsonl(*lines, certificate_body()), mode="partial")

    assert problems(batch) == {(n, None, "malformed_json") for n in range(1, 5)}
    assert batch["imported_rows"] == 1
