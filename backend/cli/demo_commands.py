"""`flask demo ...`: load the demo catalog, keys, client and certificates; print a demo client assertion."""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask import current_app

from backend.cli.base import CommandGroup, operator_actor
from backend.cli.catalog import catalog_load
from backend.cli.demo import (
    DEMO_CITIZEN,
    DEMO_COMPANY,
    demo_assertion,
    ensure_demo_certificates,
    ensure_demo_client,
)
from backend.cli.keys import keys_init
from backend.config import PROJECT_ROOT
from backend.core.context import deps, now
from backend.extensions import db

DEMO_CATALOG = PROJECT_ROOT / "catalog" / "xinyang"

demo_cli = CommandGroup("demo", help="Demo data for local development.")


@demo_cli.command("load")
def demo_load() -> None:
    """Load the Xinyang demo catalog and keys, and register a demo client (key under instance/). Idempotent."""
    ctx = click.get_current_context()
    ctx.invoke(catalog_load, path=DEMO_CATALOG)
    ctx.invoke(keys_init)
    session, actor, moment = db.session(), operator_actor(), now()
    client_id, key_path = ensure_demo_client(session, Path(current_app.instance_path), actor=actor, now=moment)
    issued = ensure_demo_certificates(deps(), actor=actor, now=moment)
    db.session.commit()
    click.echo(f"demo client {client_id}; private key in {key_path}")
    click.echo(f"{issued} demo certificate(s) issued; log in as the demo citizen with POST /api/v1/auth/login "
               f"{json.dumps({'provider': 'dev', **DEMO_CITIZEN, 'companies': [DEMO_COMPANY]}, ensure_ascii=False)}")


@demo_cli.command("assertion")
def demo_client_assertion() -> None:
    """Print a fresh client assertion of the demo client, for trying the token endpoint with curl."""
    key_path = Path(current_app.instance_path) / "demo-client.json"
    if not key_path.exists():
        raise click.UsageError("run `flask --app wsgi demo load` first")
    client_id, assertion = demo_assertion(key_path, current_app.config["ECERT_PUBLIC_URL"] + "/gov/v1/oauth/token")
    click.echo(json.dumps({"client_id": client_id, "client_assertion": assertion}))
