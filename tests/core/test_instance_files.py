"""The instance directory and every file the platform makes there are the owner's only, whatever the umask."""

from __future__ import annotations

import io
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.app import create_app
from backend.cli.demo import DEMO_DEPARTMENT
from backend.core.context import evidence_storage, import_spool
from backend.core.private_files import private_sqlite_database
from backend.extensions import db
from tests.factories import certificate_body
from tests.imports.batch_support import jsonl


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """A umask that would leave new files readable and writable by everyone."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def modes(root: Path) -> dict[str, int]:
    return {str(path.relative_to(root)) or ".": stat.S_IMODE(path.stat().st_mode)
            for path in [root, *root.rglob("*")]}


def test_the_instance_directory_and_every_file_in_it_are_the_owners_only(tmp_path, permissive_umask):
    instance = tmp_path / "deployments" / "instance"  # parents missing too
    app = create_app({"ECERT_ENV": "development", "ECERT_INSTANCE_PATH": str(instance),  # generated secrets
                      "ECERT_IMPORT_IN_PROCESS": "0", "ECERT_PUBLIC_URL": "http://localhost",
                      "ECERT_SMS_URL": "", "RATELIMIT_ENABLED": False})
    runner = app.test_cli_runner()
    for command in (["db", "upgrade"], ["demo", "load"]):
        result = runner.invoke(args=command)
        assert result.exit_code == 0, result.output
    batch = tmp_path / "batch.jsonl"
    batch.write_bytes(jsonl(certificate_body(), certificate_body()))
    result = runner.invoke(args=["certificates", "import", str(batch), "--dept", DEMO_DEPARTMENT, "--workers", "0"])
    assert result.exit_code == 0, result.output
    with app.app_context():
        import_spool().write("20261126/" + "a" * 32, io.BytesIO(b'{"a": 1}\n'), max_bytes=1 << 20)
        evidence_storage().put("c" * 32 + "/" + "b" * 32, b"photo")
        with db.engine.connect() as connection:  # -wal and -shm exist while the database is open
            connection.execute(db.text("SELECT 1"))
            found = modes(instance)
        db.engine.dispose()

    assert {"ecert.db", "ecert.db-wal", "ecert.db-shm", "ecert.db-writers.lock", "secrets.json",
            "demo-client.json", "import-spool", "evidence"} <= set(found), sorted(found)
    too_open = {name: oct(mode) for name, mode in found.items()
                if mode != (0o700 if (instance / name).is_dir() else 0o600)}
    assert too_open == {}
    assert stat.S_IMODE(instance.parent.stat().st_mode) == 0o700  # made on the way, not world-readable either


def test_an_existing_database_left_world_readable_is_narrowed_when_opened(tmp_path, permissive_umask):
    instance = tmp_path / "instance"
    instance.mkdir(mode=0o755)
    for name in ("ecert.db", "ecert.db-wal"):
        (instance / name).touch(mode=0o644)
    app = create_app({"ECERT_ENV": "development", "ECERT_INSTANCE_PATH": str(instance),
                      "ECERT_IMPORT_IN_PROCESS": "0", "RATELIMIT_ENABLED": False})
    with app.app_context():
        db.session.execute(db.text("SELECT 1"))
        db.session.remove()
        db.engine.dispose()
    assert {name: oct(mode) for name, mode in modes(instance).items() if mode & 0o077} == {}


def test_a_secrets_file_left_world_readable_is_narrowed_when_read(tmp_path, permissive_umask):
    instance = tmp_path / "instance"
    create_app({"ECERT_ENV": "development", "ECERT_INSTANCE_PATH": str(instance), "ECERT_IMPORT_IN_PROCESS": "0"})
    (instance / "secrets.json").chmod(0o644)

    create_app({"ECERT_ENV": "development", "ECERT_INSTANCE_PATH": str(instance), "ECERT_IMPORT_IN_PROCESS": "0"})

    assert oct(stat.S_IMODE((instance / "secrets.json").stat().st_mode)) == oct(0o600)


def test_preparing_a_new_connection_keeps_the_locks_of_the_connections_already_open(tmp_path):
    # Closing any descriptor of the database file drops the process's POSIX locks on it, those of its open
    # connections too: another process closing its connection would then checkpoint and delete the live -wal.
    database = str(tmp_path / "ecert.db")
    private_sqlite_database(database)
    open_here = sqlite3.connect(database)
    open_here.execute("PRAGMA journal_mode=WAL")
    open_here.execute("CREATE TABLE t (n INTEGER)")
    open_here.execute("INSERT INTO t VALUES (1)")
    open_here.commit()

    private_sqlite_database(database)  # as for a second connection of this process
    elsewhere = "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); c.execute('SELECT n FROM t').fetchall(); " \
                "c.close()"
    subprocess.run([sys.executable, "-c", elsewhere, database], check=True, timeout=60)

    assert os.path.exists(database + "-wal"), "another process took itself for the last one and removed the -wal"
    open_here.close()
