"""WSGI entry point: `gunicorn wsgi:app`, `flask --app wsgi ...`.

A command of the platform's own groups (`flask --app wsgi catalog list`) runs in an app without the HTTP faces,
which starts in a fraction of the time; other commands (`run`, `routes`, `shell`, `db`) get the whole app, and
gunicorn the whole app without the commands (backend/cli/README.md)."""

from flask import Flask

from backend.cli import loaded_by_flask_command, own_command_group

app: Flask
if group := own_command_group():
    from backend.command_app import create_command_app

    app = create_command_app(group)
else:
    from backend.app import create_app

    app = create_app(commands=loaded_by_flask_command())
