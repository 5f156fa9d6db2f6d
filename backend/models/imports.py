"""Imports (批量导入): batches of certificates submitted as one file, and their rows staged until published."""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, Date, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from backend.models.base import Base, JSONDoc


class ImportBatch(Base):
    """A batch import (批量导入), its progress and its per-row report.

    Queued by the API with its file spooled (sealed) under `spool_key`; a job claims it (`claimed_by`, `attempts`),
    reports progress through `processed_rows`/`processed_bytes`/`heartbeat_at`, and finishes it.
    """

    __tablename__ = "import_batch"
    __table_args__ = (UniqueConstraint("department_id", "idempotency_key"),
                      Index("ix_import_batch_status", "status", "created_at"))

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    department_id: Mapped[int] = mapped_column(ForeignKey("department.id"))
    submitted_by: Mapped[str] = mapped_column(String(80))  # a label ("client:<id>", "operator:<name>"), truncated
    # The department client that submitted the batch through the API (checked again when it is imported: it must
    # still be active and hold `issue`); None for a CLI (operator) import.
    api_client_id: Mapped[int | None] = mapped_column(ForeignKey("api_client.id"))
    idempotency_key: Mapped[str] = mapped_column(String(128))
    content_hash: Mapped[str] = mapped_column(String(64))
    file_format: Mapped[str] = mapped_column(String(8))  # jsonl | csv
    mode: Mapped[str] = mapped_column(String(8))  # all | partial
    status: Mapped[str] = mapped_column(String(12))  # queued | processing | completed | failed
    total_rows: Mapped[int] = mapped_column(default=0)
    processed_rows: Mapped[int] = mapped_column(default=0)
    imported_rows: Mapped[int] = mapped_column(default=0)
    skipped_rows: Mapped[int] = mapped_column(default=0)
    failed_rows: Mapped[int] = mapped_column(default=0)
    report: Mapped[list[dict[str, Any]]] = mapped_column(JSONDoc, default=list)
    created_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    spool_key: Mapped[str | None] = mapped_column(String(80))  # the sealed file while the batch is not finished
    file_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    processed_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(80))  # the worker importing it
    attempts: Mapped[int] = mapped_column(default=0)  # claims so far (a dead worker's batch is claimed again)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONDoc)  # a failed file's error: code, message, details
    # When an all-or-nothing batch decided to publish (its numbers checked, none taken): from then on it completes,
    # a takeover publishing what is still staged, and its staged numbers are taken for everyone else.
    publishing_since: Mapped[datetime | None]


class ImportStaging(Base):
    """A certificate of a batch being imported, signed and encrypted, waiting to be published (批量导入暂存).

    Exactly the certificate row the batch will insert (column for column, personal data encrypted as there) and its
    holder's notification but for the certificate's id: publishing copies them with INSERT … SELECT. Seen by no one
    but the allocators of status-list slots (a staged row's slot is taken), the checks of certificate numbers (the
    staged number of a batch that is publishing is taken) and the batch itself; deleted when the batch publishes
    or fails, or when a new attempt at a batch that has not started publishing starts.
    """

    __tablename__ = "import_staging"
    __table_args__ = (Index("ix_import_staging_slot", "status_list_id", "status_index"),
                      Index("ix_import_staging_number", "number_index"))

    id: Mapped[int] = mapped_column(primary_key=True)
    import_batch_id: Mapped[int] = mapped_column(ForeignKey("import_batch.id"), index=True)
    row_number: Mapped[int]  # the row of the file, for the report should publishing find its number taken
    public_id: Mapped[str] = mapped_column(String(32))
    identifier: Mapped[str] = mapped_column(String(100))
    certificate_type_id: Mapped[int]
    catalog_version: Mapped[int]
    issuer_department_id: Mapped[int]
    serial: Mapped[str] = mapped_column(String(32))
    version: Mapped[int]
    number_index: Mapped[str] = mapped_column(String(64))
    number_enc: Mapped[bytes] = mapped_column(LargeBinary)
    holder_code_type: Mapped[str] = mapped_column(String(3))
    holder_index: Mapped[str] = mapped_column(String(64))
    holder_name_enc: Mapped[bytes] = mapped_column(LargeBinary)
    holder_code_enc: Mapped[bytes] = mapped_column(LargeBinary)
    face_enc: Mapped[bytes] = mapped_column(LargeBinary)
    sd_jwt_enc: Mapped[bytes] = mapped_column(LargeBinary)
    content_hash: Mapped[str] = mapped_column(String(64))
    issued_on: Mapped[date] = mapped_column(Date)
    valid_from: Mapped[date] = mapped_column(Date)
    valid_until: Mapped[date | None] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(12))
    status_reason: Mapped[str | None] = mapped_column(String(200))
    status_changed_at: Mapped[datetime]
    status_list_id: Mapped[int]
    status_index: Mapped[int]
    signing_kid: Mapped[str] = mapped_column(String(64))
    origin: Mapped[str] = mapped_column(String(10))
    previous_id: Mapped[int | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # The holder's notification (its certificate_id is known once the certificate is published).
    notice_public_id: Mapped[str] = mapped_column(String(32))
    notice_title: Mapped[str] = mapped_column(String(200))
    notice_body: Mapped[str] = mapped_column(Text)
    notice_data: Mapped[dict[str, Any]] = mapped_column(JSONDoc)
