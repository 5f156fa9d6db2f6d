"""Batch import (批量导入) of certificates from JSON Lines or CSV: streamed in chunks, all-or-nothing or partial.

The API queues a batch (`queue_batch`, its file sealed in the spool) and a job imports it (`process_batch`, see
backend/web/import_runner.py); the CLI imports a file at once (`import_certificates`). Either way the import
happens in the caller's one transaction. The certificates go into a SAVEPOINT; when an all-or-nothing batch fails,
the savepoint is rolled back while the batch row and its per-row report stay in the outer transaction, so the one
commit keeps the report and nothing else. A killed process commits nothing of the import, and running the same
batch again (or re-submitting the same file under a new key) adds no certificate twice.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import IO, Any, cast

from sqlalchemy import insert, literal, null, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from backend.errors import Conflict, DomainError, Forbidden, NotFound, ValidationFailed
from backend.models import Base, Certificate, CertificateType, Department, ImportBatch
from backend.models.certificates import VALID
from backend.services.actors import Actor
from backend.services.audit import record_event
from backend.services.batch_files import FORMATS as FORMATS  # part of this module's interface (jsonl, csv)
from backend.services.batch_files import HashingReader, Problem, Row, csv_face, read_rows
from backend.services.bulk_insert import BulkInsert
from backend.services.face import FieldProblems
from backend.services.import_signer import CERTIFICATE_COLUMNS, CERTIFICATES, Signed, Signer, columns_of, values
from backend.services.issuance import (
    CertificateInput,
    Issuer,
    PreparedCertificate,
    certificate_event,
    holder_notification,
    new_public_id,
)
from backend.services.spool import HEAD_BYTES

MODES = ("all", "partial")
QUEUED, PROCESSING, COMPLETED, FAILED = "queued", "processing", "completed", "failed"
FINISHED = (COMPLETED, FAILED)
MAX_ROWS = 100_000
CHUNK_ROWS = 500
REPORT_LIMIT = 1000  # stored report entries; whole rows only, so truncation can be told from the counts

# Tables of the bulk INSERTs and the columns they write (all but the generated id).
EVENTS, NOTIFICATIONS = Base.metadata.tables["certificate_event"], Base.metadata.tables["notification"]
EVENT_COLUMNS, NOTIFICATION_COLUMNS = (columns_of(table) for table in (EVENTS, NOTIFICATIONS))

Progress = Callable[[int, int], None]  # (rows processed, bytes read)
ROW_FAILED = ("row_failed", "该行处理时发生内部错误，未导入；请核对该行数据，或联系平台运维")

log = logging.getLogger("ecert.imports")


class BatchNotFound(NotFound):
    code = "batch_not_found"
    message = "导入批次不存在"


@dataclass
class _Run:
    """The state of one import while its chunks go by."""

    session: Session
    issuer: Issuer
    batch: ImportBatch
    all_or_nothing: bool
    signer: Signer
    types: dict[str, CertificateType | Problem] = field(default_factory=dict)  # type code → type, or why not
    numbers: dict[str, int] = field(default_factory=dict)  # number index → the first row that had it
    inserts: tuple[BulkInsert, BulkInsert] | None = None  # certificates, notifications
    notices: dict[int, dict[str, Any]] = field(default_factory=dict)  # type id → holder notification template
    report: list[dict[str, Any]] = field(default_factory=list)
    report_full: bool = False
    row_numbers: dict[int, int] = field(default_factory=dict)  # id() of a certificate being signed → its row
    rows: int = 0
    imported: int = 0
    skipped: int = 0
    failed: int = 0

    def fail(self, number: int, problems: Iterable[Problem]) -> None:
        self.failed += 1
        entries = [{"row": number, "field": field_name, "reason": reason, "detail": detail}
                   for field_name, reason, detail in problems]
        if not self.report_full and len(self.report) + len(entries) <= REPORT_LIMIT:
            self.report.extend(entries)
        else:
            self.report_full = True

    def certificate_type(self, type_code: str) -> CertificateType | Problem:
        """The type, or why its rows fail (unknown, or not issuable by this department); looked up once per file."""
        if type_code not in self.types:
            problems = FieldProblems()
            try:
                found = self.issuer.certificate_type(type_code, problems)
            except Forbidden as exc:
                self.types[type_code] = ("type_code", exc.code, exc.message)
            else:
                item = problems.items[0] if problems.items else {"reason": "unknown_type", "detail": ""}
                self.types[type_code] = found if found is not None else ("type_code", item["reason"], item["detail"])
        return self.types[type_code]

    def prepare(self, row: Row) -> PreparedCertificate | None:
        """The row validated, or None when it has problems (reported). Whatever goes wrong with one row is that
        row's problem, never its batch's: an error the checks did not foresee is reported as `row_failed`."""
        try:
            return self._prepare(row)
        except SQLAlchemyError:
            raise  # the database's trouble, not the row's
        except Exception as exc:
            self.row_failed(row.number, type(exc).__name__)
            return None

    def row_failed(self, number: int, error: str) -> None:
        """A row that raised an unexpected error: logged for operators (the error's type, never the row's data)."""
        log.error("import row failed unexpectedly", extra={"fields": {
            "batch": self.batch.public_id, "row": number, "error": error}})
        self.fail(number, [(None, *ROW_FAILED)])

    def _prepare(self, row: Row) -> PreparedCertificate | None:
        problems = FieldProblems()
        for field_name, reason, detail in row.problems:
            problems.add(field_name or "", reason, detail)
        prepared, data = None, row.data
        if data is not None:
            ctype = self.certificate_type(data.type_code) if isinstance(data.type_code, str) else None
            if isinstance(ctype, tuple):
                problems.add("type_code", ctype[1], ctype[2])
            else:
                if row.csv_fields and ctype is not None:
                    data = _with_fields(data, csv_face(ctype, data.fields))
                prepared = self.issuer.prepare(data, problems)
        if problems.items:
            self.fail(row.number, [(item["field"] or None, item["reason"], item["detail"]) for item in problems.items])
            return None
        return prepared

    def chunk(self, rows: list[Row]) -> None:
        """Validate a chunk, look its numbers up in one query, then sign and store the new certificates in bulk."""
        candidates: list[tuple[int, PreparedCertificate, str]] = []
        for row in rows:
            prepared = self.prepare(row)
            if prepared is None:
                continue
            index = self.issuer.number_index(prepared)
            first = self.numbers.setdefault(index, row.number)
            if first != row.number:
                self.fail(row.number, [("certificate_number", "duplicate_in_file",
                                        f"证照编号与第 {first} 行重复")])
                continue
            candidates.append((row.number, prepared, index))
            self.row_numbers[id(prepared)] = row.number
        self.rows += len(rows)
        stored = self._stored_contents(candidates)
        new: list[PreparedCertificate] = []
        for number, prepared, index in candidates:
            contents = stored.get(index)
            if contents is None:
                new.append(prepared)
            elif prepared.content_hash in contents:
                self.skipped += 1  # imported before with the same content: re-running a file adds nothing
            else:
                self.fail(number, [("certificate_number", "certificate_number_taken",
                                    "该证照编号已签发过且内容不同；变更请使用换发（reissue）")])
        if self.all_or_nothing and self.failed:
            self.signer.abort()  # nothing of this batch will be stored: stop signing
        elif new:
            self._store(self._signed(self.signer.submit(new)))

    def _signed(self, signed: Signed) -> Signed:
        """Signed rows to store, after reporting the rows whose signing failed."""
        for item, error in self.signer.failures:
            self.row_failed(self.row_numbers.pop(id(item)), error)
        self.signer.failures.clear()
        for item, _row in signed:
            self.row_numbers.pop(id(item), None)
        return signed

    def drain(self) -> None:
        """Store what the signer still holds (with workers, the last chunk is still being signed)."""
        signed = self._signed(self.signer.drain())
        if not (self.all_or_nothing and self.failed):
            self._store(signed)
            self.record_events()
            self.issuer.slots.finish()  # the status lists' counts and revisions, held back until now

    def _stored_contents(self, candidates: list[tuple[int, PreparedCertificate, str]]) -> dict[str, set[str]]:
        if not candidates:
            return {}
        type_ids = {prepared.certificate_type.id for _, prepared, _ in candidates}
        rows = self.session.execute(select(Certificate.number_index, Certificate.content_hash).where(
            Certificate.certificate_type_id.in_(type_ids),
            Certificate.issuer_department_id == self.issuer.department.id,
            Certificate.number_index.in_([index for _, _, index in candidates])))
        stored: dict[str, set[str]] = {}
        for index, content_hash in rows:
            stored.setdefault(index, set()).add(content_hash)  # every version: a re-run after a reissue skips too
        return stored

    def _store(self, signed: Signed) -> None:
        """Insert signed certificates and their holders' notifications: two executemany and one query per chunk.

        Not the ORM (on SQLite it inserts row by row when it needs ids back), nor Core's executemany (its
        per-value parameter handling cost more than the validation of a row): see `BulkInsert`. The ids of the new
        rows are read back by their public ids; the "issued" events are written for the whole batch at the end.
        """
        if not signed:
            return
        if self.inserts is None:
            self.inserts = (BulkInsert(self.session, CERTIFICATES, CERTIFICATE_COLUMNS),
                            BulkInsert(self.session, NOTIFICATIONS, NOTIFICATION_COLUMNS))
        certificates, notifications = self.inserts
        certificates.execute([row for _, row in signed])
        ids: dict[str, int] = dict(self.session.execute(
            select(CERTIFICATES.c.public_id, CERTIFICATES.c.id)
            .where(CERTIFICATES.c.public_id.in_([row["public_id"] for _, row in signed]))).all())
        notifications.execute([self._notice(ids[row["public_id"]], row, item.certificate_type)
                               for item, row in signed])
        self.imported += len(signed)

    def record_events(self) -> None:
        """The "issued" event of every certificate of the batch, in one INSERT … SELECT.

        The event is the same for every imported certificate (version 1, valid) but for its id: it is made once by
        the shared helper and written for each certificate the batch stored.
        """
        if not self.imported:
            return
        event = values(certificate_event(Certificate(status=VALID), "issued", from_status=None,
                                         actor=self.issuer.actor, now=self.issuer.now), EVENT_COLUMNS)
        constants = [null() if event[name] is None else literal(event[name], EVENTS.c[name].type)
                     for name in EVENT_COLUMNS if name != "certificate_id"]
        self.session.execute(insert(EVENTS).from_select(
            ["certificate_id", *(name for name in EVENT_COLUMNS if name != "certificate_id")],
            select(CERTIFICATES.c.id, *constants).where(CERTIFICATES.c.import_batch_id == self.batch.id)))

    # The holder's notification is the same for every certificate of a type but for a few values: it is made once
    # by the shared helper and copied, because formatting it per row would cost more than inserting it.
    def _notice(self, certificate_id: int, row: dict[str, Any], ctype: CertificateType) -> dict[str, Any]:
        template = self.notices.get(ctype.id)
        if template is None:
            certificate = Certificate(id=certificate_id, holder_index=row["holder_index"],
                                      identifier=row["identifier"], version=row["version"])
            template = values(holder_notification(certificate, "certificate_issued", now=self.issuer.now,
                                                   type_name=ctype.name, issuer_name=self.issuer.department.name),
                               NOTIFICATION_COLUMNS)
            self.notices[ctype.id] = template
        return {**template, "public_id": new_public_id(), "certificate_id": certificate_id,
                "holder_index": row["holder_index"], "data": {"identifier": row["identifier"]}}


def _with_fields(data: CertificateInput, fields: dict[str, Any]) -> CertificateInput:
    return CertificateInput(data.type_code, data.certificate_number, data.holder_name, data.holder_code_type,
                            data.holder_code, data.issued_on, data.valid_from, fields, data.valid_until)


def find_batch(session: Session, department: Department, idempotency_key: str) -> ImportBatch | None:
    return session.scalar(select(ImportBatch).where(ImportBatch.department_id == department.id,
                                                    ImportBatch.idempotency_key == idempotency_key))


def check_same_file(existing: ImportBatch, *, content_hash: str, file_format: str, mode: str) -> None:
    """An Idempotency-Key used again must come with the same file (and mode): else 409, whatever the batch's state."""
    if (existing.content_hash, existing.file_format, existing.mode) != (content_hash, file_format, mode):
        raise Conflict("同一 Idempotency-Key 已用于不同的批量文件", code="idempotency_key_reused",
                       details={"batch": existing.public_id})


