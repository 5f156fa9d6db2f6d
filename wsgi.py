"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`.

A command of the platform's own groups (`flask --app wsgi catalog list`) runs in an app without the HTTP faces,
which starts in a fraction of the time; gunicorn gets the whole app without the commands, everything else (other
commands: `run`, `routes`, `shell`, `db`; scripts) the whole app (backend/cli/README.md)."""

import os

from flask import Flask

from backend.cli import loaded_by_flask_command, own_command_group

# gunicorn's arbiter sets this before it loads the app (in each worker, or in itself with --preload).
SERVED_BY_GUNICORN = os.environ.get("SERVER_SOFTWARE", "").startswith("gunicorn/")

app: Flask
if group := own_command_group():
    from backend.command_app import create_command_app

    app = create_command_app(group)
else:
    from backend.app import create_app

    app = create_app(commands=loaded_by_flask_command() or not SERVED_BY_GUNICORN)
