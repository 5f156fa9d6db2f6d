"""Flask commands (`flask --app wsgi ...`), one module per group; `register` adds the groups to an app, and
`own_command_group` tells wsgi.py when a command of one of them is run (it then runs in backend.command_app)."""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from flask import Flask
from flask.cli import AppGroup

# Each group by its name, and where it is: a command imports its own group only.
GROUPS = {
    "catalog": "backend.cli.catalog:catalog_cli",
    "keys": "backend.cli.keys:keys_cli",
    "clients": "backend.cli.clients:clients_cli",
    "audit": "backend.cli.audit:audit_cli",
    "jobs": "backend.cli.jobs:jobs_cli",
    "certificates": "backend.cli.certificates:certificates_cli",
    "demo": "backend.cli.demo_commands:demo_cli",
    "staff": "backend.cli.staff:staff_cli",
}

# Options of `flask` itself that take a value (flask.cli.FlaskGroup): skipped when looking for the command's name.
_FLASK_OPTIONS_WITH_VALUE = frozenset({"--app", "-A", "--env-file", "-e"})


def group(name: str) -> AppGroup:
    module, attribute = GROUPS[name].split(":")
    command: AppGroup = getattr(importlib.import_module(module), attribute)
    return command


def register(app: Flask, names: Iterable[str] = GROUPS) -> None:
    for name in names:
        app.cli.add_command(group(name), name)


def loaded_by_flask_command(environ: Mapping[str, str] | None = None) -> bool:
    """Whether the `flask` command is loading the app (FlaskGroup sets the variable before it does)."""
    return (os.environ if environ is None else environ).get("FLASK_RUN_FROM_CLI") == "true"


def own_command_group(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> str | None:
    """The group named when this process is the `flask` command running one of the groups here (`flask --app wsgi
    catalog list`: "catalog"); None for a server, a test or another command (`run`, `routes`, `shell`, `db`,
    `--help`), which get the whole app."""
    argv = sys.argv if argv is None else argv
    program = Path(argv[0]) if argv else Path()
    # `python -m flask` runs flask/__main__.py.
    if not loaded_by_flask_command(environ) or "flask" not in (program.name, program.parent.name):
        return None
    arguments = iter(argv[1:])
    for argument in arguments:
        if argument in _FLASK_OPTIONS_WITH_VALUE:
            next(arguments, None)
        elif argument == "--" or not argument.startswith("-"):
            name = next(arguments, None) if argument == "--" else argument
            return name if name in GROUPS else None
    return None