def _new_batch(department: Department, actor: Actor, now: datetime, *, idempotency_key: str, file_format: str,
               mode: str, status: str, content_hash: str = "", spool_key: str | None = None,
               file_bytes: int = 0, api_client_id: int | None = None) -> ImportBatch:
    if file_format not in FORMATS or mode not in MODES:
        raise ValueError(f"unknown format {file_format!r} or mode {mode!r}")
    return ImportBatch(public_id=new_public_id(), department_id=department.id, content_hash=content_hash,
                       submitted_by=f"{actor.kind}:{actor.id}"[:80], api_client_id=api_client_id,
                       idempotency_key=idempotency_key,
                       file_format=file_format, mode=mode, status=status, total_rows=0, processed_rows=0,
                       imported_rows=0, skipped_rows=0, failed_rows=0, report=[], created_at=now, heartbeat_at=now,
                       spool_key=spool_key, file_bytes=file_bytes, processed_bytes=0, attempts=0)


def precheck(file_format: str, head: bytes, *, blank: bool) -> None:
    """What can be told of a file from its start before it is queued: a file with no text at all, and a CSV
    header with unknown, missing or repeated columns (422). The rest is found by the import."""
    if blank:
        raise _empty()
    if file_format != "csv":
        return
    line, newline, _rest = head.partition(b"\n")
    if (not newline and len(head) >= HEAD_BYTES) or b'"' in line:
        return  # a header longer than the start we kept, or quoted cells (which may span lines): the import checks
    for _row in read_rows(io.BufferedReader(io.BytesIO(line + newline)), "csv", 1):  # raises for a bad header
        pass


