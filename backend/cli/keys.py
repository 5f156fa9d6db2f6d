"""`flask keys ...`: platform and department signing keys, and re-encryption under the current data key."""

from __future__ import annotations

import click
from flask import current_app

from backend.audit import chain as audit_service
from backend.catalog import loader as catalog_service
from backend.cli.base import CommandGroup, failing_cleanly, operator_actor, read_jwk
from backend.core.context import evidence_storage, field_cipher, keystore, now
from backend.errors import DomainError
from backend.extensions import db
from backend.keys.data_keys import reencrypt_stale
from backend.keys.keystore import PLATFORM_PURPOSES, PURPOSE_CERTIFICATE
from backend.objections import evidence as objection_evidence

keys_cli = CommandGroup("keys", help="Signing keys: create, rotate, import.")


@keys_cli.command("init")
def keys_init() -> None:
    """Create the platform keys and a signing key for every department that has none. Idempotent."""
    store, moment, created = keystore(), now(), []
    alg = current_app.config["ECERT_SIGNING_ALG"]
    for purpose in PLATFORM_PURPOSES:
        try:
            store.active_key(purpose)
        except DomainError:
            created.append(store.create_key(purpose, None, "ES256", moment).kid)
    for dept in catalog_service.list_departments(db.session()):
        try:
            store.active_key(PURPOSE_CERTIFICATE, dept)
        except DomainError:
            created.append(store.create_key(PURPOSE_CERTIFICATE, dept, alg, moment).kid)
    if created:
        audit_service.record_event(db.session(), actor=operator_actor(), action="keys.initialised", now=moment,
                                   object_type="signing_key", details={"kids": created})
    db.session.commit()
    click.echo(f"{len(created)} key(s) created")


@keys_cli.command("rotate")
@click.option("--dept", "dept_code", help="USCC of the department whose signing key rotates.")
@click.option("--platform", "purpose", type=click.Choice(PLATFORM_PURPOSES), help="Rotate a platform key instead.")
@click.option("--alg", type=click.Choice(["ES256", "EdDSA"]), default=None)
def keys_rotate(dept_code: str | None, purpose: str | None, alg: str | None) -> None:
    """Make a new active key; the old public key stays published so old signatures verify."""
    if bool(dept_code) == bool(purpose):
        raise click.UsageError("give exactly one of --dept or --platform")
    with failing_cleanly():
        dept = catalog_service.get_department(db.session(), dept_code) if dept_code else None
        moment = now()
        key = keystore().rotate(purpose or PURPOSE_CERTIFICATE, dept, alg or current_app.config["ECERT_SIGNING_ALG"],
                                moment)
        audit_service.record_event(db.session(), actor=operator_actor(), action="keys.rotated", now=moment,
                                   object_type="signing_key", object_id=key.kid,
                                   details={"department": dept_code, "purpose": key.purpose, "alg": key.alg})
        db.session.commit()
    click.echo(key.kid)


@keys_cli.command("reencrypt-data")
def keys_reencrypt_data() -> None:
    """Re-encrypt personal data still sealed under an older ECERT_DATA_KEYS version. Idempotent."""
    actor, moment = operator_actor(), now()
    report = reencrypt_stale(db.session(), field_cipher())
    if report.blobs:
        audit_service.record_event(db.session(), actor=actor, action="keys.data_reencrypted", now=moment,
                                   object_type="data_key", object_id=str(field_cipher().current_version),
                                   details={"rows": report.rows, "blobs": report.blobs})
    db.session.commit()
    click.echo(f"{report.blobs} value(s) in {report.rows} row(s) re-encrypted under data key "
               f"version {field_cipher().current_version}")
    files = objection_evidence.reseal_evidence(db.session(), evidence_storage())
    db.session.rollback()  # read only
    click.echo(f"{files} objection evidence file(s) re-sealed")


@keys_cli.command("import")
@click.option("--dept", "dept_code", required=True, help="USCC of the department that owns the key.")
@click.option("--jwk", "jwk_file", required=True, type=click.Path(exists=True, dir_okay=False))
def keys_import(dept_code: str, jwk_file: str) -> None:
    """Register the public key of a department's own signing system."""
    try:
        with failing_cleanly():
            dept = catalog_service.get_department(db.session(), dept_code)
            moment = now()
            key = keystore().import_public_key(dept, read_jwk(jwk_file), moment)
            audit_service.record_event(db.session(), actor=operator_actor(), action="keys.imported", now=moment,
                                       object_type="signing_key", object_id=key.kid, details={"department": dept_code})
            db.session.commit()
    except ValueError as error:
        db.session.rollback()
        raise click.BadParameter(str(error)) from error
    click.echo(key.kid)
