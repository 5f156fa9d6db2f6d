"""`flask clients ...`: department API clients and their callback allow-lists."""

from __future__ import annotations

import click
from flask import current_app

from backend.catalog import loader as catalog_service
from backend.cli.base import CommandGroup, failing_cleanly, operator_actor, read_jwk
from backend.core.context import now
from backend.extensions import db
from backend.identity import clients as clients_service
from backend.sharing import access_requests as access_requests_service

clients_cli = CommandGroup("clients", help="Department API clients.")


@clients_cli.command("add")
@click.option("--dept", "dept_code", required=True, help="USCC of the department.")
@click.option("--name", required=True)
@click.option("--scope", "scopes", multiple=True, required=True, type=click.Choice(sorted(clients_service.SCOPES)))
@click.option("--jwk", "jwk_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Public JWK (or JWK Set) of the client's signing key.")
@click.option("--callback", "callbacks", multiple=True, help="Allowed callback URL prefix (repeatable).")
def clients_add(dept_code: str, name: str, scopes: tuple[str, ...], jwk_file: str, callbacks: tuple[str, ...]) -> None:
    """Register a department business system; prints its client_id."""
    with failing_cleanly():
        dept = catalog_service.get_department(db.session(), dept_code)
        client = clients_service.register_client(db.session(), department=dept, name=name, scopes=list(scopes),
                                                 jwks=read_jwk(jwk_file), callback_allowlist=list(callbacks),
                                                 actor=operator_actor(), now=now())
        db.session.commit()
    click.echo(client.client_id)


@clients_cli.command("disable")
@click.argument("client_id")
def clients_disable(client_id: str) -> None:
    """Disable a client: its tokens stop working at once."""
    with failing_cleanly():
        clients_service.set_client_active(db.session(), client_id, False, actor=operator_actor(), now=now())
        db.session.commit()


@clients_cli.command("callbacks")
@click.argument("client_id")
@click.argument("urls", nargs=-1)
def clients_callbacks(client_id: str, urls: tuple[str, ...]) -> None:
    """Set the client's callback allow-list to URLS (origins with an optional path prefix; none clears it)."""
    with failing_cleanly():
        client = access_requests_service.set_callback_allowlist(
            db.session(), client_id, list(urls), allow_http=current_app.config["ECERT_ENV"] != "production",
            actor=operator_actor(), now=now())
        db.session.commit()
    click.echo("\n".join(client.callback_allowlist) or "(empty)")