def queue_batch(session: Session, department: Department, *, actor: Actor, now: datetime, idempotency_key: str,
                file_format: str, mode: str, content_hash: str, spool_key: str, file_bytes: int,
                api_client_id: int | None) -> ImportBatch:
    """A batch whose file waits, sealed under `spool_key`, for `flask jobs imports` (or the development runner).
    `api_client_id`: the submitting client, which must still be active and hold `issue` when the job imports it."""
    batch = _new_batch(department, actor, now, idempotency_key=idempotency_key, file_format=file_format, mode=mode,
                       status=QUEUED, content_hash=content_hash, spool_key=spool_key, file_bytes=file_bytes,
                       api_client_id=api_client_id)
    session.add(batch)
    session.flush()
    record_event(session, actor=actor, action="certificate.batch_queued", now=now, object_type="import_batch",
                 object_id=batch.public_id, details={"format": file_format, "mode": mode, "bytes": file_bytes})
    return batch


def import_certificates(session: Session, issuer: Issuer, source: IO[bytes], *, file_format: str, mode: str,
                        idempotency_key: str, max_rows: int = MAX_ROWS, workers: int = 0,
                        progress: Progress | None = None) -> tuple[ImportBatch, bool]:
    """Import a file of certificates for `issuer.department` at once, in the caller's transaction (the CLI, the
    benchmark). Returns (batch, created).

    The same Idempotency-Key with the same file (and mode) returns the earlier batch; with another file, 409.
    Row problems go to the batch's report; problems with the file itself (format, size, header) raise.
    `workers` > 0 signs in that many forked processes (see `Signer`).
    """
    reader = HashingReader(source)
    existing = find_batch(session, issuer.department, idempotency_key)
    if existing is not None:
        check_same_file(existing, content_hash=reader.drain(), file_format=file_format, mode=mode)
        return existing, False
    batch = _new_batch(issuer.department, issuer.actor, issuer.now, idempotency_key=idempotency_key,
                       file_format=file_format, mode=mode, status=PROCESSING)
    session.add(batch)
    session.flush()
    process_batch(session, issuer, batch, reader, max_rows=max_rows, workers=workers, progress=progress)
    return batch, True


