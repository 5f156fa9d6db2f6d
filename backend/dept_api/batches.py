"""Batch import (批量导入) for departments that deliver files: JSON Lines or CSV, all-or-nothing or partial, queued
for the import job (backend/jobs/imports.py) and watched through GET."""

from __future__ import annotations

import logging
from typing import Any, Literal

from flask import Response, current_app, g, jsonify, request, url_for
from flask_openapi3 import APIBlueprint, RawModel, Tag
from pydantic import BaseModel, Field
from werkzeug.exceptions import RequestEntityTooLarge

from backend.auth.clients import BEARER_SECURITY, require_scope
from backend.core.context import import_spool, now
from backend.core.launcher import job_launcher
from backend.core.spool import SpoolTooLarge, new_spool_key
from backend.errors import DomainError, PayloadTooLarge
from backend.extensions import db
from backend.imports import batches as service
from backend.imports import jobs as import_jobs
from backend.imports.files import HashingReader
from backend.models import ApiClient, ImportBatch
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, error_responses

log = logging.getLogger("ecert.imports")

bp = APIBlueprint("gov_batches", __name__, url_prefix="/gov/v1/certificates/batches",
                  abp_tags=[Tag(name="gov-batches", description="证照批量导入")], abp_security=BEARER_SECURITY)

# Content type → file format. JSON Lines has no registered type; these are the ones in use.
MEDIA_TYPES = {"application/x-ndjson": "jsonl", "application/jsonl": "jsonl", "application/x-jsonlines": "jsonl",
               "text/csv": "csv"}


class BatchFile(RawModel):
    """The request body is the file itself."""

    mimetypes: list[str] = ["application/x-ndjson", "text/csv"]  # noqa: RUF012 (a pydantic field)


class BatchHeaders(BaseModel):
    idempotency_key: str = Field(alias="Idempotency-Key", min_length=8, max_length=128, pattern=r"^[\x20-\x7e]+$",
                                 description="8–128 printable ASCII characters; the same key and file give the same "
                                             "batch, another file under the same key is refused (409)")


class BatchQuery(BaseModel):
    mode: Literal["all", "partial"] = Field(default="all", description="all: any bad row imports nothing; "
                                                                       "partial: good rows are imported")


class BatchPath(BaseModel):
    id: str = Field(max_length=64, description="batch id")


class RowProblemOut(BaseModel):
    row: int = Field(description="JSON Lines: line number; CSV: data row number (header not counted)")
    field: str | None = Field(description="the field, e.g. holder.code or fields.uscc; null for the whole row")
    reason: str = Field(description="e.g. malformed_json, invalid_encoding, invalid_unicode (a lone surrogate "
                                    "escape such as \\ud800), unknown_field, invalid_date, duplicate_in_file, "
                                    "certificate_number_taken")
    detail: str


class BatchErrorOut(BaseModel):
    code: str = Field(description="the file: unknown_column, missing_column, duplicate_column, malformed_csv, "
                                  "invalid_encoding, too_many_rows, empty_batch; the import: batch_file_unreadable, "
                                  "import_interrupted (both: submit again under a new Idempotency-Key); the "
                                  "submitting client: client_disabled, client_scope_revoked (disabled, or no longer "
                                  "holding `issue`, before the import ended)")
    message: str
    details: dict[str, Any] | None = None


class BatchOut(BaseModel):
    id: str
    status: Literal["queued", "processing", "completed", "failed"] = Field(
        description="queued: waiting for the import job; processing: being imported; completed; failed: nothing "
                    "imported (mode all with a bad row: see `report`; a bad file as a whole: see `error`)")
    mode: Literal["all", "partial"]
    format: Literal["jsonl", "csv"]
    file_bytes: int = Field(description="size of the file")
    processed_bytes: int = Field(description="bytes of the file read so far (progress)")
    total_rows: int = Field(description="rows of the file, known once the whole file is read (an all-or-nothing "
                            "batch knows it while it publishes; 0 before)")
    processed_rows: int = Field(description="rows read so far (progress)")
    imported_rows: int
    skipped_rows: int = Field(description="rows already imported with the same content")
    failed_rows: int
    report: list[RowProblemOut] = Field(description=f"problems per row and field, at most {service.REPORT_LIMIT}")
    report_truncated: bool
    error: BatchErrorOut | None = Field(description="why a failed file could not be imported at all (not a row)")
    created_at: str
    last_progress_at: str = Field(description="the import's last sign of life (heartbeat)")
    finished_at: str | None


def batch_view(batch: ImportBatch) -> dict[str, Any]:
    return BatchOut(
        id=batch.public_id, status=batch.status, mode=batch.mode, format=batch.file_format,  # type: ignore[arg-type]
        file_bytes=batch.file_bytes, processed_bytes=batch.processed_bytes,
        total_rows=batch.total_rows, processed_rows=batch.processed_rows, imported_rows=batch.imported_rows,
        skipped_rows=batch.skipped_rows, failed_rows=batch.failed_rows,
        report=[RowProblemOut(**entry) for entry in batch.report], report_truncated=service.report_truncated(batch),
        error=BatchErrorOut(**batch.error) if batch.error else None,
        created_at=batch.created_at.isoformat(), last_progress_at=batch.heartbeat_at.isoformat(),
        finished_at=batch.finished_at.isoformat() if batch.finished_at else None,
    ).model_dump()


