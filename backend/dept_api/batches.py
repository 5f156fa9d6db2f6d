"""Batch import (批量导入) for departments that deliver files: JSON Lines or CSV, all-or-nothing or partial."""

from __future__ import annotations

from typing import Any, Literal

from flask import Response, current_app, g, jsonify, request
from flask_openapi3 import APIBlueprint, RawModel, Tag
from pydantic import BaseModel, Field
from werkzeug.exceptions import RequestEntityTooLarge

from backend.auth.clients import BEARER_SECURITY, require_scope
from backend.errors import DomainError, PayloadTooLarge
from backend.extensions import db
from backend.models import ApiClient, ImportBatch
from backend.schemas import AUTH_ERRORS, COMMON_ERRORS, error_responses
from backend.services import imports as service
from backend.services.issuance import Issuer
from backend.web.context import field_cipher, keystore, now

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
    reason: str
    detail: str


class BatchOut(BaseModel):
    id: str
    status: Literal["processing", "completed", "failed"]
    mode: Literal["all", "partial"]
    format: Literal["jsonl", "csv"]
    total_rows: int
    processed_rows: int
    imported_rows: int
    skipped_rows: int = Field(description="rows already imported with the same content")
    failed_rows: int
    report: list[RowProblemOut] = Field(description=f"problems per row and field, at most {service.REPORT_LIMIT}")
    report_truncated: bool
    created_at: str
    finished_at: str | None


def batch_view(batch: ImportBatch) -> dict[str, Any]:
    return BatchOut(
        id=batch.public_id, status=batch.status, mode=batch.mode, format=batch.file_format,  # type: ignore[arg-type]
        total_rows=batch.total_rows, processed_rows=batch.processed_rows, imported_rows=batch.imported_rows,
        skipped_rows=batch.skipped_rows, failed_rows=batch.failed_rows,
        report=[RowProblemOut(**entry) for entry in batch.report], report_truncated=service.report_truncated(batch),
        created_at=batch.created_at.isoformat(),
        finished_at=batch.finished_at.isoformat() if batch.finished_at else None,
    ).model_dump()


def _file_format() -> str:
    file_format = MEDIA_TYPES.get(request.mimetype)
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if file_format is None or charset not in ("utf-8", "utf8"):
        raise DomainError("批量文件须为 UTF-8 编码的 JSON Lines（application/x-ndjson）或 CSV（text/csv）",
                          code="unsupported_media_type", details={"accepted": sorted(MEDIA_TYPES)}).with_status(415)
    return file_format


@bp.post("", responses={201: BatchOut, 200: BatchOut,
                        **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 409, 415, 422)})
@require_scope("issue")
def submit(header: BatchHeaders, query: BatchQuery, raw: BatchFile) -> Response:
    """Import certificates from a JSON Lines or CSV file (the request body); answers with the batch and its report.

    JSON Lines (`application/x-ndjson`): one object per line, shaped like the POST /gov/v1/certificates body.
    CSV (`text/csv`, UTF-8, a header row): type_code, certificate_number, holder_name, holder_code_type,
    holder_code, issued_on, valid_from, valid_until (empty: the type's default validity; 长期: long-term) and one
    `fields.<name>` column per face field. At most 100,000 rows. `mode=all`: any bad row imports nothing and the
    batch is `failed`; `mode=partial`: the good rows are imported. A row imported before with the same content is
    skipped, so a file sent twice adds nothing. 201 with the batch, also when it failed (see `status` and
    `report`); 200 when this Idempotency-Key came with this file before.
    """
    client: ApiClient = g.client
    file_format = _file_format()
    limit = current_app.config["ECERT_MAX_BATCH_BYTES"]
    too_large = PayloadTooLarge(f"批量文件不得超过 {limit} 字节", details={"max_bytes": limit})
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    request.max_content_length = limit  # instead of the 1 MiB cap of ordinary requests
    issuer = Issuer(db.session(), keystore(), field_cipher(), client.department,
                    public_url=current_app.config["ECERT_PUBLIC_URL"], actor=g.actor, now=now(),
                    expected=service.MAX_ROWS)  # bulk slot allocation
    try:
        batch, created = service.import_certificates(db.session(), issuer, request.stream, file_format=file_format,
                                                     mode=query.mode, idempotency_key=header.idempotency_key,
                                                     max_rows=current_app.config["ECERT_MAX_BATCH_ROWS"],
                                                     workers=current_app.config["ECERT_IMPORT_WORKERS"])
    except RequestEntityTooLarge as exc:  # a chunked body that went past the cap
        raise too_large from exc
    response = jsonify(batch_view(batch))
    response.status_code = 201 if created else 200
    return response


@bp.get("/<id>", responses={200: BatchOut, **error_responses(*COMMON_ERRORS, *AUTH_ERRORS, 404, 422)})
@require_scope("issue")
def read(path: BatchPath) -> Response:
    """Progress and per-row report of one of the department's own batches."""
    return jsonify(batch_view(service.get_batch(db.session(), g.client.department, path.id)))
