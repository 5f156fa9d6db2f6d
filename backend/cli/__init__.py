"""Flask commands (`flask --app wsgi ...`), one module per group; `register` adds every group to the app."""

from __future__ import annotations

from flask import Flask

from backend.cli.audit import audit_cli
from backend.cli.catalog import catalog_cli
from backend.cli.certificates import certificates_cli
from backend.cli.clients import clients_cli
from backend.cli.demo_commands import demo_cli
from backend.cli.jobs import jobs_cli
from backend.cli.keys import keys_cli
from backend.cli.staff import staff_cli


def register(app: Flask) -> None:
    for group in (catalog_cli, keys_cli, clients_cli, audit_cli, jobs_cli, certificates_cli, demo_cli, staff_cli):
        app.cli.add_command(group)
