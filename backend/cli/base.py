"""What every command group shares: one clear line for a busy database, the operator actor, failing cleanly."""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
from flask.cli import AppGroup
from sqlalchemy.exc import OperationalError

from backend.errors import DatabaseBusy, DomainError, database_error
from backend.extensions import db
from backend.kernel.actors import Actor

EX_TEMPFAIL = 75  # sysexits.h: a temporary failure, worth running again (cron, systemd timers)


class CommandGroup(AppGroup):
    """A group whose commands answer a busy or unreachable database with one clear line, not a traceback: a lock
    held past ECERT_DB_LOCK_TIMEOUT_MS (e.g. by a long import on SQLite) exits 75, to be run again."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except OperationalError as exc:
            db.session.rollback()
            error = database_error(exc)
            click.echo(f"错误 [{error.code}]: {error.message}", err=True)
            sys.exit(EX_TEMPFAIL if isinstance(error, DatabaseBusy) else 1)


def operator_actor() -> Actor:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return Actor.operator(name)


def fail(error: DomainError) -> NoReturn:
    db.session.rollback()
    click.echo(f"错误 [{error.code}]: {error.message}", err=True)
    if error.details:
        click.echo(json.dumps(error.details, ensure_ascii=False), err=True)
    sys.exit(1)


@contextmanager
def failing_cleanly() -> Iterator[None]:
    """Wrap a command's work: a DomainError rolls back and exits 1 with its code, message and details."""
    try:
        yield
    except DomainError as error:
        fail(error)


def read_jwk(path: str) -> dict[str, Any]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise click.BadParameter(f"cannot read JWK from {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise click.BadParameter("a JWK file holds one JSON object (a JWK or a JWK Set)")
    return data
