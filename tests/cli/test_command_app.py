"""A command of the platform's own groups runs in the lighter command app; everything else gets the whole app."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from backend.app import create_app
from backend.cli import GROUPS, group, own_command_group
from backend.command_app import create_command_app
from backend.config import PROJECT_ROOT
from backend.core.launcher import EXTENSION as LAUNCHER
from tests.conftest import _settings

FLASK = {"FLASK_RUN_FROM_CLI": "true"}


@pytest.mark.parametrize(("argv", "expected"), [
    (["/venv/bin/flask", "--app", "wsgi", "catalog", "list", "--json"], "catalog"),
    (["/venv/lib/python3.11/site-packages/flask/__main__.py", "-A", "wsgi", "--debug", "jobs", "purge"], "jobs"),
    (["flask", "--app=wsgi", "--env-file", "catalog", "staff", "list"], "staff"),  # an option's value is no command
    (["flask", "catalog", "--help"], "catalog"),  # the app named by FLASK_APP
    (["flask", "--app", "wsgi", "--", "keys", "init"], "keys"),
    (["flask", "--app", "wsgi", "db", "upgrade"], None),  # Flask-Migrate's: the whole app
    (["flask", "--app", "wsgi", "routes"], None),
    (["flask", "--app", "wsgi", "shell"], None),
    (["flask", "--app", "wsgi", "--help"], None),
    (["flask", "--app", "wsgi"], None),
])
def test_the_command_group_is_read_from_a_flask_command_line(argv, expected):
    assert own_command_group(argv, FLASK) == expected


@pytest.mark.parametrize("argv", [
    ["/venv/bin/gunicorn", "--bind", "127.0.0.1:8000", "catalog"],  # not the flask command
    ["/venv/bin/pytest", "catalog"],
])
def test_other_programs_get_the_whole_app(argv):
    assert own_command_group(argv, FLASK) is None


def test_without_flasks_marker_the_whole_app_is_built():
    assert own_command_group(["/venv/bin/flask", "--app", "wsgi", "catalog", "list"], {}) is None


def test_every_group_is_registered_under_its_own_name():
    assert {name: group(name).name for name in GROUPS} == {name: name for name in GROUPS}


def test_the_command_app_has_its_group_and_no_http_face(_migrated, tmp_path):
    app = create_command_app("staff", _settings(_migrated, tmp_path / "instance"))
    assert set(app.cli.commands) == {"staff"}
    assert [rule.endpoint for rule in app.url_map.iter_rules()] == []
    assert app.config["STAFF_PASSWORD_HASHER"] is not None  # what `flask staff create` hashes with
    assert LAUNCHER not in app.extensions
    assert "jobs" in create_command_app("jobs", _settings(_migrated, tmp_path / "instance")).cli.commands


def test_a_command_answers_in_the_command_app_as_in_the_whole_app(app, runner, catalog, _migrated, tmp_path):
    whole = runner.invoke(args=["catalog", "list", "--json"])
    light = create_command_app("catalog", _settings(_migrated, tmp_path / "light"))
    alone = light.test_cli_runner().invoke(args=["catalog", "list", "--json"])
    assert whole.exit_code == alone.exit_code == 0, (whole.output, alone.output)
    assert json.loads(alone.output) == json.loads(whole.output)
    assert json.loads(alone.output)["departments"]


def test_gunicorns_app_has_every_route_and_no_command(_migrated, tmp_path):
    served = create_app(_settings(_migrated, tmp_path / "instance"), commands=False)
    assert not {"db", *GROUPS} & set(served.cli.commands)
    assert "migrate" not in served.extensions
    assert "public.healthz" in served.view_functions


def test_wsgi_gives_a_flask_command_of_a_group_the_command_app(tmp_path):
    # The real command line: wsgi.py chooses before the group runs, and the HTTP faces are never imported.
    script = """
import sys
from flask.cli import main
sys.argv = ["flask", "--app", "wsgi", "catalog", "--help"]
try:
    main()
except SystemExit as exit:
    code = exit.code
heavy = ("backend.dept_api", "miniapp_api", "backend.web", "flask_openapi3", "alembic", "backend.cli.keys")
print("IMPORTED", sorted(name for name in sys.modules if name.startswith(heavy)))
sys.exit(code)
"""
    env = {**os.environ, "ECERT_ENV": "development", "ECERT_INSTANCE_PATH": str(tmp_path / "instance"),
           "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run([sys.executable, "-c", script], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    help_text, imported = result.stdout.rsplit("IMPORTED ", 1)
    assert "list" in help_text and "load" in help_text
    assert imported.strip() == "[]"