def _file_format() -> str:
    file_format = MEDIA_TYPES.get(request.mimetype)
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if file_format is None or charset not in ("utf-8", "utf8"):
        raise DomainError("批量文件须为 UTF-8 编码的 JSON Lines（application/x-ndjson）或 CSV（text/csv）",
                          code="unsupported_media_type", details={"accepted": sorted(MEDIA_TYPES)}).with_status(415)
    return file_format


QUEUED_RESPONSE = {
    "description": "Accepted: the batch is queued for the import job",
    "headers": {"Location": {"description": "the batch: GET it for status, progress and report",
                             "schema": {"type": "string", "format": "uri-reference"}}},
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/BatchOut"}}},
}


@bp.post("", responses={202: QUEUED_RESPONSE, 200: BatchOut,
                        **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 409, 415, 422)})
@require_scope("issue")
def submit(header: BatchHeaders, query: BatchQuery, raw: BatchFile) -> Response:
    """Submit a JSON Lines or CSV file (the request body) for import; answers 202 with the queued batch.

    JSON Lines (`application/x-ndjson`): one object per line, shaped like the POST /gov/v1/certificates body.
    CSV (`text/csv`, UTF-8, a header row): type_code, certificate_number, holder_name, holder_code_type,
    holder_code, issued_on, valid_from, valid_until (empty: the type's default validity; 长期: long-term) and one
    `fields.<name>` column per face field. At most 100,000 rows. The file is kept encrypted until the import job
    has processed it; follow the `Location` header (GET /gov/v1/certificates/batches/{id}) for progress and the
    per-row report. Refused at once: another media type (415), a file over the byte cap (413), a file with no text
    or a CSV header with unknown, missing or repeated columns (422). Found by the import: bad rows (`report`), and a
    file not in UTF-8, past the row cap or without data rows (`error`; status `failed`). The submitting client must
    still be active and hold `issue` until the import ends, else the batch fails (`error`: `client_disabled`,
    `client_scope_revoked`) and nothing is imported. `mode=all`: any bad row
    imports nothing and the batch is `failed`; `mode=partial`: the good rows are imported. A row imported before
    with the same content is skipped, so a file sent twice adds nothing. 200 with the batch as it is now when this
    Idempotency-Key came with this file before; 409 when it came with another file or mode.
    """
    client: ApiClient = g.client
    file_format = _file_format()
    limit = current_app.config["ECERT_MAX_BATCH_BYTES"]
    too_large = PayloadTooLarge(f"批量文件不得超过 {limit} 字节", details={"max_bytes": limit})
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    request.max_content_length = limit  # instead of the 1 MiB cap of ordinary requests
    session = db.session()
    existing = service.find_batch(session, client.department, header.idempotency_key)
    if existing is not None:
        try:
            content_hash = HashingReader(request.stream).drain()
        except RequestEntityTooLarge as exc:
            raise too_large from exc
        service.check_same_file(existing, content_hash=content_hash, file_format=file_format, mode=query.mode)
        return jsonify(batch_view(existing))
    spool = import_spool()
    key = new_spool_key(now())
    try:
        spooled = spool.write(key, request.stream, max_bytes=limit)
    except (RequestEntityTooLarge, SpoolTooLarge) as exc:  # a chunked body that went past the cap
        raise too_large from exc
    g.spooled_batch_file = key  # deleted after the request unless a committed batch refers to it
    service.precheck(file_format, spooled.head, blank=spooled.blank)
    batch = service.queue_batch(session, client.department, actor=g.actor, now=now(),
                                idempotency_key=header.idempotency_key, file_format=file_format, mode=query.mode,
                                content_hash=spooled.sha256, spool_key=key, file_bytes=spooled.size,
                                api_client_id=client.id)
    response = jsonify(batch_view(batch))
    response.status_code = 202
    response.headers["Location"] = url_for("gov_batches.read", id=batch.public_id)
    job_launcher().after_response(response, "imports")  # wakes the development runner after the request's commit
    return response


@bp.teardown_request
def _drop_unqueued_file(exc: BaseException | None) -> None:
    """A spooled file whose batch was not committed (refused, failed, lost a race on the key) is deleted."""
    key = g.pop("spooled_batch_file", None)
    if key is None:
        return
    try:
        if exc is None:
            db.session.rollback()  # the request's transaction ended at the edge; this only starts a fresh read
            if import_jobs.is_referenced(db.session(), key):
                return
        import_spool().delete(key)
    except Exception:  # the job's sweep deletes what is left here
        db.session.rollback()
        log.warning("could not delete an unqueued batch file", exc_info=True)


@bp.get("/<id>", responses={200: BatchOut, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 422)})
@require_scope("issue")
def read(path: BatchPath) -> Response:
    """Status, progress and per-row report of one of the department's own batches."""
    job_launcher().start("imports")  # the development runner picks up batches queued before the server (re)started
    return jsonify(batch_view(service.get_batch(db.session(), g.client.department, path.id)))
