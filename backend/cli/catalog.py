"""`flask catalog ...`: load and list departments and certificate types (证照目录)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from flask import current_app

from backend.catalog import loader as catalog_service
from backend.cli.base import CommandGroup, failing_cleanly, operator_actor
from backend.core.context import keystore, now
from backend.extensions import db

catalog_cli = CommandGroup("catalog", help="证照目录: load and list departments and certificate types.")


@catalog_cli.command("load")
@click.argument("path", type=click.Path(exists=True, file_okay=False, path_type=Path))
def catalog_load(path: Path) -> None:
    """Load departments and certificate types from PATH (departments.yaml + types/*.yaml). Idempotent."""
    with failing_cleanly():
        report = catalog_service.load_catalog(db.session(), path, keystore(), actor=operator_actor(), now=now(),
                                              signing_alg=current_app.config["ECERT_SIGNING_ALG"])
        db.session.commit()
    click.echo(f"departments: {len(report.departments_created)} created, {len(report.departments_updated)} updated; "
               f"types: {len(report.types_created)} created, {len(report.types_updated)} new versions; "
               f"{report.unchanged} unchanged")


@catalog_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def catalog_list(as_json: bool) -> None:
    """Departments (code, name) and the certificate types each may issue."""
    departments = catalog_service.list_departments(db.session())
    rows: list[dict[str, Any]] = [{"code": d.code, "name": d.name, "level": d.level,
             "types": [{"type_code": t.type_code, "name": t.name, "catalog_version": t.catalog_version}
                       for t in d.issuable_types]} for d in departments]
    if as_json:
        click.echo(json.dumps({"departments": rows}, ensure_ascii=False, indent=2))
        return
    for row in rows:
        click.echo(f"{row['code']}  {row['name']}")
        for t in row["types"]:
            click.echo(f"    {t['type_code']}  {t['name']} (v{t['catalog_version']})")