def process_batch(session: Session, issuer: Issuer, batch: ImportBatch, source: IO[bytes] | io.RawIOBase, *,
                  max_rows: int = MAX_ROWS,
                  workers: int = 0, progress: Progress | None = None,
                  before_finish: Callable[[], None] | None = None) -> None:
    """Import the rows of `source` into `batch` (flushed, status processing) and finish it: completed, or failed
    with its report (an all-or-nothing batch with a bad row imports nothing).

    The certificates go into a SAVEPOINT that is rolled back when the batch fails or anything raises. Problems with
    the file itself (format, header, encoding, too many rows, no rows) raise a DomainError. The batch row is not
    written until the end, so that a job may report progress on it meanwhile from another connection (`progress`,
    called after every chunk); `before_finish` runs just before, e.g. to check that the job still holds the batch.
    On SQLite the caller's transaction must have written something already: pysqlite begins a transaction at the
    first write, and a SAVEPOINT taken outside one would commit when it is released.
    """
    reader = source if isinstance(source, HashingReader) else HashingReader(cast(IO[bytes], source))
    run = _Run(session, issuer, batch, all_or_nothing=batch.mode == "all", signer=Signer(issuer, batch.id, workers))
    rows = read_rows(io.BufferedReader(reader, buffer_size=1 << 16), batch.file_format, max_rows)
    savepoint = session.begin_nested()
    try:
        while chunk := list(islice(rows, CHUNK_ROWS)):
            run.chunk(chunk)
            if progress is not None:
                progress(run.rows, reader.bytes_read)
        run.drain()
        if batch.content_hash and reader.hexdigest() != batch.content_hash:
            raise SpooledFileChanged()
    except BaseException:
        run.signer.abort()
        if savepoint.is_active:
            savepoint.rollback()
        raise
    if run.rows == 0:
        savepoint.rollback()
        raise _empty()
    failed = run.all_or_nothing and run.failed > 0
    if failed:
        savepoint.rollback()  # nothing of a failed all-or-nothing batch is imported; its report is kept
    else:
        savepoint.commit()
    if before_finish is not None:
        before_finish()
    _finish(session, issuer, batch, run, reader, failed=failed)


