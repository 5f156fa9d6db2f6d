"""`flask --app wsgi staff ...`: staff console accounts. Passwords come from a prompt or stdin, never from argv."""

from __future__ import annotations

import sys

import click
from flask import current_app

from backend.catalog import loader as catalog_service
from backend.cli.base import CommandGroup, failing_cleanly, operator_actor
from backend.core.context import now
from backend.extensions import db
from backend.identity import staff as staff_service

staff_cli = CommandGroup("staff", help="Staff console accounts (department staff and city administrators).")


def _read_password(from_stdin: bool) -> str:
    """One line from stdin (for scripts: `... --password-stdin < file`), else a hidden prompt typed twice."""
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    password: str = click.prompt("密码", hide_input=True, confirmation_prompt="再次输入密码")
    return password


@staff_cli.command("add")
@click.option("--username", required=True, help="Login name: 3-64 lowercase letters, digits, . _ -")
@click.option("--name", "display_name", help="Name shown in the console (default: the username).")
@click.option("--dept", "dept_code", help="USCC of the staff member's department.")
@click.option("--city-admin", is_flag=True, help="A city administrator (牵头单位): reads every queue, acts on none.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
def staff_add(username: str, display_name: str | None, dept_code: str | None, city_admin: bool,
              password_stdin: bool) -> None:
    """Create a console account; prints its id. The password is asked for (or read from stdin), never an argument."""
    if bool(dept_code) == city_admin:
        raise click.UsageError("give exactly one of --dept or --city-admin")
    password = _read_password(password_stdin)
    with failing_cleanly():
        department = catalog_service.get_department(db.session(), dept_code) if dept_code else None
        account = staff_service.create_staff(db.session(), current_app.config["STAFF_PASSWORD_HASHER"],
                                             username=username, display_name=display_name or username,
                                             department=department, password=password, actor=operator_actor(),
                                             now=now())
        db.session.commit()
    click.echo(account.public_id)


@staff_cli.command("password")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the new password from the first line of stdin.")
def staff_password(username: str, password_stdin: bool) -> None:
    """Set a new password; also unlocks the account and ends its sessions."""
    password = _read_password(password_stdin)
    with failing_cleanly():
        staff_service.set_password(db.session(), current_app.config["STAFF_PASSWORD_HASHER"], username, password,
                                   actor=operator_actor(), now=now())
        db.session.commit()


@staff_cli.command("disable")
@click.argument("username")
def staff_disable(username: str) -> None:
    """Disable an account: it can no longer log in and its open sessions end at once."""
    with failing_cleanly():
        staff_service.disable_staff(db.session(), username, actor=operator_actor(), now=now())
        db.session.commit()


@staff_cli.command("list")
def staff_list() -> None:
    """Every account: username, role, department, state."""
    for account in staff_service.list_staff(db.session()):
        where = account.department.code if account.department else "（全市，只读）"
        state = "active" if account.active else "disabled"
        if account.locked_until is not None and account.locked_until > now():
            state += f", locked until {account.locked_until.isoformat()}"
        click.echo(f"{account.username}  {account.role}  {where}  {account.display_name}  {state}")
