"""`flask certificates import`: batch import of certificate files delivered offline."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import click
from flask import current_app
from sqlalchemy.exc import IntegrityError

from backend.catalog import loader as catalog_service
from backend.cli.base import CommandGroup, failing_cleanly, operator_actor
from backend.core.context import deps, now
from backend.extensions import db
from backend.imports import batches as imports_service
from backend.issuance.issuer import Issuer

certificates_cli = CommandGroup("certificates", help="Certificates: batch import of files delivered offline.")


FILE_SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


@certificates_cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dept", "dept_code", required=True, help="USCC of the issuing department.")
@click.option("--mode", type=click.Choice(imports_service.MODES), default="all", show_default=True,
              help="all: any bad row imports nothing; partial: the good rows are imported.")
@click.option("--format", "file_format", type=click.Choice(imports_service.FORMATS), default=None,
              help="Default: from the extension (.jsonl/.ndjson or .csv).")
@click.option("--workers", type=click.IntRange(0, 16), default=2, show_default=True,
              help="Processes that sign alongside this one (0: sign in this process only).")
def certificates_import(path: Path, dept_code: str, mode: str, file_format: str | None, workers: int) -> None:
    """Import certificates from a JSON Lines or CSV file for a department. Re-running the same file adds nothing."""
    file_format = file_format or FILE_SUFFIXES.get(path.suffix.lower())
    if file_format is None:
        raise click.UsageError("cannot tell the format from the file name: give --format jsonl or --format csv")
    with path.open("rb") as handle:
        digest = hashlib.file_digest(handle, "sha256").hexdigest()
    try:
        with failing_cleanly():
            department = catalog_service.get_department(db.session(), dept_code)
            issuer = Issuer(deps(), department, actor=operator_actor(), now=now(), expected=imports_service.MAX_ROWS)
            with path.open("rb") as handle, click.progressbar(length=path.stat().st_size, label="导入中",
                                                              show_percent=True) as bar:
                batch, created = imports_service.import_certificates(
                    db.session(), issuer, handle, file_format=file_format, mode=mode,
                    idempotency_key=f"cli:{mode}:{digest}",  # the file itself: the same file is imported once per mode
                    max_rows=current_app.config["ECERT_MAX_BATCH_ROWS"], workers=workers,
                    progress=lambda _rows, done: bar.update(done - bar.pos))
            db.session.commit()
    except IntegrityError:
        db.session.rollback()
        click.echo("错误 [concurrent_conflict]: 并发冲突，请重试", err=True)
        sys.exit(1)
    if not created:
        click.echo(f"该文件已导入过（批次 {batch.public_id}），未重复导入")
    click.echo(f"批次 {batch.public_id}: {batch.status}; 共 {batch.total_rows} 行，导入 {batch.imported_rows}，"
               f"跳过 {batch.skipped_rows}（已存在），失败 {batch.failed_rows}")
    for entry in batch.report[:20]:
        click.echo(f"  第 {entry['row']} 行 {entry['field'] or ''} [{entry['reason']}] {entry['detail']}", err=True)
    if imports_service.report_truncated(batch) or len(batch.report) > 20:
        click.echo("  …（更多问题见 GET /gov/v1/certificates/batches/<id>）", err=True)
    if batch.status == imports_service.FAILED:
        sys.exit(1)