def _empty() -> ValidationFailed:
    return ValidationFailed("文件中没有数据行", code="empty_batch")


class SpooledFileChanged(RuntimeError):
    """The file read back for the import is not the one the batch was queued with."""


def _finish(session: Session, issuer: Issuer, batch: ImportBatch, run: _Run, reader: HashingReader, *,
            failed: bool) -> None:
    now = issuer.now
    batch.content_hash = reader.hexdigest()
    batch.file_bytes = batch.processed_bytes = reader.bytes_read
    batch.status = FAILED if failed else COMPLETED
    batch.total_rows = batch.processed_rows = run.rows
    batch.imported_rows = 0 if failed else run.imported
    batch.skipped_rows = run.skipped
    batch.failed_rows = run.failed
    batch.report = run.report
    batch.heartbeat_at = batch.finished_at = now
    counts = {"total": run.rows, "imported": batch.imported_rows, "skipped": run.skipped, "failed": run.failed}
    record_event(session, actor=issuer.actor, action="certificate.batch_imported", now=now,
                 object_type="import_batch", object_id=batch.public_id,
                 outcome="failure" if failed else "success",
                 details={"format": batch.file_format, "mode": batch.mode, "status": batch.status, **counts})
    session.flush()


def fail_batch(session: Session, batch: ImportBatch, error: DomainError, *, actor: Actor, now: datetime) -> None:
    """A queued batch whose file could not be imported as a whole (bad header, not UTF-8, too many rows, no rows,
    unreadable): failed with the error a synchronous request would have answered; nothing of it is imported."""
    batch.status = FAILED
    batch.error = error.to_dict()["error"]
    batch.total_rows = batch.processed_rows = batch.imported_rows = batch.skipped_rows = batch.failed_rows = 0
    batch.report = []
    batch.heartbeat_at = batch.finished_at = now
    record_event(session, actor=actor, action="certificate.batch_imported", now=now, object_type="import_batch",
                 object_id=batch.public_id, outcome="failure",
                 details={"format": batch.file_format, "mode": batch.mode, "status": FAILED, "error": error.code})
    session.flush()


def report_truncated(batch: ImportBatch) -> bool:
    """The report keeps whole rows only, so it was cut short exactly when some failed row is missing from it."""
    return len({entry["row"] for entry in batch.report}) < batch.failed_rows


def get_batch(session: Session, department: Department, public_id: str) -> ImportBatch:
    """A department sees only its own batches; anyone else's look as if they did not exist."""
    batch = session.scalar(select(ImportBatch).where(ImportBatch.public_id == public_id))
    if batch is None or batch.department_id != department.id:
        raise BatchNotFound()
    return batch
