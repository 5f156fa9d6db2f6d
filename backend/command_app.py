"""The app a command of backend.cli's groups runs in (`flask --app wsgi catalog list`): lighter than backend.app's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Flask

from backend import cli
from backend.auth import staff as staff_auth
from backend.config import PROJECT_ROOT, load_settings
from backend.core import caches
from backend.core.edge import StrictJSONProvider, configure_logging
from backend.core.private_files import private_directory
from backend.extensions import db


def create_command_app(group: str, overrides: Mapping[str, Any] | None = None) -> Flask:
    """Settings, instance directory, database, logs, staff account settings and the one command group (and the job
    launcher for `jobs`). Without the HTTP faces, the request edge, rate limits, migrations and the other groups,
    whose imports were most of a command's start; backend.app.create_app builds the whole platform."""
    settings = load_settings(overrides=overrides)
    app = Flask("backend.app", instance_path=settings["ECERT_INSTANCE_PATH"], static_folder=None,
                template_folder=str(PROJECT_ROOT / "templates"))
    app.config.from_mapping(settings)
    private_directory(app.instance_path)
    db.init_app(app)
    caches.init_app(app)  # what the app remembers between uses (keys by kid): never another app's
    app.json = StrictJSONProvider(app)
    configure_logging(app)
    staff_auth.init_app(app)  # `flask staff` reads its password hasher and timeouts from the config it sets
    if group == "jobs":  # `flask jobs callbacks` runs through the app's job launcher; no other command does
        from backend import jobs  # here, not at the top: the importer's modules are large

        jobs.register(app)
    cli.register(app, [group])
    return app
