"""Helpers of the batch import tests: files in JSON Lines and CSV, submitting them, running the import job."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sqlite3
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from backend.extensions import db
from backend.jobs import imports as import_runner
from backend.models import Certificate
from tests.conftest import DeptClient

BATCHES = "/gov/v1/certificates/batches"
STALE = timedelta(seconds=301)  # past ECERT_IMPORT_STALE_SECONDS (300 by default)
JSONL = "application/x-ndjson"
CSV = "text/csv"
CSV_HEAD = ["type_code", "certificate_number", "holder_name", "holder_code_type", "holder_code", "issued_on",
            "valid_from", "valid_until"]


def jsonl(*rows: Any) -> bytes:
    return b"".join((row if isinstance(row, bytes) else json.dumps(row, ensure_ascii=False).encode()) + b"\n"
                    for row in rows)


def csv_cell(value: Any) -> str:
    if value is None:
        return "长期"
    if isinstance(value, bool):
        return "是" if value else "否"
    return str(value)


def csv_file(*bodies: dict[str, Any], extra_columns: tuple[str, ...] = ()) -> bytes:
    """A CSV with one fields.<name> column per face field of any of the bodies."""
    field_names = sorted({name for body in bodies for name in body["fields"]})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([*CSV_HEAD, *(f"fields.{name}" for name in field_names), *extra_columns])
    for body in bodies:
        holder = body["holder"]
        writer.writerow([body["type_code"], body["certificate_number"], holder["name"], holder["code_type"],
                         holder["code"], body["issued_on"], body["valid_from"],
                         csv_cell(body["valid_until"]) if "valid_until" in body else "",
                         *(csv_cell(body["fields"][name]) if name in body["fields"] else "" for name in field_names),
                         *("" for _ in extra_columns)])
    return out.getvalue().encode()


def submit(dept: DeptClient, data: bytes, content_type: str = JSONL, *, key: str | None = None,
           mode: str | None = None) -> Any:
    """POST the file; the response as it is (202 when queued)."""
    headers = dept.headers()
    headers["Content-Type"] = content_type
    headers["Idempotency-Key"] = key or "batch-" + hashlib.sha256(data + str(mode).encode()).hexdigest()[:24]
    path = BATCHES + (f"?mode={mode}" if mode else "")
    return dept.http.post(path, data=data, headers=headers)


def run_imports(app: Any, **options: Any) -> Counter[str]:
    """One pass of the import job (as `flask jobs imports`), in this process."""
    with app.app_context():
        try:
            return import_runner.run_pending(**options)
        finally:
            db.session.remove()


def read_batch(dept: DeptClient, batch_id: str) -> dict[str, Any]:
    response = dept.http.get(f"{BATCHES}/{batch_id}", headers=dept.headers())
    assert response.status_code == 200, response.get_json()
    return dict(response.get_json())


def import_file(app: Any, dept: DeptClient, data: bytes, content_type: str = JSONL, *, key: str | None = None,
                mode: str | None = None) -> dict[str, Any]:
    """Submit the file (queued: 202), run the job, and answer the batch as GET shows it then."""
    response = submit(dept, data, content_type, key=key, mode=mode)
    assert response.status_code == 202, response.get_json()
    run_imports(app)
    return read_batch(dept, response.get_json()["id"])


def count(app: Any, model: Any, *where: Any) -> int:
    with app.app_context():
        return int(db.session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def identifiers(app: Any) -> list[str]:
    with app.app_context():
        return list(db.session.scalars(select(Certificate.identifier).order_by(Certificate.id)))


def problems(batch: dict[str, Any]) -> set[tuple[int, str | None, str]]:
    return {(entry["row"], entry["field"], entry["reason"]) for entry in batch["report"]}


def spooled_files(app: Any) -> list[Path]:
    """Files in the import spool (sealed batch files and unfinished uploads)."""
    root = Path(app.config["ECERT_IMPORT_SPOOL_DIR"])
    return sorted(path for path in root.rglob("*") if path.is_file()) if root.exists() else []


def database_failure() -> OperationalError:
    """What the database driver raises when the database fails under an import (disk, connection): not the rows'
    fault nor the file's, so the batch is interrupted and claimed again once stale."""
    return OperationalError("INSERT INTO certificate …", {}, sqlite3.OperationalError("disk I/O error"))
