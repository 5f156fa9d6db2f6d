"""Batch import (批量导入) of certificates from JSON Lines or CSV: streamed in chunks, all-or-nothing or partial.

The API queues a batch (`queue_batch`, its file sealed in the spool) and a job imports it (`process_batch`, see
backend/jobs/imports.py); the CLI imports a file at once (`import_certificates`).

An import runs in short transactions (`Steps`), so that other writers never wait for a whole import (on SQLite
there is one writer at a time; bench/README.md has the figures). Rows are read, validated and signed between them;
each step stages the signed, encrypted certificates of a chunk in `import_staging`, which no one reads, and then
steps of PUBLISH_ROWS rows publish them with INSERT … SELECT. Certificate numbers are looked up before signing and
again before publishing, since other issuers may take one in between: a partial batch checks each publishing step's
rows; an all-or-nothing batch checks all of its rows in one transaction, the decision, which fails the batch with
nothing published if one is taken, else marks it publishing (`publishing_since`). From then on the batch completes:
the numbers it staged are taken for everyone else (`number_staged`: an interactive issue or sync is refused, another
batch's row is `certificate_number_taken`), and a takeover of it publishes what is still staged without reading the
file again (`resume_publishing`). Readers see its certificates appear over the few seconds of its publishing steps
(each a valid certificate); its status stays `processing` until the last step. A failed batch publishes nothing
(partial mode: nothing more) and its staged rows are deleted. A killed process that had not decided leaves staged
rows that the next attempt deletes before it starts again; running the same batch again (or re-submitting the same
file under a new key) adds no certificate twice. Status-list slots are checked when staging (see `SlotAllocator`).

Why one module of over 400 lines: `_Run` is one state machine (read, stage, decide, publish, finish) whose steps share
its counters and report; the file formats, queue, signer and spool are already apart. Splitting the queue verbs
(`queue_batch`, `find_batch`, `get_batch`) and the publishing steps into modules of their own is issue 12's next step.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from typing import IO, Any, cast

from sqlalchemy import ColumnElement, Select, Table, delete, func, insert, literal, null, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import NamedFromClause

from backend.audit.chain import record_event
from backend.catalog.face import FieldProblems
from backend.core.db.bulk_insert import BulkInsert
from backend.core.spool import HEAD_BYTES
from backend.errors import Conflict, DomainError, Forbidden, NotFound, ValidationFailed
from backend.imports import numbers
from backend.imports.files import FORMATS as FORMATS  # part of this module's interface (jsonl, csv)
from backend.imports.files import HashingReader, Problem, Row, csv_face, read_rows
from backend.imports.signer import CERTIFICATE_COLUMNS, CERTIFICATES, Signed, Signer, columns_of, values
from backend.issuance.issuer import (
    CertificateInput,
    Issuer,
    PreparedCertificate,
    certificate_event,
    holder_notification,
)
from backend.kernel.actors import Actor
from backend.kernel.ids import new_public_id
from backend.keys.status_lists import bump_revision
from backend.models import Base, Certificate, CertificateType, Department, ImportBatch
from backend.models.issuance import VALID

MODES = ("all", "partial")
QUEUED, PROCESSING, COMPLETED, FAILED = "queued", "processing", "completed", "failed"
FINISHED = (COMPLETED, FAILED)
MAX_ROWS = 100_000
CHUNK_ROWS = 500  # rows read, validated and staged per transaction
PUBLISH_ROWS = 2000  # rows a batch publishes per transaction (about 0.2 s on SQLite)
REPORT_LIMIT = 1000  # stored report entries; whole rows only, so truncation can be told from the counts

# Tables of the bulk INSERTs and the columns they write (all but the generated id).
EVENTS, NOTIFICATIONS = Base.metadata.tables["certificate_event"], Base.metadata.tables["notification"]
EVENT_COLUMNS, NOTIFICATION_COLUMNS = (columns_of(table) for table in (EVENTS, NOTIFICATIONS))
STAGING = Base.metadata.tables["import_staging"]
STAGING_COLUMNS = columns_of(STAGING)
PUBLISHING = STAGING.alias("publishing")  # the staged rows of other batches, when checking numbers
NOTICE_COLUMNS = ("public_id", "title", "body", "data")  # the notification's columns staged as notice_<name>
NUMBER_TAKEN = "该证照编号已签发过且内容不同；变更请使用换发（reissue）"

Progress = Callable[[int, int], None]  # (rows processed, bytes read)
ROW_FAILED = ("row_failed", "该行处理时发生内部错误，未导入；请核对该行数据，或联系平台运维")

log = logging.getLogger("ecert.imports")


def _nothing() -> None:
    pass


@dataclass(frozen=True)
class Steps:
    """Where an import's transactions end. The import runs in short transactions (steps), one per chunk of rows
    and then those that publish, so that other writers wait for a step at most (on SQLite the database has one
    writer at a time); `commit` ends one (the caller owns the transactions), `begin` runs first in each (e.g. the
    job checks that it still holds the batch). The default commits nothing: the whole import is the caller's one
    transaction."""

    commit: Callable[[], None] = _nothing
    begin: Callable[[], None] = _nothing


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
    steps: Steps = field(default_factory=lambda: Steps())
    staging: BulkInsert | None = None
    started: bool = False  # whether a transaction of this attempt began (and cleared an earlier one's staging)
    bytes_read: int = 0
    content_hash: str = ""  # the file's, once read
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

    def chunk(self, rows: list[Row]) -> list[PreparedCertificate]:
        """Validate a chunk and look its numbers up in one query: the certificates to sign (none once an
        all-or-nothing batch has a bad row). Reads only: runs between the import's transactions."""
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
        self.rows += len(rows)
        stored = self._stored_contents(candidates)
        new: list[PreparedCertificate] = []
        for number, prepared, index in candidates:
            contents = stored.get(index)
            if contents is None:
                new.append(prepared)
                self.row_numbers[id(prepared)] = number
            elif contents.get(prepared.content_hash, False):
                self.imported += 1  # published by an earlier attempt at this batch (partial mode, cut short)
            elif prepared.content_hash in contents:
                self.skipped += 1  # imported before with the same content: re-running a file adds nothing
            else:
                self.fail(number, [("certificate_number", "certificate_number_taken", NUMBER_TAKEN)])
        if self.all_or_nothing and self.failed:
            self.signer.abort()  # nothing of this batch will be stored: stop signing
            return []
        return new

    def _signed(self, signed: Signed) -> list[tuple[PreparedCertificate, dict[str, Any], int]]:
        """Signed rows to stage with their row numbers, after reporting the rows whose signing failed."""
        for item, error in self.signer.failures:
            self.row_failed(self.row_numbers.pop(id(item)), error)
        self.signer.failures.clear()
        return [(item, row, self.row_numbers.pop(id(item))) for item, row in signed]

    def _stored_contents(self, candidates: list[tuple[int, PreparedCertificate, str]]) -> dict[str, dict[str, bool]]:
        """Number index → content hashes stored under it (every version), each with whether this batch stored it.
        Looked up by number index alone, one index probe each (see `numbers`), then kept for the department and the
        chunk's types."""
        type_ids = {prepared.certificate_type.id for _, prepared, _ in candidates}
        department_id = self.issuer.department.id
        stored: dict[str, dict[str, bool]] = {}
        for index, type_id, issuer_id, content_hash, batch_id in numbers.stored(
                self.session, [index for _, _, index in candidates]):
            if type_id not in type_ids or issuer_id != department_id:
                continue
            hashes = stored.setdefault(index, {})
            hashes[content_hash] = hashes.get(content_hash, False) or batch_id == self.batch.id
        return stored

    # -- the import's transactions (steps) ------------------------------------------------------------------
    def begin_step(self, bytes_read: int) -> None:
        """The start of one of the import's transactions: the caller's check (e.g. that the job still holds the
        batch), the progress so far, and the department's turn at the status lists; the first one also clears what
        an earlier attempt at the batch left staged."""
        self.steps.begin()
        numbers.without_jit(self.session)
        self.session.execute(update(ImportBatch).where(ImportBatch.id == self.batch.id)
                             .values(processed_rows=self.rows, processed_bytes=bytes_read)
                             .execution_options(synchronize_session=False))
        self.issuer.slots.begin_transaction()
        if not self.started:
            self.session.execute(delete(STAGING).where(STAGING.c.import_batch_id == self.batch.id))
            self.started = True

    def stage(self, signed: Signed) -> None:
        """Stage signed certificates with their holders' notifications, each with a slot no one else has."""
        entries = self._signed(signed)
        if not entries or (self.all_or_nothing and self.failed):
            return
        if self.staging is None:
            self.staging = BulkInsert(self.session, STAGING, STAGING_COLUMNS)
        rows = [{**row, "row_number": number, **self._notice(row, item.certificate_type)}
                for item, row, number in self._with_free_slots(entries)]
        self.staging.execute(rows)
        self.imported += len(rows)

    def _with_free_slots(self, entries: list[tuple[PreparedCertificate, dict[str, Any], int]]
                         ) -> list[tuple[PreparedCertificate, dict[str, Any], int]]:
        """The entries, those whose slot another issuer took since the batch drew it signed again with a new one
        (here, in this transaction: rare, and the slot is part of the signed certificate)."""
        ready: list[tuple[PreparedCertificate, dict[str, Any], int]] = []
        while entries:
            taken = self.issuer.slots.taken([(row["status_list_id"], row["status_index"]) for _, row, _ in entries])
            again: list[tuple[PreparedCertificate, dict[str, Any], int]] = []
            for item, row, number in entries:
                if (row["status_list_id"], row["status_index"]) not in taken:
                    ready.append((item, row, number))
                    continue
                try:
                    again.append((item, self.issuer.build_row(item, origin="imported", import_batch_id=self.batch.id),
                                  number))
                except SQLAlchemyError:
                    raise
                except Exception as exc:
                    self.row_failed(number, type(exc).__name__)
            self.issuer.slots.flush()
            entries = again
        return ready

    def publish(self) -> bool:
        """Publish the staged certificates, with their notifications and "issued" events, in steps of PUBLISH_ROWS
        rows, each its own transaction; answers whether the batch failed. Numbers taken since the batch looked them
        up (an interactive issue, another batch, published or publishing) are checked first: the same content is
        skipped, other content is a `certificate_number_taken` row problem. A partial batch checks each step's rows
        and publishes the others. An all-or-nothing batch checks all its rows in this transaction (the decision):
        one taken fails the batch with nothing published; else it is marked publishing (`publishing_since`) and
        committed, and from then on it completes, its numbers taken for everyone else (`number_staged`), a takeover
        going on from where it stopped (`resume_publishing`)."""
        staged = STAGING.c.import_batch_id == self.batch.id
        if self.all_or_nothing:
            self._check_numbers_again(staged)
            if self.failed:
                self.session.execute(delete(STAGING).where(staged))
                return True
            self._decide()
            self.steps.commit()
            self.begin_step(self.bytes_read)
        self._publish_in_steps(staged, check=not self.all_or_nothing)
        self.issuer.slots.finish()  # the status lists' counts and revisions
        return False

    def _decide(self) -> None:
        """Mark the batch publishing, with what its completion must report (a takeover reads no file)."""
        self.session.execute(update(ImportBatch).where(ImportBatch.id == self.batch.id).values(
            publishing_since=self.issuer.now, total_rows=self.rows, skipped_rows=self.skipped,
            content_hash=self.content_hash, file_bytes=self.bytes_read)
            .execution_options(synchronize_session=False))

    def _publish_in_steps(self, staged: ColumnElement[bool], *, check: bool) -> None:
        """Publish what is staged, PUBLISH_ROWS rows per transaction (the first in the current one)."""
        ids = list(self.session.scalars(select(STAGING.c.id).where(staged).order_by(STAGING.c.id)))
        for start in range(0, len(ids), PUBLISH_ROWS):
            if start:
                self.steps.commit()
                self.begin_step(self.bytes_read)
            part = ids[start:start + PUBLISH_ROWS]
            in_part = staged & STAGING.c.id.between(part[0], part[-1])
            if check:
                self._check_numbers_again(in_part)
            self._publish(in_part)

    def _check_numbers_again(self, staged: ColumnElement[bool]) -> None:
        found = self._staged_numbers_found(staged, CERTIFICATES)
        others = list(self.session.scalars(_publishing_batches().where(
            ImportBatch.id != self.batch.id, ImportBatch.department_id == self.issuer.department.id)))
        if others:  # rare: another batch of the department publishing meanwhile
            found += self._staged_numbers_found(staged, PUBLISHING, of_batches=others)
        same = {staged_id for staged_id, _, staged_hash, stored_hash in found if staged_hash == stored_hash}
        taken = {staged_id: number for staged_id, number, _, _ in found if staged_id not in same}
        for number in sorted(taken.values()):
            self.fail(number, [("certificate_number", "certificate_number_taken", NUMBER_TAKEN)])
        self.skipped += len(same)
        self.imported -= len(same) + len(taken)
        gone = sorted(same | set(taken))
        for start in range(0, len(gone), CHUNK_ROWS):
            self.session.execute(delete(STAGING).where(STAGING.c.id.in_(gone[start:start + CHUNK_ROWS])))

    def _staged_numbers_found(self, staged: ColumnElement[bool], table: NamedFromClause,
                              of_batches: list[int] | None = None) -> list[Any]:
        """(staged id, row number, staged content hash, found content hash) of the staged rows whose number `table`
        holds too (certificates, or the staged rows `of_batches`), each found by one probe of its number index."""
        joined, found = numbers.probe(self.session, STAGING, table, "number_index", STAGING.c.number_index,
                                      ("certificate_type_id", "issuer_department_id", "content_hash",
                                       "import_batch_id"))
        query = (select(STAGING.c.id, STAGING.c.row_number, STAGING.c.content_hash, found.content_hash)
                 .select_from(joined).where(staged, found.certificate_type_id == STAGING.c.certificate_type_id,
                                            found.issuer_department_id == STAGING.c.issuer_department_id))
        if of_batches is not None:
            query = query.where(found.import_batch_id.in_(of_batches))
        return list(self.session.execute(query))

    def _publish(self, staged: ColumnElement[bool]) -> None:
        """Copy staged rows (`staged`, ordered) into the certificates, then their notifications and events, each
        staged row finding its certificate by public id (one probe of its unique index, see `numbers`)."""
        joined, certificate = numbers.probe(self.session, STAGING, CERTIFICATES, "public_id", STAGING.c.public_id,
                                            ("id",))
        self.session.execute(insert(CERTIFICATES).from_select(
            CERTIFICATE_COLUMNS, select(*(STAGING.c[name] for name in CERTIFICATE_COLUMNS)).where(staged)
            .order_by(STAGING.c.id)))
        template = self._notice_template()
        staged_values = {"certificate_id": certificate.id, "holder_index": STAGING.c.holder_index,
                         **{name: STAGING.c[f"notice_{name}"] for name in NOTICE_COLUMNS}}
        self.session.execute(insert(NOTIFICATIONS).from_select(NOTIFICATION_COLUMNS, select(*(
            staged_values[name] if name in staged_values else _constant(NOTIFICATIONS, name, template[name])
            for name in NOTIFICATION_COLUMNS)).select_from(joined).where(staged)))
        self.record_events(joined, certificate.id, staged)
        self.session.execute(delete(STAGING).where(staged))

    def record_events(self, joined: Any, certificate_id: ColumnElement[int], staged: ColumnElement[bool]) -> None:
        """The "issued" event of every certificate published, in one INSERT … SELECT.

        The event is the same for every imported certificate (version 1, valid) but for its id: it is made once by
        the shared helper and written for each certificate published.
        """
        event = values(certificate_event(Certificate(status=VALID), "issued", from_status=None,
                                         actor=self.issuer.actor, now=self.issuer.now), EVENT_COLUMNS)
        self.session.execute(insert(EVENTS).from_select(EVENT_COLUMNS, select(*(
            certificate_id if name == "certificate_id" else _constant(EVENTS, name, event[name])
            for name in EVENT_COLUMNS)).select_from(joined).where(staged)))

    # The holder's notification is the same for every certificate of a type but for a few values: it is made once
    # by the shared helper, and its title and body are staged with each certificate.
    def _notice_template(self, ctype: CertificateType | None = None) -> dict[str, Any]:
        key = ctype.id if ctype is not None else 0
        template = self.notices.get(key)
        if template is None:
            template = values(holder_notification(
                Certificate(version=1), "certificate_issued", now=self.issuer.now,
                type_name=ctype.name if ctype is not None else "", issuer_name=self.issuer.department.name),
                NOTIFICATION_COLUMNS)
            self.notices[key] = template
        return template

    def _notice(self, row: dict[str, Any], ctype: CertificateType) -> dict[str, Any]:
        template = self._notice_template(ctype)
        return {"notice_public_id": new_public_id(), "notice_title": template["title"],
                "notice_body": template["body"], "notice_data": {"identifier": row["identifier"]}}


def _constant(table: Table, name: str, value: Any) -> Any:
    return null() if value is None else literal(value, table.c[name].type)


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
                        progress: Progress | None = None, steps: Steps | None = None) -> tuple[ImportBatch, bool]:
    """Import a file of certificates for `issuer.department` at once (the CLI, the benchmark). Returns (batch,
    created). With `steps`, in short transactions (the batch row is committed with the first); else in the caller's.

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
    process_batch(session, issuer, batch, reader, max_rows=max_rows, workers=workers, progress=progress, steps=steps)
    return batch, True


def process_batch(session: Session, issuer: Issuer, batch: ImportBatch, source: IO[bytes] | io.RawIOBase, *,
                  max_rows: int = MAX_ROWS,
                  workers: int = 0, progress: Progress | None = None,
                  before_finish: Callable[[], None] | None = None, steps: Steps | None = None) -> None:
    """Import the rows of `source` into `batch` (flushed, status processing) and finish it: completed, or failed
    with its report (an all-or-nothing batch with a bad row, or a number taken meanwhile, publishes nothing).

    Each chunk is read, validated and signed outside the transactions, then staged in one `steps` transaction (with
    the batch's progress); then steps publish (see `_Run.publish`), the last (left to the caller to commit) writing
    the batch row.
    Problems with the file itself (format, header, encoding, too many rows, no rows) raise a DomainError; whatever
    raises leaves only staged rows behind (see `discard_staged`). `progress` is called after every chunk;
    `before_finish` runs in the transaction that stages the last chunk, before anything is published or decided, e.g.
    to check that the submitting client may still issue.
    """
    reader = source if isinstance(source, HashingReader) else HashingReader(cast(IO[bytes], source))
    run = _Run(session, issuer, batch, all_or_nothing=batch.mode == "all", signer=Signer(issuer, batch.id, workers),
               steps=steps or Steps())
    rows = read_rows(io.BufferedReader(reader, buffer_size=1 << 16), batch.file_format, max_rows)
    # Forked signers read the import's objects (department, keys, types) without a session: keep them loaded.
    expire_on_commit, session.expire_on_commit = session.expire_on_commit, False
    try:
        while chunk := list(islice(rows, CHUNK_ROWS)):
            new = run.chunk(chunk)  # reads only, outside the transactions
            signed = run.signer.collect()  # the last chunk, signed meanwhile
            run.begin_step(reader.bytes_read)
            slots = run.signer.slots_for(new) if new else []
            if new and run.signer.workers:  # they sign it while this process stages the last chunk
                run.signer.submit(new, slots)
                new = []
            run.stage(signed)
            run.steps.commit()
            if new:  # signed here: after the commit, holding no lock
                run.signer.submit(new, slots)
            if progress is not None:
                progress(run.rows, reader.bytes_read)
        signed = run.signer.drain()
        run.bytes_read, run.content_hash = reader.bytes_read, reader.hexdigest()
        run.begin_step(reader.bytes_read)
        run.stage(signed)
        if batch.content_hash and reader.hexdigest() != batch.content_hash:
            raise SpooledFileChanged()
        if run.rows == 0:
            raise _empty()
        if before_finish is not None:
            before_finish()
        failed = run.publish()
    except BaseException:
        run.signer.abort()
        raise
    finally:
        session.expire_on_commit = expire_on_commit
    _finish(session, issuer, batch, run, failed=failed)


def resume_publishing(session: Session, issuer: Issuer, batch: ImportBatch, *, steps: Steps) -> None:
    """Go on publishing an all-or-nothing batch that decided to publish (`publishing_since`) and whose worker
    stopped: what it left staged is published in `steps` as `process_batch` would have, without reading the file
    again, and the batch is finished (in the last transaction, left to the caller to commit) with the counts
    recorded at the decision."""
    run = _Run(session, issuer, batch, all_or_nothing=True, signer=Signer(issuer, batch.id, 0), steps=steps,
               started=True, rows=batch.total_rows, skipped=batch.skipped_rows, bytes_read=batch.file_bytes,
               content_hash=batch.content_hash)
    run.begin_step(run.bytes_read)
    run._publish_in_steps(STAGING.c.import_batch_id == batch.id, check=False)
    lists = set(session.scalars(select(Certificate.status_list_id).distinct()
                                .where(Certificate.import_batch_id == batch.id)))
    bump_revision(session, lists)  # as `SlotAllocator.finish` (the slots were counted when staged)
    run.imported = session.scalar(select(func.count()).select_from(Certificate)
                                  .where(Certificate.import_batch_id == batch.id)) or 0
    _finish(session, issuer, batch, run, failed=False)


def number_staged(session: Session, certificate_type_id: int, department_id: int, number_index: str) -> bool:
    """Whether a batch that is publishing has staged a certificate under this number: it is taken (the batch
    decided to publish it and will, whatever is issued meanwhile)."""
    return session.scalar(select(STAGING.c.id).where(
        STAGING.c.certificate_type_id == certificate_type_id, STAGING.c.issuer_department_id == department_id,
        STAGING.c.number_index == number_index, STAGING.c.import_batch_id.in_(_publishing_batches())).limit(1)) \
        is not None


def _publishing_batches() -> Select[Any]:
    return select(ImportBatch.id).where(ImportBatch.publishing_since.is_not(None), ImportBatch.status == PROCESSING)


def discard_staged(session: Session, batch: ImportBatch) -> None:
    """Delete what an attempt at the batch staged and did not publish (the batch failed, or is given up)."""
    session.execute(delete(STAGING).where(STAGING.c.import_batch_id == batch.id))


def _empty() -> ValidationFailed:
    return ValidationFailed("文件中没有数据行", code="empty_batch")


class SpooledFileChanged(RuntimeError):
    """The file read back for the import is not the one the batch was queued with."""


def _finish(session: Session, issuer: Issuer, batch: ImportBatch, run: _Run, *, failed: bool) -> None:
    now = issuer.now
    batch.content_hash = run.content_hash
    batch.file_bytes = batch.processed_bytes = run.bytes_read
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
    discard_staged(session, batch)
    # A partial batch may have published some of its rows before it failed (its publishing is in steps).
    published = session.scalar(select(func.count()).select_from(Certificate)
                               .where(Certificate.import_batch_id == batch.id)) or 0
    batch.status = FAILED
    batch.error = error.to_dict()["error"]
    batch.total_rows = batch.processed_rows = batch.skipped_rows = batch.failed_rows = 0
    batch.imported_rows = published
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
